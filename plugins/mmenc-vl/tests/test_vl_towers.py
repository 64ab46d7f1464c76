"""ALBEF on pretrained towers in the emoji pairing: the image tower taken from a bound model,
the variants' configurations (only the starts differ), and the ITM re-ranking that scores each
pair once for both rules."""

from __future__ import annotations

import mmenc
import pytest
import torch
from mmenc.bind.train import train_bound
from mmenc.builtin.recipes import vision_tower
from mmenc.errors import ConfigError
from mmenc.retrieval.evaluate import evaluate_retrieval
from mmenc.train.config import ModelConfig
from mmenc.train.loop import build_model
from PIL import Image

from mmenc_vl.pairing import INIT_VARIANTS, RememberedMatches, bound_vit, evaluate, init_config
from mmenc_vl.recipes import albef_config, vit_tower

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 20), "black": (10, 10, 10), "white": (245, 245, 245)}


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict[str, str]]:
    folder = tmp_path_factory.mktemp("images")
    out = []
    for name, rgb in COLOURS.items():
        image = Image.new("RGB", (32, 32), (128, 128, 128))
        image.paste(rgb, (4, 4, 28, 28))
        image.save(folder / f"{name}.png")
        out.append({"image": str(folder / f"{name}.png"), "text": f"a {name} square"})
    return out


@pytest.fixture(scope="module")
def bound_dir(rows, tmp_path_factory):
    """A bound model whose image tower (a ViT of width 48) trained a few steps against a tiny
    text hub."""
    root = tmp_path_factory.mktemp("bound")
    torch.manual_seed(0)
    mmenc.create_model("text-tiny").save_pretrained(root / "hub")
    tower = {"recipe": "clip-tiny", "modality": "image", "overrides": {
        "towers": {"image": vision_tower(48, 3, 2, 96, 32, 8)}, "embed_dim": None}}
    result = train_bound({"hub": {"name": "model", "path": str(root / "hub")}, "dims": [8],
                          "output_dir": str(root), "seed": 0,
                          "modalities": {"image": {"tower": tower, "train": rows, "steps": 3,
                                                   "batch_size": 6, "lr": 3e-3,
                                                   "warmup": 1}}}, echo=lambda _: None)
    return result.model_dir


def albef_overrides(vision_dim: int = 48) -> dict:
    config = albef_config(2, 2, 32, 2, 64, vit_tower(vision_dim, 2, 2, 2 * vision_dim, 32, 8),
                          16, vocab_size=261, max_length=12,
                          text_tok={"tokenizer": "text", "kind": "bytes", "max_length": 12},
                          queue_size=8, special_ids=(1, 0, 4))
    config["init"] = "fan-in"
    return config


def test_the_image_tower_of_a_bound_model_is_copied_exactly(bound_dir):
    model = build_model(ModelConfig("albef-tiny", albef_overrides(),
                                    warm_start={"image": str(bound_dir)}))
    bound = mmenc.load(bound_dir)
    trained = bound.towers["image"].encoder.towers["image"]  # the bound tower's ViT
    fresh = mmenc.create_model("clip-tiny", towers={"image": vision_tower(48, 3, 2, 96, 32, 8)})
    mine = model.towers["image"].state_dict()
    theirs = trained.state_dict()
    assert mine.keys() == theirs.keys() and len(model.towers["image"].trunk.layers) == 3
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    moved = [k for k, v in fresh.towers["image"].state_dict().items()
             if v.shape == theirs[k].shape and not torch.equal(v, theirs[k])]
    assert moved  # the bound tower is not a fresh one: the copy carries its training
    assert all(torch.equal(p, m) for p, m in zip(
        model.towers["image"].parameters(), model.momentum["towers"]["image"].parameters(),
        strict=True))
    assert model.config["towers"]["image"]["trunk"]["heads"] == 2  # the bound tower's shape
    assert model.tokenizers["image"].config() == \
        bound.towers["image"].encoder.tokenizers["image"].config()
    with pytest.raises(ConfigError, match="48 wide, this ALBEF's 64"):
        build_model(ModelConfig("albef-tiny", albef_overrides(64),
                                warm_start={"image": str(bound_dir)}))


def test_the_variants_differ_only_in_their_starts(tmp_path):
    from mmenc.bind.job import tower_specs

    assert bound_vit() == tower_specs(tmp_path, 4.0)["image"]["overrides"]["towers"]["image"]
    train, minilm, image = tmp_path / "train.jsonl", tmp_path / "minilm", tmp_path / "bound"
    args = (train, minilm, 100, 32, 2e-4, 98)
    warm = init_config("MiniLM 3+3 + bound image tower", tmp_path / "a", *args, image=image)
    cold = init_config("MiniLM 3+3, bound ViT from scratch", tmp_path / "a", *args)
    assert warm["model"]["warm_start"] == {"text": str(minilm), "image": str(image)}
    assert cold["model"]["warm_start"] == {"text": str(minilm)}
    assert warm["model"]["overrides"]["towers"]["image"] == bound_vit()
    for config in (warm, cold):
        config["model"].pop("warm_start")
    assert warm == cold  # same shapes, data, order, steps, rate and ramp
    plain = init_config("MiniLM 3+3", tmp_path / "a", *args)
    assert plain["model"]["overrides"]["towers"]["image"]["trunk"]["heads"] == 4
    assert warm["objectives"][0]["config"] == {"alpha_ramp_steps": 98}
    with pytest.raises(ConfigError, match="give image"):
        init_config("MiniLM 3+3 + bound image tower", tmp_path / "a", *args)
    with pytest.raises(ConfigError, match="not one of"):
        init_config("MiniLM 9+9", tmp_path / "a", *args)
    assert all(v.get("image") in (None, "random", "warm") for v in INIT_VARIANTS.values())


def test_both_rerankings_score_each_pair_once_and_as_the_model_does(rows):
    torch.manual_seed(0)
    model = mmenc.create_model("albef-tiny", pretraining=True).eval()
    pairs = [{"image": r["image"], "text": r["text"]} for r in rows]
    remembered = RememberedMatches(model)
    quiet = {"batch_size": 4, "echo": lambda _: None}
    for weight in (None, "auto"):
        direct = evaluate_retrieval(model, pairs, "image", "text", rerank=3,
                                    rerank_itc_weight=weight, **quiet)
        kept = evaluate_retrieval(remembered, pairs, "image", "text", rerank=3,
                                  rerank_itc_weight=weight, **quiet)
        assert kept["metrics_rerank"] == direct["metrics_rerank"]
        assert kept["rerank"] == direct["rerank"]
    # each direction's top 3 of 6 queries: at most 36 distinct pairs, found again the 2nd time
    first = remembered.computed
    assert 0 < first <= 2 * 6 * 3
    evaluate_retrieval(remembered, pairs, "image", "text", rerank=3, **quiet)
    assert remembered.computed == first
    report = evaluate(model, pairs, None, rerank=3)
    assert set(report) >= {"itc", "itm", "itc+itm"}
    assert set(report["itm"]) == {"image->text", "text->image"}
