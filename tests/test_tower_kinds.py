"""Towers of registered kinds: the protocol, a kind registered by a test plugin used in a recipe,
unknown kinds in a model folder, and the ``timm`` kind (round trip, timm's own weights from a
local file)."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import mmenc
from mmenc import registry
from mmenc.batch import Features, TokenBatch, Tower
from mmenc.builtin.image import example_images
from mmenc.builtin.timm_tower import TimmTower
from mmenc.builtin.towers import TowerEncoder, build_tower
from mmenc.errors import CheckpointError, ConfigError
from mmenc.model import Encoder
from mmenc.plugins import PluginSource
from mmenc.specs import ModelSpec, TowerSpec

TEXTS = ["a red square", "a blue circle on a white ground", ""]


# -- a tower kind registered by a plugin ------------------------------------------------------
class BagTower(nn.Module):
    """Token embeddings, one linear layer: a tower mmenc's transformers have nothing to do
    with."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, dim)
        self.mix = nn.Linear(dim, dim)

    @property
    def width(self) -> int:
        return self.table.embedding_dim

    def forward_features(self, batch: TokenBatch, *,
                         output_hidden_states: bool = False) -> Features:
        hidden = torch.tanh(self.mix(self.table(batch.ids)))
        return Features(hidden, batch.mask, None, (hidden,) if output_hidden_states else None)


BUILT: list[dict] = []


def bag_tower(config: dict, tokenizer) -> BagTower:
    BUILT.append({"config": dict(config), "tokenizer": tokenizer.modality})
    return BagTower(int(config["vocab_size"]), int(config["dim"]))


def not_a_tower(config: dict, tokenizer) -> nn.Module:
    return nn.Linear(2, 2)


BAG_RECIPE = {"towers": {"text": {"kind": "bag", "vocab_size": 261, "dim": 16}},
              "tokenizers": {"text": {"tokenizer": "text", "kind": "bytes", "max_length": 32}},
              "pooling": {"text": "mean"}, "embed_dim": 8, "fusion": {"name": "dual"}}


@pytest.fixture
def bag_plugin(monkeypatch):
    plugin = types.ModuleType("bag_plugin")

    @mmenc.hookimpl
    def mmenc_register_towers(register):
        register(TowerSpec("bag", bag_tower, "embedding bag (tests)"))
        register(TowerSpec("not-a-tower", not_a_tower, "a module without forward_features"))

    @mmenc.hookimpl
    def mmenc_register_models(register):
        register(ModelSpec("bag-text-tiny", ("text",), "mmenc.builtin.towers:build_tower_encoder",
                           BAG_RECIPE, "dual", "a text tower of a test kind", True))

    plugin.mmenc_register_towers = mmenc_register_towers
    plugin.mmenc_register_models = mmenc_register_models
    cat = mmenc.build_catalogue(env={"MMENC_DISABLE_PLUGIN_AUTOLOAD": "1"},
                                sources=[PluginSource("bag", "bag-dist", "0.1", module=plugin)])
    assert cat.plugin("bag").status == "ok", cat.plugin("bag").error
    monkeypatch.setitem(registry._CACHE, "default", cat)
    BUILT.clear()
    return cat


def test_a_registered_kind_is_built_by_its_factory_and_round_trips(bag_plugin, tmp_path):
    assert bag_plugin.plugin("bag").registered["tower"] == ["bag", "not-a-tower"]
    torch.manual_seed(0)
    model = mmenc.create_model("bag-text-tiny").eval()
    assert isinstance(model, TowerEncoder) and isinstance(model.towers["text"], BagTower)
    assert isinstance(model.towers["text"], Tower)
    assert BUILT == [{"config": {"vocab_size": 261, "dim": 16}, "tokenizer": "text"}]
    assert model.proj["text"].in_features == 16
    emb = model.encode(TEXTS, "text", normalize=False)
    assert emb.shape == (3, 8)
    batch = model.tokenize(TEXTS, "text")
    tokens = model.towers["text"].forward_features(batch).hidden
    want = model.proj["text"](tokens.mul(batch.mask[..., None]).sum(1)
                              / batch.mask.sum(1, keepdim=True))
    assert torch.allclose(emb, want.detach(), atol=1e-6)  # mean pooling of the kind's states
    model.save_pretrained(tmp_path / "bag")
    assert json.loads((tmp_path / "bag" / "config.json").read_text())[
        "config"]["towers"]["text"]["kind"] == "bag"
    again = mmenc.load(tmp_path / "bag")
    assert isinstance(again.towers["text"], BagTower)
    assert torch.equal(again.encode(TEXTS, "text", normalize=False), emb)


