"""The audio modality: decoding, conversions and the inputs it refuses (files written with
soundfile in every test)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from mmenc.errors import InputError
from mmenc_audio.audio import SAMPLE_RATE, WINDOW, load_audio, load_many
from mmenc_audio.frontend import FbankPatchTokenizer, min_samples

RNG = np.random.default_rng(0)
WAVE = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / SAMPLE_RATE)).astype(np.float32)


@pytest.mark.parametrize(("fmt", "subtype", "tol"), [
    ("WAV", "PCM_U8", 2 / 2**8), ("WAV", "PCM_16", 2 / 2**16), ("WAV", "PCM_24", 2 / 2**24),
    ("WAV", "PCM_32", 1e-7), ("WAV", "FLOAT", 0.0), ("FLAC", "PCM_16", 2 / 2**16),
    ("FLAC", "PCM_24", 2 / 2**24),
])
def test_bit_depths_are_scaled_to_unit_range(tmp_path, fmt, subtype, tol) -> None:
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, WAVE, SAMPLE_RATE, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.shape == WAVE.shape
    assert float(np.abs(out - WAVE).max()) <= tol


def test_bytes_and_str_paths(tmp_path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, WAVE, SAMPLE_RATE, subtype="PCM_16")
    a, b = load_audio(str(path)), load_audio(path.read_bytes())
    assert np.array_equal(a, b)


def test_stereo_is_mixed_down_by_the_mean(tmp_path) -> None:
    left, right = WAVE, -0.5 * WAVE
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    assert np.allclose(load_audio(path), (left + right) / 2, atol=1e-7)
    six = RNG.standard_normal((4000, 6)).astype(np.float32) * 0.1
    assert np.allclose(load_audio(six), six.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_other_rates_are_resampled_to_16k(tmp_path, rate) -> None:
    t = np.arange(rate) / rate  # one second
    path = tmp_path / f"r{rate}.flac"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)
    out = load_audio(path)
    assert abs(out.shape[0] - SAMPLE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(out[2000:-2000]))
    peak_hz = spectrum.argmax() * SAMPLE_RATE / len(out[2000:-2000])
    assert abs(peak_hz - 300) < 3


def test_integer_arrays_and_tensors() -> None:
    pcm = (WAVE * 32767).astype(np.int16)
    assert np.abs(load_audio(pcm) - WAVE).max() < 1e-4
    assert np.array_equal(load_audio(torch.from_numpy(WAVE)), WAVE)
    assert load_audio((WAVE, 8000)).shape[0] == 2 * WAVE.shape[0]


def _bad_files(tmp_path):
    nan = WAVE.copy()
    nan[1234] = np.nan
    sf.write(tmp_path / "nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
    inf = WAVE.copy()
    inf[7] = np.inf
    sf.write(tmp_path / "inf.flac", inf, SAMPLE_RATE, format="WAV", subtype="DOUBLE")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    sf.write(tmp_path / "slow.wav", WAVE[:2000], 500)
    good = io.BytesIO()
    sf.write(good, WAVE, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    (tmp_path / "truncated.wav").write_bytes(good.getvalue()[:30])
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00 this is not audio at all" * 3)
    (tmp_path / "text.flac").write_text("hello")
    return [("nan.wav", "NaN or Inf at sample 1234"), ("inf.flac", "NaN or Inf at sample 7"),
            ("empty.wav", "no samples"),
            ("slow.wav", "sample rate 500"), ("truncated.wav", "not a readable audio file"),
            ("garbage.wav", "not a readable audio file"), ("text.flac", "not a readable audio"),
            ("missing.wav", "file not found")]


def test_bad_files_are_refused_naming_the_file(tmp_path) -> None:
    for name, reason in _bad_files(tmp_path):
        with pytest.raises(InputError, match=reason) as info:
            load_audio(tmp_path / name)
        assert name in str(info.value)


@pytest.mark.parametrize(("item", "reason"), [
    (np.zeros(0, dtype=np.float32), "no samples"),
    (np.array([0.0, np.nan] * 400, dtype=np.float32), "NaN or Inf at sample 1"),
    (np.full(1000, 1e300), "NaN or Inf at sample 0"),
    (np.full(1000, 3e4, dtype=np.float32), "sample 0 has magnitude 3e\\+04"),
    (np.zeros((10, 10, 10), dtype=np.float32), "expected \\[samples\\]"),
    (np.array(["a"] * 500), "non-numeric"),
    ((WAVE, 10**7), "sample rate 10000000"),
    ((WAVE, 0), "sample rate 0"),
    ((WAVE, -16000), "sample rate -16000"),
    ((WAVE, 16000.5), "not a whole number"),
    ((WAVE, "16k"), "tuple item"),
    ((WAVE,), r"shape \(8000,\) with no sample rate: a tuple item must be \(samples"),
    ((WAVE, 16000, 1), "tuple item must be"),
    (np.zeros((1000, 0), dtype=np.float32), "0 channels"),
    (b"", "no data"),
    (b"\x00\x01\x02garbage", "not a readable audio file"),
    (3.5, "expected a path"),
    (None, "expected a path"),
])
def test_bad_items_are_refused(item, reason) -> None:
    with pytest.raises(InputError, match=reason):
        load_audio(item)


def test_loud_float_files_stay_finite_up_to_the_limit(tmp_path) -> None:
    path = tmp_path / "loud.wav"
    sf.write(path, 900.0 * WAVE, SAMPLE_RATE, subtype="FLOAT")
    batch = FbankPatchTokenizer()([load_audio(path)])
    assert torch.isfinite(batch.values).all()
    sf.write(path, 2e5 * WAVE, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(InputError, match="loud.wav: sample .* has magnitude"):
        load_audio(path)


def test_batch_jobs_skip_and_count(tmp_path) -> None:
    bad = _bad_files(tmp_path)
    sf.write(tmp_path / "ok.wav", WAVE, SAMPLE_RATE)
    items = [tmp_path / "ok.wav"] + [tmp_path / name for name, _ in bad] + [WAVE]
    loaded, skipped = load_many(items)
    assert len(loaded) == 2 and len(skipped) == len(bad)
    assert [i for i, _ in skipped] == list(range(1, len(bad) + 1))
    assert all(isinstance(e, InputError) for _, e in skipped)


def test_a_clip_shorter_than_one_window_is_padded_and_counted(tmp_path) -> None:
    from mmenc_audio.audio import PADDED

    sf.write(tmp_path / "short.wav", WAVE[:300], SAMPLE_RATE)
    before = PADDED["shorter than one 25 ms window"]
    clip = load_audio(tmp_path / "short.wav")
    assert clip.shape == (WINDOW,)
    assert np.allclose(clip[:300], WAVE[:300], atol=1e-4)  # 16-bit PCM
    assert not clip[300:].any()
    assert PADDED["shorter than one 25 ms window"] == before + 1
    load_audio(WAVE)  # a long clip is not counted
    assert PADDED["shorter than one 25 ms window"] == before + 1


def test_short_clips_are_padded_to_one_patch_row() -> None:
    tok = FbankPatchTokenizer()
    short = load_audio(np.full(WINDOW, 0.1, dtype=np.float32))
    batch = tok([short, WAVE])
    assert batch.values.shape == (2, 24, 256)  # 8000 samples: 48 frames -> 3 rows of 8
    assert batch.mask.sum(1).tolist() == [8, 24]
    assert torch.isfinite(batch.values).all()
    padded = np.concatenate([short, np.zeros(min_samples() - WINDOW, dtype=np.float32)])
    assert torch.equal(tok([padded]).values[0], batch.values[0, :8])


def test_max_seconds_cuts_long_clips() -> None:
    tok = FbankPatchTokenizer(max_seconds=0.2)
    batch = tok([np.zeros(16000, dtype=np.float32) + 0.01])
    assert batch.values.shape[1] == 8  # 3200 samples: 18 frames -> one row


# -- cost caps ------------------------------------------------------------------------------------
_RESAMPLE_PROBE = r"""
import io, resource, sys, time
import numpy as np, soundfile as sf
from mmenc_audio.audio import load_audio
load_audio((np.zeros(8000, dtype=np.float32), 8000))  # imports and first-call costs
for rate in (767_999, 44_099):
    buf = io.BytesIO()
    t = np.arange(rate) / rate
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, format="WAV",
             subtype="PCM_16")
    data = buf.getvalue()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = load_audio(data)
    seconds = time.perf_counter() - start
    extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(rate, out.shape[0], f"{seconds:.3f}", f"{extra_mb:.1f}")
