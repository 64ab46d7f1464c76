"""``mmenc midi-tokenize``: tokenize a corpus of MIDI files, skipping and counting bad ones."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

SUFFIXES = (".mid", ".midi", ".smf", ".kar")


def corpus_files(inputs: tuple[Path, ...]) -> list[Path]:
    """The files named, and the MIDI files (by suffix) under the folders named, sorted."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in SUFFIXES))
        else:
            files.append(path)
    return files


@click.command("midi-tokenize")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tokenizer", "name", default="midi-cp", show_default=True,
              type=click.Choice(["midi-cp", "midi-octuple", "midi-remi"]))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the tokens to this .npz (tokens, offsets per file, file names).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def midi_tokenize(inputs: tuple[Path, ...], name: str, out: Path | None, as_json: bool) -> None:
    """Tokenize MIDI files (and folders of them); bad files are skipped and counted."""
    import numpy as np

    from mmenc_midi.tokenizers import tokenize_many, tokenizer_for

    files = corpus_files(inputs)
    if not files:
        raise click.ClickException(f"no MIDI files ({', '.join(SUFFIXES)}) in "
                                   f"{', '.join(map(str, inputs))}")
    start = time.perf_counter()
    report = tokenize_many(files, tokenizer_for({"tokenizer": name}))
    seconds = time.perf_counter() - start
    done = sorted(report.rows)
    tokens = sum(len(report.rows[i]) for i in done)
    summary = {"files": len(files), "tokenized": len(done), "skipped": len(report.skipped),
               "tokens": tokens, "reasons": dict(report.counts),
               "files_per_s": len(files) / seconds if seconds > 0 else None}
    if out is not None:
        rows = [report.rows[i] for i in done]
        offsets = np.cumsum([0] + [len(r) for r in rows])
        empty = np.zeros((0,) if name == "midi-remi" else (0, 1), dtype=np.int64)
        np.savez(out, tokens=np.concatenate(rows) if rows else empty, offsets=offsets,
                 files=np.array([str(files[i]) for i in done]))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"{name}: tokenized {len(done)} of {len(files)} files ({tokens} tokens), "
                   f"skipped {len(report.skipped)}")
        for reason, count in report.counts.most_common():
            click.echo(f"  {count:>6}  {reason}")
    if not done:  # a run that did nothing is a failure, whatever the output format
        reasons = ", ".join(f"{n} x {r}" for r, n in report.counts.most_common())
        raise click.ClickException(f"no file could be tokenized ({reasons})")
