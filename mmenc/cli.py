"""The ``mmenc`` command line.

Core commands live here; plugins add sub-commands through ``mmenc_register_commands``, imported
only when they run.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from mmenc.errors import MmencError

# Set by ``--debug``; ``MMENC_DEBUG=1`` does the same from the environment.
_DEBUG = {"on": False}


def debug_enabled() -> bool:
    return _DEBUG["on"] or os.environ.get("MMENC_DEBUG", "").strip().lower() in {
        "1", "true", "yes", "on"}


def error_line(message: str) -> str:
    """``mmenc: error: MESSAGE`` on one line (a multi-line message is joined with '; ')."""
    parts = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "mmenc: error: " + "; ".join(parts)


def failed_plugins_warning() -> str | None:
    """One line naming every plugin that failed to load, or None."""
    from mmenc.registry import catalogue

    failed = [name for name, record in catalogue().plugins.items() if record.status == "error"]
    if not failed:
        return None
    names = ", ".join(repr(n) for n in failed)
    return (f"mmenc: warning: plugin{'s' if len(failed) > 1 else ''} {names} failed to load "
            "(see `mmenc plugins`)")


class MmencGroup(click.Group):
    """A group that also lists the commands plugins registered, and turns mmenc's own errors
    into one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from mmenc.registry import catalogue

        return sorted({*super().list_commands(ctx), *catalogue().names("command")})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        from mmenc.registry import catalogue
        from mmenc.specs import resolve

        cat = catalogue()
        if name not in cat.names("command"):
            return None
        entry = cat.entry("command", name)
        try:
            return resolve(entry.spec.target)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - a broken plugin command must not crash the CLI
            raise click.ClickException(
                f"command {name!r} of plugin {entry.plugin.name!r} failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands in ``--help``, plugin commands with their spec's help: importing them
        here would import every plugin's command module just to list it."""
        from mmenc.registry import catalogue

        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            command = super().get_command(ctx, name)
            if command is None:
                rows.append((name, catalogue().entry("command", name).spec.help))
            elif not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from mmenc.errors import UnknownNameError

            raise click.UsageError(str(UnknownNameError("command", name, self.list_commands(ctx))))
        if name != "plugins":  # `mmenc plugins` shows each failure in full
            warning = failed_plugins_warning()
            if warning:
                click.echo(warning, err=True)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MmencError as exc:
            raise click.ClickException(str(exc)) from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """Every failure is one line on stderr, ``mmenc: error: ...``: exit 2 for a usage
        error, 1 for anything else. An unexpected exception shows its traceback only with
        ``--debug`` or ``MMENC_DEBUG=1``."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            hint = ""
            if exc.ctx is not None and exc.ctx.command_path != (prog_name or "mmenc"):
                hint = f" (see `{exc.ctx.command_path} --help`)"
            click.echo(error_line(exc.format_message()) + hint, err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(error_line(exc.format_message()), err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("mmenc: aborted", err=True)
            sys.exit(1)
        except MmencError as exc:
            click.echo(error_line(str(exc)), err=True)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the last resort of the command line
            if debug_enabled():
                traceback.print_exc()
            else:
                click.echo(error_line(f"unexpected {type(exc).__name__}: {exc}") +
                           " (MMENC_DEBUG=1 or --debug shows the traceback)", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _DEBUG["on"] = True


@click.group(cls=MmencGroup)
@click.version_option(package_name="mmenc")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
              help="Show the traceback of an unexpected error (also: MMENC_DEBUG=1).")
def main() -> None:
    """mmenc: multimodal encoders on one shared trunk, extended by plugins."""


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_cmd(as_json: bool) -> None:
    """List plugins: distribution, version, hooks, what each registered, status and error."""
    from mmenc.registry import catalogue

    records = [r.as_dict() for r in catalogue().plugins.values()]
    if as_json:
        _echo_json(records)
        return
    for r in records:
        click.echo(f"{r['name']}  ({r['distribution']} {r['version']})  [{r['status']}]")
        if r["hooks"]:
            click.echo(f"  hooks: {', '.join(r['hooks'])}")
        for kind, names in r["registered"].items():
            click.echo(f"  {kind}: {', '.join(names)}")
        if r["error"]:
            click.echo(f"  error: {r['error']}")


@main.command("models")
@click.argument("pattern", required=False)
@click.option("--modality", "-m", help="Only models that encode this modality.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_cmd(pattern: str | None, modality: str | None, as_json: bool) -> None:
    """List model recipes, optionally matching an fnmatch PATTERN (e.g. 'clip-*')."""
    from mmenc.registry import catalogue

    cat = catalogue()
    if modality is not None and modality not in cat.names("modality"):
        cat.entry("modality", modality)  # unknown: the error lists close matches
    rows = [
        {"name": e.spec.name, "modalities": list(e.spec.modalities), "fusion": e.spec.fusion,
         "plugin": e.plugin.name, "description": e.spec.description}
        for e in cat.models(pattern, modality)
    ]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        raise click.ClickException(_no_models_message(pattern, modality))
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {','.join(r['modalities']):<12} {r['fusion']:<8} "
                   f"{r['plugin']:<10} {r['description']}")


def _no_models_message(pattern: str | None, modality: str | None) -> str:
    """Why no recipe matched: close names, or a failed plugin that may have held them."""
    import difflib

    from mmenc.registry import catalogue

    cat = catalogue()
    asked = f"{pattern!r}" + (f" with modality {modality!r}" if modality else "")
    if pattern is None:
        return f"no models encode modality {modality!r}"
    stem = pattern.split("*")[0].split("?")[0].split("[")[0].rstrip("-_")
    failed = cat.failed_plugin_for(stem) if stem else None
    if failed is not None:
        return f"no models match {asked}; plugin {failed!r} failed to load (see `mmenc plugins`)"
    names = [e.spec.name for e in cat.models(None, modality)]
    close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"no models match {asked}{hint}"


@main.command("convert")
@click.option("--from", "fmt", help="Format of SRC (see --list).")
@click.option("--list", "list_formats", is_flag=True, help="List the formats and exit.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A converter option (JSON value), e.g. -o max_length=256.")
@click.argument("src", required=False, type=click.Path(path_type=Path))
@click.argument("out_dir", required=False, type=click.Path(path_type=Path))
def convert_cmd(fmt: str | None, list_formats: bool, options: tuple[str, ...],
                src: Path | None, out_dir: Path | None) -> None:
    """Import a checkpoint in a foreign FORMAT from SRC into mmenc's format in OUT_DIR."""
    from mmenc.factory import convert
    from mmenc.registry import catalogue

    cat = catalogue()
    if list_formats and fmt:
        cat.get("converter", fmt)
        known = converter_options(fmt)
        listing = "any" if known is None else ", ".join(f"{k}={v}" for k, v in known.items())
        click.echo(f"{fmt}: options (-o KEY=VALUE): {listing or 'none'}")
        return
    if list_formats:
        for e in cat.entries("converter"):
            click.echo(f"{e.spec.format:<16} {e.plugin.name:<10} {e.spec.description}")
        click.echo("a format's options: mmenc convert --list --from FORMAT")
        return
    if not (fmt and src and out_dir):
        raise click.UsageError("give --from FORMAT SRC OUT_DIR (or --list)")
    cat.get("converter", fmt)
    kwargs = {}
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep:
            raise click.UsageError(f"--option {opt!r} is not KEY=VALUE")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    known = converter_options(fmt)
    for key in kwargs:
        if known is not None and key not in known:
            import difflib

            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            listing = ", ".join(known) if known else "it takes none"
            raise click.UsageError(f"converter {fmt!r} has no option {key!r}; {hint}"
                                   f"(options: {listing})")
    from mmenc.errors import CheckpointError

    try:
        model = convert(fmt, src, out_dir, **kwargs)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot convert as {fmt!r}: {exc}") from None
    n = sum(p.numel() for p in model.parameters())
    click.echo(f"converted {src} ({fmt}) -> {out_dir} [{model.recipe}, {n / 1e6:.2f} M parameters]")


def converter_options(fmt: str) -> dict[str, str] | None:
    """``option -> default`` of a converter's keyword options (imports the converter); None
    when it takes any keyword."""
    import inspect

    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    target = resolve(catalogue().get("converter", fmt).target)
    params = list(inspect.signature(target).parameters.values())[1:]  # after the source path
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None  # it takes any option
    return {p.name: ("(required)" if p.default is inspect.Parameter.empty else repr(p.default))
            for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


# -- store ------------------------------------------------------------------------------------
@main.group("store")
def store_group() -> None:
    """Look into an embedding store."""


@store_group.command("info")
@click.argument("store_path", metavar="STORE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def store_info(store_path: Path, as_json: bool) -> None:
    """What STORE holds: its model, backend (when recorded), dimensions and items per
    modality."""
    from mmenc.retrieval.store import EmbeddingStore

    with EmbeddingStore(store_path, create=False) as store:
        meta, counts = store.meta, store.counts()
    info = {"store": str(store_path), "model_recipe": meta.get("model_recipe"),
            "model_path": meta.get("model_path"), "backend": meta.get("backend"),
            "precision": meta.get("precision"),
            "dim": int(meta["dim"]) if meta.get("dim") else None,
            "truncate_dim": int(meta["truncate_dim"]) if meta.get("truncate_dim") else None,
            "items": sum(counts.values()), "modalities": counts,
            "schema_version": meta.get("schema_version")}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"store:    {store_path}")
    click.echo(f"model:    {info['model_recipe'] or '(none yet)'} at {info['model_path'] or '-'}")
    if info["backend"]:
        precision = f" ({info['precision']})" if info["precision"] else ""
        click.echo(f"backend:  {info['backend']}{precision}")
    dims = "-" if info["dim"] is None else str(info["dim"])
    if info["truncate_dim"]:
        dims += " (truncated)"
    click.echo(f"dim:      {dims}")
    shown = ", ".join(f"{m} {n}" for m, n in counts.items()) or "none"
    click.echo(f"items:    {info['items']} ({shown})")


def _pip(args: list[str], dry_run: bool) -> None:
    """Run pip in mmenc's own environment (the interpreter running mmenc), as ``llm install``
    does, so a plugin lands where mmenc finds it."""
    import shlex
    import subprocess

    command = [sys.executable, "-m", "pip", *args]
    if dry_run:
        click.echo(shlex.join(command))
        return
    code = subprocess.run(command, check=False).returncode
    if code:
        raise click.ClickException(f"pip exited with status {code} ({shlex.join(command[3:])})")


@main.command("install")
@click.argument("packages", nargs=-1)
@click.option("--editable", "-e", "editables", multiple=True, metavar="PATH",
              help="Install a local plugin folder in editable mode (repeatable).")
@click.option("--upgrade", "-U", is_flag=True, help="Upgrade the packages.")
@click.option("--dry-run", is_flag=True, help="Print the pip command instead of running it.")
def install_cmd(packages: tuple[str, ...], editables: tuple[str, ...], upgrade: bool,
                dry_run: bool) -> None:
    """Install plugins (PyPI names, local folders, wheels) into mmenc's environment with pip;
    ``mmenc plugins`` then lists them. Arguments after ``--`` go to pip unchanged."""
    if not (packages or editables):
        raise click.UsageError("give a package name or path, or -e PATH")
    _pip(["install", *(["--upgrade"] if upgrade else []), *packages,
          *(arg for path in editables for arg in ("-e", path))], dry_run)
    if not dry_run:
        click.echo("installed; `mmenc plugins` lists what each plugin registered")


@main.command("uninstall")
@click.argument("packages", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Print the pip command instead of running it.")
def uninstall_cmd(packages: tuple[str, ...], yes: bool, dry_run: bool) -> None:
    """Uninstall plugins (distribution names, as `mmenc plugins` shows them) from mmenc's
    environment with pip."""
    if "mmenc" in packages:
        raise click.UsageError("mmenc cannot uninstall itself; use pip")
    _pip(["uninstall", *(["--yes"] if yes else []), *packages], dry_run)


@main.command("parity")
@click.argument("fixture_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--tol", type=float, default=None, help="Tolerance (default: the plugin's).")
def parity_cmd(fixture_dir: Path, as_json: bool, tol: float | None) -> None:
    """Convert a fixture's official checkpoint and compare every reference output."""
    from mmenc.parity import run_parity

    report = run_parity(fixture_dir, tol)
    if as_json:
        data = report.as_dict()
        _echo_json({"system": data["system"], "outputs": data["outputs"],
                    "passed": data["passed"], "tolerance": data["tolerance"],
                    "problems": data["problems"]})
    else:
        label = report.system + (f"/{report.kind}" if report.kind else "")
        click.echo(f"parity {label}: tolerance {report.tolerance:g}")
        for name, diff in report.outputs.items():
            shown = "missing" if diff is None else f"{diff:.3e}"
            problem = report.problems.get(name, "")
            click.echo(f"  {'FAIL' if problem else 'ok  '} {name:<40} {shown}  {problem}")
        click.echo("PASSED" if report.passed else "FAILED")
    if not report.passed:
        sys.exit(1)


@main.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Where the report and models go.")
@click.option("--limit", type=int, default=None,
              help="Use only the first N held-out code pairs.")
@click.option("--steps", type=int, default=250, show_default=True,
              help="Pretraining steps of the image-text pairing.")
@click.option("--pairing-steps", type=int, default=None,
              help="Pretraining steps of every plugin pairing [default: each one's own].")
@click.option("--pairing", "pairings", multiple=True,
              help="Run only this per-pairing job instead (repeatable): "
                   "image-text, code-text, midi-text, audio-text, vision-text.")
@click.option("--all", "all_pairings", is_flag=True,
              help="After the bound model, also run every per-pairing job.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply the bound model's training steps (and, above 1, its items).")
def demo_cmd(out: Path, limit: int | None, steps: int, pairing_steps: int | None,
             pairings: tuple[str, ...], all_pairings: bool, scale: float) -> None:
    """The main job: one bound model of images, code, speech, music audio and MIDI trained
    against the packaged MiniLM, evaluated on held-out data (trained, direct and emergent
    pairs, full and Matryoshka widths) next to baselines and chance; --pairing NAME runs one of
    the per-pairing jobs (each modality pretrained with its seed recipe) instead."""
    from mmenc.demo import run_demo

    if scale <= 0:
        raise click.BadParameter("must be positive", param_hint="--scale")
    for name, value in (("--steps", steps), ("--pairing-steps", pairing_steps),
                        ("--limit", limit)):
        if value is not None and value <= 0:
            raise click.BadParameter("must be positive", param_hint=name)
    run_demo(out, limit=limit, steps=steps, echo=click.echo, pairing_steps=pairing_steps,
             pairings=pairings, all_pairings=all_pairings, scale=scale)


if __name__ == "__main__":
    main()
