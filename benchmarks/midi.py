"""Files per second for tokenizing a MIDI corpus: mmenc-midi vs MidiTok alone vs a
miditoolkit-based preprocessing written the way MIDI-BERT's ``prepare_data`` works.

    python benchmarks/midi.py --files 200 --notes 1000 --repeats 3 [--json OUT]

The corpus is generated (multi-track, 480 ticks per quarter, onsets on and off the 1/16 grid,
pitches in MIDI-BERT's range 22..107) and written to a temporary folder; every row reads the
files from disk. Rows:

- ``mmenc cp`` / ``mmenc octuple``: ``mmenc_midi.midi.load_midi`` (symusic, with the validation
  checks) + ``CPTokenizer.encode`` / ``OctupleTokenizer.encode`` (vectorised numpy).
- ``miditok cpword`` / ``miditok remi``: MidiTok's own tokenizers on the same files
  (``tokenizer.encode(path)``); MidiTok's CPWord is its own CP variant, not MIDI-BERT's.
- ``miditoolkit (official-style) cp``: miditoolkit parsing, then per-note Python loops with
  ``np.argmin`` for the grid, the bar position and the duration bin, bars found by scanning the
  items once per bar, as MIDI-BERT's preprocessing does. Its tokens are checked against
  ``mmenc cp`` on every file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

RES, GRID, BAR = 480, 120, 1920
DURATION_BINS = np.arange(60, 3841, 60)


def make_corpus(directory: Path, files: int, notes: int, seed: int = 0) -> list[Path]:
    from symusic import Note, Score, Tempo, Track

    rng = np.random.default_rng(seed)
    paths = []
    for f in range(files):
        score = Score(RES)
        score.tempos.append(Tempo(0, qpm=float(rng.integers(60, 180))))
        per_track = notes // 4
        for _ in range(4):
            track = Track(program=int(rng.integers(0, 128)))
            starts = np.sort(rng.integers(1, per_track * 240, per_track))
            starts = np.where(rng.random(per_track) < 0.5, starts // GRID * GRID, starts)
            for s, d, p, v in zip(starts, rng.integers(30, 2000, per_track),
                                  rng.integers(22, 108, per_track),
                                  rng.integers(20, 127, per_track), strict=True):
                track.notes.append(Note(int(s), int(d), int(p), int(v)))
            score.tracks.append(track)
        path = directory / f"f{f:04d}.mid"
        score.dump_midi(str(path))
        paths.append(path)
    return paths


def official_style_cp(path: Path, e2w: dict) -> np.ndarray:
    """CP words the way MIDI-BERT's preprocessing computes them (own code, same algorithm)."""
    import miditoolkit

    midi = miditoolkit.MidiFile(str(path))
    notes = []
    for i, inst in enumerate(midi.instruments):
        for n in sorted(inst.notes, key=lambda n: (n.start, n.pitch)):
            notes.append([n.start, n.end, n.pitch, n.velocity, i, "Note"])
    notes.sort(key=lambda x: x[0])
    tempo_at = {t.time: int(t.tempo) for t in midi.tempo_changes}
    last_tempo_time = max(tempo_at) if tempo_at else 0
    tempos, current = [], next(iter(tempo_at.values()), 120)
    for tick in range(0, last_tempo_time + 1, RES):  # one tempo item per beat
        current = tempo_at.get(tick, current)
        tempos.append([tick, None, current, None, -1, "Tempo"])
    grid = np.arange(0, notes[-1][0], GRID, dtype=int)
    for n in notes:
        shift = grid[np.argmin(abs(grid - n[0]))] - n[0]
        n[0] += shift
        n[1] += shift
    max_time = notes[-1][1]
    items = sorted(tempos + notes, key=lambda x: x[0])
    downbeats = np.arange(0, max_time + BAR, BAR)
    words = []
    for bar_start, bar_end in zip(downbeats[:-1], downbeats[1:], strict=True):
        inside = [x for x in items if bar_start <= x[0] < bar_end]  # one scan per bar
        new_bar = True
        flags = np.linspace(bar_start, bar_end, 16, endpoint=False)
        for x in inside:
            if x[5] != "Note":
                continue
            position = int(np.argmin(abs(flags - x[0])))
            duration = int(np.argmin(abs(DURATION_BINS - (x[1] - x[0]))))
            words.append([e2w["Bar"]["Bar New" if new_bar else "Bar Continue"],
                          e2w["Position"][f"Position {position + 1}/16"],
                          e2w["Pitch"][f"Pitch {x[2]}"],
                          e2w["Duration"][f"Duration {duration}"]])
            new_bar = False
    return np.array(words, dtype=np.int64)


def timed(fn, paths: list[Path], repeats: int) -> tuple[float, list]:
    best, out = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        out = [fn(p) for p in paths]
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--notes", type=int, default=1000, help="notes per file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from miditok import REMI, CPWord, TokenizerConfig
    from mmenc_midi.midi import load_midi
    from mmenc_midi.tokenizers import CPTokenizer, OctupleTokenizer
    from mmenc_midi.vocab import load_vocab

    cp, octuple = CPTokenizer(), OctupleTokenizer()
    vocab = load_vocab("cp")
    e2w = dict(zip(vocab.fields, vocab.e2w, strict=True))
    cpword = CPWord(TokenizerConfig(use_programs=True))
    remi = REMI(TokenizerConfig(use_programs=True, one_token_stream_for_programs=True))
    rows = {
        "mmenc cp": lambda p: cp.encode(load_midi(p)),
        "mmenc octuple": lambda p: octuple.encode(load_midi(p)),
        "miditok cpword": lambda p: cpword.encode(p),
        "miditok remi": lambda p: remi.encode(p),
        "miditoolkit (official-style) cp": lambda p: official_style_cp(p, e2w),
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_corpus(Path(tmp), args.files, args.notes)
        results, outputs = {}, {}
        for name, fn in rows.items():
            seconds, outputs[name] = timed(fn, paths, args.repeats)
            results[name] = {"seconds": seconds, "files_per_s": len(paths) / seconds}
        official = outputs["miditoolkit (official-style) cp"]
        same = all(np.array_equal(a, b)
                   for a, b in zip(outputs["mmenc cp"], official, strict=True))
    base = results["miditoolkit (official-style) cp"]["files_per_s"]
    print(f"{args.files} files x {args.notes} notes, best of {args.repeats}")
    print(f"{'row':<34} {'files/s':>10} {'vs official-style':>18}")
    for name, r in results.items():
        print(f"{name:<34} {r['files_per_s']:>10.1f} {r['files_per_s'] / base:>17.1f}x")
    print(f"mmenc cp tokens == official-style tokens on every file: {same}")
    if args.json:
        args.json.write_text(json.dumps({"files": args.files, "notes": args.notes,
                                         "results": results, "same_tokens": same}, indent=1))


if __name__ == "__main__":
    main()
