"""MIDI tokenizers: MIDI-BERT's CP, Adversarial-MidiBERT's Octuple, and REMI through MidiTok.

Compound tokenizers turn a ``symusic.Score`` into ``[n f]`` int64 rows, one row per note, in the
column order of the model (:mod:`mmenc_midi.vocab`), and back (``decode``). Batches are
``TokenBatch(ids [b n f], mask [b n], pad_id=(per-field pad ids))``.

CP (MIDI-BERT, ``data_creation/prepare_data``), at 480 ticks per quarter (other resolutions are
resampled first):

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

Octuple (the OctupleMIDI encoding of MusicBERT, used by PianoBart / Adversarial-MidiBERT): one
row (Bar, Position, Instrument, Pitch, Duration, Velocity, TimeSig, Tempo) per note, positions in
1/16 of a quarter note, bar lengths set by the time signature at each bar line (TimeSig itself is
the meter in effect at the note), 4/4 and 120 bpm until the first change, drums as instrument
128 with pitches 128 + p, durations in 8 octaves of 16 steps, velocities in steps of 4, tempi in
12 steps per octave from 16 to 256 bpm; rows sorted by all fields (duplicates kept); notes from
bar 256 on are left out.

Cost caps: loading is capped by :class:`mmenc_midi.midi.MidiLimits`; CP and Octuple are
vectorised over the notes (linear), and Octuple drops bars from 256 on. REMI, which writes a
token per bar even where nothing sounds, tokenizes only the part of the score its window can
reach: the first ``max_len`` bars (at the longest meter of the score) and the notes up to the
onset of note number ``max_len`` (with any notes sharing that onset); in a batch, a score with
no note in that part is refused (a single note 125,000 bars in gave 250,000 tokens).
``encode`` without ``windowed`` still gives every token (corpus jobs). Errors name the item
(its path, ``<N bytes>`` or ``<symusic.Score of N notes>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmenc.batch import TokenBatch
from mmenc.errors import InputError

from mmenc_midi.vocab import CompoundVocab, load_vocab

MODALITY = "midi"

# -- CP constants (MIDI-BERT) ---------------------------------------------------------------------
CP_TPQ = 480
CP_GRID = 120  # a 1/16 note at 480 ticks per quarter
CP_BAR = 4 * CP_TPQ
CP_DURATION_BINS = np.arange(60, 3841, 60)  # 64 bins
CP_PITCH_RANGE = (22, 107)
VELOCITY_LABEL_BINS = np.array([0, 32, 48, 64, 80, 96, 128])

# -- Octuple constants (OctupleMIDI) --------------------------------------------------------------
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


def _note_table(score: Any) -> dict[str, np.ndarray]:
    """Every note of every track: start, end, pitch, velocity, track, program, drum, order."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("start", "end", "pitch", "velocity", "track",
                                           "program", "drum")}
    for t, track in enumerate(score.tracks):
        if len(track.notes) == 0:
            continue
        arr = track.notes.numpy()
        start = arr["time"].astype(np.int64)
        n = len(start)
        cols["start"].append(start)
        cols["end"].append(start + arr["duration"].astype(np.int64))
        cols["pitch"].append(arr["pitch"].astype(np.int64) & 0x7F)
        cols["velocity"].append(arr["velocity"].astype(np.int64) & 0x7F)
        cols["track"].append(np.full(n, t, dtype=np.int64))
        cols["program"].append(np.full(n, int(track.program) & 0x7F, dtype=np.int64))
        cols["drum"].append(np.full(n, bool(track.is_drum)))
    if not cols["start"]:
        return {k: np.zeros(0, dtype=np.int64) for k in cols}
    return {k: np.concatenate(v) for k, v in cols.items()}


def as_score(item: object) -> Any:
    """A tick-time ``symusic.Score``: tick scores pass through, anything else goes through
    :func:`mmenc_midi.midi.load_midi` (paths, bytes, scores in quarter / second time)."""
    if hasattr(item, "tracks") and "Tick" in str(getattr(item, "ttype", "")):
        return item
    from mmenc_midi.midi import load_midi

    return load_midi(item)


def _label(item: Any) -> str:
    from mmenc_midi.midi import item_label

    return item_label(item)


