"""The standard-library code pairing: splits, manifests, function -> function pairs, and the
code-text dual encoder warm-started from a text encoder."""

from __future__ import annotations

import json

import torch

import mmenc
from mmenc.data.stdlib import CodePair
from mmenc_code.pairing import function_pairs, warm_config, write_manifests

torch.set_num_threads(1)

PAIRS = [
    CodePair("a.py:1:f", "a", "Return the size.", "def size(self):\n    return self.n"),
    CodePair("b.py:1:f", "b", "Return the size.", "def size(self):\n    return len(self.xs)"),
    CodePair("c.py:1:f", "c", "Return the size.", "def size(self):\n    return self.n"),
    CodePair("d.py:1:g", "d", "Open the file.", "def open(p):\n    return io.open(p)"),
]


def test_function_pairs_link_distinct_functions_documented_alike():
    rows = function_pairs(PAIRS)
    assert {(r["query"][-6:], r["function"][-6:]) for r in rows} == {
        ("self.n", "lf.xs)"), ("lf.xs)", "self.n")}


def test_manifests_hold_three_views_for_training(tmp_path):
    paths = write_manifests(PAIRS[:2], PAIRS[2:], tmp_path)
    train = [json.loads(line) for line in paths["train"].open()]
    assert train[0]["code"] == train[0]["ast"] and train[0]["text"] == "Return the size."
    test = [json.loads(line) for line in paths["test"].open()]
    assert [t["docstring"] for t in test] == ["Return the size.", "Open the file."]


def test_code_tower_warm_starts_from_a_text_encoder(tmp_path):
    text = mmenc.create_model("text-tiny", embed_dim=None)
    text.save_pretrained(tmp_path / "text")
    model = mmenc.create_model("code-text-tiny", embed_dim=None)
    model.warm_start("code", mmenc.load(tmp_path / "text"))
    model.warm_start("text", mmenc.load(tmp_path / "text"))
    snippet = "def size(self):\n    return self.n"
    assert torch.allclose(model.encode([snippet], "code"), text.encode([snippet], "text"),
                          atol=1e-6)
    model.save_pretrained(tmp_path / "saved")
    again = mmenc.load(tmp_path / "saved")
    assert torch.allclose(again.encode([snippet], "code"), model.encode([snippet], "code"))


def test_warm_config_trains_the_code_tower_only(tmp_path):
    config = warm_config(tmp_path, tmp_path / "minilm", tmp_path / "run", steps=10)
    assert config["model"]["freeze"] == ["towers.text"]
    assert set(config["model"]["warm_start"]) == {"code", "text"}