"""


def test_odd_sample_rates_resample_in_linear_memory() -> None:
    """Rates whose ratio to 16 kHz has no common factor (a 49 GB sinc kernel at 767,999 Hz,
    6 GB at 44,099 Hz) resample one second in well under 2 s and 300 MB."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", _RESAMPLE_PROBE], capture_output=True,
                         text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split() for line in run.stdout.splitlines()]
    assert [r[0] for r in rows] == ["767999", "44099"]
    for _rate, samples, seconds, extra_mb in rows:
        assert abs(int(samples) - SAMPLE_RATE) <= 2
        assert float(seconds) < 2.0
        assert float(extra_mb) < 300.0


@pytest.mark.parametrize("rate", [44_099, 767_999, 1_001])
def test_approximate_ratios_keep_the_pitch(rate) -> None:
    from mmenc_audio.audio import MAX_RESAMPLE_KERNEL, _kernel_elements, resample_ratio

    orig, new = resample_ratio(rate)
    assert (orig, new) != (rate, SAMPLE_RATE)
    assert _kernel_elements(orig, new) <= MAX_RESAMPLE_KERNEL
    assert abs(new / orig - SAMPLE_RATE / rate) <= 3e-5 * SAMPLE_RATE / rate
    t = np.arange(rate) / rate
    out = load_audio(((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate))
    spectrum = np.abs(np.fft.rfft(out[2000:-2000]))
    assert abs(spectrum.argmax() * SAMPLE_RATE / len(out[2000:-2000]) - 300) < 3


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000, 96000, 192000])
def test_common_rates_keep_the_exact_ratio(rate) -> None:
    from mmenc_audio.audio import resample_ratio

    assert resample_ratio(rate) == (rate, SAMPLE_RATE)