class CompoundTokenizer:
    """Base of the CP and Octuple tokenizers: ``[n f]`` rows per score, padded batches.

    Args:
        max_len: rows kept per item (the first ``max_len``; :meth:`windows` gives them all).
    """

    modality = MODALITY
    name = ""
    scheme = ""

    def __init__(self, max_len: int = 512) -> None:
        if int(max_len) < 1:
            raise ValueError(f"max_len must be positive, got {max_len}")
        self.max_len = int(max_len)
        self.vocab: CompoundVocab = load_vocab(self.scheme)

    @property
    def pad_ids(self) -> tuple[int, ...]:
        return self.vocab.pad_ids

    def encode(self, score: Any) -> np.ndarray:
        """All rows of one score (or path / bytes), ``[n f]`` int64 (n >= 1)."""
        raise NotImplementedError

    def decode(self, tokens: np.ndarray | torch.Tensor) -> Any:
        """Rows back to a ``symusic.Score`` (pad / mask / other special rows are skipped)."""
        raise NotImplementedError

    def windows(self, score: Any) -> list[np.ndarray]:
        """The rows cut into consecutive windows of at most ``max_len``."""
        rows = self.encode(score)
        return [rows[i:i + self.max_len] for i in range(0, len(rows), self.max_len)]

    def collate(self, rows: list[np.ndarray]) -> TokenBatch:
        """Pad ``[n_i f]`` rows into ``TokenBatch(ids [b n f], mask [b n])``."""
        n = max(len(r) for r in rows)
        f = len(self.pad_ids)
        ids = torch.tensor(self.pad_ids, dtype=torch.long).repeat(len(rows), n, 1)  # [b n f]
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.from_numpy(np.asarray(r, dtype=np.int64).reshape(-1, f))
            mask[i, :len(r)] = True
        return TokenBatch(ids=ids, mask=mask, pad_id=tuple(self.pad_ids))

    def __call__(self, items: list[object]) -> TokenBatch:
        return self.collate([self.encode(item)[: self.max_len] for item in items])

    def config(self) -> dict[str, object]:
        return {"tokenizer": self.name, "max_len": self.max_len}

    def save(self, directory: str) -> None:
        """Nothing to write: the dictionary ships with the package."""


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
        label = _label(score)
        score = as_score(score)
        if int(score.ticks_per_quarter) != CP_TPQ:
            score = score.resample(CP_TPQ, min_dur=0)
        t = _note_table(score)
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
        label = _label(score)
        score = as_score(score)
        tpq = int(score.ticks_per_quarter)
        t = _note_table(score)
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


class RemiTokenizer:
    """REMI through MidiTok, one token stream per file (programs as tokens).

    Args:
        max_len: tokens kept per item.
        beat_res: MidiTok's ``beat_res`` as ``{"0_4": 8, "4_12": 4}`` (JSON-friendly keys).
        num_velocities: velocity bins.
        use_programs: put Program tokens in the stream (all tracks in one sequence).
    """

    modality = MODALITY
    name = "midi-remi"

    def __init__(self, max_len: int = 1024, beat_res: dict[str, int] | None = None,
                 num_velocities: int = 32, use_programs: bool = True) -> None:
        from miditok import REMI, TokenizerConfig

        self.max_len = int(max_len)
        self.beat_res = dict(beat_res or {"0_4": 8, "4_12": 4})
        self.num_velocities = int(num_velocities)
        self.use_programs = bool(use_programs)
        cfg = TokenizerConfig(
            beat_res={tuple(int(x) for x in k.split("_")): int(v)
                      for k, v in self.beat_res.items()},
            num_velocities=self.num_velocities,
            use_programs=self.use_programs,
            one_token_stream_for_programs=True,
        )
        self.tokenizer = REMI(cfg)
        self.pad_id = int(self.tokenizer.pad_token_id)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def window(self, score: Any) -> Any:
        """The part of a tick-time score that the first ``max_len`` tokens can come from:
        every bar and every note gives at least one token, so bars from ``max_len`` on and
        notes after the ``max_len``-th onset cannot reach the window."""
        tpq = int(score.ticks_per_quarter)
        longest_bar = max([4.0, *(4.0 * ts.numerator / max(ts.denominator, 1)
                                  for ts in score.time_signatures)])
        end = int(self.max_len * longest_bar * tpq) + 1
        starts = np.sort(np.concatenate(
            [track.notes.numpy()["time"] for track in score.tracks if len(track.notes)]
            or [np.zeros(0, dtype=np.int64)]))
        if len(starts) > self.max_len:
            end = min(end, int(starts[self.max_len]) + 1)
        return score if end > score.end() else score.clip(0, end, clip_end=False)

    def encode(self, score: Any, windowed: bool = False) -> np.ndarray:
        """Token ids of one item: all of them, or (``windowed``, as a batch takes them) those
        of :meth:`window`, whose first ``max_len`` are the same."""
        label = _label(score)
        score = as_score(score)
        if windowed:
            score = self.window(score)
            if score.note_num() == 0:
                raise InputError(label, f"no notes in the first {self.max_len} bars (the "
                                        "midi-remi tokenizer's max_len)")
        seq = self.tokenizer.encode(score)
        if isinstance(seq, list):
            seq = seq[0]
        ids = np.asarray(seq.ids, dtype=np.int64)
        if len(ids) == 0:
            raise InputError(label, "REMI produced no tokens")
        return ids

    def decode(self, ids: np.ndarray | torch.Tensor) -> Any:
        ids = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) != self.pad_id]
        return self.tokenizer.decode(ids)

    def __call__(self, items: list[object]) -> TokenBatch:
        rows = [self.encode(item, windowed=True)[:self.max_len] for item in items]
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.from_numpy(r)
            mask[i, :len(r)] = True
        return TokenBatch(ids=ids, mask=mask, pad_id=self.pad_id)

    def config(self) -> dict[str, object]:
        return {"tokenizer": self.name, "max_len": self.max_len, "beat_res": self.beat_res,
                "num_velocities": self.num_velocities, "use_programs": self.use_programs}

    def save(self, directory: str) -> None:
        """Nothing to write: the configuration rebuilds the same vocabulary."""


