"""Vision-text pre-training through ``mmenc pretrain``: ALBEF and BridgeTower steps, the objective's
checks, the matching scores used for re-ranking, the from-scratch initialisation, the emoji
pairing's configurations, and the benchmark's official-structure ALBEF step."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import mmenc
import pytest
import torch
from mmenc.errors import ConfigError
from mmenc.retrieval.evaluate import evaluate_retrieval
from mmenc.train import pretrain
from PIL import Image

from mmenc_vl.matching import pair_match_scores

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220),
           "yellow": (240, 220, 20), "black": (0, 0, 0), "white": (255, 255, 255)}
TINY = {"albef-tiny": {"pretraining": True},
        "bridgetower-tiny": {"pretraining": True, "fusion": {"pooler": True},
                             "mask_token_id": 4}}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlpairs")
    rows = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        for shape in ("square", "stripe"):
            image = Image.new("RGB", (40, 40), "white" if name != "white" else "grey")
            box = (8, 8, 32, 32) if shape == "square" else (0, 16, 40, 24)
            image.paste(rgb, box)
            path = root / f"{i}-{shape}.png"
            image.save(path)
            rows.append({"image": str(path), "text": f"a {name} {shape}"})
    broken = root / "truncated.png"
    broken.write_bytes((root / "0-square.png").read_bytes()[:60])
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows)
                        + json.dumps({"image": str(broken), "text": "a broken image"}) + "\n")
    return manifest, rows


def config(recipe, manifest, out, steps=3):
    return {"model": {"recipe": recipe, "overrides": TINY[recipe]},
            "objectives": [{"name": "vision-text-pretraining", "modalities": ["text", "image"]}],
            "data": {"train": str(manifest)}, "batch_size": 4, "steps": steps, "log_every": 1,
            "seed": 0, "optim": {"lr": 1e-3, "warmup_steps": 1},
            "checkpoint": {"every": steps, "keep": 1}, "output_dir": str(out)}


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_mmenc_pretrain_runs_the_models_own_step(tmp_path, pairs, recipe):
    manifest, rows = pairs
    result = pretrain(config(recipe, manifest, tmp_path / "run"))
    assert result.step == 3
    assert sum(result.skipped.values()) == 1, result.skipped  # the truncated image, counted
    for key in ("loss_itc", "loss_itm", "loss_mlm", "temp"):
        value = result.metrics[f"vision-text-pretraining/{key}"]
        assert value == value and value > 0, key  # finite and positive
    model = mmenc.load(result.model_dir)
    assert model.pretraining
    fresh = mmenc.create_model(recipe, **TINY[recipe])
    moved = [n for n, p in fresh.state_dict().items()
             if p.is_floating_point() and not torch.equal(p, model.state_dict()[n])]
    assert any(n.startswith("itm_head") for n in moved)
    assert any(n.startswith("mlm_head") for n in moved)
    if recipe == "albef-tiny":  # momentum copies and queues were trained too
        assert int(model.queue_ptr) == (3 * 4) % model.image_queue.shape[1]
        assert any(n.startswith("momentum.") for n in moved)
    report = evaluate_retrieval(
        model.eval(), [(r["image"], r["text"]) for r in rows], "image", "text", rerank=3,
        echo=lambda _: None)
    assert report["rerank"]["status"] == "done"


def test_objective_reads_two_modalities_and_needs_pretraining_heads(tmp_path, pairs):
    manifest, _ = pairs
    bad = config("albef-tiny", manifest, tmp_path / "a")
    bad["objectives"][0]["modalities"] = ["text"]
    with pytest.raises(ConfigError, match="needs 2 modalities"):
        pretrain(bad)
    plain = config("albef-tiny", manifest, tmp_path / "b")
    plain["model"]["overrides"] = {}
    with pytest.raises(ConfigError, match="no pre-training heads"):
        pretrain(plain)


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_match_scores_load_each_item_once_and_agree_with_itm_logits(recipe):
    from mmenc.builtin.image import example_images

    torch.manual_seed(0)
    model = mmenc.create_model(recipe, **TINY[recipe]).eval()
    images = example_images()
    texts = ["a gradient", "a red checkerboard", "grey", "a clear blue"]
    a = [texts[i] for i in (0, 1, 1, 2, 3, 3)]
    b = [images[i] for i in (0, 0, 2, 2, 3, 1)]
    with torch.no_grad():
        direct = model.itm_logits(model.tokenize(a, "text"),
                                  model.tokenize(b, "image")).softmax(-1)[:, 1]
    scores = pair_match_scores(model, a, b, "text", "image")
    assert torch.allclose(scores, direct, atol=1e-6)


def test_bridgetower_pretraining_reaches_every_head():
    from mmenc.builtin.image import example_images

    torch.manual_seed(0)
    model = mmenc.create_model("bridgetower-tiny", **TINY["bridgetower-tiny"]).train()
    text = model.tokenize(["a gradient", "a red checkerboard", "grey", "a clear blue"], "text")
    image = model.tokenize(example_images(), "image")
    loss, logs = model.pretraining_losses(text, image, generator=torch.Generator().manual_seed(0))
    assert logs["loss"] == pytest.approx(logs["loss_itc"] + logs["loss_itm"] + logs["loss_mlm"],
                                         rel=1e-5)
    loss.backward()
    for name in ("itm_head.weight", "mlm_head.decoder", "mlm_head.dense.weight", "temp",
                 "proj.text.weight", "proj.image.weight", "fusion.pooler.image.dense.weight",
                 "towers.image.trunk.layers.0.attn.qkv.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="needs the poolers"):
        mmenc.create_model("bridgetower-tiny", pretraining=True)


def test_fan_in_init_separates_cls_states_and_keeps_momentum_equal():
    texts = ["a red square", "two blue stripes", "grinning face", "flag of a country"]
    spread = {}
    for init in ("bert", "fan-in"):
        torch.manual_seed(0)
        model = mmenc.create_model("albef-tiny", pretraining=True, init=init).eval()
        for name, p in model.momentum["towers"].state_dict().items():
            assert torch.equal(p, model.towers.state_dict()[name]), name
        with torch.no_grad():
            spread[init] = float(model.embed(model.tokenize(texts, "text"), "text").std(0).mean())
    assert spread["fan-in"] > 5 * spread["bert"]


def test_emoji_pairing_configurations_build(tmp_path):
    from mmenc_vl.pairing import albef_emoji, bridgetower_emoji, pretrain_config

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]"] + [f"[unused{i}]" for i in range(99)]
                               + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "grinning", "face", "cat",
                                  "##s"]) + "\n")
    for recipe, build in (("albef-tiny", albef_emoji), ("bridgetower-tiny", bridgetower_emoji)):
        cfg = build(vocab, dim=32, image_size=32)
        model = mmenc.create_model(recipe, **cfg)
        batch = model.tokenize(["Grinning cats face"], "text")
        assert batch.ids.tolist() == [[101, 104, 106, 107, 105, 102]]
        assert model.pretraining and model.config["init"] == "fan-in"
        train = pretrain_config(recipe, cfg, tmp_path / "t.jsonl", tmp_path / recipe, 10)
        assert train["objectives"][0]["name"] == "vision-text-pretraining"


def _benchmark():
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "vl.py"
    if not path.is_file():
        pytest.skip("benchmarks/vl.py is not in this checkout")
    spec = importlib.util.spec_from_file_location("vl_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_official_structure_has_the_same_itc_loss():
    """The benchmark's re-run of ALBEF's pre-training step reads the same weights as mmenc: its
    first ITC loss (queues, momentum update and soft targets included) agrees."""
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    bench = _benchmark()
    size = dict(vit_dim=24, vit_depth=1, vit_heads=2, image_size=16, patch=8, dim=16, heads=2,
                text_layers=1, fusion_layers=1, embed_dim=8, queue=12, batch=4, length=6)
    out = bench.bench_albef(size, repeats=1)
    assert out["first_step_itc_abs_diff"] < 1e-5
    size = dict(dim=64, layers=2, heads=2, cross=1, image_size=16, patch=8, batch=3, length=6)
    assert bench.bench_bridgetower(size, repeats=1)["max_abs_diff"] < 1e-4