def test_header_caps_refuse_before_decoding(tmp_path, monkeypatch) -> None:
    from mmenc_audio.audio import AudioLimits

    path = tmp_path / "long.wav"
    sf.write(path, np.zeros((3 * 8000, 2), dtype=np.float32), 8000, subtype="PCM_16")

    def no_decoding(*args, **kwargs):
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(InputError, match=r"long.wav: too long: 3.0 s \(at most 2 s, "
                                         r"AudioLimits.max_seconds\)"):
        load_audio(path, AudioLimits(max_seconds=2.0))
    with pytest.raises(InputError, match=r"long.wav: too large: 24000 frames x 2 channels = "
                                         r"48000 samples \(at most 40000"):
        load_audio(path, AudioLimits(max_samples=40_000))
    with pytest.raises(InputError, match=r"long.wav: 2 channels \(expected 1..1\)"):
        load_audio(path, AudioLimits(max_channels=1))


def test_module_limits_apply_to_every_caller(monkeypatch) -> None:
    from mmenc_audio import audio

    monkeypatch.setattr(audio, "LIMITS", audio.AudioLimits(max_seconds=0.25))
    with pytest.raises(InputError, match="too long: 0.5 s"):
        audio.load_audio(WAVE)  # 8000 samples at 16 kHz
    assert audio.load_audio(WAVE[:4000]).shape == (4000,)


def test_long_clips_are_cut_to_the_default_window_and_counted() -> None:
    from mmenc_audio.frontend import DEFAULT_MAX_SECONDS, patches_for

    tok = FbankPatchTokenizer()
    ten_minutes = np.zeros(600 * SAMPLE_RATE, dtype=np.float32)
    batch = tok([ten_minutes, WAVE])
    assert batch.values.shape[1] == patches_for(int(DEFAULT_MAX_SECONDS * SAMPLE_RATE))
    assert tok.stats["cut"] == 1 and tok.stats["items"] == 2
    assert FbankPatchTokenizer(max_seconds=2.0)([ten_minutes]).values.shape[1] == \
        patches_for(2 * SAMPLE_RATE)
