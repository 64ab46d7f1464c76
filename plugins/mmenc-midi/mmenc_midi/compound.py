"""The base of the compound MIDI tokenizers (CP, Octuple) and what every MIDI tokenizer shares.

Compound tokenizers turn a ``symusic.Score`` into ``[n f]`` int64 rows, one row per note, in the
column order of the model (:mod:`mmenc_midi.vocab`), and back (``decode``). Batches are
``TokenBatch(ids [b n f], mask [b n], pad_id=(per-field pad ids))``. Errors name the item (its
path, ``<N bytes>`` or ``<symusic.Score of N notes>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmenc.batch import TokenBatch

from mmenc_midi.vocab import CompoundVocab, load_vocab

MODALITY = "midi"


def note_table(score: Any) -> dict[str, np.ndarray]:
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


def item_label(item: Any) -> str:
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
