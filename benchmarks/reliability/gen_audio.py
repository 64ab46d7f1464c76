"""Hostile audio: the asterisk speech prompts and Sonic Pi samples, mutated, plus extreme arrays."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reliability import mutate

SPEECH = Path("/usr/share/asterisk/sounds/en")
SAMPLES = Path("/usr/share/sonic-pi/samples")
TARGETS = (("beats-tiny", "audio"), ("audio-text-tiny", "audio"))
MUTATIONS = ("valid", *mutate.GENERIC, "wav_rate", "wav_channels", "wav_bits", "wav_format",
             "wav_data_size", "wav_riff_size", "wav_block_align", "flac_header", "splice",
             "rewrite_rate", "rewrite_channels", "float_nan_file", "array_nan", "array_inf",
             "array_empty", "array_long", "array_loud", "array_3d", "array_object",
             "array_complex", "array_int", "array_silence", "array_short", "array_wide",
             "tuple_rate", "tuple_shape", "tensor", "list", "empty", "garbage",
             "path_missing", "path_directory")
HEAVY = ("array_long", "rewrite_channels")
"""Mutations that cost seconds per input: left out of quick runs."""


def base_files() -> list[Path]:
    files = sorted(SPEECH.glob("*.wav")) + sorted(SAMPLES.glob("*.flac"))
    if not files:
        raise FileNotFoundError(f"no audio in {SPEECH} or {SAMPLES}: install "
                                "asterisk-core-sounds-en-wav and sonic-pi-samples")
    return files


def load_base(cache: Path) -> list[Path]:
    return base_files()


def _fmt_offset(data: bytes) -> int | None:
    """Offset of the 'fmt ' chunk body of a RIFF/WAVE file."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos:pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4:pos + 8])
        if kind == b"fmt ":
            return pos + 8
        pos += 8 + size + (size & 1)
    return None


def _data_offset(data: bytes) -> int | None:
    pos = 12
    while pos + 8 <= len(data):
        if data[pos:pos + 4] == b"data":
            return pos
        (size,) = struct.unpack("<I", data[pos + 4:pos + 8])
        pos += 8 + size + (size & 1)
    return None


