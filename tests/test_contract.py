"""Every registered modality, tokenizer, fusion, objective and tiny model passes mmenc.testing's
contract checks; and each check fails on a component that breaks its contract."""

from __future__ import annotations

import types
import unittest

import pytest
import torch
from torch import nn

import mmenc
from mmenc import testing
from mmenc.batch import Features
from mmenc.hookspecs import hookimpl
from mmenc.model import Encoder
from mmenc.specs import ModelSpec, ObjectiveSpec

CATALOGUE = mmenc.catalogue()
TINY = [e.spec for e in CATALOGUE.entries("model") if e.spec.tiny]


def _specs(kind):
    return [pytest.param(e.spec, id=e.spec.name) for e in CATALOGUE.entries(kind)]


@pytest.mark.parametrize("spec", _specs("modality"))
def test_modality(spec):
    testing.check_modality(spec)


@pytest.mark.parametrize("spec", _specs("tokenizer"))
def test_tokenizer(spec):
    testing.check_tokenizer(spec)


@pytest.mark.parametrize("spec", _specs("fusion"))
def test_fusion(spec):
    testing.check_fusion(spec)


@pytest.mark.parametrize("spec", _specs("tower"))
def test_tower(spec):
    testing.check_tower(spec)


@pytest.mark.parametrize("spec", _specs("objective"))
def test_objective(spec):
    testing.check_objective(spec)


@pytest.mark.parametrize(
    ("spec", "check"),
    [pytest.param(spec, check, id=f"{spec.name}-{testing.check_name(check)}")
     for spec in TINY for check in testing.MODEL_CHECKS],
)
def test_model(spec, check):
    check(spec)


def test_every_builtin_kind_is_covered():
    assert {"text-tiny", "vit-tiny", "clip-tiny", "merged-tiny"} <= {s.name for s in TINY}
    assert {"dual", "merged"} <= set(CATALOGUE.names("fusion"))


# -- the checks themselves fail on broken components ---------------------------------------------
class _Objective(nn.Module):
    """A contrastive-style objective over two embedding matrices."""

    def __init__(self, broken: str = "") -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.unused = nn.Parameter(torch.zeros(3)) if broken == "unused" else None
        self.broken = broken

    def example_inputs(self):
        return {"a": torch.randn(4, 8), "b": torch.randn(4, 8)}

    def forward(self, a, b):
        logits = self.scale * a @ b.T  # [b b]
        loss = nn.functional.cross_entropy(logits, torch.arange(len(a)))
        if self.broken == "nan":
            loss = loss * float("nan")
        if self.broken == "detached":
            loss = (self.scale * 0 + logits.detach().sum()).sum()
        return loss, {"loss": loss.detach(), "scale": float(self.scale.detach())}


@pytest.mark.parametrize(
    ("broken", "message"),
    [("", None), ("nan", "NaN or Inf"), ("unused", "no gradient reaches unused"),
     ("detached", "does not depend on its inputs")],
)
def test_check_objective_catches(broken, message):
    spec = ObjectiveSpec("toy", lambda: _Objective(broken))
    if message is None:
        testing.check_objective(spec)
        return
    with pytest.raises(AssertionError, match=message):
        testing.check_objective(spec)


class _LeakyEncoder(Encoder):
    """Byte-level text, mean-pooled over every position (pads included): breaks padding."""

    def __init__(self, config, tokenizer):
        super().__init__(config, {"text": tokenizer})
        self.embedding = nn.Embedding(261, 8)
        self.unused = nn.Linear(8, 8)

    def forward_features(self, batch, modality, output_hidden_states=False):
        hidden = self.embedding(batch.ids)
        return Features(hidden, batch.mask, hidden.mean(dim=1))

    def embed(self, batch, modality):
        return self.forward_features(batch, modality).pooled


def _build_leaky(config, directory=None):
    from mmenc.builtin.text import text_tokenizer

    return _LeakyEncoder(config, text_tokenizer(config["tokenizers"]["text"], directory))


def _leaky_plugin():
    module = types.ModuleType("leaky_plugin")

    @hookimpl
    def mmenc_register_models(register):
        register(ModelSpec("leaky-tiny", ("text",), _build_leaky,
                           {"tokenizers": {"text": {"tokenizer": "text", "kind": "bytes"}}},
                           tiny=True))

    module.mmenc_register_models = mmenc_register_models
    return module


@pytest.mark.parametrize(
    ("check", "message"),
    [pytest.param(check, message, id=testing.check_name(check)) for check, message in (
        (testing.check_model_padding, "embeddings with and without 5 pads differ"),
        (testing.check_model_all_params_get_grad, "no gradient reaches unused"),
        (testing.check_model_grad_checkpointing, "changed nothing"),
    )],
)
def test_model_checks_catch(check, message):
    with testing.with_plugins(_leaky_plugin()) as cat:
        spec = cat.get("model", "leaky-tiny")
        testing.check_model_finite(spec)  # the model runs; only the property under test breaks
        with pytest.raises(AssertionError, match=message):
            check(spec)
    assert "leaky-tiny" not in mmenc.catalogue().names("model")


def test_padding_check_skips_unmasked_continuous_batches():
    with pytest.raises(unittest.SkipTest):
        testing.check_model_padding(CATALOGUE.get("model", "vit-tiny"))
