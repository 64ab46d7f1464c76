"""Cheap waveform augmentations, deterministic given a ``numpy.random.Generator``.

Each augmentation has a fixed-parameter form (``apply_gain(audio, 6.0)``) and a random form that
draws its parameter from ``rng`` and returns it with the result, so a training loop can log
what it did. Inputs are mono float arrays (``[n]``, any float dtype; the result is float32);
nothing is clipped (a float waveform may exceed 1).

API:

- ``apply_gain(audio, db) -> np.ndarray``: ``audio * 10 ** (db / 20)`` (RMS scaled by ``db``).
- ``random_gain(audio, rng, low_db=-6.0, high_db=6.0) -> (audio, db)``: ``db`` uniform.
- ``shift(audio, samples) -> np.ndarray``: same length; ``samples > 0`` puts that much
  silence first (the end falls off), ``samples < 0`` cuts that much off the start (silence
  fills the end).
- ``random_offset(audio, rng, max_seconds=2.0, sample_rate=16000) -> (audio, samples)``:
  ``shift`` by a uniform offset in ``[-max_seconds, max_seconds]``.
- ``crop(audio, length, start) -> np.ndarray``: ``audio[start:start + length]``, zero-padded
  at the end to ``length``.
- ``random_crop(audio, rng, length) -> (audio, start)``: a uniform start (0 when shorter).
- ``add_noise(audio, snr_db, rng) -> np.ndarray``: white Gaussian noise scaled so that the
  signal-to-noise power ratio is exactly ``snr_db``. Raises :class:`~mmenc.errors.InputError`
  on a silent clip (its SNR is undefined) or a non-finite one.
- ``random_noise(audio, rng, low_db=10.0, high_db=30.0) -> (audio, snr_db)``.
"""

from __future__ import annotations

import numpy as np

from mmenc.errors import InputError


def _mono(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise InputError(f"<array {x.shape}>", "expected mono samples [n]")
    return x


def apply_gain(audio: np.ndarray, db: float) -> np.ndarray:
    """``audio`` scaled by ``db`` decibels."""
    return _mono(audio) * np.float32(10.0 ** (db / 20.0))


def random_gain(audio: np.ndarray, rng: np.random.Generator, low_db: float = -6.0,
                high_db: float = 6.0) -> tuple[np.ndarray, float]:
    """A gain drawn uniformly in ``[low_db, high_db]``, and the gain."""
    db = float(rng.uniform(low_db, high_db))
    return apply_gain(audio, db), db


def shift(audio: np.ndarray, samples: int) -> np.ndarray:
    """``audio`` moved by ``samples`` (silence first if positive, start cut if negative)."""
    x = _mono(audio)
    out = np.zeros_like(x)
    k = int(samples)
    if k >= 0:
        out[k:] = x[: max(x.size - k, 0)]
    else:
        out[: max(x.size + k, 0)] = x[-k:]
    return out


def random_offset(audio: np.ndarray, rng: np.random.Generator, max_seconds: float = 2.0,
                  sample_rate: int = 16_000) -> tuple[np.ndarray, int]:
    """``audio`` shifted by a uniform offset of at most ``max_seconds``, and the offset."""
    limit = int(round(max_seconds * sample_rate))
    samples = int(rng.integers(-limit, limit + 1))
    return shift(audio, samples), samples


def crop(audio: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    """``length`` samples from ``start`` (zero-padded at the end)."""
    x = _mono(audio)[max(int(start), 0):][: int(length)]
    return np.pad(x, (0, int(length) - x.size))


def random_crop(audio: np.ndarray, rng: np.random.Generator, length: int
                ) -> tuple[np.ndarray, int]:
    """A ``length``-sample window at a uniform start, and the start."""
    room = _mono(audio).size - int(length)
    start = int(rng.integers(0, room + 1)) if room > 0 else 0
    return crop(audio, length, start), start


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``audio`` plus white Gaussian noise at exactly ``snr_db`` signal-to-noise ratio."""
    x = _mono(audio)
    if not np.isfinite(x).all():
        raise InputError(f"<array {x.shape}>", "samples are not finite")
    power = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    if power == 0.0:
        raise InputError(f"<array {x.shape}>", "silent clip: the SNR of added noise is undefined")
    noise = rng.standard_normal(x.size)
    noise *= np.sqrt(power / 10.0 ** (snr_db / 10.0) / np.mean(np.square(noise)))
    return (x + noise).astype(np.float32)


def random_noise(audio: np.ndarray, rng: np.random.Generator, low_db: float = 10.0,
                 high_db: float = 30.0) -> tuple[np.ndarray, float]:
    """Noise at an SNR drawn uniformly in ``[low_db, high_db]``, and the SNR."""
    snr = float(rng.uniform(low_db, high_db))
    return add_noise(audio, snr, rng), snr
