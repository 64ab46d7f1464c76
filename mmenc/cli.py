"""The ``mmenc`` command line.

Core commands live here; plugins add sub-commands through ``mmenc_register_commands``, imported
only when they run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mmenc.errors import MmencError


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
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MmencError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=MmencGroup)
@click.version_option(package_name="mmenc")
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

    rows = [
        {"name": e.spec.name, "modalities": list(e.spec.modalities), "fusion": e.spec.fusion,
         "plugin": e.plugin.name, "description": e.spec.description}
        for e in catalogue().models(pattern, modality)
    ]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no models match", err=True)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {','.join(r['modalities']):<12} {r['fusion']:<8} "
                   f"{r['plugin']:<10} {r['description']}")


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
    from mmenc.registry import catalogue
    from mmenc.factory import convert

    cat = catalogue()
    if list_formats:
        for e in cat.entries("converter"):
            click.echo(f"{e.spec.format:<16} {e.plugin.name:<10} {e.spec.description}")
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
    model = convert(fmt, src, out_dir, **kwargs)
    n = sum(p.numel() for p in model.parameters())
    click.echo(f"converted {src} ({fmt}) -> {out_dir} [{model.recipe}, {n / 1e6:.2f} M parameters]")


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
def demo_cmd(out: Path, limit: int | None, steps: int, pairing_steps: int | None) -> None:
    """The main job: convert a packaged checkpoint, pretrain, retrieve held-out real data."""
    from mmenc.demo import run_demo

    run_demo(out, limit=limit, steps=steps, echo=click.echo, pairing_steps=pairing_steps)


if __name__ == "__main__":
    main()
