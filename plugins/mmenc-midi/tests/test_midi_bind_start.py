"""A bound model's MIDI tower started from a saved MIDI-BERT (``init_from`` of a tower spec)."""

from __future__ import annotations

from pathlib import Path

import mmenc
import pytest
import torch
from mmenc.bind.model import build_bound
from mmenc.bind.towers import build_tower
from mmenc.errors import ConfigError

from mmenc_midi.midi import example_midi
from mmenc_midi.recipes import midi_text, midibert


def saved_midibert(path: Path, scheme: str = "cp", depth: int = 2, seed: int = 1) -> Path:
    torch.manual_seed(seed)
    config = midibert(scheme, 32, depth, 2, 64, max_len=64, emb_dim=16, dropout=0.0,
                      pooler=False, embed_dim=32)
    model = mmenc.create_model(f"midibert-{scheme}-tiny", **config)
    model.save_pretrained(path)
    return path


def midi_spec(source: Path) -> dict:
    """A ``midi-text-tiny`` MIDI tower with the saved model's configuration, started from it."""
    config = mmenc.load(source).config
    text = mmenc.create_model("text-tiny").config
    overrides = midi_text(config, text["towers"]["text"], text["tokenizers"]["text"], None)
    return {"recipe": "midi-text-tiny", "modality": "midi", "overrides": overrides,
            "init_from": str(source)}


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hub") / "text-tiny"
    mmenc.create_model("text-tiny").save_pretrained(path)
    return path


def test_bound_midi_tower_equals_the_saved_midibert_at_step_0(hub_dir, tmp_path):
    source = saved_midibert(tmp_path / "mlm")
    spec = midi_spec(source)
    torch.manual_seed(5)
    model = build_bound({"hub": {"name": "model", "path": str(hub_dir)}, "dims": [8],
                         "tower_specs": {"midi": spec}}).eval()
    midibert_model = mmenc.load(source).eval()
    batch = midibert_model.tokenize(example_midi(), "midi")
    with torch.no_grad():
        want = midibert_model.forward_features(batch, "midi", output_hidden_states=True)
        got = model.forward_features(model.tokenize(example_midi(), "midi"), "midi",
                                     output_hidden_states=True)
    assert torch.equal(got.mask, want.mask)
    for mine, theirs in zip(got.hidden_states, want.hidden_states, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    # the same recipe without init_from is another (random) encoder
    torch.manual_seed(5)
    scratch = build_tower("midi", {k: v for k, v in spec.items() if k != "init_from"}, 16)
    with torch.no_grad():
        other = scratch.eval().forward_features(scratch.tokenizer(example_midi()))
    assert (other.hidden - want.hidden).abs().max() > 1e-2


@pytest.mark.parametrize("change,message", [
    ({"depth": 4}, r"parameter '[^']*layers.2.[^']*' of the tower is not in the saved model"),
    ({"emb_dim": 8}, r"parameter 'fields.tables.0.weight' has shape \(4, 16\) in the saved "
                     r"model, \(4, 8\) in the tower"),
    ({"scheme": "octuple"}, r"the tokenizer's 'tokenizer' is 'midi-cp' in the saved model, "
                            r"'midi-octuple' in the tower"),
])
def test_a_mismatched_tower_is_a_config_error_naming_the_parameter(tmp_path, change, message):
    source = saved_midibert(tmp_path / "mlm")
    spec = midi_spec(source)
    config = midibert(change.get("scheme", "cp"), 32, change.get("depth", 2), 2, 64, max_len=64,
                      emb_dim=change.get("emb_dim", 16), dropout=0.0, pooler=False)
    text = mmenc.create_model("text-tiny").config
    spec["overrides"] = midi_text(config, text["towers"]["text"], text["tokenizers"]["text"],
                                  None)
    with pytest.raises(ConfigError, match=r"tower of 'midi': init_from .*: " + message):
        build_tower("midi", spec, 16)


def test_init_from_must_name_a_model_folder(tmp_path):
    spec = midi_spec(saved_midibert(tmp_path / "mlm"))
    with pytest.raises(ConfigError, match="init_from must be a model folder"):
        build_tower("midi", {**spec, "init_from": 3}, 16)
