"""Binding: one space for every modality (a frozen hub and one tower per other modality).

See docs/binding.md. Heavy parts are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BoundEncoder": "mmenc.bind.model",
    "EncoderTower": "mmenc.bind.towers",
    "Tower": "mmenc.bind.towers",
    "build_tower": "mmenc.bind.towers",
    "HubCache": "mmenc.bind.cache",
    "HubLoss": "mmenc.bind.losses",
    "BindConfig": "mmenc.bind.train",
    "train_bound": "mmenc.bind.train",
    "add_modality": "mmenc.bind.train",
    "HUBS": "mmenc.bind.hubs",
    "build_hub": "mmenc.bind.hubs",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmenc.bind' has no attribute {name!r}")