def test_a_kind_that_builds_no_tower_and_a_warm_start_without_from_encoder(bag_plugin):
    with pytest.raises(ConfigError, match=r"towers\.text: tower kind 'not-a-tower' built a "
                                          r"Linear without forward_features"):
        mmenc.create_model("bag-text-tiny", towers={"text": {"kind": "not-a-tower"}})
    model = mmenc.create_model("bag-text-tiny")
    towerless = Encoder({}, {})
    towerless.recipe = "no-towers"
    with pytest.raises(ValueError, match=r"kind 'bag'\) starts from a model with a 'bag' "
                                         r"tower; 'no-towers' has none"):
        model.warm_start("text", towerless)
    model.warm_start("text", mmenc.create_model("text-tiny"))  # the same modality: any kind
    assert model.kinds["text"] == "text" and model.proj["text"].in_features == 32


# -- names in a model folder ------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip"
    torch.manual_seed(0)
    mmenc.create_model("clip-tiny").save_pretrained(path)
    return path


def _edited(saved: Path, tmp_path: Path, edit) -> Path:
    out = tmp_path / "edited"
    shutil.copytree(saved, out)
    meta = json.loads((out / "config.json").read_text())
    edit(meta["config"])
    (out / "config.json").write_text(json.dumps(meta))
    return out


@pytest.mark.parametrize("kind", ["vision-transformer", "mmenc.builtin.towers:vision_tower",
                                  "os:system", 7])
def test_an_unknown_tower_kind_in_config_json_is_a_checkpoint_error(saved_clip, tmp_path, kind):
    folder = _edited(saved_clip, tmp_path, lambda c: c["towers"]["image"].update(kind=kind))
    with pytest.raises(CheckpointError) as info:
        mmenc.load(folder)
    message = str(info.value)
    assert str(folder / "config.json") in message
    assert f"towers.image.kind: {kind!r} is not a registered tower kind" in message
    assert "registered: " in message and "text" in message and "timm" in message


def test_a_weights_file_named_in_config_json_is_refused(saved_clip, tmp_path):
    folder = _edited(saved_clip, tmp_path,
                     lambda c: c["towers"]["image"].update(pretrained_file="/etc/passwd"))
    with pytest.raises(CheckpointError, match=r"config\.towers\.image\.pretrained_file: a "
                                              "model folder never names a file outside it"):
        mmenc.load(folder)


def test_an_unknown_kind_given_to_create_model_is_a_config_error():
    with pytest.raises(ConfigError, match=r"towers\.image\.kind: 'nope' is not a registered "
                                          r"tower kind \(registered: .*vision"):
        mmenc.create_model("clip-tiny", towers={"image": {"kind": "nope"}})


def test_every_tower_of_the_tiny_tower_recipes_follows_the_protocol():
    cat = mmenc.catalogue()
    seen = set()
    for entry in cat.models("*-tiny"):
        config = entry.spec.default_config()
        towers = config.get("towers")
        if entry.spec.builder != "mmenc.builtin.towers:build_tower_encoder" or not towers:
            continue
        model = mmenc.create_model(entry.spec.name).eval()
        for m, tower in model.towers.items():
            assert isinstance(tower, Tower), (entry.spec.name, m)
            batch = model.tokenize(_examples(m), m)
            f = tower.forward_features(batch, output_hidden_states=True)
            assert f.hidden.shape[0] == len(batch) and f.hidden.shape[-1] == tower.width
            assert f.hidden_states
            seen.add(model.kinds[m])
    assert {"text", "vision", "timm"} <= seen


def _examples(modality: str) -> list:
    from mmenc.specs import resolve

    return resolve(mmenc.catalogue().get("modality", modality).example)()


# -- the timm kind ----------------------------------------------------------------------------
TIMM_OPTIONS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def test_timm_tower_gives_timms_tokens_and_pooling():
    torch.manual_seed(0)
    tower = build_tower({"kind": "timm", "model": "vit_tiny_patch16_224",
                         "options": TIMM_OPTIONS}).eval()
    assert isinstance(tower, TimmTower) and isinstance(tower, Tower) and tower.width == 32
    pixels = torch.randn(3, 3, 32, 32)
    f = tower.forward_features(TokenBatch(values=pixels))
    with torch.no_grad():
        tokens = tower.model.forward_features(pixels)
        assert torch.equal(f.hidden, tokens)  # [b 1+16 d]: class token and 4x4 patches
        assert f.hidden.shape == (3, 17, 32)
        assert torch.equal(f.pooled, tower.model.forward_head(tokens, pre_logits=True))
        assert torch.equal(f.pooled, tokens[:, 0])  # vit's token pooling
    deep = tower.forward_features(TokenBatch(values=pixels), output_hidden_states=True)
    assert torch.allclose(deep.hidden, f.hidden, atol=1e-6) and len(deep.hidden_states) == 2

    cnn = build_tower({"kind": "timm", "model": "resnet10t"}).eval()
    f = cnn.forward_features(TokenBatch(values=pixels))
    assert f.hidden.shape == (3, 1, 512) and cnn.width == 512  # a [b c 1 1] map, as tokens
    assert torch.allclose(f.pooled, f.hidden.mean(1), atol=1e-6)


