"""BEATs' front end: Kaldi fbank, normalisation, 16x16 patches and the official padding masks.

Axis legend: ``b`` batch, ``t`` samples, ``T`` fbank frames, ``F`` mel bins, ``n`` patches
(time-major: patch ``i = row * (F / p) + column``), ``p`` patch side.

The ``audio-fbank`` tokenizer computes each clip's fbank on its own samples (so a clip's tokens do
not depend on what it is batched with), cuts it into patch vectors ``[n p*p]`` and pads the batch
with masked zero patches: ``TokenBatch(values=[b n p*p], mask=[b n])``.
:func:`official_padding_mask` reproduces the official code's mask for padded *waveform* batches
(see :meth:`mmenc_audio.model.BEATsEncoder.extract_features`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmenc.batch import TokenBatch
from mmenc.errors import InputError
from mmenc_audio.audio import SAMPLE_RATE, WINDOW, load_audio

NAME = "audio-fbank"
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
FRAME_SHIFT = 160  # 10 ms at 16 kHz
DEFAULT_MAX_SECONDS = 30.0
"""What the tokenizer embeds of a clip when its ``max_seconds`` is not set: 3,000 patches (BEATs
was pretrained on 10 s clips; attention costs grow with the square of the length, and a
10-minute clip would need 7 GB in ``encode``)."""

_log = logging.getLogger(__name__)


def fbank(wave: Tensor, num_mel_bins: int = 128, mean: float = FBANK_MEAN,
          std: float = FBANK_STD) -> Tensor:
    """Normalised log-mel fbank of one clip, as BEATs computes it.

    Inputs:
        wave: [t] float samples in [-1, 1] at 16 kHz (at least 400).
    Returns:
        [T F] with ``T = 1 + (t - 400) // 160``, ``(fbank - mean) / (2 * std)``.
    """
    from torchaudio.compliance import kaldi

    feats = kaldi.fbank(wave[None] * 2**15, num_mel_bins=num_mel_bins,
                        sample_frequency=SAMPLE_RATE, frame_length=25, frame_shift=10)
    return (feats - mean) / (2 * std)


def preprocess(source: Tensor, num_mel_bins: int = 128) -> Tensor:
    """The official batched front end: every row of ``source`` [b t] -> ``fbank`` [b T F]."""
    return torch.stack([fbank(wave, num_mel_bins) for wave in source])


def official_padding_mask(mask: Tensor, n: int) -> Tensor:
    """The official ``forward_padding_mask``: [b L] (True = padding) -> [b n].

    The last ``L % n`` entries are dropped and each remaining run of ``L // n`` entries becomes
    one entry, padded only when the whole run is. Applied samples -> frames and frames -> patches,
    so the patch mask is not aligned with the time-major patch order; it is reproduced as is.
    """
    extra = mask.shape[1] % n
    if extra:
        mask = mask[:, :-extra]
    return mask.reshape(mask.shape[0], n, -1).all(-1)


def to_patches(feats: Tensor, patch: int = 16) -> Tensor:
    """[b T F] -> [b n p*p] patch vectors in the time-major order of BEATs' Conv2d patches.

    Trailing ``T % p`` frames are dropped, as the stride-p convolution does.
    """
    b, frames, bins = feats.shape
    rows, cols = frames // patch, bins // patch
    x = feats[:, : rows * patch, : cols * patch].reshape(b, rows, patch, cols, patch)
    return x.permute(0, 1, 3, 2, 4).reshape(b, rows * cols, patch * patch)


def min_samples(patch: int = 16) -> int:
    """Samples that give exactly one row of patches (``patch`` frames)."""
    return WINDOW + (patch - 1) * FRAME_SHIFT


class FbankPatchTokenizer:
    """Clips -> ``TokenBatch(values=[b n p*p], mask=[b n])`` of normalised fbank patches.

    Padding rule: a clip shorter than one patch row (``min_samples()``, 175 ms) is zero-padded
    at the end to that length; longer clips keep ``16 * (T // 16)`` frames.

    Cost cap: a clip is cut to its first ``max_seconds`` before the fbank is computed; ``stats``
    counts the items tokenized (``items``) and those cut (``cut``), and the first cut of a
    tokenizer is logged.

    Args:
        num_mel_bins: mel bins (BEATs: 128); must be a multiple of ``patch_size``.
        patch_size: patch side in frames and bins (BEATs: 16).
        max_seconds: clips are cut to this many seconds (None: :data:`DEFAULT_MAX_SECONDS`).
    """

    modality = "audio"

    def __init__(self, num_mel_bins: int = 128, patch_size: int = 16,
                 max_seconds: float | None = None) -> None:
        if int(patch_size) < 1 or int(num_mel_bins) % int(patch_size):
            raise ValueError(f"num_mel_bins={num_mel_bins} must be a multiple of "
                             f"patch_size={patch_size}")
        if max_seconds is not None and not float(max_seconds) > 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.num_mel_bins, self.patch_size = int(num_mel_bins), int(patch_size)
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.stats: Counter[str] = Counter()

    @property
    def cut_seconds(self) -> float:
        """The length clips are cut to."""
        return DEFAULT_MAX_SECONDS if self.max_seconds is None else self.max_seconds

    @property
    def patches_per_row(self) -> int:
        return self.num_mel_bins // self.patch_size

    def patches(self, wave: np.ndarray | Tensor) -> Tensor:
        """One clip (1-D, 16 kHz) -> [n p*p]."""
        wave = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        keep = int(self.cut_seconds * SAMPLE_RATE)
        if wave.shape[0] > keep:
            if not self.stats["cut"]:
                _log.warning("audio clips longer than %g s are cut to their first %g s "
                             "(the audio-fbank tokenizer's max_seconds)", self.cut_seconds,
                             self.cut_seconds)
            self.stats["cut"] += 1
            wave = wave[:keep]
        need = min_samples(self.patch_size)
        if wave.shape[0] < need:
            wave = torch.cat([wave, wave.new_zeros(need - wave.shape[0])])
        return to_patches(fbank(wave, self.num_mel_bins)[None], self.patch_size)[0]

    def __call__(self, items: list[object]) -> TokenBatch:
        clips = [load_audio(item) for item in items]  # idempotent on loaded clips
        self.stats["items"] += len(clips)
        rows = [self.patches(c) for c in clips]
        for item, r in zip(items, rows, strict=True):
            if not bool(torch.isfinite(r).all()):  # load_audio's limits make this unreachable
                raise InputError(item if isinstance(item, str) else type(item).__name__,
                                 "the fbank of this clip is not finite")
        n = max(r.shape[0] for r in rows)
        values = torch.zeros(len(rows), n, self.patch_size**2)
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        for i, r in enumerate(rows):
            values[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = True
        return TokenBatch(values=values, mask=mask)

    def config(self) -> dict[str, object]:
        return {"tokenizer": NAME, "num_mel_bins": self.num_mel_bins,
                "patch_size": self.patch_size, "max_seconds": self.max_seconds}

    def save(self, directory: str) -> None:
        """Nothing to write: the configuration is all there is."""


def build_tokenizer(config: dict[str, Any], directory: Path | None = None) -> FbankPatchTokenizer:
    """A :class:`FbankPatchTokenizer` from its ``config()``."""
    options = dict(config)
    name = options.pop("tokenizer", NAME)
    if name not in (NAME, "audio"):
        raise ValueError(f"tokenizer config is for {name!r}, not {NAME!r}")
    return FbankPatchTokenizer(**options)


def frames_for(samples: int) -> int:
    """Fbank frames of a clip of ``samples`` samples (Kaldi ``snip_edges``)."""
    return 0 if samples < WINDOW else 1 + (samples - WINDOW) // FRAME_SHIFT


def patches_for(samples: int, num_mel_bins: int = 128, patch: int = 16) -> int:
    """Patch tokens of a clip of ``samples`` samples."""
    return (frames_for(samples) // patch) * (num_mel_bins // patch)


__all__ = ["DEFAULT_MAX_SECONDS", "FBANK_MEAN", "FBANK_STD", "FbankPatchTokenizer",
           "build_tokenizer", "fbank", "frames_for", "min_samples", "official_padding_mask",
           "patches_for", "preprocess", "to_patches"]
