"""Dance-type labels, the probe and fine-tune evaluation, and compound MLM through
``mmenc pretrain``."""

from __future__ import annotations

import json

import mmenc
import numpy as np
import pytest
import torch
from mmenc.train import pretrain

from mmenc_midi.data import FolkData, FolkPair
from mmenc_midi.finetune import (
    DanceSet,
    compare,
    dance_label,
    dance_set,
    feature_baseline,
    finetune,
    fresh_copy,
    logistic_probe,
    main,
    pooled_features,
    predict,
    scores,
    tokenize,
)
from mmenc_midi.midi import example_midi, make_score


# -- labels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("abc,label", [
    ("X:1\nT:The Silver Spear\nR:reel\nM:C|\nK:D\nFAAB AFED|", "reel"),
    ("X:2\nT:Cliffs of Moher\nR: Jig]\nM:6/8\nK:Ador\nabc|", "jig"),
    ("X:3\nT:The Butterfly\nR:slip jig\nM:9/8\nK:Em\nB2E G2E|", "slip jig"),
    ("X:4\nT:Boys of Bluehill (Hornpipe)\nM:C\nK:D\nd|", "hornpipe"),  # from the title
    ("X:5\nT:Fisher's hornpipe\nR:reel\nK:F\nf|", "reel"),  # R: before the title
    ("X:6\nT:Ein Lied\nR:Lied\nM:3/4\nK:G\nG2 A|", ""),  # a genre that is no dance type
    ("X:7\nT:Untitled\nK:G\nR:reel\nG2 A|", ""),  # a field after K: is in the tune body
])
def test_dance_label_reads_the_abc_header(abc, label):
    assert dance_label(abc) == label


def _pair(i: int, dance: str, test: bool) -> FolkPair:
    return FolkPair(f"b#{i}", "b.abc", f"{i}.mid", "t", test, dance=dance)


def test_dance_set_keeps_types_with_enough_tunes_on_both_sides():
    pairs = ([_pair(i, "reel", False) for i in range(4)] + [_pair(10 + i, "jig", False)
                                                            for i in range(3)]
             + [_pair(20, "waltz", False)] + [_pair(30, "", False)]
             + [_pair(40, "reel", True), _pair(41, "jig", True), _pair(42, "jig", True),
                _pair(43, "waltz", True), _pair(44, "hornpipe", True)])
    data = dance_set(FolkData(pairs, {}, 1), min_train=3, min_test=1)
    assert data.classes == ["jig", "reel"]
    assert data.counts() == {"train": {"jig": 3, "reel": 4}, "test": {"jig": 2, "reel": 1}}
    assert data.test == ["40.mid", "41.mid", "42.mid"] and data.y_test == [1, 0, 0]
    with pytest.raises(ValueError, match="fewer than two dance types"):
        dance_set(FolkData(pairs, {}, 1), min_train=4, min_test=1)


def test_scores_macro_f1_counts_a_class_never_predicted_as_zero():
    assert scores([0, 0, 1, 1], [0, 0, 0, 1], 2) == pytest.approx(
        {"accuracy": 0.75, "macro_f1": (0.8 + 2 / 3) / 2})
    assert scores([0, 0, 1, 1], [0, 0, 0, 0], 2)["macro_f1"] == pytest.approx(1 / 3)
    assert scores([0, 1], [0, 1], 3)["macro_f1"] == pytest.approx(2 / 3)  # class 2 absent


