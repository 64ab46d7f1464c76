"""The unixcoder converter reproduces the official outputs at any size, refuses what does not fit,
and a perturbed checkpoint fails parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from code_fixture import make_unixcoder_fixture

import mmenc
from mmenc.errors import CheckpointError
from mmenc.parity import run_parity

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "parity" / "unixcoder" / "small"
torch.set_num_threads(1)


@pytest.mark.skipif(not (SHARED / "fixture.json").is_file(), reason="no shared parity pack")
def test_official_fixture_passes():
    report = run_parity(SHARED)
    assert report.passed, report.as_dict()
    assert set(report.outputs) == {
        "roberta_last_hidden_state", "roberta_pooler_output", "code_search_embedding",
        "unixcoder_token_embeddings", "unixcoder_sentence_embeddings",
        "decoder_only_last_hidden_state"}
    assert max(report.outputs.values()) <= 1e-5


@pytest.mark.parametrize("size", [
    dict(seed=3, layers=3, dim=48, heads=3, ffn=96, vocab=700, positions=130, type_vocab=10),
    dict(seed=7, layers=1, dim=32, heads=2, ffn=64, vocab=300, positions=40, type_vocab=1,
         length=24, pad_tail=9),
])
def test_other_sizes_and_seeds_pass(tmp_path, size):
    fixture = make_unixcoder_fixture(tmp_path / "fx", **size)
    report = run_parity(fixture)
    assert report.passed, report.as_dict()
    mmenc.convert("unixcoder", fixture / "checkpoint", tmp_path / "saved")
    model = mmenc.load(tmp_path / "saved")
    assert model.config["encoder"]["trunk"]["depth"] == size["layers"]
    assert model.config["encoder"]["vocab_size"] == size["vocab"]


@pytest.mark.parametrize("key", ["encoder.layer.0.attention.output.LayerNorm.bias",
                                 "encoder.layer.0.attention.self.key.weight",
                                 "embeddings.position_embeddings.weight"])
def test_perturbed_checkpoint_fails(tmp_path, key):
    fixture = make_unixcoder_fixture(tmp_path / "fx", seed=5, layers=2, dim=32, heads=2, ffn=64,
                                     vocab=200, positions=40)
    path = fixture / "checkpoint" / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    state[key] = state[key] + 0.01 * torch.randn_like(state[key])
    torch.save(state, path)
    report = run_parity(fixture)
    assert not report.passed
    assert any(v is not None and v > 1e-4 for v in report.outputs.values())


def test_config_that_disagrees_with_the_weights_is_refused(tmp_path):
    fixture = make_unixcoder_fixture(tmp_path / "fx", layers=1, dim=32, heads=2, ffn=64,
                                     vocab=200, positions=40)
    cfg_path = fixture / "checkpoint" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["vocab_size"] = 51416
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="vocab_size 51416 vs 200"):
        mmenc.convert("unixcoder", fixture / "checkpoint")
    cfg["vocab_size"], cfg["model_type"] = 200, "bert"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="is not roberta"):
        mmenc.convert("unixcoder", fixture / "checkpoint")


def test_pickled_objects_are_never_loaded(tmp_path):
    fixture = make_unixcoder_fixture(tmp_path / "fx", layers=1, dim=32, heads=2, ffn=64,
                                     vocab=200, positions=40)
    path = fixture / "checkpoint" / "pytorch_model.bin"
    torch.save({"weights": torch.load(path, weights_only=True), "hook": print}, path)
    with pytest.raises(CheckpointError):
        mmenc.convert("unixcoder", fixture / "checkpoint")


def test_without_vocabulary_the_model_runs_on_ids_and_says_why(tmp_path):
    fixture = make_unixcoder_fixture(tmp_path / "fx", layers=1, dim=32, heads=2, ffn=64,
                                     vocab=200, positions=40)
    model = mmenc.convert("unixcoder", fixture / "checkpoint", tmp_path / "saved")
    with pytest.raises(CheckpointError, match="tokenizer=DIR"):
        model.encode(["def f(): pass"], "code")
    assert mmenc.load(tmp_path / "saved").config["tokenizers"]["code"]["kind"] == "none"


def test_cli_convert_and_parity(tmp_path):
    fixture = make_unixcoder_fixture(tmp_path / "fx", seed=11, layers=2, dim=32, heads=4,
                                     ffn=64, vocab=300, positions=60)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "mmenc.cli", "parity", str(fixture), "--json"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["passed"] is True
    run = subprocess.run([sys.executable, "-m", "mmenc.cli", "convert", "--from", "unixcoder",
                          str(fixture / "checkpoint"), str(tmp_path / "out")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
