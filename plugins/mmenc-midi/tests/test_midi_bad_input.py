"""Bad MIDI input: typed errors naming the file and the reason, skip-and-count batch loading, and
3,000+ mutated files that never crash or hang the parsing process."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mmenc.errors import InputError
from symusic import Note, Score, Track

from mmenc_midi.midi import MAX_TRACKS, example_midi, load_many, load_midi, make_score


def _track(events: bytes) -> bytes:
    body = events + b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + body


def _smf(tracks: list[bytes], fmt: int = 1, division: int = 480,
         ntracks: int | None = None) -> bytes:
    header = struct.pack(">HHH", fmt, len(tracks) if ntracks is None else ntracks, division)
    return b"MThd" + struct.pack(">I", 6) + header + b"".join(tracks)


NOTE = b"\x00\x90\x3c\x40\x83\x60\x80\x3c\x00"  # note 60 on at 0, off after 480 ticks
HUGE_DELTA = b"\xff\xff\xff\x7f"  # 0x0FFFFFFF ticks in one delta


@pytest.mark.parametrize("name,data,reason", [
    ("empty.mid", b"", "empty file"),
    ("text.mid", b"hello, this is not music\n", "not a MIDI file"),
    ("image.mid", b"\x89PNG\r\n\x1a\n" + bytes(40), "not a MIDI file"),
    ("header-only.mid", b"MThd\x00\x00\x00\x06\x00\x01", "truncated MIDI header"),
    ("cut.mid", _smf([_track(NOTE)])[:-6], "truncated"),
    ("missing-track.mid", _smf([_track(NOTE)], ntracks=2), "1 of 2 tracks"),
    ("smpte.mid", _smf([_track(NOTE)], division=0xE728), "SMPTE"),
    ("zero-division.mid", _smf([_track(NOTE)], division=0), "zero ticks per quarter"),
    ("no-notes.mid", _smf([_track(b"\x00\xff\x51\x03\x07\xa1\x20")]), "no notes"),
    ("far.mid", _smf([_track(HUGE_DELTA + NOTE[1:])]), "absurd tick values"),
    ("many-tracks.mid", _smf([_track(NOTE)] * 3000), "3000 tracks"),
    ("format-7.mid", _smf([_track(NOTE)], fmt=7), "unknown MIDI format"),
])
def test_bad_files_give_typed_errors_naming_the_file(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=reason) as info:
        load_midi(path)
    assert name in str(info.value) and info.value.reason
    with pytest.raises(InputError, match=reason):
        load_midi(data)  # the same bytes given directly


def test_other_bad_items(tmp_path):
    import os

    fifo = tmp_path / "pipe.mid"
    os.mkfifo(fifo)  # reading it would block forever
    for item, reason in ((tmp_path / "missing.mid", "file not found"), (fifo, "not a regular"),
                         (Path("/dev/zero"), "not a regular"),
                         (tmp_path, "is a directory"), (object(), "expected a path"),
                         (12, "expected a path")):
        with pytest.raises(InputError, match=reason):
            load_midi(item)
    with pytest.raises(InputError, match="no notes"):
        load_midi(Score(480))
    assert MAX_TRACKS < 3000


def test_the_good_files_load():
    for data in example_midi():
        assert load_midi(data).note_num() > 0
    assert load_midi(_smf([_track(NOTE)])).note_num() == 1
    many = Score(480)
    for i in range(200):
        track = Track(program=i % 128)
        track.notes.append(Note(i, 10, 60, 64))
        many.tracks.append(track)
    assert len(load_midi(many.dumps_midi()).tracks) == 200


def test_batch_loading_skips_and_counts(tmp_path):
    good = tmp_path / "good.mid"
    good.write_bytes(example_midi()[0])
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "empty2.mid").write_bytes(b"")
    (tmp_path / "text.mid").write_text("not midi")
    items = [good, tmp_path / "empty.mid", tmp_path / "text.mid", tmp_path / "empty2.mid",
             example_midi()[1]]
    report = load_many(items)
    assert sorted(report.scores) == [0, 4]
    assert report.skipped == {1: "empty file", 2: "not a MIDI file (no MThd header)",
                              3: "empty file"}
    assert report.counts == {"empty file": 2, "not a MIDI file (no MThd header)": 1}


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    seeds = list(example_midi())
    score = Score(96)
    for t in range(5):
        track = Track(program=int(rng.integers(0, 128)), is_drum=t == 4)
        for s, d, p in zip(rng.integers(0, 4000, 40), rng.integers(0, 400, 40),
                           rng.integers(20, 110, 40), strict=True):
            track.notes.append(Note(int(s), int(d), int(p), 90))
        score.tracks.append(track)
    seeds.append(score.dumps_midi())
    seeds.append(make_score([(0, 100, 60, 80)], tpq=1).dumps_midi())
    return seeds


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = int(rng.integers(0, 13))
    body = data.find(b"MTrk") + 8  # first byte of the first track's events
    if kind >= 10:  # overwrite event bytes, chunk structure intact: symusic parses garbage
        for _ in range(int(rng.integers(1, 4 * (kind - 9)))):
            buf[int(rng.integers(body, len(buf)))] = int(rng.integers(0, 256))
    elif kind == 0:  # flip bits
        for _ in range(int(rng.integers(1, 12))):
            i = int(rng.integers(0, len(buf)))
            buf[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # overwrite bytes after the header
        for _ in range(int(rng.integers(1, 20))):
            buf[int(rng.integers(14, len(buf)))] = int(rng.integers(0, 256))
    elif kind == 2:  # truncate
        buf = buf[: int(rng.integers(0, len(buf)))]
    elif kind == 3:  # insert random bytes
        i = int(rng.integers(0, len(buf)))
        buf[i:i] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == 4:  # corrupt a chunk length
        i = data.find(b"MTrk") + 4
        buf[i:i + 4] = struct.pack(">I", int(rng.integers(0, 2**32)))
    elif kind == 5:  # absurd header fields
        buf[10:14] = struct.pack(">HH", int(rng.integers(0, 2**16)), int(rng.integers(0, 2**16)))
    elif kind == 6:  # huge delta times before events
        i = data.find(b"MTrk") + 8
        buf[i:i + 1] = b"\xff\xff\xff\x7f"
    elif kind == 7:  # delete a range
        i = int(rng.integers(0, len(buf)))
        del buf[i:i + int(rng.integers(1, 40))]
    elif kind == 8:  # random bytes behind a valid header
        buf = buf[:14] + bytearray(rng.integers(0, 256, int(rng.integers(0, 300)),
                                                dtype=np.uint8).tobytes())
    else:  # pure noise (sometimes empty)
        buf = bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
    return bytes(buf)


FUZZ = textwrap.dedent("""
    import collections, json, sys
    from pathlib import Path
    from mmenc.errors import InputError
    from mmenc_midi.midi import load_midi
    from mmenc_midi.tokenizers import CPTokenizer, OctupleTokenizer
    cp, octuple = CPTokenizer(), OctupleTokenizer()
    counts, failures = collections.Counter(), []
    for path in sorted(Path(sys.argv[1]).iterdir()):
        try:
            score = load_midi(path)
            counts["loaded"] += 1
            for tok in (cp, octuple):
                try:
                    assert tok.encode(score).ndim == 2
                    counts["tokenized"] += 1
                except InputError:
                    counts["no tokens"] += 1
        except InputError as exc:
            assert path.name in str(exc)
            counts["refused"] += 1
        except Exception as exc:
            failures.append(f"{path.name}: {type(exc).__name__}: {exc}")
    print(json.dumps({"counts": counts, "failures": failures[:20]}))
