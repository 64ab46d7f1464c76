"""MIDI <-> rendered audio pairs of the music21 folk tunes.

The tunes, their text and their split come from :mod:`mmenc_midi.data` (the ABC song books of
the installed music21 corpus, converted once with ``abc2midi``; the split is by song book, so
the test tunes come from books never trained on). Each picked tune gives

- a MIDI snippet: its first ``seconds`` (:func:`mmenc_audio.render.midi_snippet`), written
  once to ``<out_dir>/snippets/<sha256>.mid``;
- a rendered clip of the whole tune with a random General MIDI program and a random offset of
  up to ``max_offset`` seconds (leading silence or start cut), both drawn from ``(seed, tune
  id)`` (:func:`mmenc_audio.render.draw_setting`), cut to ``seconds``, written once to
  ``<out_dir>/audio/<sha256>.<fmt>`` (mono, 16 kHz).

API:

- ``midi_audio_pairs(out_dir, n_train=2000, n_test=500, seed=0, seconds=8.0, max_offset=2.0,
  fmt="flac", renderer=None) -> Manifest``: a list of rows ``{"id", "midi", "audio", "text",
  "split", "group", "program", "offset", "seconds", "tune", "synthetic": True}`` (test rows
  first; ``midi`` is the snippet, ``tune`` the whole tune's MIDI file in the cache, so
  ``Renderer().render(row["tune"], row["program"], row["offset"], row["seconds"])`` makes the
  clip again, e.g. on the fly in a data loader),
  with ``.skipped``: tunes left out by reason (fewer than :data:`MIN_NOTES` notes in the
  snippet, a silent render). ``n_test`` tunes are drawn from the held-out books, or all of
  them when there are fewer; ``n_train`` from the others; the draw depends on ``seed`` only.
  A second call with the same arguments reads everything from ``out_dir``.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

from mmenc.errors import InputError
from mmenc_audio.render import Renderer, draw_setting, midi_snippet

MIN_NOTES = 4
"""Snippets with fewer notes are left out (nothing to hear, nothing to match)."""


class Manifest(list[dict[str, Any]]):
    """Rows of a data set, and the items left out by reason (``skipped``)."""

    def __init__(self, rows: list[dict[str, Any]], skipped: dict[str, int]) -> None:
        super().__init__(rows)
        self.skipped = skipped


def _pick(items: list[Any], n: int, rng: random.Random) -> list[Any]:
    items = sorted(items, key=lambda p: p.id)
    return items if n >= len(items) else rng.sample(items, n)


def midi_audio_pairs(out_dir: str | Path, n_train: int = 2000, n_test: int = 500, seed: int = 0,
                     seconds: float = 8.0, max_offset: float = 2.0, fmt: str = "flac",
                     renderer: Renderer | None = None) -> Manifest:
    """Folk-tune MIDI snippets and their renders; see the module docstring."""
    from mmenc_midi.data import folk_tunes

    out = Path(out_dir)
    folk = folk_tunes(out / "folk")
    rng = random.Random(seed)
    picked = [(p, "test") for p in _pick(folk.test, n_test, rng)]
    picked += [(p, "train") for p in _pick(folk.train, n_train, rng)]
    renderer = Renderer() if renderer is None else renderer
    snippets = out / "snippets"
    snippets.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for pair, split in picked:
        data = Path(pair.midi).read_bytes()
        snippet = midi_snippet(data, seconds)
        if snippet.note_num() < MIN_NOTES:
            skipped[f"fewer than {MIN_NOTES} notes in the first {seconds} s"] += 1
            continue
        snippet_bytes = snippet.dumps_midi()
        midi_path = snippets / f"{hashlib.sha256(snippet_bytes).hexdigest()[:32]}.mid"
        if not midi_path.is_file():
            tmp = midi_path.with_suffix(".mid.part")
            tmp.write_bytes(snippet_bytes)
            tmp.replace(midi_path)
        program, offset = draw_setting(pair.id, seed, max_offset)
        try:
            audio = renderer.render_file(data, program, offset, seconds, out / "audio", fmt)
        except InputError as exc:
            skipped[exc.reason.split(" (")[0]] += 1
            continue
        rows.append({"id": pair.id, "midi": str(midi_path), "audio": str(audio),
                     "text": pair.text, "split": split, "group": pair.book, "program": program,
                     "offset": offset, "seconds": seconds, "tune": pair.midi,
                     "synthetic": True})
    return Manifest(rows, dict(skipped))
