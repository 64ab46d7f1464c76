"""Cheap per-modality augmentation of loaded training items.

``augmenter(modality)`` returns ``augment(item, generator) -> item`` (applied to what the
modality's loader returned, before tokenization) or None when the modality has none:

- ``image``: a random resized crop (70-100 % of the area) and a mild colour jitter;
- ``audio``: a gain of -6..6 dB and white noise at 15-40 dB SNR (``mmenc_audio.augment``);
- ``midi``: a tempo change by 0.85..1.18 (``mmenc_midi.augment``); no transposition, since a
  tune's text names its key.

Audio and MIDI augmentation come from their plugins and are skipped when a plugin is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Augment = Callable[[Any, torch.Generator], Any]


def _numpy_rng(generator: torch.Generator) -> Any:
    import numpy as np

    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (), generator=generator)))


def augment_audio(audio: Any, generator: torch.Generator) -> Any:
    from mmenc_audio.augment import random_gain, random_noise

    from mmenc.errors import InputError

    rng = _numpy_rng(generator)
    audio, _ = random_gain(audio, rng)
    try:
        audio, _ = random_noise(audio, rng, 15.0, 40.0)
    except InputError:  # a silent clip has no SNR
        pass
    return audio


def augment_midi(score: Any, generator: torch.Generator) -> Any:
    from mmenc_midi.augment import random_tempo

    return random_tempo(score, _numpy_rng(generator), 0.85, 1.18)[0]


PLUGIN_AUGMENTERS: dict[str, Augment] = {"audio": augment_audio, "midi": augment_midi}


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
    import importlib.util

    plugin = {"audio": "mmenc_audio", "midi": "mmenc_midi"}.get(modality)
    if plugin is None or importlib.util.find_spec(plugin) is None:
        return None
    return PLUGIN_AUGMENTERS[modality]
