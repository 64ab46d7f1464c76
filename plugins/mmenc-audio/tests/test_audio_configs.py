"""The typed BEATs configuration: a malformed configuration is a ConfigError naming the key (a
CheckpointError naming the file when it comes from a folder), and a saved model's config.json
survives a load and a save unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mmenc
from mmenc.errors import CheckpointError, ConfigError
from mmenc.testing.configs import saved_and_reloaded
from mmenc_audio.model import BEATsConfig, QuantizerConfig
from mmenc_audio.recipes import BEATS_BASE, BEATS_TINY, BEATS_TOKENIZER_TINY


@pytest.mark.parametrize("override,message", [
    ({"patch_dimm": 8}, r"unknown option 'patch_dimm'; did you mean 'patch_dim'"),
    ({"quantizer": {"num_codes": 8}}, r"config\.quantizer\.code_dim: required key is missing"),
    ({"num_classes": "ten"}, r"config\.num_classes: expected an integer, got 'ten'"),
    ({"trunk": {"heads": 3}}, r"config\.trunk\.dim: 32 does not divide into 3 heads"),
    ({"patch_dim": 0}, r"config\.patch_dim: 0 is outside 1\.\.65536"),
], ids=["unknown", "missing", "type", "heads", "size"])
def test_a_malformed_override_names_its_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"create_model\('beats-tiny'\): .*{message}"):
        mmenc.create_model("beats-tiny", **override)


def test_the_recipes_read_back_from_their_dicts() -> None:
    for config in (BEATS_BASE, BEATS_TINY, BEATS_TOKENIZER_TINY):
        typed = BEATsConfig.read(config)
        assert BEATsConfig.read(typed.to_dict()) == typed
        assert typed.to_dict() == {**config, "source": None}
    assert BEATsConfig.read(BEATS_TOKENIZER_TINY).quantizer == QuantizerConfig(32, 8)


@pytest.mark.parametrize("recipe", ["beats-tiny", "beats-tokenizer-tiny"])
def test_a_saved_config_json_round_trips_and_a_bad_one_names_file_and_key(
        recipe: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mmenc.create_model(recipe)
    loaded, first, saved = saved_and_reloaded(model, tmp_path)
    assert loaded.settings == model.settings
    batch = model.tokenize([torch.zeros(8000).numpy()], "audio")
    assert torch.equal(model.embed(batch, "audio"), loaded.embed(batch, "audio"))
    for key, value, message in (("quantiser", None, r"config\.quantiser: unknown key; did you "
                                                    r"mean 'quantizer'"),
                                ("label_dict", ["speech"], r"config\.label_dict: expected a "
                                                           r"mapping")):
        first.write_text(json.dumps({**saved, "config": {**saved["config"], key: value}}))
        with pytest.raises(CheckpointError, match=rf"{first}: .*{message}"):
            mmenc.load(tmp_path / "a")
