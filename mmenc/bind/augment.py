"""Cheap per-modality augmentation of loaded training items.

``augmenter(modality)`` returns ``augment(item, generator) -> item`` (applied to what the
modality's loader returned, before tokenization) or None when the modality has none:

- ``image``: a random resized crop (70-100 % of the area) and a mild colour jitter;
- ``audio`` and ``midi``: the functions their plugins provide, when installed
  (:data:`PLUGIN_AUGMENTERS`); none otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Augment = Callable[[Any, torch.Generator], Any]

# modality -> "module:function" of ``augment(item, generator) -> item`` in a plugin
PLUGIN_AUGMENTERS: dict[str, str] = {}


def augment_image(image: Any, generator: torch.Generator) -> Any:
    """A random crop of 70-100 % of the area (aspect 3:4..4:3), resized back, and brightness /
    contrast / saturation each scaled by a factor in [0.8, 1.2]."""
    from PIL import ImageEnhance

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    w, h = image.size
    area = uniform(0.7, 1.0) * w * h
    aspect = uniform(0.75, 4 / 3)
    cw = max(1, min(w, round((area * aspect) ** 0.5)))
    ch = max(1, min(h, round((area / aspect) ** 0.5)))
    left = int(uniform(0, w - cw + 1e-9))
    top = int(uniform(0, h - ch + 1e-9))
    out = image.crop((left, top, left + cw, top + ch)).resize((w, h))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enhance(out).enhance(uniform(0.8, 1.2))
    return out


def augmenter(modality: str) -> Augment | None:
    """The augmentation of ``modality``, or None."""
    if modality == "image":
        return augment_image
    target = PLUGIN_AUGMENTERS.get(modality)
    if target is None:
        return None
    from mmenc.specs import resolve

    try:
        return resolve(target)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return None
