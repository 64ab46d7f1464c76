"""`mmenc convert` and `mmenc parity` end to end on fixtures built here from random HF models."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from click.testing import CliRunner

import mmenc
from mmenc.cli import main

pytest.importorskip("transformers")
from hf_fixture import make_hf_fixture  # noqa: E402


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("model_type,seed,layers,dim,heads,length", [
    ("roberta", 0, 2, 64, 4, 16),
    ("roberta", 7, 3, 48, 3, 23),
    ("bert", 1, 2, 64, 4, 16),
    ("bert", 11, 1, 40, 5, 9),
])
def test_parity_passes_for_any_size(tmp_path, model_type, seed, layers, dim, heads, length):
    fx = make_hf_fixture(tmp_path / "fx", model_type, seed=seed, layers=layers, dim=dim,
                         heads=heads, ffn=2 * dim, length=length, pad_tail=length // 3)
    code, out = run("parity", str(fx), "--json")
    report = json.loads(out)
    assert code == 0, out
    assert report["passed"] and report["system"] == model_type
    assert set(report["outputs"]) == {"last_hidden_state", "pooler_output",
                                      *(f"hidden_states_{i:02d}" for i in range(layers + 1))}
    assert max(report["outputs"].values()) <= 1e-5


def test_perturbed_checkpoint_fails(tmp_path):
    fx = make_hf_fixture(tmp_path / "fx", "roberta", seed=3)
    ckpt = fx / "checkpoint" / "pytorch_model.bin"
    state = torch.load(ckpt, weights_only=True)
    state["encoder.layer.1.output.LayerNorm.bias"] += 1e-3
    torch.save(state, ckpt)
    code, out = run("parity", str(fx))
    assert code == 1
    assert "FAILED" in out and "last_hidden_state" in out


def test_swapped_query_key_fails(tmp_path):
    fx = make_hf_fixture(tmp_path / "fx", "bert", seed=4)
    ckpt = fx / "checkpoint" / "pytorch_model.bin"
    state = torch.load(ckpt, weights_only=True)
    q = "encoder.layer.0.attention.self.query.weight"
    k = "encoder.layer.0.attention.self.key.weight"
    state[q], state[k] = state[k].clone(), state[q].clone()
    torch.save(state, ckpt)
    code, _ = run("parity", str(fx), "--json")
    assert code == 1


def test_missing_output_is_reported(tmp_path):
    from safetensors.torch import load_file, save_file

    fx = make_hf_fixture(tmp_path / "fx", "roberta", seed=5)
    refs = load_file(str(fx / "reference_outputs.safetensors"))
    refs["attentions_00"] = torch.zeros(2)
    save_file(refs, str(fx / "reference_outputs.safetensors"))
    code, out = run("parity", str(fx), "--json")
    report = json.loads(out)
    assert code == 1 and report["passed"] is False
    assert report["outputs"]["attentions_00"] is None


def test_convert_save_load_roundtrip(tmp_path):
    fx = make_hf_fixture(tmp_path / "fx", "roberta", seed=6)
    (fx / "checkpoint" / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog"]))
    code, out = run("convert", "--from", "hf-roberta", str(fx / "checkpoint"), str(tmp_path / "m"))
    assert code == 0, out
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"model.safetensors", "config.json"}
    model = mmenc.load(tmp_path / "m")
    assert model.recipe == "roberta"
    emb = model.encode(["a cat", "a dog"], "text")
    assert emb.shape == (2, 64) and torch.isfinite(emb).all()


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_convert_refuses_pickled_code(tmp_path):
    fx = make_hf_fixture(tmp_path / "fx", "bert", seed=8)
    ckpt = fx / "checkpoint" / "pytorch_model.bin"
    with open(ckpt, "wb") as f:
        pickle.dump({"x": Payload()}, f)
    code, out = run("convert", "--from", "hf-bert", str(fx / "checkpoint"), str(tmp_path / "m"))
    assert code != 0
    assert "refused" in out and "pytorch_model.bin" in out
    assert not (tmp_path / "m").exists()


def test_convert_reports_misshaped_keys(tmp_path):
    fx = make_hf_fixture(tmp_path / "fx", "bert", seed=9)
    cfg = json.loads((fx / "checkpoint" / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (fx / "checkpoint" / "config.json").write_text(json.dumps(cfg))
    code, out = run("convert", "--from", "hf-bert", str(fx / "checkpoint"), str(tmp_path / "m"))
    assert code != 0
    assert "mis-shaped" in out and "ffn.fc1.weight" in out


def test_malformed_config_names_the_file(tmp_path):
    fx = make_hf_fixture(tmp_path / "fx", "bert", seed=10)
    (fx / "checkpoint" / "config.json").write_text("{not json")
    code, out = run("convert", "--from", "hf-bert", str(fx / "checkpoint"), str(tmp_path / "m"))
    assert code != 0 and "config.json" in out and "not valid JSON" in out


def test_unknown_format_lists_close_matches():
    code, out = run("convert", "--from", "hf-bertt", "a", "b")
    assert code != 0 and "hf-bert" in out
    code, out = run("convert", "--list")
    assert code == 0 and "hf-roberta" in out


def test_load_rejects_foreign_and_broken_folders(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(mmenc.CheckpointError, match="not an mmenc model"):
        mmenc.load(tmp_path)
    model = mmenc.create_model("text-tiny")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(mmenc.CheckpointError, match="model.safetensors"):
        mmenc.load(tmp_path / "m")