""")


def test_mutated_corpus_never_crashes_or_hangs(tmp_path):
    rng = np.random.default_rng(1234)
    seeds = _seeds()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    n = 3200
    for i in range(n):
        (corpus / f"m{i:05d}.mid").write_bytes(_mutate(seeds[i % len(seeds)], rng))
    proc = subprocess.run([sys.executable, "-c", FUZZ, str(corpus)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]  # a crash (signal) or an error fails here
    result = json.loads(proc.stdout)
    assert result["failures"] == []
    counts = result["counts"]
    assert counts["loaded"] + counts["refused"] == n
    assert counts["loaded"] > 150 and counts["refused"] > 1000, counts


def test_tokenize_jobs_skip_and_count(tmp_path):
    from click.testing import CliRunner
    from mmenc.cli import main

    from mmenc_midi.tokenizers import CPTokenizer, tokenize_many

    for i, data in enumerate(example_midi()):
        (tmp_path / f"good{i}.mid").write_bytes(data)
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "cut.mid").write_bytes(example_midi()[0][:40])
    (tmp_path / "low.mid").write_bytes(make_score([(0, 480, 10, 80)]).dumps_midi())
    (tmp_path / "readme.txt").write_text("not part of the corpus")
    files = sorted(tmp_path.glob("*.mid"))
    report = tokenize_many(files, CPTokenizer())
    assert len(report.rows) == 3
    assert report.counts == {"empty file": 1, "no notes in MIDI-BERT's pitch range 22..107": 1,
                             "truncated: chunk b'MTrk' at byte 14 declares 94 bytes, "
                             "18 remain": 1}
    out = tmp_path / "tokens.npz"
    result = CliRunner().invoke(main, ["midi-tokenize", str(tmp_path), "--out", str(out),
                                       "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["files"], summary["tokenized"], summary["skipped"]) == (6, 3, 3)
    saved = np.load(out)
    assert saved["tokens"].shape == (summary["tokens"], 4)
    assert saved["offsets"].tolist()[-1] == summary["tokens"] and len(saved["files"]) == 3


def test_scores_in_other_time_units_are_converted():
    score = load_midi(example_midi()[0])
    for unit in ("quarter", "second"):
        again = load_midi(score.to(unit))
        assert "Tick" in str(again.ttype)
        assert again.tracks[0].notes.numpy()["time"].tolist() == \
            score.tracks[0].notes.numpy()["time"].tolist()


# -- cost caps ------------------------------------------------------------------------------------
def test_a_late_single_note_is_refused_not_tokenized_bar_by_bar(tmp_path):
    """One note 125,000 bars in gave REMI 250,000 Bar tokens; a batch reaches max_len bars."""
    import time

    from mmenc_midi.tokenizers import RemiTokenizer

    path = tmp_path / "late.mid"
    path.write_bytes(make_score([(480 * 499_000, 480, 60, 80)]).dumps_midi())
    assert path.stat().st_size < 100
    remi = RemiTokenizer(max_len=256)
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"late.mid: no notes in the first 256 bars \(the "
                                         r"midi-remi tokenizer's max_len\)"):
        remi([path])
    assert time.perf_counter() - start < 2.0


def test_remi_tokenizes_only_what_its_window_can_use():
    import time

    from mmenc_midi.tokenizers import RemiTokenizer

    rng = np.random.default_rng(0)
    many = make_score([(i * 120, 240, int(p), 80)
                       for i, p in enumerate(rng.integers(40, 90, 50_000))])
    remi = RemiTokenizer(max_len=128)
    start = time.perf_counter()
    batch = remi([many])
    assert time.perf_counter() - start < 2.0  # the whole file took about 9 s
    assert batch.ids.shape == (1, 128)
    chord = make_score([(480 * (i // 12), 480, 40 + (i % 12) * 3, 80) for i in range(400)],
                       time_signature=(7, 4))
    for score in (many.clip(0, 120 * 3000), chord, *map(load_midi, example_midi())):
        for max_len in (16, 128, 1024):
            tok = RemiTokenizer(max_len=max_len)
            assert np.array_equal(tok([score]).ids[0][tok([score]).mask[0]].numpy(),
                                  tok.encode(score)[:max_len])


@pytest.mark.parametrize("name", ["midi-cp", "midi-octuple", "midi-remi"])
def test_tokenizer_refusals_name_the_file(tmp_path, name):
    from mmenc_midi.tokenizers import tokenizer_for

    path = tmp_path / "high.mid"
    if name == "midi-cp":  # no note in MIDI-BERT's pitch range
        path.write_bytes(make_score([(0, 480, 120, 80)]).dumps_midi())
    else:  # nothing before bar 256 (Octuple) or before max_len bars (REMI)
        path.write_bytes(make_score([(480 * 4 * 3000, 480, 60, 80)]).dumps_midi())
    with pytest.raises(InputError) as info:
        tokenizer_for({"tokenizer": name})([path])
    assert str(info.value).startswith(f"{path}: ")
    with pytest.raises(InputError, match=r"^<\d+ bytes>: "):
        tokenizer_for({"tokenizer": name})([path.read_bytes()])


def test_midi_limits_are_options(tmp_path):
    from symusic import Tempo

    from mmenc_midi import midi
    from mmenc_midi.midi import MidiLimits

    data = make_score([(i * 240, 240, 60, 80) for i in range(20)]).dumps_midi()
    with pytest.raises(InputError, match=r"20 notes \(at most 10, MidiLimits.max_notes\)"):
        load_midi(data, MidiLimits(max_notes=10))
    with pytest.raises(InputError, match=r"at most 100 quarter|MidiLimits.max_quarters"):
        load_midi(make_score([(480 * 200, 480, 60, 80)]), MidiLimits(max_quarters=100))
    with pytest.raises(InputError, match=r"too large: \d+ bytes \(at most 50, "):
        load_midi(data, MidiLimits(max_bytes=50))
    tempos = make_score([(0, 480, 60, 80)])
    for i in range(30):
        tempos.tempos.append(Tempo(i * 10, qpm=100.0 + i))
    path = tmp_path / "tempi.mid"
    path.write_bytes(tempos.dumps_midi())
    with pytest.raises(InputError, match=r"tempi.mid: 32 tempo, meter and key changes \(at most "
                                         r"20, MidiLimits.max_meta_events\)"):
        load_midi(path, MidiLimits(max_meta_events=20))
    assert load_midi(path).note_num() == 1
    assert midi.LIMITS == MidiLimits()
