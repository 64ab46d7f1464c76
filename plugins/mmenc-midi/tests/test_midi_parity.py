"""Converters and parity: the shared official fixtures, other sizes and seeds built here from HF
BertModel, perturbed checkpoints, containers and refusals."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import mmenc
import pytest
import torch
from click.testing import CliRunner
from mmenc.cli import main
from mmenc.errors import CheckpointError
from mmenc.parity import run_parity

pytest.importorskip("transformers")
from midibert_fixture import make_midibert_fixture  # noqa: E402

SHARED = Path(__file__).resolve().parents[4] / "shared" / "parity"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("system", ["midibert", "adv_midibert"])
def test_official_small_fixtures_pass(system):
    fx = SHARED / system / "small"
    if not fx.is_dir():
        pytest.skip(f"{fx} is not present")
    code, out = run("parity", str(fx), "--json")
    report = json.loads(out)
    assert code == 0, out
    assert report["passed"]
    expected = {"last_hidden_state", "pooler_output", "in_linear_output"}
    assert expected <= set(report["outputs"])
    assert max(report["outputs"].values()) <= 1e-5


@pytest.mark.parametrize("system,seed,layers,hidden,heads,ffn,max_pos,emb,length", [
    ("midibert", 1, 3, 48, 3, 96, 40, 256, 24),
    ("midibert", 2, 1, 32, 2, 64, 20, 64, 20),
    ("adv_midibert", 3, 2, 40, 5, 80, 32, 256, 17),
    ("adv_midibert", 4, 1, 64, 8, 32, 24, 32, 24),
])
def test_parity_passes_for_any_size(tmp_path, system, seed, layers, hidden, heads, ffn,
                                    max_pos, emb, length):
    fx = make_midibert_fixture(tmp_path / "fx", system, seed=seed, hidden=hidden,
                               layers=layers, heads=heads, ffn=ffn, max_pos=max_pos, emb=emb,
                               length=length)
    code, out = run("parity", str(fx), "--json")
    report = json.loads(out)
    assert code == 0, out
    assert set(report["outputs"]) == {"last_hidden_state", "pooler_output", "in_linear_output",
                                      *(f"hidden_states_{i:02d}" for i in range(layers + 1))}
    assert max(report["outputs"].values()) <= 1e-5


@pytest.mark.parametrize("key", [
    "bert.encoder.layer.1.output.LayerNorm.bias",
    "bert.embeddings.LayerNorm.weight",
    "word_emb.2.lut.weight",
    "bert.embeddings.token_type_embeddings.weight",
    "bert.encoder.layer.0.attention.self.distance_embedding.weight",
])
def test_perturbed_checkpoint_fails(tmp_path, key):
    fx = make_midibert_fixture(tmp_path / "fx", "midibert", seed=5, layers=2)
    ckpt = fx / "model_best.ckpt"
    container = torch.load(ckpt, weights_only=True)
    tensor = container["state_dict"][key]
    noise = 1e-3 * torch.randn(tensor.shape, generator=torch.Generator().manual_seed(0))
    if key.endswith("token_type_embeddings.weight"):
        tensor[0] += noise[0]  # the row BertModel adds (a constant shift would cancel in LN)
    else:
        tensor += noise
    torch.save(container, ckpt)
    report = run_parity(fx)
    assert not report.passed
    assert "last_hidden_state" in report.problems


def test_unused_tensors_do_not_matter(tmp_path):
    """Rows and tables the official forward never reads may change freely."""
    fx = make_midibert_fixture(tmp_path / "fx", "adv_midibert", seed=6, layers=1)
    ckpt = fx / "midibert_pretrain.pth"
    state = torch.load(ckpt, weights_only=True)
    for key in ("attention_linear.0.weight", "bert.embeddings.position_embeddings.weight",
                "bert.embeddings.word_embeddings.weight"):
        state[key] += 1.0
    state["bert.embeddings.token_type_embeddings.weight"][1] += 1.0
    torch.save(state, ckpt)
    assert run_parity(fx).passed


def test_swapped_query_key_fails(tmp_path):
    fx = make_midibert_fixture(tmp_path / "fx", "adv_midibert", seed=7, layers=1)
    ckpt = fx / "midibert_pretrain.pth"
    state = torch.load(ckpt, weights_only=True)
    q = "bert.encoder.layer.0.attention.self.query.weight"
    k = "bert.encoder.layer.0.attention.self.key.weight"
    state[q], state[k] = state[k].clone(), state[q].clone()
    torch.save(state, ckpt)
    assert not run_parity(fx).passed


def test_convert_cli_writes_a_loadable_model(tmp_path):
    fx = make_midibert_fixture(tmp_path / "fx", "midibert", seed=8, hidden=32, heads=4,
                               layers=2, max_pos=24)
    out_dir = tmp_path / "converted"
    code, out = run("convert", "--from", "midibert", str(fx / "model_best.ckpt"), str(out_dir))
    assert code == 0, out
    assert "midibert-cp-base" in out
    model = mmenc.load(out_dir).eval()
    assert model.recipe == "midibert-cp-base"
    trunk = model.config["trunk"]
    assert (trunk["dim"], trunk["depth"], trunk["heads"], trunk["max_positions"]) == (32, 2, 4, 24)
    assert model.config["tokenizers"]["midi"] == {"tokenizer": "midi-cp", "max_len": 24,
                                                  "official_grid": True}
    from mmenc_midi.midi import example_midi

    emb = model.encode(example_midi(), "midi")
    assert emb.shape == (3, 32) and torch.isfinite(emb).all()


def test_adv_convert_cli_and_fine_tuned_container(tmp_path):
    fx = make_midibert_fixture(tmp_path / "fx", "adv_midibert", seed=9, layers=1)
    code, out = run("convert", "--from", "adv-midibert", str(fx / "midibert_pretrain.pth"),
                    str(tmp_path / "adv"))
    assert code == 0, out
    assert mmenc.load(tmp_path / "adv").config["tokenizers"]["midi"]["tokenizer"] == \
        "midi-octuple"
    # a fine-tuned MIDI-BERT checkpoint: midibert.-prefixed keys and a classifier head
    fx2 = make_midibert_fixture(tmp_path / "fx2", "midibert", seed=10, layers=1)
    container = torch.load(fx2 / "model_best.ckpt", weights_only=True)
    state = {f"midibert.{k}": v for k, v in container["state_dict"].items()}
    state["classifier.1.weight"] = torch.zeros(256, 48)
    state["classifier.3.weight"] = torch.zeros(4, 256)
    container["state_dict"] = state
    torch.save(container, fx2 / "model_best.ckpt")
    assert run_parity(fx2).passed


def test_wrong_dictionary_and_options_are_refused(tmp_path):
    fx = make_midibert_fixture(tmp_path / "fx", "midibert", seed=11, layers=1, heads=4)
    with pytest.raises(CheckpointError, match="do not match the octuple dictionary"):
        mmenc.convert("adv-midibert", fx / "model_best.ckpt")
    with pytest.raises(CheckpointError, match="heads=3"):
        mmenc.convert("midibert", fx / "model_best.ckpt", heads=3)
    with pytest.raises(CheckpointError, match="max_positions=99"):
        mmenc.convert("midibert", fx / "model_best.ckpt", max_positions=99)
    # an extra key no row maps is an error, not silently dropped
    container = torch.load(fx / "model_best.ckpt", weights_only=True)
    container["state_dict"]["bert.encoder.layer.0.extra.weight"] = torch.zeros(2)
    torch.save(container, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match="no mapping for checkpoint keys"):
        mmenc.convert("midibert", tmp_path / "extra.ckpt")


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_pickles_needing_code_are_refused(tmp_path):
    bad = tmp_path / "evil.ckpt"
    with open(bad, "wb") as f:
        pickle.dump({"epoch": 1, "state_dict": _Payload()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        mmenc.convert("midibert", bad)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        mmenc.convert("adv-midibert", tmp_path / "junk.pth")
    torch.save({"epoch": 1, "state_dict": {"a": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a MIDI-BERT checkpoint"):
        mmenc.convert("midibert", tmp_path / "other.ckpt")


@pytest.mark.parametrize("task,system", [("token", "midibert"), ("sequence", "midibert"),
                                         ("token", "adv_midibert")])
def test_fine_tuned_heads_convert(tmp_path, task, system):
    from midibert_fixture import make_finetuned_checkpoint

    from mmenc_midi.convert import convert_finetuned
    from mmenc_midi.objectives import SequenceClassifier, TokenClassifier

    ckpt = tmp_path / "model_best.ckpt"
    ids, attn_mask, reference = make_finetuned_checkpoint(ckpt, task, system, seed=12)
    model, head = convert_finetuned(ckpt, "cp" if system == "midibert" else "octuple")
    assert isinstance(head, TokenClassifier if task == "token" else SequenceClassifier)
    with torch.no_grad():
        hidden = model.forward_ids(ids, attn_mask.bool()).hidden
        logits = head(hidden)  # the official sequence head attends over pads too
    assert logits.shape == reference.shape
    assert (logits - reference).abs().max() <= 1e-5
