"""``mmenc audio``: ``iterate`` (BEATs' iterative pre-training) and ``manifests`` (real audio
from installed Debian packages)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mmenc.errors import MmencError


@click.group("audio")
def audio() -> None:
    """Audio tools of mmenc-audio."""


@audio.command("iterate")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--resume", is_flag=True,
              help="Skip finished stages and continue an unfinished one from its checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def iterate_command(config: str, resume: bool, as_json: bool) -> None:
    """Iterative BEATs pre-training as CONFIG (YAML) says: a random-projection tokenizer ->
    model 1, then tokenizer k distilled from model k-1 -> model k. See docs/plugins/audio.md."""
    from mmenc_audio.iterate import iterate

    try:
        report = iterate(config, resume=resume, echo=None if as_json else click.echo)
    except MmencError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{len(report['stages'])} stages in {report['seconds']:.1f} s; final model: "
               f"{report['final_model']}")


@audio.command("manifests")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", "sources", multiple=True, type=click.Choice(["speech", "sounds"]),
              help="Which packages to read (default: both).")
def manifests_command(out: Path, sources: tuple[str, ...]) -> None:
    """Write OUT/train.jsonl and OUT/test.jsonl ({"id", "audio", "text"} per clip) from the
    installed asterisk-core-sounds-en(-wav) and sonic-pi-samples packages (read in place)."""
    from mmenc_audio.data import write_manifests

    try:
        paths = write_manifests(out, sources or ("speech", "sounds"))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    for split, path in paths.items():
        count = sum(1 for _ in path.open(encoding="utf-8"))
        click.echo(f"{split}: {count} clips -> {path}")
