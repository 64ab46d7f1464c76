"""Property tests of the loaders: whatever the raw item, a loader returns a valid value or
raises :class:`mmenc.errors.InputError`; and what it accepts encodes to finite vectors.

The inputs are drawn by hypothesis (lone surrogates, NUL and control characters, random
bytes, corrupted files, arrays with NaN/Inf and extreme values); the full-size hostile corpora
are the reliability campaign's (benchmarks/reliability, tests/test_reliability.py).
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mmenc
from mmenc.errors import InputError

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# every code point, lone surrogates included (hypothesis leaves them out by default)
ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=200)
MODELS: dict[str, Any] = {}


def _model(name: str) -> Any:
    if name not in MODELS:
        torch.manual_seed(0)
        MODELS[name] = mmenc.create_model(name)
    return MODELS[name]


def _encode_or_refuse(model_name: str, item: Any, modality: str) -> None:
    """Encodes to one finite, non-zero vector, or raises InputError; nothing else."""
    try:
        emb = _model(model_name).encode([item], modality, normalize=False)
    except InputError:
        return
    assert emb.shape[0] == 1 and torch.isfinite(emb).all() and emb.norm() > 0


def _flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8)


# -- text ------------------------------------------------------------------------------------
@SETTINGS
@given(item=st.one_of(ANY_TEXT, st.binary(max_size=200)))
def test_text_is_encoded_or_refused(item):
    _encode_or_refuse("text-tiny", item, "text")


# -- code ------------------------------------------------------------------------------------
CODE = st.one_of(
    ANY_TEXT,
    st.binary(max_size=300),
    st.builds(lambda head, body: head + body, st.sampled_from(["def f(x):\n    ", "x = (", "'''"]),
              ANY_TEXT),
)


@SETTINGS
@given(item=CODE)
def test_code_is_encoded_or_refused(item):
    pytest.importorskip("mmenc_code")
    _encode_or_refuse("code-text-tiny", item, "code")


# -- image -----------------------------------------------------------------------------------
def _png(width: int, height: int, mode: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode in ("L", "P", "1") else "teal").save(out, "PNG")
    return out.getvalue()


PNG = st.builds(_png, st.integers(1, 40), st.integers(1, 40),
                st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1"]))


@SETTINGS
@given(item=st.one_of(PNG, st.builds(_flip, PNG, EDITS), st.binary(max_size=300)))
def test_image_bytes_are_loaded_or_refused(item):
    from mmenc.builtin.image import load_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = load_image(item)
    except InputError:
        return
    assert image.mode == "RGB" and min(image.size) >= 2
    _encode_or_refuse("vit-tiny", image, "image")


# -- audio -----------------------------------------------------------------------------------
AUDIO_ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int16, np.uint8]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=1200),
)
FLOAT_ARRAYS = hnp.arrays(np.float32, st.integers(0, 2000),
                          elements=st.floats(width=32, allow_nan=True, allow_infinity=True))


def _wav(samples: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def _wav_with_fields(rate: int, channels: int, bits: int, edits: list[tuple[int, int]]) -> bytes:
    data = bytearray(_wav(np.zeros(800, dtype=np.float32), 16_000))
    data[24:28] = struct.pack("<I", rate)
    data[22:24] = struct.pack("<H", channels)
    data[34:36] = struct.pack("<H", bits)
    return _flip(bytes(data), edits) if edits else bytes(data)


WAVS = st.builds(_wav_with_fields, st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
                 st.sampled_from([0, 8, 16, 24, 32, 64, 65535]),
                 st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3))


@SETTINGS
@given(item=st.one_of(
    AUDIO_ARRAYS, FLOAT_ARRAYS,
    st.tuples(FLOAT_ARRAYS, st.one_of(st.integers(-10**6, 10**7),
                                      st.floats(allow_nan=True, allow_infinity=True))),
    WAVS, st.binary(max_size=300)))
def test_audio_is_loaded_or_refused(item):
    pytest.importorskip("mmenc_audio")
    from mmenc_audio.audio import SAMPLE_RATE, load_audio

    try:
        samples = load_audio(item)
    except InputError:
        return
    assert samples.ndim == 1 and samples.dtype == np.float32 and len(samples) >= 400
    assert np.isfinite(samples).all()
    assert len(samples) <= SAMPLE_RATE * 3_600
    _encode_or_refuse("beats-tiny", samples, "audio")


# -- MIDI ------------------------------------------------------------------------------------
def _smf(notes: list[tuple[int, int, int]], division: int) -> bytes:
    track = bytearray()
    for pitch, velocity, delta in notes:
        track += bytes([0, 0x90, pitch, velocity]) + _vlq(delta) + bytes([0x80, pitch, 0])
    track += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, division) + b"MTrk" \
        + struct.pack(">I", len(track)) + bytes(track)


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


SMF = st.builds(_smf, st.lists(st.tuples(st.integers(0, 127), st.integers(0, 127),
                                         st.integers(0, 2**28 - 1)), max_size=30),
                st.integers(0, 0xFFFF))


@SETTINGS
@given(item=st.one_of(SMF, st.builds(_flip, SMF, EDITS), st.binary(max_size=300)))
def test_midi_bytes_are_loaded_or_refused(item):
    pytest.importorskip("mmenc_midi")
    from mmenc_midi.midi import load_midi

    try:
        score = load_midi(item)
    except InputError:
        return
    assert score.note_num() > 0
    _encode_or_refuse("midibert-cp-tiny", item, "midi")
