"""The typed configurations of ALBEF and BridgeTower: a malformed configuration is a
ConfigError naming the key (a CheckpointError naming the file when it comes from a folder),
and a saved model's config.json survives a load and a save unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mmenc
import pytest
import torch
from mmenc.errors import CheckpointError, ConfigError
from mmenc.testing.configs import saved_and_reloaded

from mmenc_vl.configs import ALBEFConfig, BridgeTowerConfig
from mmenc_vl.recipes import ALBEF_BASE, ALBEF_TINY, BRIDGETOWER_BASE, BRIDGETOWER_TINY

RECIPES = {"albef-tiny": (ALBEFConfig, ALBEF_TINY), "bridgetower-tiny":
           (BridgeTowerConfig, BRIDGETOWER_TINY)}
BAD = [  # override, the message it gives
    ({"queue_sise": 8}, r"unknown option 'queue_sise'; did you mean 'queue_size'"),
    ({"fusion": {"depht": 2}}, r"unknown option 'fusion\.depht'; did you mean 'depth'"),
    ({"temp": "warm"}, r"config\.temp: expected a number, got 'warm'"),
    ({"pretraining": 1}, r"config\.pretraining: expected true or false, got 1"),
    ({"fusion": {"heads": 0}}, r"config\.fusion\.heads: 0 is outside 1\.\.1024"),
    ({"mask_token_id": 1 << 40}, r"config\.mask_token_id: token id \d+ is outside"),
    ({"towers": {"audio": {"kind": "text"}}}, r"config\.towers: a 'text' and an 'image' tower"),
]


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("override,message", BAD, ids=[next(iter(b[0])) for b in BAD])
def test_a_malformed_override_names_its_key(recipe: str, override: dict, message: str) -> None:
    if recipe.startswith("bridge") and "queue_sise" in override:
        override, message = {"mlm_haed": True}, r"'mlm_haed'; did you mean 'mlm_head'"
    with pytest.raises(ConfigError, match=rf"create_model\('{recipe}'\): .*{message}"):
        mmenc.create_model(recipe, **override)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_saved_config_json_round_trips_and_a_bad_one_names_file_and_key(
        recipe: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mmenc.create_model(recipe)
    loaded, first, saved = saved_and_reloaded(model, tmp_path)
    cls, defaults = RECIPES[recipe]
    # the same settings; the tokenizers are saved as files (a byte-level one as its JSON)
    assert loaded.settings == replace(cls.read(defaults), tokenizers=loaded.settings.tokenizers)
    text = model.tokenize(["a red square"], "text")
    assert torch.equal(model.embed(text, "text"), loaded.embed(text, "text"))
    for key, value, message in (("fusoin", {}, r"config\.fusoin: unknown key; did you mean "
                                                r"'fusion'"),
                                ("embed_dim", "wide", r"config\.embed_dim: a size must be")):
        bad = {**saved, "config": {**saved["config"], key: value}}
        first.write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=rf"{first}: .*{message}"):
            mmenc.load(tmp_path / "a")


@pytest.mark.parametrize("cls,config", [(ALBEFConfig, ALBEF_BASE), (ALBEFConfig, ALBEF_TINY),
                                        (BridgeTowerConfig, BRIDGETOWER_BASE),
                                        (BridgeTowerConfig, BRIDGETOWER_TINY)])
def test_the_recipes_defaults_read_back_from_their_dict(cls: type, config: dict) -> None:
    typed = cls.read(config)
    assert cls.read(typed.to_dict()) == typed
    written = typed.to_dict()  # the dict holds every key the recipe wrote, unchanged
    for key, value in config.items():
        if key == "fusion":
            assert {k: written[key][k] for k in value} == value
        else:
            assert written[key] == value, key


def test_every_field_is_a_known_option_without_a_default_entry() -> None:
    # neither key is in ALBEF_TINY, nor looked up by name in the builder's module
    model = mmenc.create_model("albef-tiny", init="bert", source={"format": "albef"})
    assert model.settings.init == "bert" and model.config["source"] == {"format": "albef"}
    tower = mmenc.create_model("bridgetower-tiny", mlm_head=True, itm_head=False)
    assert tower.mlm_head is not None and tower.itm_head is None


def test_token_ids_are_the_recipes_or_the_tokenizers() -> None:
    # the tiny BridgeTower's byte-level tokenizer has <mask> = 4, roberta-base's 50264
    assert BridgeTowerConfig.read(BRIDGETOWER_TINY).mask_token_id == 4
    assert BridgeTowerConfig.read(BRIDGETOWER_BASE).mask_token_id == 50264
    model = mmenc.create_model("bridgetower-tiny")
    unset = BridgeTowerConfig.read({k: v for k, v in BRIDGETOWER_TINY.items()
                                    if k not in ("mask_token_id", "special_token_ids")})
    tokenizer = model.tokenizers["text"]
    assert unset.token_id("mask_token_id", tokenizer) == tokenizer.tokenizer.token_to_id("<mask>")
    assert unset.special_ids(tokenizer) == [0, 1, 2]
    albef = ALBEFConfig.read(ALBEF_TINY)
    assert (albef.pad_token_id, albef.cls_token_id, albef.mask_token_id) == (1, 0, 4)
    with pytest.raises(ConfigError, match="config.mask_token_id: not set"):
        unset.token_id("mask_token_id", object())
