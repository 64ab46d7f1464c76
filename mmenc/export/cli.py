"""``mmenc export``: registered by the built-in plugin, imported only when it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _calibration(manifest: Path | None, field: str | None, modalities: list[str]
                 ) -> dict[str, list[Any]]:
    """Raw items per modality from a JSONL manifest (each line's ``field``, or the modality's
    name as its field)."""
    if manifest is None:
        return {}
    from mmenc.retrieval.evaluate import read_manifest, resolve_value

    rows = read_manifest(manifest)
    base = manifest.resolve().parent
    out: dict[str, list[Any]] = {}
    for modality in modalities:
        key = field or modality
        out[modality] = [resolve_value(r[key], modality, base) for r in rows if key in r]
    return out


@click.command("export")
@click.argument("model_dir", metavar="MODEL",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--modality", "-m", "modalities", multiple=True,
              help="A modality to export (repeatable) [default: all of the model's].")
@click.option("--int8", is_flag=True, help="Also write dynamically quantised int8 graphs.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSONL manifest of items on which the agreement with eager (and of int8 "
                   "with fp32) is measured, beside the modality's examples.")
@click.option("--field", help="Manifest field of the items [default: the modality's name].")
@click.option("--tolerance", default=1e-4, show_default=True,
              help="Largest max abs diff accepted between an fp32 graph and the eager model.")
@click.option("--min-cosine", default=0.99, show_default=True,
              help="Smallest mean cosine accepted between int8 and fp32 embeddings.")
@click.option("--warn-only", is_flag=True,
              help="Below --min-cosine, keep the int8 graph with a warning instead of refusing.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def export(model_dir: Path, out: Path, fmt: str, modalities: tuple[str, ...], int8: bool,
           calibration: Path | None, field: str | None, tolerance: float, min_cosine: float,
           warn_only: bool, as_json: bool) -> None:
    """Export MODEL's towers for serving into OUT (a copy of MODEL with onnx/ added; OUT may
    be MODEL). Each graph ends in the embedding before L2-normalisation and is checked against
    the eager model; serve it with ``--backend onnx`` (or ``onnx-int8``)."""
    import mmenc
    from mmenc.export.onnx import export_onnx

    wanted = list(modalities) or None
    items = {} if calibration is None else _calibration(
        calibration, field, wanted or list(mmenc.load(model_dir).modalities))
    manifest = export_onnx(model_dir, out, wanted, int8=int8, calibration=items,
                           tolerance=tolerance, min_cosine=min_cosine, warn_only=warn_only,
                           echo=lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    for modality, graph in manifest["graphs"].items():
        line = (f"{modality}: fp32 max abs diff {graph['fp32']['max_abs_diff']:.2e}")
        if "int8" in graph:
            q = graph["int8"]
            line += (f"; int8 ({q['policy']}) cosine mean {q['cosine_mean']:.4f} "
                     f"min {q['cosine_min']:.4f}")
        click.echo(line)
    click.echo(f"exported to {out / 'onnx'}")
