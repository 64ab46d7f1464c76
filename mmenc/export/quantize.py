"""int8 graphs: ONNX Runtime dynamic quantisation with per-layer choices that keep answers.

Weights become int8 (per output channel), activations are quantised per batch at run time.
Some layers hold activations with outliers that 8 bits do not: the second feed-forward GEMM
reads GELU outputs, and the final projection writes the embedding itself. The policies below
quantise less and less; the first whose embeddings agree with fp32's (mean cosine on the
calibration items) at ``min_cosine`` or better is kept. Below it on every policy, the export is
refused, or kept with a warning when asked.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmenc.errors import CheckpointError
from mmenc.export.graph import feed
from mmenc.export.runtime import session

Echo = Callable[[str], None]

# name -> (op types to quantise, node-name endings to leave in fp32), most quantised first
POLICIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "all": (("MatMul", "Attention"), ("/proj/MatMul", "embed_proj/MatMul")),
    "keep-ffn-out": (("MatMul", "Attention"),
                     ("/proj/MatMul", "embed_proj/MatMul", "/ffn/fc2/MatMul")),
    "attention-only": (("Attention",), ()),
}


class LowAgreementWarning(UserWarning):
    """An int8 graph kept although it agrees with fp32 less than asked."""


def graph_nodes(path: Path) -> list[tuple[str, str]]:
    """``(op_type, name)`` of every node of an ONNX file."""
    import onnx

    return [(n.op_type, n.name) for n in onnx.load(str(path), load_external_data=False).graph.node]


def quantize(fp32: Path, int8: Path, policy: str) -> list[str]:
    """Write the int8 graph of ``fp32`` under ``policy``; returns the nodes kept in fp32."""
    from onnxruntime.quantization import (
        QuantType,
        quantize_dynamic,
    )

    ops, keep = POLICIES[policy]
    excluded = [name for op, name in graph_nodes(fp32)
                if op in ("MatMul", "Attention") and (op not in ops or name.endswith(keep))]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process logs a warning on every call
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=list(ops), nodes_to_exclude=excluded)
    finally:
        root.setLevel(level)
    return excluded


def run_graph(model: Any, path: Path, items: Sequence[Any], modality: str,
              batch_size: int = 32) -> Tensor:
    """Embeddings ``[n e]`` (not normalised) of ``items`` by the graph at ``path``."""
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]
    out = []
    for start in range(0, len(items), batch_size):
        batch = model.tokenize(list(items[start : start + batch_size]), modality)
        out.append(torch.from_numpy(sess.run(None, feed(batch, names))[0]))
    return torch.cat(out)


def quantize_graph(model: Any, modality: str, items: Sequence[Any], fp32: Path, int8: Path,
                   reference: Tensor, min_cosine: float | None = 0.99, warn_only: bool = False,
                   policies: Sequence[str] = tuple(POLICIES), echo: Echo = print
                   ) -> dict[str, Any]:
    """Quantise ``fp32`` into ``int8`` with the first policy that keeps the agreement.

    Args:
        model: the eager model (its tokenizer feeds the graphs).
        items: calibration items; ``reference`` is their fp32 embeddings ``[n e]``.
        min_cosine: the mean cosine to reach (None: take the first policy).
        warn_only: below ``min_cosine`` on every policy, keep the last one with a warning.
    Returns:
        the policy, the nodes left in fp32 and the agreement (mean / min cosine, max abs diff).
    """
    report: dict[str, Any] = {}
    tried = {}
    for policy in policies:
        excluded = quantize(fp32, int8, policy)
        got = run_graph(model, int8, items, modality)
        cos = F.cosine_similarity(got, reference, dim=-1)
        report = {"file": int8.name, "policy": policy, "fp32_nodes": excluded,
                  "items": len(items), "cosine_mean": float(cos.mean()),
                  "cosine_min": float(cos.min()),
                  "max_abs_diff": float((got - reference).abs().max())}
        tried[policy] = report["cosine_mean"]
        echo(f"{modality}: int8 policy {policy!r}: cosine with fp32 mean "
             f"{report['cosine_mean']:.4f}, min {report['cosine_min']:.4f} ({len(items)} items)")
        if min_cosine is None or report["cosine_mean"] >= min_cosine:
            return report
    assert min_cosine is not None
    summary = ", ".join(f"{p} {c:.4f}" for p, c in tried.items())
    message = (f"{int8}: int8 embeddings of {modality!r} agree with fp32 at mean cosine "
               f"{report['cosine_mean']:.4f} < {min_cosine} on every policy ({summary})")
    if not warn_only:
        int8.unlink(missing_ok=True)
        raise CheckpointError(message + "; lower --min-cosine or pass --warn-only to keep it")
    warnings.warn(message, LowAgreementWarning, stacklevel=2)
    echo(f"warning: {message}")
    report["below_min_cosine"] = min_cosine
    return report
