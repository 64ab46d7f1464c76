"""The ``timeseries-patches`` tokenizer: series -> fixed-length patches, one token each.

Axis legend: ``b`` batch, ``n`` patches, ``p`` samples per patch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmenc.batch import TokenBatch
from mmenc_template.modality import load_timeseries

NAME = "timeseries-patches"
_MIN_STD = 1e-5


class PatchTokenizer:
    """Series -> ``TokenBatch(values=[b n p], mask=[b n])``.

    Each series is cut into patches of ``patch_size`` samples; the last patch of a series is
    filled up with ``pad_value``, and series with fewer patches than the longest get whole pad
    patches, marked False in the mask.

    Args:
        patch_size: samples per patch (the width ``p`` of a token).
        max_patches: longer series are cut to ``max_patches * patch_size`` samples; the model's
            position table has this many rows.
        normalize: standardise each series by its own mean and std (after the cut), so series of
            any scale meet one model; a flat series only has its mean removed.
        pad_value: the value of padding samples.
    """

    modality = "timeseries"

    def __init__(self, patch_size: int = 8, max_patches: int = 64, normalize: bool = True,
                 pad_value: float = 0.0) -> None:
        if int(patch_size) < 1 or int(max_patches) < 1:
            raise ValueError(f"patch_size and max_patches must be positive, got "
                             f"{patch_size} and {max_patches}")
        self.patch_size, self.max_patches = int(patch_size), int(max_patches)
        self.normalize, self.pad_value = bool(normalize), float(pad_value)

    def _prepare(self, item: object) -> np.ndarray:
        series = load_timeseries(item)[: self.max_patches * self.patch_size].astype(np.float64)
        if self.normalize:
            std = series.std()
            series = (series - series.mean()) / (std if std > _MIN_STD else 1.0)
        return series.astype(np.float32)

    def __call__(self, items: list[object]) -> TokenBatch:
        series = [self._prepare(item) for item in items]
        p = self.patch_size
        counts = torch.tensor([math.ceil(len(s) / p) for s in series])  # [b]
        n = int(counts.max())
        flat = torch.full((len(series), n * p), self.pad_value, dtype=torch.float32)  # [b (n p)]
        for i, s in enumerate(series):
            flat[i, : len(s)] = torch.from_numpy(s)
        mask = torch.arange(n)[None, :] < counts[:, None]  # [b n]
        return TokenBatch(values=flat.view(len(series), n, p), mask=mask)  # [b n p]

    def config(self) -> dict[str, object]:
        return {"tokenizer": NAME, "patch_size": self.patch_size,
                "max_patches": self.max_patches, "normalize": self.normalize,
                "pad_value": self.pad_value}

    def save(self, directory: str) -> None:
        """Nothing to write: the configuration is all there is."""


def build_tokenizer(config: dict[str, Any], directory: Path | None = None) -> PatchTokenizer:
    """A :class:`PatchTokenizer` from its ``config()`` (``directory`` holds no files of it)."""
    options = dict(config)
    name = options.pop("tokenizer", NAME)
    if name != NAME:
        raise ValueError(f"tokenizer config is for {name!r}, not {NAME!r}")
    return PatchTokenizer(**options)
