"""The typed UniXcoder configuration: a malformed configuration is a ConfigError naming the key
(a CheckpointError naming the file when it comes from a folder), and a saved model's
config.json survives a load and a save unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import mmenc
from mmenc.errors import CheckpointError, ConfigError
from mmenc.testing.configs import saved_and_reloaded
from mmenc_code.model import UniXcoderConfig
from mmenc_code.recipes import UNIXCODER_BASE, UNIXCODER_TINY


@pytest.mark.parametrize("override,message", [
    ({"embed_dimm": 8}, r"unknown option 'embed_dimm'; did you mean 'embed_dim'"),
    ({"embed_dim": "wide"}, r"config\.embed_dim: a size must be an integer, got 'wide'"),
    ({"embed_dim": 0}, r"config\.embed_dim: 0 is outside 1\.\.65536"),
    ({"encoder": {"trunk": {"heads": 3}}}, r"config\.encoder\.trunk\.dim: 32 does not divide "
                                          r"into 3 heads"),
], ids=["unknown", "type", "size", "heads"])
def test_a_malformed_override_names_its_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"create_model\('unixcoder-tiny'\): .*{message}"):
        mmenc.create_model("unixcoder-tiny", **override)


def test_the_recipes_read_back_from_their_dicts() -> None:
    for config in (UNIXCODER_BASE, UNIXCODER_TINY):
        typed = UniXcoderConfig.read(config)
        assert UniXcoderConfig.read(typed.to_dict()) == typed
        assert typed.to_dict() == {**config, "source": None}


def test_a_saved_config_json_round_trips_and_a_bad_one_names_file_and_key(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mmenc.create_model("unixcoder-tiny")
    loaded, first, saved = saved_and_reloaded(model, tmp_path)
    assert loaded.settings == replace(model.settings, tokenizers=loaded.settings.tokenizers)
    code = ["def add(a, b):\n    return a + b"]
    assert torch.equal(model.encode(code, "code"), loaded.encode(code, "code"))
    for key, value, message in (("encodr", {}, r"config\.encodr: unknown key; did you mean "
                                               r"'encoder'"),
                                ("tokenizers", [], r"config\.tokenizers: must be a mapping")):
        first.write_text(json.dumps({**saved, "config": {**saved["config"], key: value}}))
        with pytest.raises(CheckpointError, match=rf"{first}: .*{message}"):
            mmenc.load(tmp_path / "a")
