"""Building models from the catalogue and importing foreign checkpoints."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any

from mmenc.registry import catalogue
from mmenc.model import Encoder
from mmenc.specs import resolve


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, nested dicts key by key."""
    out = deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = deepcopy(value)
    return out


def create_model(name: str, **overrides: Any) -> Encoder:
    """A new, randomly initialised model of the recipe ``name``.

    Keyword arguments override entries of the recipe's default configuration.
    """
    spec = catalogue().get("model", name)
    config = merge_config(spec.default_config(), overrides)
    model: Encoder = resolve(spec.builder)(config, directory=None)
    model.recipe = spec.name
    return model


def convert(fmt: str, src: str | Path, out_dir: str | Path | None = None, **options: Any) -> Encoder:
    """Import a checkpoint in format ``fmt`` (see ``mmenc convert --list``).

    The converted model is returned and, when ``out_dir`` is given, saved there in mmenc's
    format.
    """
    spec = catalogue().get("converter", fmt)
    model: Encoder = resolve(spec.target)(Path(src), **options)
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return model
