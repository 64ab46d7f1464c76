"""MIDI augmentations: transposition within a pitch range, tempo scaling and time stretching."""

from __future__ import annotations

import numpy as np
import pytest
from mmenc.errors import InputError

from mmenc_midi.augment import random_tempo, random_transpose, scale_tempo, stretch, transpose
from mmenc_midi.midi import make_score
from mmenc_midi.tokenizers import CP_PITCH_RANGE


def _pitches(score):
    return [[int(n.pitch) for n in t.notes] for t in score.tracks]


def _melody(low=60, high=72, tempo=96.0):
    pitches = [low, high, (low + high) // 2, low + 1]
    return make_score([(i * 480, 240, p, 90) for i, p in enumerate(pitches)], tempo=tempo)


def test_transpose_moves_every_pitch_by_k():
    score = _melody()
    for k in (-5, 0, 7):
        moved, applied = transpose(score, k)
        assert applied == k
        assert _pitches(moved) == [[p + k for p in track] for track in _pitches(score)]
    assert _pitches(score) == [[60, 72, 66, 61]]  # the input is left alone


def test_transpose_is_clamped_to_the_pitch_range():
    lo, hi = CP_PITCH_RANGE
    score = _melody(low=lo + 3, high=hi - 2)
    up, k_up = transpose(score, 12, CP_PITCH_RANGE)
    down, k_down = transpose(score, -12, CP_PITCH_RANGE)
    assert (k_up, k_down) == (2, -3)
    assert max(max(t) for t in _pitches(up)) == hi and min(min(t) for t in _pitches(down)) == lo
    assert _pitches(up) == [[p + 2 for p in t] for t in _pitches(score)]
    too_wide = _melody(low=lo - 1, high=hi + 1)  # no shift can fit it: left as it is
    same, applied = transpose(too_wide, 3, CP_PITCH_RANGE)
    assert applied == 0 and _pitches(same) == _pitches(too_wide)


def test_transpose_leaves_drums_alone():
    from symusic import Note, Track

    score = _melody()
    drums = Track(program=0, is_drum=True)
    drums.notes.append(Note(0, 120, 36, 100))
    score.tracks.append(drums)
    moved, applied = transpose(score, 4)
    assert applied == 4 and _pitches(moved) == [[64, 76, 70, 65], [36]]


def test_random_transpose_is_deterministic_given_the_generator():
    score = _melody()
    a = random_transpose(score, np.random.default_rng(11), 6, CP_PITCH_RANGE)
    b = random_transpose(score, np.random.default_rng(11), 6, CP_PITCH_RANGE)
    assert a[1] == b[1] and a[0].dumps_midi() == b[0].dumps_midi()
    shifts = {random_transpose(score, np.random.default_rng(s), 6)[1] for s in range(40)}
    assert shifts <= set(range(-6, 7)) and len(shifts) > 5


def test_scale_tempo_changes_seconds_not_ticks():
    score = _melody(tempo=96.0)
    fast = scale_tempo(score, 1.5)
    assert fast.tracks[0].notes.numpy()["time"].tolist() == \
        score.tracks[0].notes.numpy()["time"].tolist()
    assert fast.to("second").end() == pytest.approx(score.to("second").end() / 1.5, rel=1e-4)
    assert fast.tempos[0].qpm == pytest.approx(144.0, rel=1e-4)
    untimed = make_score([(0, 480, 60, 90), (480, 480, 62, 90)], tempo=None)
    assert scale_tempo(untimed, 2.0).to("second").end() == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(InputError, match="factor"):
        scale_tempo(score, 10.0)


def test_stretch_scales_ticks():
    score = _melody()
    long = stretch(score, 2.0)
    np.testing.assert_array_equal(long.tracks[0].notes.numpy()["time"],
                                  2 * score.tracks[0].notes.numpy()["time"])
    np.testing.assert_array_equal(long.tracks[0].notes.numpy()["duration"],
                                  2 * score.tracks[0].notes.numpy()["duration"])
    assert _pitches(long) == _pitches(score)


def test_random_tempo_is_deterministic_and_in_range():
    score = _melody()
    a, fa = random_tempo(score, np.random.default_rng(5))
    b, fb = random_tempo(score, np.random.default_rng(5))
    assert fa == fb and 0.8 <= fa <= 1.25 and a.dumps_midi() == b.dumps_midi()