@dataclass
class TokenizeReport:
    """A batch job's result: token rows by item index, skipped items with their reasons."""

    rows: dict[int, np.ndarray] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def counts(self) -> Counter[str]:
        """Skipped items per reason."""
        return Counter(self.skipped.values())


def tokenize_many(items: Iterable[object], tokenizer: Any) -> TokenizeReport:
    """Load and tokenize items one by one; unreadable items and items without tokens are
    skipped and counted instead of stopping the job."""
    report = TokenizeReport()
    for i, item in enumerate(items):
        try:
            report.rows[i] = tokenizer.encode(item)
        except InputError as exc:
            report.skipped[i] = exc.reason
    return report


_CLASSES: dict[str, type] = {
    CPTokenizer.name: CPTokenizer,
    OctupleTokenizer.name: OctupleTokenizer,
    RemiTokenizer.name: RemiTokenizer,
}


def _build(name: str, config: dict[str, Any] | None) -> Any:
    options = dict(config or {})
    given = options.pop("tokenizer", name)
    if given != name:
        raise ValueError(f"tokenizer config is for {given!r}, not {name!r}")
    return _CLASSES[name](**options)


def cp_tokenizer(config: dict[str, Any] | None = None,
                 directory: Path | None = None) -> CPTokenizer:
    """Factory of ``midi-cp`` (``directory`` holds no files of it)."""
    return _build(CPTokenizer.name, config)


def octuple_tokenizer(config: dict[str, Any] | None = None,
                      directory: Path | None = None) -> OctupleTokenizer:
    """Factory of ``midi-octuple``."""
    return _build(OctupleTokenizer.name, config)


def remi_tokenizer(config: dict[str, Any] | None = None,
                   directory: Path | None = None) -> RemiTokenizer:
    """Factory of ``midi-remi``."""
    return _build(RemiTokenizer.name, config)


def tokenizer_for(config: dict[str, Any]) -> Any:
    """Build whichever tokenizer ``config["tokenizer"]`` names."""
    name = config.get("tokenizer")
    if name not in _CLASSES:
        raise ValueError(f"unknown MIDI tokenizer {name!r}; known: {sorted(_CLASSES)}")
    return _build(name, config)


__all__ = ["CPTokenizer", "OctupleTokenizer", "RemiTokenizer", "cp_tokenizer",
           "octuple_tokenizer", "remi_tokenizer", "tokenizer_for", "reduce_time_signature",
           "tokenize_many", "TokenizeReport", "as_score"]
