"""Serving exports: a saved model's towers as ONNX graphs run by ONNX Runtime.

``mmenc export MODEL OUT --format onnx`` writes ``OUT`` as a copy of the model folder with
``onnx/<modality>.onnx`` (fp32) and, with ``--int8``, ``onnx/<modality>.int8.onnx`` beside
``config.json``, plus ``onnx/manifest.json`` (the weights the graphs were made from, their
inputs and their measured agreement with the eager model). ``Encoder.encode(...,
backend="onnx")`` (or ``"onnx-int8"``) then runs those graphs; tokenization stays in Python.

Each graph maps the tensors of a :class:`mmenc.batch.TokenBatch` to what
:meth:`mmenc.Encoder.embed` returns: the pooled, projected embedding *before*
L2-normalisation, so Matryoshka truncation and normalisation happen in ``encode`` exactly as
for the eager model.
"""

from __future__ import annotations

BACKENDS = ("torch", "onnx", "onnx-int8")


def precision_of(backend: str) -> str:
    """The precision of the vectors a backend makes: ``"fp32"`` or ``"int8"``."""
    if backend not in BACKENDS:
        from mmenc.errors import UnknownNameError

        raise UnknownNameError("backend", backend, BACKENDS)
    return "int8" if backend.endswith("-int8") else "fp32"


def check_precision(store: object, meta: dict[str, str], backend: str) -> None:
    """Refuse to mix vectors of two precisions in one store.

    ``meta`` is the store's; a store written before backends were recorded holds eager fp32
    vectors. fp32 vectors of the eager model and of its ONNX graph agree within 1e-4 and mix.
    """
    from mmenc.retrieval.store import StoreError

    stored = meta.get("precision", "fp32")
    wanted = precision_of(backend)
    if stored != wanted:
        made_by = meta.get("backend", "torch")
        raise StoreError(f"{store} holds {stored} embeddings (backend {made_by}), refusing "
                         f"{wanted} ones (backend {backend}): vectors of two precisions do not "
                         f"mix; use another store or --backend {made_by}")