# -- tiny tunes: "jigs" (6/8, quarter + eighth) and "reels" (4/4 or 2/2, running eighths) ----
def _tune(kind: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    notes, t = [], 0
    pattern = [480, 240] if kind == "jig" else [240]
    while len(notes) < 48:
        for d in pattern:
            notes.append((t, d, int(rng.integers(60, 80)), 80))
            t += d
    meter = (6, 8) if kind == "jig" else ((4, 4), (2, 2))[seed % 2]
    return bytes(make_score(notes, time_signature=meter).dumps_midi())


@pytest.fixture
def tunes(tmp_path) -> DanceSet:
    data = DanceSet(["jig", "reel"], [], [], [], [])
    for label, kind in enumerate(data.classes):
        for seed in range(16):
            path = tmp_path / f"{kind}{seed}.mid"
            path.write_bytes(_tune(kind, seed))
            files, labels = ((data.test, data.y_test) if seed % 4 == 0
                             else (data.train, data.y_train))
            files.append(str(path))
            labels.append(label)
    return data


def _model() -> mmenc.Encoder:
    torch.manual_seed(0)
    return mmenc.create_model("midibert-cp-tiny")


def test_feature_baseline_tells_the_rhythms_apart(tunes):
    pred = feature_baseline(tunes)
    assert scores(tunes.y_test, pred, 2)["accuracy"] == 1.0


def test_logistic_probe_on_frozen_features(tunes):
    model = _model()
    ids, mask = tokenize(model, tunes.train)
    assert ids.shape == (len(tunes.train), 64, 4) and mask.sum() > 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = pooled_features(model, ids, mask)
    assert x.shape == (len(tunes.train), model.width) and torch.isfinite(x).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    ids_te, mask_te = tokenize(model, tunes.test)
    pred = logistic_probe(x.numpy(), tunes.y_train, pooled_features(model, ids_te,
                                                                     mask_te).numpy())
    assert pred.shape == (len(tunes.test),) and set(pred) <= {0, 1}
    # a frozen random encoder still separates two rhythms this different
    assert scores(tunes.y_test, pred, 2)["accuracy"] >= 0.75


def test_finetune_lowers_the_loss_and_trains_the_encoder(tunes):
    model = _model()
    before = model.fields.in_linear.weight.detach().clone()
    ids, mask = tokenize(model, tunes.train)
    clf, losses = finetune(model, ids, mask, tunes.y_train, 2, steps=30, batch_size=8, lr=1e-3)
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    assert not torch.equal(model.fields.in_linear.weight, before)
    ids_te, mask_te = tokenize(model, tunes.test)
    assert scores(tunes.y_test, predict(clf, ids_te, mask_te), 2)["accuracy"] >= 0.75
    # the same seed gives the same run
    _, again = finetune(_model(), ids, mask, tunes.y_train, 2, steps=30, batch_size=8, lr=1e-3)
    assert again == losses


def test_compare_reports_every_row(tunes):
    report = compare({"random init": _model}, tunes, steps=4, probe_only=(),
                     echo=lambda _: None, batch_size=8)
    rows = report["rows"]
    assert list(rows) == ["majority class", "meter + note durations, logistic regression",
                          "random init: linear probe", "random init: fine-tune"]
    share = max(np.mean(np.array(tunes.y_test) == k) for k in (0, 1))
    assert rows["majority class"]["accuracy"] == pytest.approx(share)
    assert all(0 <= r["macro_f1"] <= 1 for r in rows.values())
    assert len(report["losses"]["random init"]) == 2


def test_fresh_copy_has_the_configuration_and_new_weights(tmp_path):
    model = _model()
    with torch.no_grad():
        model.fields.in_linear.weight.add_(1.0)
    copy = fresh_copy(model)
    assert copy.config == model.config
    assert not torch.equal(copy.fields.in_linear.weight, model.fields.in_linear.weight)


# -- compound MLM through mmenc pretrain ----------------------------------------------------
def test_compound_mlm_trains_through_pretrain(tmp_path):
    rows = []
    for i, data in enumerate(example_midi()):
        (tmp_path / f"p{i}.mid").write_bytes(data)
        rows.append({"midi": f"p{i}.mid"})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"model": {"recipe": "midibert-cp-tiny"},
              "objectives": [{"name": "compound-mlm", "modalities": ["midi"]}],
              "data": {"train": str(manifest)}, "batch_size": 3, "steps": 3, "seed": 0,
              "log_every": 1, "optim": {"lr": 1e-3}, "output_dir": str(tmp_path / "run"),
              "progress": False}
    before = _model().state_dict()
    result = pretrain(config)
    assert result.step == 3
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {"compound-mlm/loss", "compound-mlm/acc_3"} <= set(logged[-1])
    after = mmenc.load(result.model_dir).state_dict()
    assert not torch.equal(after["fields.in_linear.weight"], before["fields.in_linear.weight"])
    with pytest.raises(mmenc.ConfigError, match="mask_rate"):
        pretrain({**config, "output_dir": str(tmp_path / "bad"),
                  "objectives": [{"name": "compound-mlm", "modalities": ["midi"],
                                  "config": {"mask_rate": 0.2}}]})


@pytest.mark.parametrize("args,message", [
    (["--scratch"], "--scratch copies"),
    (["--start", "no-equals-sign"], "NAME=MODEL_DIR"),
    (["--start", "a=runs/a", "--probe-only", "b"], "--probe-only names no --start: b"),
    (["--start", "a=runs/a", "--steps", "0"], "must be positive"),
])
def test_eval_command_refuses_bad_options_before_reading_data(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path / "out"), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing converted
