"""CP, Octuple and REMI tokenizers: hand-checked tokens, the dictionaries, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mmenc.errors import InputError
from symusic import Note, Score, Tempo, TimeSignature, Track

from mmenc_midi.midi import load_midi, make_score
from mmenc_midi.tokenizers import (
    CPTokenizer,
    OctupleTokenizer,
    RemiTokenizer,
    reduce_time_signature,
    tokenizer_for,
)
from mmenc_midi.vocab import load_vocab

SHARED = Path(__file__).resolve().parents[4] / "shared" / "parity"


def _two_tracks(tpq: int = 480) -> Score:
    k = tpq / 480
    score = make_score([(0, 480, 60, 80), (130, 100, 64, 70), (60, 90, 62, 90),
                        (2400, 1920, 21, 80), (2400, 240, 67, 100), (3840, 480, 70, 20)])
    second = Track(program=33)
    second.notes.append(Note(0, 480, 50, 60))
    score.tracks.append(second)
    return score if k == 1 else score.resample(tpq, min_dur=0)


def test_dictionaries_match_the_official_ones():
    cp, octuple = load_vocab("cp"), load_vocab("octuple")
    assert cp.fields == ("Bar", "Position", "Pitch", "Duration")
    assert cp.sizes == (4, 18, 88, 66)
    assert cp.pad_ids == (2, 16, 86, 64) and cp.mask_ids == (3, 17, 87, 65)
    assert octuple.fields == ("Bar", "Position", "Instrument", "Pitch", "Duration", "Velocity",
                              "TimeSig", "Tempo")
    assert octuple.sizes == (262, 134, 135, 262, 134, 38, 260, 55)
    assert octuple.pad_ids == (256, 128, 129, 256, 128, 32, 254, 49)
    for scheme, name in (("cp", "midibert/CP.json"), ("octuple", "adv_midibert/Octuple.json")):
        if (SHARED / name).is_file():
            official = json.loads((SHARED / name).read_text())
            vocab = load_vocab(scheme)
            assert [official["e2w"][f] for f in vocab.fields] == list(vocab.e2w)


def test_cp_tokens_follow_midibert_extraction():
    tokens = CPTokenizer().encode(_two_tracks())
    # order: onset, then track, then pitch; 130 snaps to 120 and 60 (a tie) to 0; pitch 21 is
    # outside 22..107; the last onset (3840) is not on MIDI-BERT's grid and moves to 3720
    assert tokens.tolist() == [
        [0, 0, 60 - 22, 7],    # New bar, 1/16, 480 ticks -> bin 7 (480)
        [1, 0, 50 - 22, 7],    # the second track's note at the same onset
        [1, 0, 62 - 22, 0],    # 90 ticks: a tie between 60 and 120 -> the shorter
        [1, 1, 64 - 22, 1],    # 100 ticks -> 120
        [0, 4, 67 - 22, 3],    # next bar, onset 2400 = 4/16 of bar 1
        [1, 15, 70 - 22, 7],   # 3840 -> 3720, last 1/16 of bar 1
    ]
    full = CPTokenizer(official_grid=False).encode(_two_tracks())
    assert full[:-1].tolist() == tokens[:-1].tolist()
    assert full[-1].tolist() == [0, 0, 70 - 22, 7]  # the grid includes 3840: a new bar
    assert CPTokenizer().token_labels(_two_tracks(), "melody").tolist() == [1, 2, 1, 1, 1, 1]
    assert CPTokenizer().token_labels(_two_tracks(), "velocity").tolist() == [5, 3, 5, 4, 6, 1]


def test_cp_resamples_other_resolutions():
    assert np.array_equal(CPTokenizer().encode(_two_tracks(960)),
                          CPTokenizer().encode(_two_tracks()))


def test_cp_round_trip():
    rng = np.random.default_rng(0)
    notes = [(int(s) * 120, int(d) * 60, int(p), 80) for s, d, p in
             zip(np.sort(rng.integers(0, 200, 80)), rng.integers(1, 64, 80),
                 rng.integers(22, 108, 80), strict=True)]
    tok = CPTokenizer(official_grid=False)
    first = tok.encode(load_midi(make_score(notes).dumps_midi()))
    again = tok.encode(load_midi(tok.decode(first).dumps_midi()))
    assert np.array_equal(first, again)
    # the official grid moves the notes of the last onset back one step at every pass;
    # every other row stays
    official = CPTokenizer()
    a = official.encode(make_score(notes))
    starts = official.decode(a).tracks[0].notes.numpy()["time"]
    at_last = int((starts == starts.max()).sum())
    b = official.encode(official.decode(a))
    assert np.array_equal(a[:-at_last], b[:-at_last])
    assert (b[-at_last:, 1] == (a[-at_last:, 1] - 1) % 16).all()


def test_cp_refuses_scores_outside_its_pitch_range():
    with pytest.raises(InputError, match="pitch range"):
        CPTokenizer().encode(make_score([(0, 480, 10, 80), (480, 480, 120, 80)]))


def test_octuple_tokens():
    score = make_score([(0, 480, 60, 80), (480, 240, 64, 127), (1920, 960, 67, 1)], tpq=480)
    drums = Track(program=0, is_drum=True)
    drums.notes.append(Note(0, 120, 36, 100))
    score.tracks.append(drums)
    rows = OctupleTokenizer().encode(score).tolist()
    ts44 = OctupleTokenizer().vocab.id("TimeSig", "4/4")
    tempo120 = round(np.log2(120 / 16) * 12)
    assert rows == [
        [0, 0, 0, 60, 16, 20, ts44, tempo120],     # a quarter = 16 positions -> token 16
        [0, 0, 128, 128 + 36, 4, 25, ts44, tempo120],  # drums: instrument 128, pitch 128+p
        [0, 16, 0, 64, 8, 31, ts44, tempo120],
        [1, 0, 0, 67, 24, 0, ts44, tempo120],     # 32 positions -> 16 + (32 - 16) // 2
    ]


def test_octuple_tempo_defaults_and_duplicates():
    score = make_score([(0, 480, 60, 80), (0, 480, 60, 80), (1920, 480, 62, 80)], tempo=None)
    score.tempos.append(Tempo(960, qpm=60.0))
    rows = OctupleTokenizer().encode(score)
    assert len(rows) == 3  # two identical notes stay two rows
    assert rows[:, 7].tolist() == [35, 35, 23]  # round(12 log2(bpm / 16)): 120 before 960


def test_octuple_time_signature_changes_at_the_next_bar_line():
    score = make_score([(i * 480, 240, 60, 64) for i in range(12)], time_signature=None)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.time_signatures.append(TimeSignature(2400, 3, 4))  # inside bar 1: from bar 2 on
    rows = OctupleTokenizer().encode(score)
    vocab = OctupleTokenizer().vocab
    bars_positions = rows[:, :2].tolist()
    assert bars_positions == [[0, 0], [0, 16], [0, 32], [0, 48], [1, 0], [1, 16], [1, 32],
                              [1, 48], [2, 0], [2, 16], [2, 32], [3, 0]]
    ts34, ts44 = vocab.id("TimeSig", "3/4"), vocab.id("TimeSig", "4/4")
    # the token is the meter in effect at the note; the bar length changes at the bar line
    assert rows[:, 6].tolist() == [ts44] * 5 + [ts34] * 7
    assert set(rows[rows[:, 0] >= 2, 6].tolist()) == {ts34}
    assert reduce_time_signature(4, 128) == (2, 64)
    assert reduce_time_signature(12, 4) == (6, 4)
    assert reduce_time_signature(5, 3) == (4, 4)


def _rich_score() -> Score:
    rng = np.random.default_rng(1)
    score = Score(480)
    for program, drum in ((0, False), (40, False), (0, True)):
        track = Track(program=program, is_drum=drum)
        for s, d, p, v in zip(rng.integers(0, 30000, 60), rng.integers(0, 4000, 60),
                              rng.integers(30, 100, 60), rng.integers(1, 128, 60),
                              strict=True):
            track.notes.append(Note(int(s), int(d), int(p), int(v)))
        score.tracks.append(track)
    score.tempos.extend([Tempo(0, qpm=90.0), Tempo(7000, qpm=150.0)])
    score.time_signatures.extend([TimeSignature(0, 4, 4), TimeSignature(9000, 7, 8)])
    return score


def test_octuple_round_trip():
    tok = OctupleTokenizer()
    first = tok.encode(load_midi(_rich_score().dumps_midi()))
    again = tok.encode(load_midi(tok.decode(first).dumps_midi()))
    assert len(first) > 150
    assert np.array_equal(first, again)


def test_remi_round_trip():
    tok = RemiTokenizer()
    notes = [(i * 240, 240, 60 + (i * 7) % 12, 64) for i in range(24)]
    first = tok.encode(load_midi(make_score(notes).dumps_midi()))
    again = tok.encode(tok.decode(first))
    assert np.array_equal(first, again)


def test_batches_pad_every_field_and_truncate():
    items = [make_score([(i * 120, 120, 60, 80) for i in range(n)]) for n in (3, 9)]
    batch = CPTokenizer(max_len=5)(items)
    assert batch.ids.shape == (2, 5, 4) and batch.pad_id == (2, 16, 86, 64)
    assert batch.mask.sum(dim=1).tolist() == [3, 5]
    assert batch.ids[0, 3:].tolist() == [[2, 16, 86, 64]] * 2
    octuple = OctupleTokenizer()(items)
    assert octuple.ids.shape == (2, 9, 8)
    windows = CPTokenizer(max_len=4).windows(items[1])
    assert [len(w) for w in windows] == [4, 4, 1]
    remi = tokenizer_for({"tokenizer": "midi-remi", "max_len": 6})(items)
    assert remi.ids.shape == (2, 6) and remi.mask.all()


def test_cp_matches_a_miditoolkit_implementation_of_the_official_algorithm(tmp_path):
    """Same tokens as per-note loops over miditoolkit objects (benchmarks/midi.py)."""
    pytest.importorskip("miditoolkit")
    import importlib.util

    bench = Path(__file__).resolve().parents[3] / "benchmarks" / "midi.py"
    if not bench.is_file():
        pytest.skip("benchmarks/midi.py is not in this checkout")
    spec = importlib.util.spec_from_file_location("midi_benchmark", bench)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vocab = load_vocab("cp")
    e2w = dict(zip(vocab.fields, vocab.e2w, strict=True))
    paths = module.make_corpus(tmp_path, files=6, notes=240, seed=3)
    for path in paths:
        ours = CPTokenizer().encode(load_midi(path))
        assert np.array_equal(ours, module.official_style_cp(path, e2w)), path.name