@pytest.mark.parametrize(("section", "match"), [
    ({"model": "vit_tiny_patch16_2244"}, r"'vit_tiny_patch16_2244' is not a timm model "
                                         r"\(timm.list_models\(\)\); did you mean "
                                         r"'vit_tiny_patch16_224'"),
    ({"model": "os:system"}, r"'os:system' is not a timm model"),
    ({"model": "resnet10t", "options": {"pretrained_cfg_overlay": 1}}, "not taken from a config"),
    ({"model": "resnet10t", "options": {"checkpoint_path": "/tmp/x.pth"}}, "not taken from a"),
    ({"model": "resnet10t", "options": {"act_layer": {"a": 1}}}, "must be a number, a string"),
    ({"model": "resnet10t", "options": {"in_chans": 1 << 30}}, r"integers within \+-65536"),
    ({"model": "resnet10t", "weights": "x"}, r"unknown key\(s\) weights"),
])
def test_timm_tower_refuses_names_and_options_it_does_not_know(section, match):
    with pytest.raises(ConfigError, match=match):
        build_tower({"kind": "timm", **section})


def test_a_model_with_a_timm_tower_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    model = mmenc.create_model("timm-clip-tiny").eval()
    assert model.kinds == {"text": "text", "image": "timm"}
    images = example_images()
    emb = model.encode(images, "image", normalize=False)
    model.save_pretrained(tmp_path / "m")
    again = mmenc.load(tmp_path / "m").eval()
    own, other = model.state_dict(), again.state_dict()
    assert set(own) == set(other) and all(torch.equal(own[k], other[k]) for k in own)
    assert torch.equal(again.encode(images, "image", normalize=False), emb)
    assert torch.equal(again.encode(TEXTS, "text"), model.encode(TEXTS, "text"))


def test_a_timm_tower_starts_the_image_tower_of_another_recipe(tmp_path):
    torch.manual_seed(0)
    donor = mmenc.create_model("timm-clip-tiny").eval()
    model = mmenc.create_model("vit-tiny")
    model.warm_start("image", donor)
    model.eval()
    assert model.kinds["image"] == "timm" and model.towers["image"] is donor.towers["image"]
    images = example_images()
    model.save_pretrained(tmp_path / "vit")
    again = mmenc.load(tmp_path / "vit").eval()
    assert torch.equal(again.encode(images, "image"), model.encode(images, "image"))


def test_timm_weights_load_from_a_local_safetensors_file(tmp_path):
    torch.manual_seed(1)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                            **TIMM_OPTIONS)
    path = tmp_path / "vit-tiny-32.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    torch.manual_seed(2)  # a different random start: only the file can make them equal
    model = mmenc.create_model("timm-clip-tiny", towers={"image": {"pretrained_file": str(path)}})
    got = model.towers["image"].model.state_dict()
    assert set(got) == set(ref.state_dict())
    assert all(torch.equal(got[k], v) for k, v in ref.state_dict().items())
    assert "pretrained_file" not in model.config["towers"]["image"]  # never stored
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "pretrained_file" not in saved["config"]["towers"]["image"]
    again = mmenc.load(tmp_path / "m")
    assert torch.equal(again.towers["image"].model.pos_embed, ref.pos_embed)


def test_timm_weights_in_other_formats_or_other_shapes_are_refused(tmp_path):
    pickled = tmp_path / "weights.pth"
    pickled.write_bytes(b"\x80\x04not read")
    with pytest.raises(CheckpointError, match=r"weights\.pth: timm weights are read from "
                                              r"\.safetensors files only"):
        mmenc.create_model("timm-clip-tiny", towers={"image": {"pretrained_file": str(pickled)}})
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                              **{**TIMM_OPTIONS, "embed_dim": 64})
    path = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="does not hold vit_tiny_patch16_224 weights"):
        mmenc.create_model("timm-clip-tiny", towers={"image": {"pretrained_file": str(path)}})


# -- the contract check of tower kinds ----------------------------------------------------------
class WideClaim(BagTower):
    @property
    def width(self) -> int:
        return self.table.embedding_dim + 1


class NoStates(BagTower):
    def forward_features(self, batch: TokenBatch, *,
                         output_hidden_states: bool = False) -> Features:
        return super().forward_features(batch)


@pytest.mark.parametrize(("cls", "message"), [
    (BagTower, None),
    (WideClaim, r"expected Features with hidden \[\d+ n 17\] \(width 17\)"),
    (NoStates, "output_hidden_states=True gave no hidden_states"),
])
def test_check_tower_catches_a_tower_that_breaks_the_protocol(cls, message):
    from mmenc.testing import check_tower

    spec = TowerSpec("bag", lambda config, tokenizer: cls(261, 16))
    tokenizer = {"tokenizer": "text", "kind": "bytes", "max_length": 32}
    if message is None:
        check_tower(spec, "text", {}, tokenizer)
        return
    with pytest.raises(AssertionError, match=message):
        check_tower(spec, "text", {}, tokenizer)
