"""Octuple tokens (the OctupleMIDI encoding of MusicBERT, used by PianoBart / Adversarial-MidiBERT):
one row (Bar, Position, Instrument, Pitch, Duration, Velocity, TimeSig, Tempo) per note, positions
in 1/16 of a quarter note, bar lengths set by the time signature at each bar line (TimeSig itself
is the meter in effect at the note), 4/4 and 120 bpm until the first change, drums as instrument
128 with pitches 128 + p, durations in 8 octaves of 16 steps, velocities in steps of 4, tempi in
12 steps per octave from 16 to 256 bpm; rows sorted by all fields (duplicates kept); notes from
bar 256 on are left out.

Cost cap: vectorised over the notes (linear), and bars from 256 on are dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmenc.errors import InputError

from mmenc_midi.compound import CompoundTokenizer, as_score, item_label, note_table

OCT_RES = 16  # positions per quarter note
OCT_MAX_BAR = 256
OCT_MIN_TEMPO, OCT_MAX_TEMPO, OCT_TEMPO_STEPS = 16.0, 256.0, 12
OCT_VELOCITY_STEP = 4
OCT_DRUM = 128
OCT_DECODE_TPQ = 480


def _octuple_durations() -> tuple[np.ndarray, np.ndarray]:
    """(positions -> token table, token -> first position of its bucket)."""
    starts, table = [], []
    for octave in range(8):
        for _ in range(OCT_RES):
            starts.append(len(table))
            table.extend([len(starts) - 1] * (2 ** octave))
    return np.array(table, dtype=np.int64), np.array(starts, dtype=np.int64)


OCT_DUR_ENC, OCT_DUR_DEC = _octuple_durations()


def _time_signatures() -> list[tuple[int, int]]:
    """Octuple's time signatures in id order: x/1 .. x/64 with x up to two whole notes."""
    out = []
    for e in range(7):
        den = 2 ** e
        out.extend((num, den) for num in range(1, 2 * den + 1))
    return out


OCT_TIME_SIGS = _time_signatures()
OCT_TS_ID = {ts: i for i, ts in enumerate(OCT_TIME_SIGS)}


def reduce_time_signature(num: int, den: int) -> tuple[int, int]:
    """A time signature Octuple can write: halve both over x/64, split bars over two wholes;
    anything still unknown (a denominator that is not a power of two) becomes 4/4."""
    num, den = max(int(num), 1), max(int(den), 1)
    while den > 64 and den % 2 == 0 and num % 2 == 0:
        num, den = num // 2, den // 2
    while num > 2 * den:
        num //= next(f for f in range(2, num + 1) if num % f == 0)
    return (num, den) if (num, den) in OCT_TS_ID else (4, 4)


