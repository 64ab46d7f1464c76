"""The typed configuration of tower encoders: a malformed configuration is a ConfigError naming
the key (a CheckpointError naming the file when it comes from a folder), and a saved model's
config.json survives a load and a save unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import mmenc
from mmenc.builtin.towers import TowersConfig
from mmenc.errors import CheckpointError, ConfigError
from mmenc.registry import catalogue
from mmenc.testing.configs import saved_and_reloaded


@pytest.mark.parametrize("override,message", [
    ({"embed_dimm": 8}, r"unknown option 'embed_dimm'; did you mean 'embed_dim'"),
    ({"pooling": {"text": "max"}}, r"pooling\.text must be one of \('cls', 'mean', 'pooler'\)"),
    ({"pooling": {"text": 1}}, r"config\.pooling\.text: expected a string, got 1"),
    ({"fusion": {"name": 3}}, r"config\.fusion\.name: a registered fusion is needed, got 3"),
    ({"embed_dim": 1 << 20}, r"config\.embed_dim: 1048576 is outside 1\.\.65536"),
], ids=["unknown", "choice", "type", "fusion", "size"])
def test_a_malformed_override_names_its_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"create_model\('clip-tiny'\): .*{message}"):
        mmenc.create_model("clip-tiny", **override)


def test_an_unknown_option_lists_the_dataclass_fields() -> None:
    with pytest.raises(ConfigError) as info:
        mmenc.create_model("clip-tiny", embed_dimm=8)
    assert str(info.value).endswith("(valid here: embed_dim, fusion, pooling, source, "
                                    "tokenizers, towers)")


def test_every_tower_recipe_reads_back_from_its_dict() -> None:
    cat = catalogue()
    names = [n for n in cat.names("model")
             if str(cat.get("model", n).builder).endswith(":build_tower_encoder")]
    assert len(names) >= 5  # built-in and plugin tower recipes alike
    for name in names:
        config = cat.get("model", name).default_config()
        typed = TowersConfig.read(config, name)
        assert TowersConfig.read(typed.to_dict()) == typed
        assert {k: typed.to_dict()[k] for k in config} == config, name


def test_a_saved_config_json_round_trips_and_a_bad_one_names_file_and_key(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mmenc.create_model("clip-tiny")
    loaded, first, saved = saved_and_reloaded(model, tmp_path)
    assert loaded.settings == replace(model.settings, tokenizers=loaded.settings.tokenizers)
    assert torch.equal(model.encode(["a cat"], "text"), loaded.encode(["a cat"], "text"))
    for key, value, message in (("poolling", {}, r"config\.poolling: unknown key; did you mean "
                                                 r"'pooling'"),
                                ("pooling", {"text": "max"}, r"pooling\.text must be one of")):
        first.write_text(json.dumps({**saved, "config": {**saved["config"], key: value}}))
        with pytest.raises(CheckpointError, match=rf"{first}: .*{message}"):
            mmenc.load(tmp_path / "a")
