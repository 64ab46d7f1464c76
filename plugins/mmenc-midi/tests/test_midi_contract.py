"""mmenc's contract checks on everything mmenc-midi registers, and the saved tiny models."""

from __future__ import annotations

import mmenc
import pytest
import torch
from mmenc.testing import (
    MODEL_CHECKS,
    check_modality,
    check_name,
    check_objective,
    check_tokenizer,
)

from mmenc_midi.midi import example_midi

TINY = ["midibert-cp-tiny", "adv-midibert-octuple-tiny", "midi-text-tiny"]


def test_everything_is_registered():
    cat = mmenc.catalogue()
    assert cat.plugin("midi").status == "ok"
    assert {"midibert-cp-base", "adv-midibert-octuple-base", *TINY} <= set(cat.names("model"))
    assert {"midi-cp", "midi-octuple", "midi-remi"} <= set(cat.names("tokenizer"))
    assert {"midibert", "adv-midibert"} <= set(cat.names("converter"))


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=check_name)
@pytest.mark.parametrize("name", TINY)
def test_model_contract(name, check):
    check(mmenc.catalogue().get("model", name))


def test_modality_contract():
    check_modality(mmenc.catalogue().get("modality", "midi"))


@pytest.mark.parametrize("name", ["midi-cp", "midi-octuple", "midi-remi"])
def test_tokenizer_contract(name):
    check_tokenizer(mmenc.catalogue().get("tokenizer", name))


@pytest.mark.parametrize("name", ["compound-mlm", "adversarial-masker"])
def test_objective_contract(name):
    check_objective(mmenc.catalogue().get("objective", name))


def test_base_recipes_have_the_official_shapes():
    spec = mmenc.catalogue().get("model", "midibert-cp-base")
    cfg = spec.default_config()
    assert cfg["trunk"]["dim"] == 768 and cfg["trunk"]["relative"] == "key_query"
    assert cfg["vocab_sizes"] == [4, 18, 88, 66] and cfg["emb_dim"] == 256
    adv = mmenc.catalogue().get("model", "adv-midibert-octuple-base").default_config()
    assert adv["trunk"]["max_positions"] == 1024 and len(adv["vocab_sizes"]) == 8


def test_tiny_model_encodes_paths_and_bytes(tmp_path):
    model = mmenc.create_model("midibert-cp-tiny").eval()
    path = tmp_path / "a.mid"
    path.write_bytes(example_midi()[0])
    a = model.encode([path, example_midi()[1]], "midi")
    b = model.encode([example_midi()[0], example_midi()[1]], "midi")
    assert a.shape == (2, 32) and torch.allclose(a, b)
    with torch.no_grad():
        batch = model.tokenize(example_midi(), "midi")
        f = model.forward_features(batch, "midi", output_hidden_states=True)
    assert len(f.hidden_states) == 3 and f.pooled is None
    assert batch.ids.shape[-1] == 4


def test_tokenizer_longer_than_the_position_table_is_refused():
    with pytest.raises(ValueError, match="position table covers 64"):
        mmenc.create_model("midibert-cp-tiny", tokenizers={"midi": {"max_len": 100}})
