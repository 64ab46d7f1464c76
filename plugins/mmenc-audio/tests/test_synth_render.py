"""Synthetic speech, MIDI rendering, the chroma baseline, waveform augmentation and the
MIDI <-> audio pair builder."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from mmenc.errors import InputError
from mmenc_audio import augment, synth
from mmenc_audio.synth import Voice, heldout_voice, training_voices

# -- voices and espeak-ng --------------------------------------------------------------------------

needs_espeak = pytest.mark.skipif(synth.espeak() is None,
                                  reason="espeak-ng is not installed (scripts/apt-packages.txt)")


def test_heldout_voice_family_never_in_training():
    held = heldout_voice()
    family = training_voices(len(synth.TRAIN_LANGUAGES) * len(synth.TRAIN_VARIANTS)
                             * len(synth.TRAIN_PITCH) * len(synth.TRAIN_SPEED))
    assert len(set(family)) == len(family) > 2000
    assert held not in family
    assert all(v.variant != held.variant and v.pitch != held.pitch and v.speed != held.speed
               for v in family)


def test_training_voices_depend_on_seed_only():
    assert training_voices(12, seed=3) == training_voices(12, seed=3)
    assert training_voices(12, seed=3) != training_voices(12, seed=4)
    with pytest.raises(ValueError):
        training_voices(10**6)


def test_voice_rejects_bad_fields():
    with pytest.raises(InputError, match="variant"):
        Voice(variant="x9")
    with pytest.raises(InputError, match="pitch"):
        Voice(pitch=120)
    with pytest.raises(InputError, match="voice name"):
        Voice(language="en us; rm")
    with pytest.raises(InputError, match="voice name"):
        Voice(language="-w")
    assert Voice("en-gb", "f2", 40, 160).args() == ["-v", "en-gb+f2", "-p", "40", "-s", "160"]


@needs_espeak
def test_synthesize_is_deterministic_and_cached(tmp_path, monkeypatch):
    texts = ["press one for sales", "-- goodbye"]  # a leading dash is text, not an option
    first = synth.synthesize(texts, tmp_path / "a", Voice("en-gb", "m2", 40, 160))
    again = synth.synthesize(texts, tmp_path / "b", Voice("en-gb", "m2", 40, 160))
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert all(p.stat().st_size > 4000 for p in first)
    other = synth.synthesize(texts[:1], tmp_path / "a", Voice("en-gb", "f3", 60, 190))
    assert other[0] != first[0] and other[0].read_bytes() != first[0].read_bytes()
    stamps = [p.stat().st_mtime_ns for p in first]
    monkeypatch.setenv("PATH", "")  # a second call must not need espeak-ng at all
    assert synth.synthesize(texts, tmp_path / "a", Voice("en-gb", "m2", 40, 160)) == first
    assert [p.stat().st_mtime_ns for p in first] == stamps
    with pytest.raises(FileNotFoundError, match="espeak-ng"):
        synth.synthesize(["a new text"], tmp_path / "a")


@needs_espeak
def test_synthesize_refuses_bad_texts(tmp_path):
    with pytest.raises(InputError, match="empty"):
        synth.synthesize(["fine", "  "], tmp_path)
    with pytest.raises(InputError, match="characters"):
        synth.synthesize(["x" * (synth.MAX_CHARS + 1)], tmp_path)
    with pytest.raises(ValueError, match="voices"):
        synth.synthesize(["a", "b"], tmp_path, [Voice()])


@needs_espeak
def test_speech_pairs_speak_training_texts_only(tmp_path, monkeypatch):
    from mmenc_audio import data

    clips = [data.Clip("p/1", "/x/1.wav", "thank you", "speech", False),
             data.Clip("p/2", "/x/2.wav", "please hold", "speech", False),
             data.Clip("p/3", "/x/3.wav", "goodbye", "speech", True)]
    monkeypatch.setattr(data, "speech_prompts", lambda: clips)
    rows = synth.speech_pairs(tmp_path, synthetic_per_text=2, texts=["a red apple", "goodbye"])
    real = [r for r in rows if not r["synthetic"]]
    fake = [r for r in rows if r["synthetic"]]
    assert [(r["group"], r["split"]) for r in real] == [("p/1", "train"), ("p/2", "train"),
                                                        ("p/3", "test")]
    assert sorted({r["text"] for r in fake}) == ["a red apple", "please hold", "thank you"]
    assert len(fake) == 6 and all(r["split"] == "train" and os.path.isfile(r["audio"])
                                  for r in fake)
    held = heldout_voice().name
    assert held not in {r["voice"] for r in fake}
    queries = synth.spoken_queries(["a smiling cat"], tmp_path)
    assert queries[0]["synthetic"] and queries[0]["voice"] == held
    assert queries[0]["split"] == "test"
    path = synth.write_manifest(rows, tmp_path / "m" / "train.jsonl")
    assert len(path.read_text().splitlines()) == len(rows)


# -- rendering ------------------------------------------------------------------------------------

def _renderer():
    pytest.importorskip("tinysoundfont", reason="pip install --no-deps tinysoundfont")
    pytest.importorskip("mmenc_midi", reason="rendering reads MIDI with the mmenc-midi plugin")
    from mmenc_audio import render

    if render.find_soundfont() is None:
        pytest.skip("no SoundFont: install the Debian package timgm6mb-soundfont")
    return render.Renderer()


@pytest.fixture(scope="module")
def renderer():
    return _renderer()


def _midi(notes, tempo=120.0):
    from mmenc_midi.midi import make_score

    return make_score(notes, tempo=tempo).dumps_midi()


def _onset(audio, rate=16_000):
    loud = np.flatnonzero(np.abs(audio) > 1e-3 * np.abs(audio).max())
    return loud[0] / rate


def test_render_is_audible_and_offset(renderer):
    # two short notes, then silence from 0.125 s to 1.5 s, then three more
    midi = _midi([(0, 120, 60, 100), (60, 60, 64, 100)] +
                 [(1440 + 240 * i, 240, 67 + i, 100) for i in range(3)])
    plain = renderer.render(midi, 0, 0.0, 3.0)
    assert plain.dtype == np.float32 and plain.shape == (48_000,)
    assert np.sqrt(np.mean(plain**2)) > 1e-3 and np.isfinite(plain).all()
    assert _onset(plain) < 0.01
    late = renderer.render(midi, 0, 0.5, 3.0)  # half a second of silence first
    assert np.abs(late[:8000]).max() == 0.0
    np.testing.assert_array_equal(late[8000:], plain[:-8000])
    cut = renderer.render(midi, 0, -1.0, 3.0)  # the first second cut: music from 1.5 s -> 0.5 s
    assert abs(_onset(cut) - 0.5) < 0.02
    assert not np.array_equal(renderer.render(midi, 40, 0.0, 3.0), plain)  # another instrument


def test_render_refuses_bad_requests(renderer):
    midi = _midi([(0, 480, 60, 100)])
    with pytest.raises(InputError, match="program"):
        renderer.render(midi, 128, 0.0)
    with pytest.raises(InputError, match="silent"):
        renderer.render(midi, 0, -3.0, 1.0)  # the only note is cut away
    with pytest.raises(InputError, match="offset"):
        renderer.render(midi, 0, float("nan"), 1.0)
    with pytest.raises(InputError, match="MIDI"):
        renderer.render(b"RIFF0000", 0, 0.0)


def test_render_file_is_deterministic_and_cached(renderer, tmp_path, monkeypatch):
    from mmenc_audio.render import draw_setting

    midi = _midi([(i * 240, 240, 60 + (i * 7) % 12, 90) for i in range(16)])
    program, offset = draw_setting("tune#1", seed=5)
    assert (program, offset) == draw_setting("tune#1", seed=5) != draw_setting("tune#2", seed=5)
    assert 0 <= program < 112 and abs(offset) <= 2.0
    a = renderer.render_file(midi, program, offset, 4.0, tmp_path / "a")
    b = renderer.render_file(midi, program, offset, 4.0, tmp_path / "b")
    assert a.name == b.name and a.read_bytes() == b.read_bytes()
    import soundfile as sf

    samples, rate = sf.read(a, dtype="float32")
    assert rate == 16_000 and samples.shape == (64_000,)

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(renderer, "render", no_render)
    assert renderer.render_file(midi, program, offset, 4.0, tmp_path / "a") == a


def test_midi_snippet_keeps_the_first_seconds():
    pytest.importorskip("mmenc_midi")
    from mmenc_midi.midi import load_midi

    from mmenc_audio.render import midi_snippet, tick_at

    midi = _midi([(i * 480, 480, 60 + i, 90) for i in range(10)], tempo=60.0)  # 1 s per note
    snippet = midi_snippet(midi, 3.5)
    notes = snippet.tracks[0].notes
    assert [n.pitch for n in notes] == [60, 61, 62, 63]
    assert notes[-1].time + notes[-1].duration == tick_at(load_midi(midi), 3.5) == 1680
    assert snippet.tempos[0].qpm == pytest.approx(60.0)


# -- chroma baseline ------------------------------------------------------------------------------

def test_pitch_class_histogram_and_chroma_of_known_signals():
    pytest.importorskip("mmenc_midi")
    from mmenc_audio.chroma import audio_chroma, pitch_class_histogram

    midi = _midi([(0, 480, 60, 90), (480, 960, 67, 90), (480, 480, 79, 90)])  # C 0.5 s, G 1.5 s
    np.testing.assert_allclose(pitch_class_histogram(midi), np.eye(12)[0] * 0.5
                               + np.eye(12)[7] * 1.5)
    np.testing.assert_allclose(pitch_class_histogram(midi, seconds=0.75)[7], 0.5)
    tone = np.sin(2 * np.pi * 440.0 * np.arange(16_000) / 16_000)
    chroma = audio_chroma(tone)
    assert chroma.argmax() == 9 and chroma[9] > 0.9  # A
    assert np.all(audio_chroma(np.zeros(16_000)) == 0)


def test_chroma_baseline_beats_chance(renderer):
    from mmenc_audio.chroma import chroma_baseline
    from mmenc_audio.render import draw_setting, midi_snippet

    rng = np.random.default_rng(0)
    midis, audios = [], []
    for i in range(10):  # ten tunes, each on its own five-note scale
        scale = 48 + rng.choice(24, size=5, replace=False)
        notes = [(k * 240, 240, int(rng.choice(scale)), 90) for k in range(48)]
        data = _midi(notes)
        program, offset = draw_setting(f"t{i}", seed=1)
        midis.append(midi_snippet(data, 4.0))
        audios.append(renderer.render(data, program, offset, 4.0))
    metrics = chroma_baseline(midis, audios, seconds=4.0)
    chance_mrr = sum(1 / k for k in range(1, 11)) / 10
    assert metrics["R@1"] >= 0.5 and metrics["MRR"] > chance_mrr + 0.3


# -- the MIDI <-> audio pair builder --------------------------------------------------------------

def test_midi_audio_pairs_split_skip_and_cache(renderer, tmp_path, monkeypatch):
    from mmenc_midi import data

    from mmenc_audio import musicsets

    pairs = []
    for i in range(6):
        notes = [(0, 480, 60, 90)] if i == 5 else [(k * 240, 240, 55 + i + k % 5, 90)
                                                   for k in range(40)]
        path = tmp_path / "midi" / f"{i}.mid"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(_midi(notes))
        pairs.append(data.FolkPair(f"book{i % 3}.abc#{i}", f"book{i % 3}.abc", str(path),
                                   f"tune {i}", test=i % 3 == 0))
    monkeypatch.setattr(data, "folk_tunes", lambda cache: data.FolkData(pairs, {}, 3))
    rows = musicsets.midi_audio_pairs(tmp_path / "out", n_train=10, n_test=10, seed=2,
                                      seconds=4.0, renderer=renderer)
    assert rows.skipped == {"fewer than 4 notes in the first 4.0 s": 1}  # tune 5: one note
    assert [r["split"] for r in rows] == ["test", "test", "train", "train", "train"]
    assert {r["id"] for r in rows if r["split"] == "test"} == {"book0.abc#0", "book0.abc#3"}
    assert all(r["synthetic"] and os.path.isfile(r["audio"]) and os.path.isfile(r["midi"])
               for r in rows)
    import soundfile as sf

    row = rows[0]  # the stored clip is the on-the-fly render, up to 16-bit rounding
    stored, _ = sf.read(row["audio"], dtype="float32")
    fresh = renderer.render(row["tune"], row["program"], row["offset"], row["seconds"])
    assert np.abs(stored - fresh).max() < 1e-4
    monkeypatch.setattr(renderer, "render", lambda *a, **k: pytest.fail("rendered again"))
    again = musicsets.midi_audio_pairs(tmp_path / "out", n_train=10, n_test=10, seed=2,
                                       seconds=4.0, renderer=renderer)
    assert list(again) == list(rows)
    fewer = musicsets.midi_audio_pairs(tmp_path / "out", n_train=1, n_test=1, seed=2,
                                       seconds=4.0, renderer=renderer)
    assert len(fewer) == 2


# -- waveform augmentation ------------------------------------------------------------------------

def _noise(n=16_000, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_gain_scales_rms_by_the_requested_decibels():
    x = _noise()
    for db in (-12.0, 0.0, 6.0):
        gained = augment.apply_gain(x, db)
        assert 20 * np.log10(_rms(gained) / _rms(x)) == pytest.approx(db, abs=1e-4)
    y, db = augment.random_gain(x, np.random.default_rng(7), -3.0, 3.0)
    assert -3.0 <= db <= 3.0 and _rms(y) / _rms(x) == pytest.approx(10 ** (db / 20), rel=1e-5)
    again, db2 = augment.random_gain(x, np.random.default_rng(7), -3.0, 3.0)
    assert db2 == db and np.array_equal(again, y)


def test_shift_and_crop():
    x = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(augment.shift(x, 3), [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(augment.shift(x, -3), [4, 5, 6, 7, 8, 9, 10, 0, 0, 0])
    np.testing.assert_array_equal(augment.crop(x, 4, 8), [9, 10, 0, 0])
    y, start = augment.random_crop(x, np.random.default_rng(1), 4)
    np.testing.assert_array_equal(y, x[start:start + 4])
    z, k = augment.random_offset(x, np.random.default_rng(2), max_seconds=0.5, sample_rate=8)
    assert -4 <= k <= 4 and np.array_equal(z, augment.shift(x, k))


def test_noise_has_the_requested_snr():
    x = np.sin(np.linspace(0, 200, 16_000)).astype(np.float32)
    for snr in (0.0, 10.0, 30.0):
        y = augment.add_noise(x, snr, np.random.default_rng(3))
        noise = y.astype(np.float64) - x
        assert 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2)) \
            == pytest.approx(snr, abs=1e-3)
    a, snr_a = augment.random_noise(x, np.random.default_rng(4))
    b, snr_b = augment.random_noise(x, np.random.default_rng(4))
    assert snr_a == snr_b and np.array_equal(a, b) and 10 <= snr_a <= 30
    with pytest.raises(InputError, match="silent"):
        augment.add_noise(np.zeros(100), 10.0, np.random.default_rng(0))
    with pytest.raises(InputError, match="mono"):
        augment.apply_gain(np.zeros((2, 100)), 1.0)


def test_voice_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Voice().pitch = 3  # type: ignore[misc]
