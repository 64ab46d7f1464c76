"""Converters and parity: the shared BEATs fixtures, random fixtures of other sizes and seeds
checked against an independent eager forward, and perturbed checkpoints that must fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from audio_beats_reference import make_fixture, random_cfg, random_state_dict
from click.testing import CliRunner

import mmenc
from mmenc.errors import CheckpointError
from mmenc.parity import run_parity

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "parity" / "beats"
SHARED = SHARED.resolve()


@pytest.mark.parametrize("name", ["model_small", "model_small_finetuned", "tokenizer_small"])
def test_shared_fixture_passes(name) -> None:
    fx = SHARED / name
    if not fx.is_dir():
        pytest.skip(f"{fx} is not available")
    report = run_parity(fx)
    assert report.passed, report.problems
    fixture = json.loads((fx / "fixture.json").read_text())
    assert set(report.outputs) == set(fixture["outputs"])
    for out, diff in report.outputs.items():
        limit = 0 if "label" in out and "margin" not in out or out == "padding_mask_out" else 1e-5
        assert diff is not None and diff <= limit, (out, diff)


def test_shared_checkpoint_converts_with_every_key(tmp_path) -> None:
    ck = SHARED / "model_small_finetuned" / "checkpoint.pt"
    if not ck.is_file():
        pytest.skip("shared fixtures not available")
    model = mmenc.convert("beats", ck, tmp_path / "out")
    assert model.config["label_dict"]["3"].startswith("/")
    assert model.head is not None and model.head.out_features == 10
    loaded = mmenc.load(tmp_path / "out")
    source = torch.randn(1, 9000) * 0.1
    with torch.no_grad():
        a = model.extract_features(source).lprobs
        b = loaded.extract_features(source).lprobs
    assert torch.equal(a, b)


CASES = {
    "model": dict(),
    "model-4l-odd-kernel": dict(layers=4, dim=32, heads=2, ffn=48, patch_dim=16, conv_pos=5,
                                groups=2, buckets=32, max_distance=64),
    "finetuned": dict(classes=7),
    "tokenizer": dict(quant=(32, 12)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_random_fixture_of_another_size_passes(tmp_path, case) -> None:
    cfg = random_cfg(**CASES[case])
    fx = make_fixture(tmp_path / case, cfg, seed=11 + len(case))
    report = run_parity(fx)
    assert report.passed, report.problems
    assert len(report.outputs) >= 3
    assert max(report.outputs.values()) < 1e-5


@pytest.mark.parametrize(("case", "key", "how"), [
    ("model", "encoder.layers.1.final_layer_norm.bias", "add"),
    ("model", "encoder.layers.0.self_attn.grep_a", "add"),
    ("model", "encoder.pos_conv.0.weight_g", "add"),
    ("model", "layer_norm.weight", "add"),
    ("model", "encoder.layers.0.self_attn.q_proj.weight", "transpose"),
    ("finetuned", "predictor.bias", "add"),
    ("tokenizer", "quantize_layer.2.weight", "add"),
])
def test_perturbed_checkpoint_fails(tmp_path, case, key, how) -> None:
    cfg = random_cfg(**CASES[case])
    seed = 5
    fx = make_fixture(tmp_path / "fx", cfg, seed)
    state = random_state_dict(cfg, seed)
    t = state[key]
    state[key] = t.T.contiguous() if how == "transpose" else t + 0.05 * torch.randn(t.shape)
    torch.save({"cfg": cfg, "model": state}, fx / "checkpoint.pt")
    report = run_parity(fx)
    assert not report.passed
    assert report.problems


def test_unshared_relative_bias_is_refused(tmp_path) -> None:
    cfg = random_cfg()
    state = random_state_dict(cfg, 3)
    key = "encoder.layers.1.self_attn.relative_attention_bias.weight"
    state[key] = state[key] + 1.0
    torch.save({"cfg": cfg, "model": state}, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match="relative_attention_bias of layer 1"):
        mmenc.convert("beats", tmp_path / "ck.pt")


def test_converters_refuse_the_wrong_kind_and_bad_containers(tmp_path) -> None:
    tok = random_cfg(quant=(16, 8))
    torch.save({"cfg": tok, "model": random_state_dict(tok, 1)}, tmp_path / "tok.pt")
    with pytest.raises(CheckpointError, match="beats-tokenizer"):
        mmenc.convert("beats", tmp_path / "tok.pt")
    plain = random_cfg()
    state = random_state_dict(plain, 1)
    torch.save({"cfg": plain, "model": state}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="--from beats"):
        mmenc.convert("beats-tokenizer", tmp_path / "model.pt")
    torch.save({"cfg": plain, "model": {**state, "extra.weight": torch.zeros(2)}},
               tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="extra.weight"):
        mmenc.convert("beats", tmp_path / "extra.pt")
    torch.save({"cfg": {**plain, "layer_norm_first": True}, "model": state}, tmp_path / "pre.pt")
    with pytest.raises(CheckpointError, match="layer_norm_first"):
        mmenc.convert("beats", tmp_path / "pre.pt")
    uninit = random_state_dict(tok, 2)
    uninit["quantize.embedding.initted"] = torch.zeros(1)
    torch.save({"cfg": tok, "model": uninit}, tmp_path / "uninit.pt")
    with pytest.raises(CheckpointError, match="initted"):
        mmenc.convert("beats-tokenizer", tmp_path / "uninit.pt")
    torch.save(state, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="'cfg' and 'model'"):
        mmenc.convert("beats", tmp_path / "bare.pt")


class _NotAllowed:
    pass


def test_pickled_objects_are_refused(tmp_path) -> None:
    cfg = random_cfg()
    torch.save({"cfg": cfg, "model": random_state_dict(cfg, 1), "args": _NotAllowed()},
               tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        mmenc.convert("beats", tmp_path / "pickle.pt")


def test_cli_convert_and_parity(tmp_path) -> None:
    from mmenc.cli import main

    cfg = random_cfg(quant=(16, 8))
    fx = make_fixture(tmp_path / "fx", cfg, seed=2)
    runner = CliRunner()
    res = runner.invoke(main, ["convert", "--from", "beats-tokenizer", str(fx / "checkpoint.pt"),
                               str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    model = mmenc.load(tmp_path / "out")
    assert model.recipe == "beats-tokenizer" and model.codebook is not None
    res = runner.invoke(main, ["parity", str(fx), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["passed"] is True


@pytest.mark.parametrize("name", ["model_small", "model_small_finetuned", "tokenizer_small"])
def test_eager_reference_reproduces_the_shared_fixtures(name) -> None:
    """The reference used for the other sizes agrees with the official outputs."""
    from audio_beats_reference import reference_forward
    from safetensors.torch import load_file

    fx = SHARED / name
    if not fx.is_dir():
        pytest.skip(f"{fx} is not available")
    ck = torch.load(fx / "checkpoint.pt", map_location="cpu", weights_only=True)
    inp = load_file(str(fx / "inputs.safetensors"))
    ref = load_file(str(fx / "reference_outputs.safetensors"))
    with torch.no_grad():
        pad = reference_forward(ck["cfg"], ck["model"], inp["source"], inp["padding_mask"])
        plain = reference_forward(ck["cfg"], ck["model"], inp["source"], None)
    if "labels_nomask" in ref:
        assert torch.equal(plain["labels"], ref["labels_nomask"])
        assert torch.equal(pad["labels"], ref["labels_padded"])
        assert (plain["quant_in"] - ref["quantize_input_nomask"]).abs().max() < 1e-5
        return
    assert torch.equal(plain["fbank"], ref["fbank"])
    key = "lprobs" if "predictor.weight" in ck["model"] else "last"
    assert (pad[key] - ref["features_padded"]).abs().max() < 1e-5
    assert (plain[key] - ref["features_nomask"]).abs().max() < 1e-5
    if "padding_mask_out" in ref:
        assert torch.equal(pad["mask"], ref["padding_mask_out"])
        for i, state in enumerate(plain["states"]):
            assert (state - ref[f"layer_{i:02d}"]).abs().max() < 1e-5


@pytest.mark.parametrize("case", ["model", "finetuned", "tokenizer"])
def test_export_official_inverts_the_converter(tmp_path, case) -> None:
    from mmenc_audio.convert import export_official

    cfg = random_cfg(**CASES[case])
    state = random_state_dict(cfg, 4)
    torch.save({"cfg": cfg, "model": state}, tmp_path / "ck.pt")
    model = mmenc.convert("beats-tokenizer" if case == "tokenizer" else "beats", tmp_path / "ck.pt")
    back = export_official(model)
    assert set(back["model"]) == set(state)
    assert all(torch.equal(back["model"][k], state[k]) for k in state)
    for key in ("encoder_layers", "encoder_embed_dim", "conv_pos", "num_buckets", "embed_dim"):
        assert back["cfg"][key] == cfg[key]


def test_random_base_size_checkpoint_passes(tmp_path):
    """The published size (12 layers, d768, 320 buckets, kernel 128 in 16 groups)."""
    cfg = random_cfg(layers=12, dim=768, heads=12, ffn=3072, patch_dim=512, conv_pos=128,
                     groups=16, buckets=320, max_distance=800)
    fx = make_fixture(tmp_path / "base", cfg, seed=7)
    report = run_parity(fx, tolerance=1e-4)
    assert report.passed, report.problems
    assert len([k for k in report.outputs if k.startswith("layer_")]) == 13


@pytest.mark.parametrize(("name", "fmt"), [("model_small", "beats"),
                                           ("model_small_finetuned", "beats"),
                                           ("tokenizer_small", "beats-tokenizer")])
def test_export_official_gives_back_the_shared_checkpoints(name, fmt):
    from mmenc_audio.convert import export_official

    ck = SHARED / name / "checkpoint.pt"
    if not ck.is_file():
        pytest.skip("shared fixtures not available")
    original = torch.load(ck, map_location="cpu", weights_only=True)
    back = export_official(mmenc.convert(fmt, ck))
    assert set(back["model"]) == set(original["model"])
    assert all(torch.equal(back["model"][k], v) for k, v in original["model"].items())
    assert {k: back["cfg"][k] for k in original["cfg"] if k in back["cfg"]
            and k not in ("encoder_layerdrop", "layer_wise_gradient_decay_ratio")} == \
        {k: v for k, v in original["cfg"].items() if k in back["cfg"]
         and k not in ("encoder_layerdrop", "layer_wise_gradient_decay_ratio")}
