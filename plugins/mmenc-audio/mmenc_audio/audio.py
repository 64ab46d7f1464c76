"""The ``audio`` modality: reading, validating, resampling and mixing down one clip.

A raw item is one of:

- a path (``str`` / ``os.PathLike``) of a file libsndfile reads (WAV, FLAC, OGG, ...);
- ``bytes`` holding such a file;
- a 1-D or 2-D (``[samples, channels]``) numpy array or torch tensor, taken to be at 16 kHz;
- a tuple ``(array, sample_rate)``.

Conversion rules (what is accepted and changed rather than refused):

- integer PCM of any width (8-bit unsigned, 16-, 24-, 32-bit signed) is scaled by libsndfile to
  ``[-1, 1)``; float files are kept as stored (values beyond ``[-1, 1]`` are not clipped, up
  to a magnitude of :data:`MAX_AMPLITUDE`);
- several channels are mixed down to mono by their mean;
- any sample rate in ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]`` is resampled to 16 kHz
  (``torchaudio.functional.resample``, windowed sinc). The sinc kernel has as many rows and
  columns as the terms of the reduced ratio ``16000 / rate``; where that kernel would pass
  :data:`MAX_RESAMPLE_KERNEL` elements (odd rates such as 44,099 Hz: 6 GB, 767,999 Hz: 49 GB)
  the clip is resampled at the nearest ratio with small terms instead
  (:func:`resample_ratio`, within 3e-5 of the exact one), so resampling costs memory linear in
  the clip whatever the rate; every common rate keeps its exact ratio;
- a clip shorter than one 25 ms window (:data:`WINDOW` samples) after resampling is
  zero-padded to one window and counted in :data:`PADDED`;
- clips that give fewer frames than one 16-frame patch row are zero-padded by the tokenizer
  (:mod:`mmenc_audio.frontend`).

Refused with :class:`mmenc.errors.InputError` naming the item: unreadable or corrupt files, no
samples, NaN or Inf samples, samples beyond :data:`MAX_AMPLITUDE`, sample rates outside the
range above, arrays of more than two
dimensions or of a non-numeric dtype, and clips beyond the cost caps of :class:`AudioLimits`
(length in seconds, decoded samples, channels), which for files are read from the header
*before* anything is decoded. The caps in force are :data:`LIMITS`; pass ``limits=`` to
:func:`load_audio`, or replace ``mmenc_audio.audio.LIMITS`` to change them for every caller
(``Encoder.encode`` calls the loader with the item alone).
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mmenc.errors import InputError

SAMPLE_RATE = 16_000
"""The rate every clip is resampled to (BEATs' front end assumes it)."""
WINDOW = 400
"""Samples in one 25 ms analysis window at 16 kHz: a shorter clip is zero-padded to it."""
PADDED: Counter[str] = Counter()
"""Clips the loader padded in this process, by reason (read by reports, never reset here)."""
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
MAX_AMPLITUDE = 1e4
"""Largest absolute sample accepted: float files may exceed 1.0, but beyond this the fbank's
power spectrum would overflow float32."""
MAX_RESAMPLE_KERNEL = 1 << 20
"""Most elements of the sinc kernel built for one resampling (4 MiB of float32); common rates
need under 300,000."""


@dataclass(frozen=True)
class AudioLimits:
    """What one clip may cost; a clip beyond a cap is refused with an ``InputError``.

    For files the caps are checked on the header's frame count, channels and rate, before
    anything is decoded, and again on what was decoded.

    Args:
        max_seconds: longest clip, in seconds. (The ``audio-fbank`` tokenizer then cuts what it
            embeds to its own ``max_seconds``.)
        max_samples: most samples decoded, frames x channels (4 bytes each: 1 GiB by default,
            e.g. 1 h of 16 kHz audio on 4 channels or of 44.1 kHz mono).
        max_channels: most channels.
    """

    max_seconds: float = 3_600.0
    max_samples: int = 1 << 28
    max_channels: int = 64


LIMITS = AudioLimits()
"""The caps :func:`load_audio` applies when it is given none."""
MAX_SECONDS = LIMITS.max_seconds
MAX_CHANNELS = LIMITS.max_channels


def _label(item: object) -> object:
    if isinstance(item, bytes | bytearray):
        return f"<{len(item)} bytes>"
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape} ({item.dtype})"
    if isinstance(item, tuple) and item and hasattr(item[0], "shape"):
        rate = f"at {item[1]!r} Hz" if len(item) > 1 else "with no sample rate"
        return f"array of shape {tuple(item[0].shape)} {rate}"
    if hasattr(item, "shape") and hasattr(item, "dtype"):
        return f"tensor of shape {tuple(item.shape)} ({item.dtype})"
    return item


