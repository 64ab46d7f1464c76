"""MIDI-BERT's CP tokens (``data_creation/prepare_data``), at 480 ticks per quarter (other
resolutions are resampled first):

- notes of all tracks, each track sorted by (start, pitch), then all by start (stably);
- onsets snapped to the nearest multiple of 120 ticks (ties to the earlier one), the note end
  moved by the same shift; as in the official code the grid runs from 0 up to, *not including*,
  the last onset (``official_grid=True``); ``official_grid=False`` lets it include the last
  onset, so that re-tokenizing a decoded file gives the same tokens;
- bars of 1920 ticks up to the end of the last note (in onset order); Bar is ``New`` on the
  first note of a bar and ``Continue`` after; Position = onset within the bar in 1/16;
- Duration = index of the nearest of 60, 120, ..., 3840 ticks (ties to the shorter);
- notes outside MIDI-BERT's pitch range 22..107 are left out (the official code stops with a
  KeyError on them).

Cost cap: vectorised over the notes (linear).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmenc.errors import InputError

from mmenc_midi.compound import CompoundTokenizer, as_score, item_label, note_table

CP_TPQ = 480
CP_GRID = 120  # a 1/16 note at 480 ticks per quarter
CP_BAR = 4 * CP_TPQ
CP_DURATION_BINS = np.arange(60, 3841, 60)  # 64 bins
CP_PITCH_RANGE = (22, 107)
VELOCITY_LABEL_BINS = np.array([0, 32, 48, 64, 80, 96, 128])


class CPTokenizer(CompoundTokenizer):
    """MIDI-BERT's CP tokens: (Bar, Position, Pitch, Duration) per note.

    Args:
        max_len: rows kept per item (MIDI-BERT: 512).
        official_grid: quantise on MIDI-BERT's grid, which stops before the last onset (so
            the last onsets move back one step when they sit on the grid); False: the grid
            includes the last onset.
    """

    name = "midi-cp"
    scheme = "cp"

    def __init__(self, max_len: int = 512, official_grid: bool = True) -> None:
        super().__init__(max_len)
        self.official_grid = bool(official_grid)
        v = self.vocab
        self._pitch0 = v.id("Pitch", str(CP_PITCH_RANGE[0]))
        self._new, self._continue = v.id("Bar", "New"), v.id("Bar", "Continue")

    def _notes(self, score: Any) -> dict[str, np.ndarray]:
        """MIDI-BERT's note order and quantisation; the notes that end up in bars."""
        label = item_label(score)
        score = as_score(score)
        if int(score.ticks_per_quarter) != CP_TPQ:
            score = score.resample(CP_TPQ, min_dur=0)
        t = note_table(score)
        keep = (t["pitch"] >= CP_PITCH_RANGE[0]) & (t["pitch"] <= CP_PITCH_RANGE[1])
        t = {k: v[keep] for k, v in t.items()}
        if len(t["start"]) == 0:
            raise InputError(label, "no notes in MIDI-BERT's pitch range 22..107")
        index = np.arange(len(t["start"]))
        by_start = np.lexsort((index, t["pitch"], t["track"], t["start"]))
        t = {k: v[by_start] for k, v in t.items()}
        last = int(t["start"][-1])
        n_grid = max(-(-last // CP_GRID), 1) if self.official_grid else last // CP_GRID + 1
        slot = np.clip((t["start"] + CP_GRID // 2 - 1) // CP_GRID, 0, n_grid - 1)
        shift = slot * CP_GRID - t["start"]
        t["qstart"], t["qend"] = t["start"] + shift, t["end"] + shift
        max_time = int(t["qend"][-1])
        n_bars = len(range(0, max_time + CP_BAR, CP_BAR)) - 1
        order = np.argsort(t["qstart"], kind="stable")
        t = {k: v[order] for k, v in t.items()}
        inside = t["qstart"] < n_bars * CP_BAR
        t = {k: v[inside] for k, v in t.items()}
        if len(t["start"]) == 0:
            raise InputError(label, "no note starts inside a bar")
        return t

    def encode(self, score: Any) -> np.ndarray:
        t = self._notes(score)
        bar = t["qstart"] // CP_BAR
        position = (t["qstart"] - bar * CP_BAR) // CP_GRID
        new_bar = np.ones(len(bar), dtype=bool)
        new_bar[1:] = bar[1:] != bar[:-1]
        duration = np.clip((t["end"] - t["start"] - 31) // 60, 0, len(CP_DURATION_BINS) - 1)
        rows = np.stack([np.where(new_bar, self._new, self._continue), position,
                         t["pitch"] - CP_PITCH_RANGE[0] + self._pitch0, duration], axis=1)
        return rows.astype(np.int64)

    def token_labels(self, score: Any, task: str) -> np.ndarray:
        """Per-row labels of MIDI-BERT's token tasks, aligned with :meth:`encode`:
        ``melody``: track index + 1 (POP909: 1 melody, 2 bridge, 3 piano); ``velocity``:
        velocity class (bins 0, 32, 48, 64, 80, 96, 128) + 1; 0 is left for padding."""
        t = self._notes(score)
        if task == "melody":
            return t["track"] + 1
        if task == "velocity":
            return np.searchsorted(VELOCITY_LABEL_BINS, t["velocity"], side="right")
        raise ValueError(f"task must be 'melody' or 'velocity', got {task!r}")

    def decode(self, tokens: np.ndarray | torch.Tensor, velocity: int = 64) -> Any:
        from symusic import Note, Score, Track

        rows = np.asarray(tokens, dtype=np.int64).reshape(-1, 4)
        regular = self.vocab.regular_counts()
        score = Score(CP_TPQ)
        track = Track(program=0, is_drum=False)
        bar = -1
        for b, pos, pitch, dur in rows:
            if b >= regular[0] or pos >= regular[1] or pitch >= regular[2] or dur >= regular[3]:
                continue
            if b == self._new or bar < 0:
                bar += 1
            start = bar * CP_BAR + int(pos) * CP_GRID
            track.notes.append(Note(start, int(CP_DURATION_BINS[dur]),
                                    int(pitch) - self._pitch0 + CP_PITCH_RANGE[0], velocity))
        score.tracks.append(track)
        return score

    def config(self) -> dict[str, object]:
        return {**super().config(), "official_grid": self.official_grid}
