"""MIDI augmentations on the ``symusic.Score``, deterministic given a ``numpy.random.Generator``.

They work on the score, not on token rows: every tokenizer (CP, Octuple, REMI) and the audio
renderer take a score, and pitch and time are plain fields there, while each token layout
encodes them differently (CP drops notes outside 22..107, Octuple offsets drum pitches by 128).
All functions return a new score (tick time) and leave their input unchanged; drum tracks are
never transposed.

API:

- ``transpose(score, semitones, pitch_range=(0, 127)) -> (score, applied)``: every pitched note
  moved by the same ``applied`` semitones: ``semitones`` clamped so that the lowest and highest
  notes stay inside ``pitch_range`` (inclusive). When the notes already span more than the
  range, ``applied`` is 0 (no shift can fit them).
- ``random_transpose(score, rng, max_semitones=6, pitch_range=(0, 127)) -> (score, applied)``:
  ``semitones`` uniform in ``[-max_semitones, max_semitones]``, then clamped as above
  (use :data:`mmenc_midi.tokenizers.CP_PITCH_RANGE` for MIDI-BERT's CP).
- ``scale_tempo(score, factor) -> score``: every tempo marking times ``factor`` (120 bpm is
  assumed before the first): the music plays ``factor`` times faster, ticks (bars, positions,
  note values) unchanged. Octuple's tempo field and rendered audio change; CP rows do not.
- ``stretch(score, factor) -> score``: every event time and duration times ``factor`` in ticks
  (note values change: a quarter note becomes ``factor`` quarters): what changes CP rows.
- ``random_tempo(score, rng, low=0.8, high=1.25) -> (score, factor)``: ``scale_tempo`` by a
  log-uniform factor.

Factors must be in ``[MIN_FACTOR, MAX_FACTOR]`` (an :class:`~mmenc.errors.InputError` otherwise).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mmenc.errors import InputError

MIN_FACTOR, MAX_FACTOR = 0.25, 4.0


def _check_factor(factor: float) -> float:
    if not MIN_FACTOR <= factor <= MAX_FACTOR:
        raise InputError(factor, f"a tempo or time factor must be in [{MIN_FACTOR}, {MAX_FACTOR}]")
    return float(factor)


def _pitch_bounds(score: Any) -> tuple[int, int] | None:
    lows, highs = [], []
    for track in score.tracks:
        if track.is_drum or len(track.notes) == 0:
            continue
        pitch = track.notes.numpy()["pitch"]
        lows.append(int(pitch.min()))
        highs.append(int(pitch.max()))
    return (min(lows), max(highs)) if lows else None


def transpose(score: Any, semitones: int, pitch_range: tuple[int, int] = (0, 127)
              ) -> tuple[Any, int]:
    """``score`` with its pitched notes moved by ``semitones`` clamped to ``pitch_range``."""
    lo, hi = pitch_range
    out = score.copy()
    bounds = _pitch_bounds(score)
    if bounds is None:
        return out, 0
    down, up = lo - bounds[0], hi - bounds[1]  # the shifts that keep every note in range
    applied = 0 if down > up else min(max(int(semitones), down), up)
    if applied:
        for track in out.tracks:
            if not track.is_drum:
                track.shift_pitch(applied, inplace=True)
    return out, applied


def random_transpose(score: Any, rng: np.random.Generator, max_semitones: int = 6,
                     pitch_range: tuple[int, int] = (0, 127)) -> tuple[Any, int]:
    """A uniform transposition in ``[-max_semitones, max_semitones]``, clamped to the range."""
    return transpose(score, int(rng.integers(-max_semitones, max_semitones + 1)), pitch_range)


def scale_tempo(score: Any, factor: float) -> Any:
    """``score`` played ``factor`` times faster (tempo markings scaled, ticks unchanged)."""
    from symusic import Tempo

    factor = _check_factor(factor)
    out = score.copy()
    tempos = list(score.tempos)
    if not tempos or int(tempos[0].time) > 0:
        tempos.insert(0, Tempo(0, qpm=120.0))
    out.tempos = [Tempo(int(t.time), qpm=float(t.qpm) * factor) for t in tempos]
    return out


def stretch(score: Any, factor: float) -> Any:
    """``score`` with every tick time and duration multiplied by ``factor``."""
    factor = _check_factor(factor)
    end = max(int(score.end()), 1)
    return score.adjust_time([0, end], [0, int(round(end * factor))], inplace=False)


def random_tempo(score: Any, rng: np.random.Generator, low: float = 0.8, high: float = 1.25
                 ) -> tuple[Any, float]:
    """``scale_tempo`` by a factor drawn log-uniformly in ``[low, high]``, and the factor."""
    factor = math.exp(float(rng.uniform(math.log(low), math.log(high))))
    return scale_tempo(score, factor), factor
