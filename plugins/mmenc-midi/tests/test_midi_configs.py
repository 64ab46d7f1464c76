"""The typed MIDI-BERT configuration: a malformed configuration is a ConfigError naming the key
(a CheckpointError naming the file when it comes from a folder), and a saved model's
config.json survives a load and a save unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mmenc
import pytest
import torch
from mmenc.errors import CheckpointError, ConfigError
from mmenc.testing.configs import saved_and_reloaded

from mmenc_midi.model import MidiBertConfig
from mmenc_midi.recipes import (
    ADV_MIDIBERT_OCTUPLE_BASE,
    ADV_MIDIBERT_OCTUPLE_TINY,
    MIDIBERT_CP_BASE,
    MIDIBERT_CP_TINY,
)


@pytest.mark.parametrize("override,message", [
    ({"emb_dimm": 8}, r"unknown option 'emb_dimm'; did you mean 'emb_dim'"),
    ({"pooling": "max"}, r"config\.pooling: expected one of 'mean', 'cls', 'pooler', got 'max'"),
    ({"pooler": "yes"}, r"config\.pooler: expected true or false, got 'yes'"),
    ({"pad_ids": [0]}, r"config\.pad_ids: 1 entries for 4 fields"),
    ({"mask_ids": [1000, 0, 0, 0]}, r"config\.mask_ids\[0\]: token id 1000 is outside"),
    ({"emb_dim": 1 << 20}, r"config\.emb_dim: 1048576 is outside 1\.\.65536"),
], ids=["unknown", "choice", "type", "length", "id", "size"])
def test_a_malformed_override_names_its_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"create_model\('midibert-cp-tiny'\): .*{message}"):
        mmenc.create_model("midibert-cp-tiny", **override)


def test_the_recipes_read_back_from_their_dicts() -> None:
    for config in (MIDIBERT_CP_BASE, MIDIBERT_CP_TINY, ADV_MIDIBERT_OCTUPLE_BASE,
                   ADV_MIDIBERT_OCTUPLE_TINY):
        typed = MidiBertConfig.read(config)
        assert MidiBertConfig.read(typed.to_dict()) == typed
        assert holds(typed.to_dict(), config)  # every key the recipe wrote, unchanged


def holds(full: object, part: object) -> bool:
    """``full`` has every entry of ``part`` (nested dicts key by key) with the same value."""
    if isinstance(part, dict):
        return isinstance(full, dict) and all(k in full and holds(full[k], v)
                                              for k, v in part.items())
    return full == part


def test_a_saved_config_json_round_trips_and_a_bad_one_names_file_and_key(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mmenc.create_model("midibert-cp-tiny")
    loaded, first, saved = saved_and_reloaded(model, tmp_path)
    # the same settings; the tokenizer saves its options in full
    assert loaded.settings == replace(model.settings, tokenizers=loaded.settings.tokenizers)
    ids = torch.tensor([[[0, 1, 2, 3], [0, 2, 3, 4]]])
    assert torch.equal(model.forward_ids(ids).hidden,
                       loaded.forward_ids(ids).hidden)
    for key, value, message in (("scheme", "remi", r"config\.scheme: expected one of 'cp', "
                                                   r"'octuple'"),
                                ("poolr", True, r"config\.poolr: unknown key; did you mean "
                                                r"'pooler'")):
        first.write_text(json.dumps({**saved, "config": {**saved["config"], key: value}}))
        with pytest.raises(CheckpointError, match=rf"{first}: .*{message}"):
            mmenc.load(tmp_path / "a")