class OctupleTokenizer(CompoundTokenizer):
    """Octuple tokens in Adversarial-MidiBERT's column order (Bar, Position, Instrument, Pitch,
    Duration, Velocity, TimeSig, Tempo).

    Args:
        max_len: rows kept per item (Adversarial-MidiBERT: 1024).
    """

    name = "midi-octuple"
    scheme = "octuple"

    @staticmethod
    def _time_signatures(score: Any, tpq: int) -> tuple[np.ndarray, np.ndarray]:
        """(position, ts id) of every change, 4/4 from 0 until the first; at equal positions
        the later change wins (searches take the last)."""
        changes = [(0, OCT_TS_ID[(4, 4)])]
        for ts in sorted(score.time_signatures, key=lambda x: x.time):
            num, den = reduce_time_signature(ts.numerator, ts.denominator)
            changes.append((round(ts.time * OCT_RES / tpq), OCT_TS_ID[(num, den)]))
        return (np.array([c[0] for c in changes], dtype=np.int64),
                np.array([c[1] for c in changes], dtype=np.int64))

    @staticmethod
    def _bar_layout(times: np.ndarray, ids: np.ndarray,
                    last_pos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Runs of equal bars: (start position, first bar index, bar length). A bar's length
        is set by the time signature at its first position, so a change inside a bar takes
        effect at the next bar line."""
        seg_start, seg_bar, seg_len = [], [], []
        pos, bar = 0, 0
        while True:
            num, den = OCT_TIME_SIGS[ids[np.searchsorted(times, pos, side="right") - 1]]
            length = max(num * 4 * OCT_RES // den, 1)
            seg_start.append(pos), seg_bar.append(bar), seg_len.append(length)
            later = times[times > pos]
            if len(later) == 0 or pos > last_pos or bar >= OCT_MAX_BAR:
                break
            k = -(-(int(later[0]) - pos) // length)  # bars until the first line at/after it
            pos, bar = pos + k * length, bar + k
        return np.array(seg_start), np.array(seg_bar), np.array(seg_len)

    def encode(self, score: Any) -> np.ndarray:
        label = item_label(score)
        score = as_score(score)
        tpq = int(score.ticks_per_quarter)
        t = note_table(score)
        if len(t["start"]) == 0:
            raise InputError(label, "no notes")
        start = np.rint(t["start"] * OCT_RES / tpq).astype(np.int64)
        end = np.rint(t["end"] * OCT_RES / tpq).astype(np.int64)
        ts_times, ts_ids = self._time_signatures(score, tpq)
        seg_start, seg_bar, seg_len = self._bar_layout(ts_times, ts_ids, int(start.max()))
        seg = np.searchsorted(seg_start, start, side="right") - 1
        offset = start - seg_start[seg]
        bar = seg_bar[seg] + offset // seg_len[seg]
        position = offset % seg_len[seg]
        time_sig = ts_ids[np.searchsorted(ts_times, start, side="right") - 1]
        dur = np.clip(end - start, 0, len(OCT_DUR_ENC) - 1)
        duration = OCT_DUR_ENC[dur]
        instrument = np.where(t["drum"], OCT_DRUM, t["program"])
        pitch = np.where(t["drum"], t["pitch"] + OCT_DRUM, t["pitch"])
        velocity = t["velocity"] // OCT_VELOCITY_STEP
        tempos = sorted(score.tempos, key=lambda x: x.time)
        tempo_times = np.array([0] + [round(x.time * OCT_RES / tpq) for x in tempos])
        tempo_qpm = np.array([120.0] + [float(x.qpm) for x in tempos])  # 120 until the first
        k = np.searchsorted(tempo_times, start, side="right") - 1
        qpm = np.clip(tempo_qpm[k], OCT_MIN_TEMPO, OCT_MAX_TEMPO)
        tempo = np.rint(np.log2(qpm / OCT_MIN_TEMPO) * OCT_TEMPO_STEPS).astype(np.int64)
        rows = np.stack([bar, position, instrument, pitch, duration, velocity, time_sig, tempo],
                        axis=1)
        rows = rows[bar < OCT_MAX_BAR]
        if len(rows) == 0:
            raise InputError(label, f"no notes in the first {OCT_MAX_BAR} bars")
        return rows[np.lexsort(rows.T[::-1])].astype(np.int64)  # sorted by all 8 columns

    def decode(self, tokens: np.ndarray | torch.Tensor) -> Any:
        from symusic import Note, Score, Tempo, TimeSignature, Track

        rows = np.asarray(tokens, dtype=np.int64).reshape(-1, 8)
        regular = np.array(self.vocab.regular_counts())
        rows = rows[(rows < regular).all(axis=1)]
        ticks = OCT_DECODE_TPQ // OCT_RES
        score = Score(OCT_DECODE_TPQ)
        if len(rows) == 0:
            return score
        rows = rows[np.lexsort(rows.T[::-1])]
        n_bars = int(rows[:, 0].max()) + 1
        bounds = np.searchsorted(rows[:, 0], np.arange(n_bars + 1))
        bar_start = np.zeros(n_bars + 1, dtype=np.int64)
        current, written = OCT_TS_ID[(4, 4)], -1
        for b in range(n_bars):
            bar_rows = rows[bounds[b]:bounds[b + 1]]
            if len(bar_rows) and bar_rows[0, 1] == 0:
                current = int(bar_rows[0, 6])  # a note on the bar line shows the bar's meter
            num, den = OCT_TIME_SIGS[current]
            if current != written:
                score.time_signatures.append(TimeSignature(int(bar_start[b]) * ticks, num, den))
                written = current
            bar_start[b + 1] = bar_start[b] + max(num * 4 * OCT_RES // den, 1)
            for pos, ts in bar_rows[:, [1, 6]]:  # a change inside the bar, at its first note
                if ts != current:
                    current = written = int(ts)
                    change = OCT_TIME_SIGS[current]
                    score.time_signatures.append(
                        TimeSignature(int(bar_start[b] + pos) * ticks, *change))
        tracks: dict[int, Any] = {}
        last_tempo = -1
        for bar, pos, inst, pitch, dur, vel, _ts, tempo in rows:
            start = (int(bar_start[bar]) + int(pos)) * ticks
            if tempo != last_tempo:
                qpm = OCT_MIN_TEMPO * 2 ** (int(tempo) / OCT_TEMPO_STEPS)
                score.tempos.append(Tempo(start, qpm=qpm))
                last_tempo = tempo
            if inst not in tracks:
                drum = inst == OCT_DRUM
                tracks[inst] = Track(program=0 if drum else int(inst), is_drum=bool(drum))
            note_pitch = int(pitch) - OCT_DRUM if inst == OCT_DRUM else int(pitch)
            tracks[inst].notes.append(Note(start, int(OCT_DUR_DEC[dur]) * ticks,
                                           note_pitch & 0x7F,
                                           int(vel) * OCT_VELOCITY_STEP + OCT_VELOCITY_STEP // 2))
        for inst in sorted(tracks):
            score.tracks.append(tracks[inst])
        return score
