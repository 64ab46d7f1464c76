"""mmenc: multimodal encoders on one shared transformer trunk, extended by plugins.

Public names are imported lazily so that ``import mmenc`` (and listing the catalogue) stays
cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "catalogue": "mmenc.registry",
    "build_catalogue": "mmenc.registry",
    "Catalogue": "mmenc.registry",
    "hookimpl": "mmenc.hookspecs",
    "ModalitySpec": "mmenc.specs",
    "TokenizerSpec": "mmenc.specs",
    "FusionSpec": "mmenc.specs",
    "TowerSpec": "mmenc.specs",
    "ObjectiveSpec": "mmenc.specs",
    "ModelSpec": "mmenc.specs",
    "ConverterSpec": "mmenc.specs",
    "ParitySpec": "mmenc.specs",
    "CommandSpec": "mmenc.specs",
    "TokenBatch": "mmenc.batch",
    "Features": "mmenc.batch",
    "Tower": "mmenc.batch",
    "Encoder": "mmenc.model",
    "load": "mmenc.model",
    "create_model": "mmenc.factory",
    "get_tokenizer": "mmenc.factory",
    "list_models": "mmenc.factory",
    "convert": "mmenc.factory",
    "InputError": "mmenc.errors",
    "CheckpointError": "mmenc.errors",
    "ConfigError": "mmenc.errors",
    "UnknownNameError": "mmenc.errors",
    "similarity": "mmenc.retrieval.search",
    "semantic_search": "mmenc.retrieval.search",
    "build_zero_shot_classifier": "mmenc.retrieval.search",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmenc' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too, so completion and dir(mmenc) show the public API
    return sorted({*globals(), *_EXPORTS})
