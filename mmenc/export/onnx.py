"""``mmenc export --format onnx``: a saved model's modalities as ONNX graphs, checked.

The output folder is a copy of the model folder (config, weights, tokenizer files) with
``onnx/`` added, so it loads with :func:`mmenc.load` like any saved model and serves with
``backend="onnx"``; exporting into the model's own folder adds ``onnx/`` in place.

Every graph is checked against the eager model on the modality's example items (the batch it
was traced with, and each item alone, which exercises other batch sizes and lengths) and on
the calibration items when given: an fp32 graph further than ``tolerance`` (max abs diff of
the embeddings) is an error. An int8 graph reports the cosine of its embeddings with fp32's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmenc.errors import CheckpointError
from mmenc.export.graph import OPSET, export_graph
from mmenc.export.runtime import (
    MANIFEST,
    MANIFEST_FORMAT,
    ONNX_DIR,
    graph_file,
    onnx_runner,
    require_onnx,
)

Echo = Callable[[str], None]


def example_items(modality: str) -> list[Any]:
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    return list(resolve(catalogue().get("modality", modality).example)())


def copy_model(src: Path, out: Path) -> None:
    """``out`` as a copy of the model folder ``src`` (its files, not an older ``onnx/``)."""
    if out.exists() and out.resolve() == src.resolve():
        return
    shutil.copytree(src, out, dirs_exist_ok=True, ignore=lambda d, names: [
        n for n in names if Path(d).resolve() == src.resolve() and n == ONNX_DIR])


def _embed(model: Any, items: Sequence[Any], modality: str, backend: str,
           batch_size: int = 32) -> Tensor:
    emb: Tensor = model.encode(items, modality, batch_size=batch_size, normalize=False,
                               backend=backend, show_progress_bar=False)
    return emb


def agreement(a: Tensor, b: Tensor) -> dict[str, float]:
    """Max abs diff and mean / min cosine of the rows of two ``[n e]`` embeddings."""
    cos = F.cosine_similarity(a, b, dim=-1)
    return {"max_abs_diff": float((a - b).abs().max()), "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min())}


def export_onnx(model_dir: str | Path, out: str | Path, modalities: Sequence[str] | None = None,
                int8: bool = False, calibration: dict[str, list[Any]] | None = None,
                tolerance: float = 1e-4, min_cosine: float | None = 0.99,
                warn_only: bool = False, echo: Echo = print) -> dict[str, Any]:
    """Export ``modalities`` (default: all) of the model in ``model_dir`` to ``out/onnx``.

    Args:
        model_dir: a saved model's folder.
        out: the output folder (a copy of ``model_dir`` plus ``onnx/``; may be ``model_dir``).
        modalities: which modalities; default every one the model encodes.
        int8: also write a dynamically quantised graph per modality.
        calibration: modality -> raw items on which agreement is measured (and the int8
            choices made); the modality's example items are always included.
        tolerance: the largest max abs diff accepted between the fp32 graph and eager.
        min_cosine: the smallest mean cosine accepted between int8 and fp32 embeddings (None:
            no check).
        warn_only: below ``min_cosine``, keep the int8 graph and warn instead of refusing.
        echo: where progress lines go.
    Returns:
        the manifest written to ``out/onnx/manifest.json``.
    """
    import mmenc
    from mmenc.retrieval.store import sha256_file

    require_onnx()
    model_dir, out = Path(model_dir), Path(out)
    copy_model(model_dir, out)
    model = mmenc.load(out).eval()
    wanted = list(modalities or model.modalities)
    for modality in wanted:
        model.check_modality(modality)
    manifest_path = out / ONNX_DIR / MANIFEST
    weights = sha256_file(out / "model.safetensors")
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "version": 1, "opset": OPSET,
                                "model_recipe": model.recipe, "model_weights_sha256": weights,
                                "output": "embedding before L2-normalisation", "graphs": {}}
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("model_weights_sha256") == weights:
            manifest["graphs"] = dict(old.get("graphs", {}))
    for modality in wanted:
        examples = example_items(modality)
        items = examples + list((calibration or {}).get(modality, []))
        batch = model.tokenize(examples, modality)
        fp32 = graph_file(out, modality, "fp32")
        inputs = export_graph(model, modality, batch, fp32)
        entry: dict[str, Any] = {"inputs": inputs}
        manifest["graphs"][modality] = entry
        _write(manifest_path, manifest)  # the runner checks the weights hash in it
        eager = _embed(model, items, modality, "torch")
        singles = torch.cat([_embed(model, [x], modality, "onnx") for x in examples])
        entry["fp32"] = {"file": fp32.name, "items": len(items),
                         **agreement(_embed(model, items, modality, "onnx"), eager),
                         "single_items_max_abs_diff":
                             float((singles - eager[: len(examples)]).abs().max())}
        worst = max(entry["fp32"]["max_abs_diff"], entry["fp32"]["single_items_max_abs_diff"])
        echo(f"{modality}: {fp32} ({len(items)} items, max abs diff {worst:.2e} vs eager)")
        if not worst <= tolerance:
            raise CheckpointError(f"{fp32}: the ONNX graph of {modality!r} differs from the eager "
                                  f"model by {worst:.3g} > {tolerance:g}")
        if int8:
            from mmenc.export.quantize import quantize_graph

            entry["int8"] = quantize_graph(model, modality, items, fp32,
                                           graph_file(out, modality, "int8"),
                                           reference=eager, min_cosine=min_cosine,
                                           warn_only=warn_only, echo=echo)
        _write(manifest_path, manifest)
    return manifest


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp.name, path)


def drop_cached_runners(model: Any) -> None:
    """Forget the sessions of ``model`` (after its graphs were rewritten)."""
    from mmenc.export.runtime import _RUNNERS

    _RUNNERS.pop(model, None)


__all__ = ["agreement", "drop_cached_runners", "export_onnx", "onnx_runner"]