def _check_size(label: object, frames: int, channels: int, rate: float,
                limits: AudioLimits) -> None:
    """Refuse a clip whose shape or rate breaks a cap (from a header or an array's shape)."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE or rate != int(rate):
        raise InputError(label, f"sample rate {rate!r} Hz is outside {MIN_SAMPLE_RATE}.."
                                f"{MAX_SAMPLE_RATE} Hz or not a whole number")
    if channels == 0 or channels > limits.max_channels:
        raise InputError(label, f"{channels} channels (expected 1..{limits.max_channels})")
    if frames > limits.max_seconds * rate:
        raise InputError(label, f"too long: {frames / rate:.1f} s (at most "
                                f"{limits.max_seconds:g} s, AudioLimits.max_seconds)")
    if frames * channels > limits.max_samples:
        raise InputError(label, f"too large: {frames} frames x {channels} channels = "
                                f"{frames * channels} samples (at most {limits.max_samples}, "
                                "AudioLimits.max_samples)")


def _read_file(source: Any, label: object, limits: AudioLimits) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(source) as file:
            # the header's size is checked before a single sample is decoded
            _check_size(label, int(file.frames), int(file.channels), int(file.samplerate),
                        limits)
            data, rate = file.read(dtype="float32", always_2d=True), int(file.samplerate)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(label, "file not found") from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(label, f"not a readable audio file ({reason})") from None
    return data, rate


def _as_array(values: Any, label: object) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.dtype.kind not in "iuf":
        raise InputError(label, f"non-numeric samples (dtype {values.dtype})")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise InputError(label, f"expected [samples] or [samples, channels], got shape "
                                f"{values.shape}")
    if values.dtype.kind in "iu":  # integer PCM passed as an array: scale like libsndfile does
        info = np.iinfo(values.dtype)
        scale = float(-int(info.min)) if info.min < 0 else (info.max + 1) / 2.0
        offset = 0.0 if info.min < 0 else scale
        return ((values.astype(np.float64) - offset) / scale).astype(np.float32)
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def load_audio(item: object, limits: AudioLimits | None = None) -> np.ndarray:
    """Read and validate one clip.

    Inputs:
        item: a path, file bytes, an array / tensor at 16 kHz or ``(array, sample_rate)``.
        limits: the cost caps (default: :data:`LIMITS`).
    Returns:
        a 1-D float32 numpy array of mono samples at 16 kHz, at least :data:`WINDOW` long.
    """
    limits = LIMITS if limits is None else limits
    rate: float
    if isinstance(item, str | os.PathLike):
        label: object = item
        if not Path(item).is_file():
            raise InputError(label, "file not found")
        data, rate = _read_file(str(Path(item)), label, limits)
    elif isinstance(item, bytes | bytearray):
        label = _label(item)
        if not item:
            raise InputError(label, "no data")
        data, rate = _read_file(io.BytesIO(bytes(item)), label, limits)
    elif isinstance(item, tuple):
        label = _label(item)
        if len(item) != 2 or isinstance(item[1], bool) or not isinstance(item[1], int | float):
            raise InputError(label, "a tuple item must be (samples, sample_rate)")
        data, rate = _as_array(item[0], label), item[1]
    elif isinstance(item, np.ndarray) or hasattr(item, "detach"):
        label = _label(item)
        data, rate = _as_array(item, label), SAMPLE_RATE
    else:
        raise InputError(repr(item), "expected a path, bytes, an array or (array, sample_rate), "
                                     f"got {type(item).__name__}")
    _check_size(label, data.shape[0], data.shape[1], rate, limits)
    rate = int(rate)
    if data.shape[0] == 0:
        raise InputError(label, "no samples")
    bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
    if bad.size:
        raise InputError(label, f"NaN or Inf at sample {int(bad[0])}")
    loud = np.flatnonzero(np.abs(data).max(axis=1) > MAX_AMPLITUDE)
    if loud.size:
        raise InputError(label, f"sample {int(loud[0])} has magnitude "
                                f"{float(np.abs(data[loud[0]]).max()):.3g} (at most "
                                f"{MAX_AMPLITUDE:g}; integer PCM is scaled to [-1, 1))")
    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 \
        else data[:, 0]
    if rate != SAMPLE_RATE:
        mono = resample(mono, rate)
    if mono.shape[0] < WINDOW:
        # real sounds can be shorter than one analysis window (a 19 ms tick): zero-padded
        PADDED["shorter than one 25 ms window"] += 1
        mono = np.concatenate([mono, np.zeros(WINDOW - mono.shape[0], dtype=mono.dtype)])
    return np.ascontiguousarray(mono, dtype=np.float32)


def _kernel_elements(orig: int, new: int, lowpass_filter_width: int = 6,
                     rolloff: float = 0.99) -> int:
    """Elements of the sinc kernel ``torchaudio.functional.resample`` builds for orig -> new:
    ``new' x (orig' + 2 * width)`` with the ratio reduced to ``orig' / new'``."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    width = math.ceil(lowpass_filter_width * orig / (min(orig, new) * rolloff))
    return new * (orig + 2 * width)