def _as_wav(path: Path) -> bytes:
    """The file as WAV bytes (FLAC samples decoded and re-written as 16-bit PCM)."""
    data = path.read_bytes()
    if data[:4] == b"RIFF":
        return data
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    out = io.BytesIO()
    sf.write(out, samples[: rate * 2], rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def _wav_field(data: bytes, field: int, size: int, value: int) -> bytes:
    fmt = _fmt_offset(data)
    if fmt is None:
        return data
    put = mutate.put_u16 if size == 2 else mutate.put_u32
    return put(data, fmt + field, value, False)


def _write(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype=subtype)
    return out.getvalue()


def make(name: str, rng: random.Random, base: list[Path], tmp: Path) -> tuple[str, Any]:
    path = base[rng.randrange(len(base))]
    nrng = np.random.default_rng(rng.randrange(2**32))
    if name == "valid":
        return name, path.read_bytes() if rng.random() < 0.5 else str(path)
    if name in mutate.GENERIC:
        return name, mutate.generic(name, path.read_bytes(), rng)
    if name == "flac_header":
        flac = [p for p in base if p.suffix == ".flac"] or base
        data = flac[rng.randrange(len(flac))].read_bytes()
        return name, mutate.flip_bytes(data[:42], rng, 4) + data[42:]
    wav = _as_wav(path) if name.startswith(("wav_", "splice", "rewrite")) else b""
    if name == "wav_rate":
        return name, _wav_field(wav, 4, 4, rng.choice(mutate.EXTREME_U32))
    if name == "wav_channels":
        return name, _wav_field(wav, 2, 2, rng.choice(mutate.EXTREME_U16))
    if name == "wav_bits":
        return name, _wav_field(wav, 14, 2, rng.choice((0, 1, 7, 12, 64, 65535)))
    if name == "wav_format":
        return name, _wav_field(wav, 0, 2, rng.choice((0, 2, 3, 6, 0x55, 0xFFFE, 0xFFFF)))
    if name == "wav_block_align":
        return name, _wav_field(wav, 12, 2, rng.choice(mutate.EXTREME_U16))
    if name == "wav_data_size":
        at = _data_offset(wav)
        return name, wav if at is None else mutate.put_u32(wav, at + 4,
                                                           rng.choice(mutate.EXTREME_U32), False)
    if name == "wav_riff_size":
        return name, mutate.put_u32(wav, 4, rng.choice(mutate.EXTREME_U32), False)
    if name == "splice":
        return name, mutate.splice(wav, _as_wav(base[rng.randrange(len(base))]), rng)
    if name == "rewrite_rate":
        import soundfile as sf

        samples, _ = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
        rate = rng.choice((1, 999, 1000, 8000, 192_000, 768_000, 768_001, 2_000_000))
        return name, _write(samples[:50_000], rate)
    if name == "rewrite_channels":
        import soundfile as sf

        samples, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
        channels = rng.choice((2, 8, 64, 65, 256))
        return name, _write(np.repeat(samples[:8000], channels, axis=1), rate)
    if name == "float_nan_file":
        samples = nrng.standard_normal((16_000, 1)).astype(np.float32) * 0.1
        samples[nrng.integers(0, len(samples), 10)] = rng.choice((np.nan, np.inf, -np.inf))
        return name, _write(samples, 16_000, "FLOAT")
    if name == "array_nan":
        x = nrng.standard_normal(16_000).astype(np.float32)
        x[rng.randrange(len(x))] = np.nan
        return name, x
    if name == "array_inf":
        x = nrng.standard_normal(16_000).astype(np.float32)
        x[rng.randrange(len(x))] = rng.choice((np.inf, -np.inf))
        return name, x
    if name == "array_empty":
        return name, np.zeros(rng.choice((0, 1)), dtype=np.float32)
    if name == "array_long":
        seconds = rng.choice((600, 3_601, 7_200))
        return name, np.zeros(16_000 * seconds, dtype=np.float32)
    if name == "array_loud":
        return name, nrng.standard_normal(16_000).astype(np.float32) * rng.choice((1e4, 1e30, 3e38))
    if name == "array_3d":
        return name, np.zeros((2, 2, 8000), dtype=np.float32)
    if name == "array_object":
        return name, np.array(["a", None] * 1000, dtype=object)
    if name == "array_complex":
        return name, np.ones(16_000, dtype=np.complex64)
    if name == "array_int":
        dtype = rng.choice((np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64))
        info = np.iinfo(dtype)
        return name, nrng.integers(info.min, info.max, 16_000, dtype=dtype, endpoint=True)
    if name == "array_silence":
        return name, np.full(16_000, rng.choice((0.0, 1.0, -1.0, 1e-40)), dtype=np.float32)
    if name == "array_short":
        return name, nrng.standard_normal(rng.choice((2, 399, 400, 401))).astype(np.float32)
    if name == "array_wide":
        return name, np.zeros((2, rng.choice((160_000, 64, 65))), dtype=np.float32)
    if name == "tuple_rate":
        rate = rng.choice((0, -16_000, 1, 10**12, 2**63, float("nan"), float("inf"), 44_100.5,
                           True, "16000", None))
        return name, (nrng.standard_normal(16_000).astype(np.float32), rate)
    if name == "tuple_shape":
        return name, rng.choice(((np.zeros(16_000),), (np.zeros(16_000), 16_000, 1), ()))
    if name == "tensor":
        import torch

        return name, torch.randn(rng.choice((16_000, 3)), dtype=rng.choice((torch.float32,
                                                                            torch.float16)))
    if name == "list":
        return name, [0.0] * 16_000 if rng.random() < 0.5 else [[0.1, "x"]] * 800
    if name == "empty":
        return name, b""
    if name == "garbage":
        return name, mutate.garbage(rng)
    if name == "path_missing":
        return name, str(tmp / "no-such-file.wav")
    if name == "path_directory":
        return name, str(tmp)
    raise AssertionError(name)
