"""The folk-tune data set, the MIDI <-> text dual encoder, its baselines, and the adversarial
masker trained through ``mmenc pretrain``."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import mmenc
import pytest
import torch
from mmenc.builtin.towers import TowerEncoder
from mmenc.data import held_out
from mmenc.train import pretrain

from mmenc_midi.data import (
    Tune,
    abc_books,
    corpus_root,
    dance_type,
    folk_tunes,
    normalise_key,
    normalise_meter,
    parse_book,
)
from mmenc_midi.midi import example_midi, load_midi, make_score
from mmenc_midi.model import MidiBertEncoder
from mmenc_midi.pairing import (
    KeyMeterScorer,
    RandomScorer,
    linear_probe,
    note_features,
    pretrain_config,
    text_key_meter,
)

HAVE_CORPUS = importlib.util.find_spec("music21") is not None
HAVE_ABC2MIDI = shutil.which("abc2midi") is not None

BOOK = """% a song book
L:1/8

X:7
T:The First Reel
T:another title
R:reel]
O: Europa, Irland
M:C|
K:Ador
ABcd efge|dBGB A2A2|

X:9
T: Zweites Lied
M: 3/4
L: 1/4
K: Bb
B2 c | d2 B |
"""


# -- ABC headers ----------------------------------------------------------------------------
def test_parse_book_reads_headers_and_keeps_the_tune_text(tmp_path):
    path = tmp_path / "coll" / "book.abc"
    path.parent.mkdir()
    path.write_text(BOOK, encoding="latin-1")
    preamble, tunes = parse_book(path, tmp_path)
    assert "L:1/8" in preamble and "X:" not in preamble
    assert [t.number for t in tunes] == [1, 2]
    first, second = tunes
    assert first.book == "coll/book.abc" and first.id == "coll/book.abc#1"
    assert (first.title, first.genre, first.region, first.meter, first.key) == \
        ("The First Reel", "reel", "Europa, Irland", "2/2", "A dorian")
    assert first.dance == "reel"
    assert first.abc.startswith("X:7") and "ABcd efge" in first.abc and "Zweites" not in first.abc
    assert second.text() == "Zweites Lied. meter: 3/4. key: B flat major"
    assert first.text() == ("The First Reel. genre: reel. region: Europa, Irland. meter: 2/2. "
                            "key: A dorian")


@pytest.mark.parametrize(("raw", "key"), [
    ("G", "G major"), ("Gm", "G minor"), ("E Minor", "E minor"), ("Ador", "A dorian"),
    ("D mix", "D mixolydian"), ("F#m", "F sharp minor"), ("Bb", "B flat major"),
    ("A Mixolydian", "A mixolydian"), ("C clef=bass", "C major"), ("HP", ""), ("none", ""),
])
def test_normalise_key(raw, key):
    assert normalise_key(raw) == key


def test_normalise_meter_and_dance_types():
    assert [normalise_meter(m) for m in ("C", "C|", " 6/8 ", "none")] == ["4/4", "2/2", "6/8", ""]
    assert dance_type("Slipjig") == "slip jig"
    assert dance_type("Braes of Dumblane -- Reel") == "reel"
    assert dance_type("double jig") == "jig"
    assert dance_type("Reeling home") == ""
    assert Tune("b.abc", 1, "X:1", title="Air", genre="hornpipe").dance == "hornpipe"


# -- the real corpus ------------------------------------------------------------------------
@pytest.mark.skipif(not (HAVE_CORPUS and HAVE_ABC2MIDI),
                    reason="needs music21 (pip) and abc2midi (Debian abcmidi)")
def test_folk_tunes_converts_splits_by_book_and_caches(tmp_path):
    root = corpus_root()
    books = [b for b in abc_books(root) if b.parent.name in ("essenFolksong", "oneills1850")]
    books = [books[0], books[-1]]
    data = folk_tunes(tmp_path / "cache", root, books, max_tunes=4)
    assert len(data.pairs) + sum(data.skipped.values()) == 8
    assert len(data.pairs) >= 6
    for pair in data.pairs:
        score = load_midi(pair.midi)  # a valid MIDI file with notes
        assert score.note_num() > 0
        assert Path(pair.midi).is_relative_to(tmp_path / "cache")
        assert pair.test == held_out(pair.book)
        assert pair.text.startswith(pair.title or "untitled")
        assert f"key: {pair.key}" in pair.text if pair.key else True
    assert {p.book for p in data.pairs} == {b.relative_to(root).as_posix() for b in books}
    # the second call reads the cache: same pairs, no conversion
    stamp = {p.midi: Path(p.midi).stat().st_mtime_ns for p in data.pairs}
    again = folk_tunes(tmp_path / "cache", root, books, max_tunes=4)
    assert [p.id for p in again.pairs] == [p.id for p in data.pairs]
    assert {p.midi: Path(p.midi).stat().st_mtime_ns for p in again.pairs} == stamp


@pytest.mark.skipif(not HAVE_ABC2MIDI, reason="needs abc2midi (Debian abcmidi)")
def test_a_tune_that_does_not_convert_is_counted(tmp_path):
    path = tmp_path / "book.abc"
    path.write_text(BOOK + "\nX:10\nT:Empty\nK:C\n", encoding="latin-1")
    data = folk_tunes(tmp_path / "cache", tmp_path, [path])
    assert [p.title for p in data.pairs] == ["The First Reel", "Zweites Lied"]
    assert sum(data.skipped.values()) == 1
    assert note_features(data.pairs[1].midi)["meter"] == "3/4"


# -- baselines ------------------------------------------------------------------------------
def _write(score, path: Path) -> str:
    path.write_bytes(score.dumps_midi())
    return str(path)


def test_key_meter_scorer_matches_estimated_key_and_time_signature(tmp_path):
    c_major = [(i * 480, 480, p, 80) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72,
                                                               67, 64, 60, 67, 72, 60])]
    a_minor = [(i * 480, 480, p, 80) for i, p in enumerate([57, 59, 60, 62, 64, 65, 68, 69,
                                                               64, 60, 57, 64, 69, 57])]
    a = _write(make_score(c_major, time_signature=(4, 4)), tmp_path / "a.mid")
    b = _write(make_score(a_minor, time_signature=(3, 4)), tmp_path / "b.mid")
    assert note_features(a)["key"] == "0 major" and note_features(a)["meter"] == "4/4"
    assert note_features(b)["key"] == "9 minor" and note_features(b)["meter"] == "3/4"
    assert text_key_meter("X. meter: 3/4. key: A dorian") == ("9 minor", "3/4")
    assert text_key_meter("X. key: B flat major") == ("10 major", "")
    texts = ["Song. meter: 3/4. key: A minor", "Tune. meter: 4/4. key: C major"]
    scores = KeyMeterScorer().score_items([a, b], texts, "midi", "text")
    assert scores.argmax(1).tolist() == [1, 0]
    back = KeyMeterScorer().score_items(texts, [a, b], "text", "midi")
    assert back.argmax(1).tolist() == [1, 0]
    rand = RandomScorer().score_items([a, b], texts, "midi", "text")
    assert rand.shape == (2, 2) and torch.equal(rand, RandomScorer().score_items(
        [a, b], texts, "midi", "text"))


def test_linear_probe_separates_separable_classes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    pred = linear_probe(x[:150], y[:150], x[150:], 2)
    assert float((pred == y[150:]).float().mean()) > 0.9


# -- the dual encoder -----------------------------------------------------------------------
def test_midi_text_warm_starts_its_midi_tower_from_midibert(tmp_path):
    torch.manual_seed(0)
    midibert = mmenc.create_model("midibert-cp-tiny").eval()
    model = mmenc.create_model("midi-text-tiny")
    assert isinstance(model, TowerEncoder) and model.kinds["midi"] == "midi"
    model.warm_start("midi", midibert)
    model.eval()
    batch = model.tokenize(example_midi(), "midi")
    got = model.forward_features(batch, "midi").hidden
    want = midibert.forward_features(midibert.tokenize(example_midi(), "midi"), "midi").hidden
    assert torch.allclose(got, want, atol=1e-6)
    model.save_pretrained(tmp_path / "m")
    again = mmenc.load(tmp_path / "m")
    assert torch.allclose(again.encode(example_midi(), "midi"),
                          model.encode(example_midi(), "midi"), atol=1e-6)
    with pytest.raises(ValueError, match="MIDI-BERT"):
        model.warm_start("midi", mmenc.create_model("text-tiny"))


def _manifest(tmp_path: Path) -> Path:
    files = []
    for i, data in enumerate(example_midi()):
        files.append(tmp_path / f"piece{i}.mid")
        files[-1].write_bytes(data)
    texts = ["a C major scale. meter: 4/4", "chords in three bars. meter: 4/4",
             "a waltz melody. meter: 3/4"]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"midi": str(f), "text": t}) + "\n"
                            for f, t in zip(files, texts, strict=True)))
    return path


def test_pairing_config_pretrains_with_contrastive(tmp_path):
    config = pretrain_config(_manifest(tmp_path), tmp_path / "run", steps=3, batch_size=3,
                             dim=32, max_len=32, text_dim=32, text_length=48, embed_dim=16)
    result = pretrain(config)
    assert result.step == 3 and torch.isfinite(torch.tensor(result.metrics["loss"]))
    model = mmenc.load(result.model_dir)
    assert model.recipe == "midi-text-tiny"
    assert model.towers["midi"].width == 32 and model.tokenizers["midi"].max_len == 32
    emb = model.encode(example_midi(), "midi")
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize("recipe", ["midibert-cp-tiny", "midi-text-tiny"])
def test_adversarial_masker_trains_through_pretrain(tmp_path, recipe):
    manifest = _manifest(tmp_path)
    objectives = [{"name": "adversarial-masker", "modalities": ["midi"],
                   "config": {"scheme": "cp", "dim": 32, "hidden": 16}}]
    if recipe == "midi-text-tiny":
        objectives.append({"name": "contrastive", "modalities": ["midi", "text"]})
    config = {"model": {"recipe": recipe}, "objectives": objectives,
              "data": {"train": str(manifest)}, "batch_size": 3, "steps": 4, "seed": 0,
              "log_every": 1, "optim": {"lr": 1e-3}, "output_dir": str(tmp_path / "run"),
              "progress": False}
    before = mmenc.create_model(recipe).state_dict()
    result = pretrain(config)
    assert result.step == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {"adversarial-masker/masker_loss", "adversarial-masker/masked_share",
            "adversarial-masker/acc"} <= set(rows[-1])
    assert all(0 < r["adversarial-masker/masked_share"] <= 0.15 for r in rows)
    after = mmenc.load(result.model_dir).state_dict()
    prefix = "towers.midi." if recipe == "midi-text-tiny" else ""
    assert not torch.equal(after[f"{prefix}fields.in_linear.weight"],
                           before[f"{prefix}fields.in_linear.weight"])


def test_adversarial_masker_refuses_a_wrong_width_and_a_model_without_midibert():
    from mmenc_midi.objectives import AdversarialPretraining

    objective = AdversarialPretraining("cp", dim=48)
    model = mmenc.create_model("midibert-cp-tiny")
    batch = model.tokenize(example_midi(), "midi")
    with pytest.raises(ValueError, match="config.dim: 32"):
        objective.step(model, {"midi": batch})
    with pytest.raises(TypeError, match="MIDI-BERT"):
        AdversarialPretraining("cp", dim=32).step(mmenc.create_model("text-tiny"),
                                                  {"text": batch})
    assert isinstance(AdversarialPretraining("cp", 32).encoder(
        mmenc.create_model("midi-text-tiny"), "midi"), MidiBertEncoder)


@pytest.mark.skipif(not (HAVE_CORPUS and HAVE_ABC2MIDI),
                    reason="needs music21 (pip) and abc2midi (Debian abcmidi)")
def test_run_trains_and_evaluates_on_held_out_books(tmp_path):
    from mmenc_midi.pairing import run

    root = corpus_root()
    ryan = [b for b in abc_books(root) if b.parent.name == "ryansMammoth"]
    test = [b for b in ryan if held_out(b.relative_to(root).as_posix())][:12]
    train = [b for b in ryan if not held_out(b.relative_to(root).as_posix())][:36]
    lines = []
    report = run(tmp_path, 2, None, lines.append, books=train + test, dim=32, max_len=32,
                 text_dim=32, text_length=48, embed_dim=16, batch_size=8)
    assert report["data"]["train"] == 36 and report["data"]["test"] == 12
    assert report["steps"] == 2 and (tmp_path / "report.json").is_file()
    assert set(report["rows"]) == {f"{name}: {d}" for name in
                                   ("mmenc midi-text", "key + meter from the MIDI", "random")
                                   for d in ("midi->text", "text->midi")}
    for metrics in report["rows"].values():
        assert 0 <= metrics["R@1"] <= metrics["R@5"] <= 1 and 0 < metrics["MRR"] <= 1
    assert report["counts"]["midi_items"] <= 12
    assert "36 training tunes, 12 held-out" in lines[0]
    cls = report["dance_classification"]
    assert "skipped" in cls or set(cls["accuracy"]) >= {"majority class"}