def resample_ratio(rate: int) -> tuple[int, int]:
    """The ``(from, to)`` rates a clip at ``rate`` is resampled with.

    ``(rate, 16000)`` when its sinc kernel has at most :data:`MAX_RESAMPLE_KERNEL` elements
    (every rate whose ratio to 16 kHz reduces to small terms: 8, 11.025, 22.05, 44.1, 48,
    96 kHz, ...); otherwise the closest fraction to ``16000 / rate`` whose kernel is that small
    (``Fraction.limit_denominator``), e.g. 767,999 Hz -> (48, 1), 44,099 Hz -> (780, 283).
    """
    rate = int(rate)
    if _kernel_elements(rate, SAMPLE_RATE) <= MAX_RESAMPLE_KERNEL:
        return rate, SAMPLE_RATE
    exact = Fraction(SAMPLE_RATE, rate)
    bound = 1000
    while True:
        near = exact.limit_denominator(bound)
        if near.numerator and _kernel_elements(near.denominator, near.numerator) \
                <= MAX_RESAMPLE_KERNEL:
            return near.denominator, near.numerator
        bound //= 2


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono samples at ``rate`` -> float32 samples at 16 kHz (see :func:`resample_ratio`)."""
    import torch
    import torchaudio.functional as AF

    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    orig, new = resample_ratio(rate)
    return AF.resample(wave, orig, new).numpy()


def load_many(items: Iterable[object]) -> tuple[list[np.ndarray], list[tuple[int, InputError]]]:
    """Load a batch job's items, skipping bad ones.

    Returns:
        the loaded clips, in order, and ``(index, error)`` for every skipped item.
    """
    loaded, skipped = [], []
    for i, item in enumerate(items):
        try:
            loaded.append(load_audio(item))
        except InputError as exc:
            skipped.append((i, exc))
    return loaded, skipped


def example_audio() -> list[Any]:
    """A few valid clips: a chirp, a chord at 8 kHz, stereo noise and a short tone."""
    rng = np.random.default_rng(0)
    t = np.arange(int(0.6 * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 800 * t) * t)).astype(np.float32)
    t8 = np.arange(4000) / 8000
    chord = (0.2 * (np.sin(2 * np.pi * 220 * t8) + np.sin(2 * np.pi * 330 * t8))).astype(np.float32)
    stereo = (0.1 * rng.standard_normal((7000, 2))).astype(np.float32)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(3200) / SAMPLE_RATE)).astype(np.float32)
    return [chirp, (chord, 8000), stereo, tone]
