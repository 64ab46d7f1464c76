"""One modality of a model as an ONNX graph: ``TokenBatch`` tensors in, the embedding out.

The graph's inputs are named after the batch's fields: ``ids`` or ``values``, ``mask`` and
``extra_<name>`` for each entry of ``extras``. Axis 0 of every input is the dynamic batch
axis; axis 1 is the dynamic length axis wherever it has the length of ``mask`` (or of
``ids``). The output ``embedding`` ``[b e]`` is :meth:`mmenc.Encoder.embed`'s, before
L2-normalisation.

The TorchScript exporter (``dynamo=False``) is used: it exports the trunk's SDPA attention
with its additive padding mask as plain MatMul/Softmax nodes that ONNX Runtime's optimiser
fuses, and needs only the ``onnx`` package.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.batch import TokenBatch

OPSET = 17
OUTPUT = "embedding"
EXTRA = "extra_"


def graph_inputs(batch: TokenBatch) -> tuple[list[str], list[Tensor], dict[str, dict[int, str]]]:
    """The names, tensors and dynamic axes of a batch's graph inputs."""
    names: list[str] = []
    tensors: list[Tensor] = []
    if batch.ids is not None:
        names.append("ids")
        tensors.append(batch.ids)
    elif batch.values is not None:
        names.append("values")
        tensors.append(batch.values)
    else:
        raise ValueError("a batch without ids or values cannot be exported")
    if batch.mask is not None:
        names.append("mask")
        tensors.append(batch.mask)
    for key in sorted(batch.extras):
        names.append(EXTRA + key)
        tensors.append(batch.extras[key])
    length = batch.mask.shape[1] if batch.mask is not None else (
        batch.ids.shape[1] if batch.ids is not None else None)
    axes: dict[str, dict[int, str]] = {}
    for name, tensor in zip(names, tensors, strict=True):
        axes[name] = {0: "batch"}
        if length is not None and tensor.dim() >= 2 and tensor.shape[1] == length:
            axes[name][1] = "length"
    return names, tensors, axes


class EmbedGraph(nn.Module):
    """The module that is traced: rebuilds the ``TokenBatch`` and calls ``model.embed``.

    Args:
        model: the encoder (in eval mode).
        modality: the modality it embeds.
        names: the graph input names, in the order of ``forward``'s arguments.
        pad_id: the batch's pad id (a constant of the tokenizer).
    """

    def __init__(self, model: nn.Module, modality: str, names: list[str],
                 pad_id: int | tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.modality, self.names, self.pad_id = model, modality, names, pad_id

    def forward(self, *tensors: Tensor) -> Tensor:
        given = dict(zip(self.names, tensors, strict=True))
        batch = TokenBatch(ids=given.get("ids"), values=given.get("values"),
                           mask=given.get("mask"), pad_id=self.pad_id,
                           extras={k[len(EXTRA):]: v for k, v in given.items()
                                   if k.startswith(EXTRA)})
        return self.model.embed(batch, self.modality)  # type: ignore[no-any-return,operator]


def export_graph(model: nn.Module, modality: str, batch: TokenBatch, path: Path,
                 fuse: bool = True) -> list[str]:
    """Trace ``model.embed`` on ``batch`` into an ONNX file at ``path``.

    Args:
        fuse: trace plain self-attention layers as ONNX Runtime's fused ``Attention`` node
            (:mod:`mmenc.export.fused`); without it the graph holds standard ONNX ops only.
    Returns:
        the graph's input names.
    """
    from mmenc.export.fused import DOMAIN, fused_attention

    names, tensors, axes = graph_inputs(batch)
    wrapper = EmbedGraph(model, modality, names, batch.pad_id).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), \
            (fused_attention(model) if fuse else nullcontext(0)) as fused:
        # the TorchScript exporter announces its deprecation and warns about traced shapes
        warnings.simplefilter("ignore")
        # the fused node's domain is declared only when a layer uses it (BEATs' layers do not:
        # the exporter would warn that the domain is unused)
        torch.onnx.export(wrapper, tuple(tensors), str(path), input_names=names,
                          output_names=[OUTPUT], dynamic_axes={**axes, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False,
                          custom_opsets={DOMAIN: 1} if fused else None)
    return names


def feed(batch: TokenBatch, wanted: list[str]) -> dict[str, Any]:
    """The numpy arrays of ``batch`` that a graph with inputs ``wanted`` reads.

    A graph traced with a padding mask gets an all-true mask for a batch without one; an input
    the batch does not have is an error naming it.
    """
    out: dict[str, Any] = {}
    for name in wanted:
        if name in ("ids", "values"):
            tensor = getattr(batch, name)
        elif name == "mask":
            tensor = batch.mask
            if tensor is None:
                ref = batch.ids if batch.ids is not None else batch.values
                assert ref is not None
                tensor = torch.ones(ref.shape[:2], dtype=torch.bool)
        else:
            tensor = batch.extras.get(name[len(EXTRA):])
        if tensor is None:
            raise ValueError(f"the graph reads {name!r}, which this batch does not have")
        out[name] = tensor.detach().cpu().contiguous().numpy()
    return out
