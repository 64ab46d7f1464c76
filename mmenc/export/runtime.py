"""Running exported graphs with ONNX Runtime behind ``Encoder.encode(..., backend="onnx")``.

A model loaded from a folder remembers it (``model.directory``); its graphs are
``<folder>/onnx/<modality>.onnx`` and ``<modality>.int8.onnx``. The names are fixed, never read
from a file, and the manifest's weights hash must be the folder's: graphs exported from other
weights are refused, since their vectors would not match the store's model.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmenc.batch import TokenBatch
from mmenc.checkpoint import read_json
from mmenc.errors import CheckpointError, MmencError
from mmenc.export import precision_of
from mmenc.export.graph import feed

ONNX_DIR = "onnx"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "mmenc-onnx"

Runner = Callable[[TokenBatch, str], Tensor]
_RUNNERS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Runner]] = \
    weakref.WeakKeyDictionary()


class MissingExtraError(MmencError, ImportError):
    """An optional dependency of mmenc that is not installed."""


def require_onnx() -> Any:
    """``onnxruntime``, or a one-line error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError("the ONNX backend needs onnx and onnxruntime: "
                                "pip install 'mmenc[onnx]'") from None
    return onnxruntime


def graph_file(directory: str | Path, modality: str, precision: str) -> Path:
    suffix = ".int8.onnx" if precision == "int8" else ".onnx"
    return Path(directory) / ONNX_DIR / f"{modality}{suffix}"


def session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation, ``threads`` intra-op threads
    (default: torch's thread count, so ``torch.set_num_threads`` governs both backends)."""
    ort = require_onnx()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_manifest(directory: Path, weights_sha256: str | None = None) -> dict[str, Any]:
    """The export manifest of a model folder, checked to belong to the folder's weights."""
    from mmenc.retrieval.store import sha256_file

    path = directory / ONNX_DIR / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: no ONNX export ({path} missing); run "
                              f"`mmenc export {directory} {directory} --format onnx`")
    manifest = read_json(path)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: not an mmenc ONNX manifest")
    actual = weights_sha256 or sha256_file(directory / "model.safetensors")
    if manifest.get("model_weights_sha256") != actual:
        raise CheckpointError(f"{directory / ONNX_DIR}: exported from other weights than "
                              f"{directory / 'model.safetensors'}; run `mmenc export` again")
    return manifest


def onnx_runner(model: Any, modality: str, backend: str) -> Runner:
    """``embed(batch, modality)`` of ``model`` run by ONNX Runtime (cached per model)."""
    precision = precision_of(backend)
    cache = _RUNNERS.setdefault(model, {})
    if (modality, precision) in cache:
        return cache[(modality, precision)]
    directory = getattr(model, "directory", None)
    if directory is None:
        raise CheckpointError(f"backend {backend!r} runs graphs exported from a saved model: "
                              "save this model and run `mmenc export MODEL OUT --format onnx`, "
                              "then load OUT")
    directory = Path(directory)
    path = graph_file(directory, modality, precision)
    if not path.is_file():
        flag = " --int8" if precision == "int8" else ""
        raise CheckpointError(f"{directory}: no {precision} ONNX graph of modality {modality!r} "
                              f"({path} missing); run `mmenc export {directory} {directory} "
                              f"--format onnx --modality {modality}{flag}`")
    check_manifest(directory)
    sess = session(path)
    wanted = [i.name for i in sess.get_inputs()]

    def run(batch: TokenBatch, modality: str) -> Tensor:
        (out,) = sess.run(None, feed(batch, wanted))
        return torch.from_numpy(out)

    cache[(modality, precision)] = run
    return run


class BackendModel:
    """A model whose ``encode`` runs on ``backend``; everything else is the model's.

    Lets the code that calls ``model.encode`` (stores, evaluation) run exported graphs
    unchanged. The graphs of ``modalities`` are opened at once, so a missing export is one
    error up front rather than every item failing.
    """

    def __init__(self, model: Any, backend: str, modalities: tuple[str, ...] = ()) -> None:
        precision_of(backend)
        self._model, self.backend = model, backend
        for modality in modalities:
            if backend != "torch":
                onnx_runner(model, modality, backend)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("backend", self.backend)
        return self._model.encode(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def with_backend(model: Any, backend: str, *modalities: str) -> Any:
    """``model`` itself for ``"torch"``, else a :class:`BackendModel` on ``backend``."""
    return model if backend == "torch" else BackendModel(model, backend, modalities)
