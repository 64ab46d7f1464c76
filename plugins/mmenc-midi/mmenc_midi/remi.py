"""REMI through MidiTok.

Cost cap: REMI, which writes a token per bar even where nothing sounds, tokenizes only the part of
the score its window can reach: the first ``max_len`` bars (at the longest meter of the score) and
the notes up to the onset of note number ``max_len`` (with any notes sharing that onset); in a
batch, a score with no note in that part is refused (a single note 125,000 bars in gave 250,000
tokens). ``encode`` without ``windowed`` still gives every token (corpus jobs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmenc.batch import TokenBatch
from mmenc.errors import InputError

from mmenc_midi.compound import MODALITY, as_score, item_label


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
        label = item_label(score)
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
