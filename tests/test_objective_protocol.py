"""The objective protocol of `mmenc pretrain`: a plugin objective registered through the hook
trains like the built-ins, and a registered objective that breaks the protocol, or a config
entry its declaration refuses, is a ConfigError naming it."""

from __future__ import annotations

import inspect
import json
import types

import pytest
import torch
from torch import nn

import mmenc
from mmenc import registry
from mmenc.errors import ConfigError
from mmenc.objectives.protocol import (
    Objective,
    SharedStep,
    StepBatches,
    objective_class,
    trainable_objectives,
)
from mmenc.plugins import PluginSource
from mmenc.train import load_config, pretrain
from mmenc.train import state as train_state
from mmenc.train.data import write_toy_pairs


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Centres(nn.Module):
    """Pulls the mean embedding of each modality towards a learned centre; draws one number
    from its generator per step and counts the steps it was told about."""

    name = "centres"
    arity = 2
    params = frozenset({"scale", "width"})
    calls: list[tuple[str, ...]] = []
    built: list[tuple[str, tuple[str, ...], int]] = []

    def __init__(self, scale: float = 1.0, width: int = 8) -> None:
        super().__init__()
        self.scale = scale
        self.centre = nn.Parameter(torch.zeros(width))
        self.register_buffer("after", torch.zeros((), dtype=torch.long))

    @classmethod
    def for_model(cls, model, modalities, **config):
        width = int(model.embed(model.tokenize(["a red circle"], "text"), "text").shape[-1])
        config.setdefault("width", width)
        cls.built.append((model.recipe, tuple(modalities), config["width"]))
        return cls(**config)

    def step(self, model, batches, generator):
        Centres.calls.append(tuple(batches))
        assert isinstance(batches, StepBatches) and isinstance(generator, torch.Generator)
        loss = sum(((model.embed(b, m).mean(0) - self.centre) ** 2).sum()
                   for m, b in batches.items())
        draw = float(torch.rand((), generator=generator))
        return self.scale * loss, {"draw": draw}

    def after_step(self, model) -> None:
        self.after += 1


class NoStep(nn.Module):
    name = "no-step"
    arity = 1
    params = frozenset()


def _variant(name: str, **attrs):
    return type(f"Bad{name.title().replace('-', '')}", (Centres,), {"name": name, **attrs})


BAD = {
    "no-step": NoStep,
    "zero-arity": _variant("zero-arity", arity=0),
    "text-arity": _variant("text-arity", arity="2"),
    "loose-params": _variant("loose-params", params="scale"),
    "untaken-params": _variant("untaken-params", params=frozenset({"scale", "sharpness"})),
    "misnamed": _variant("centres-two"),
    "a-function": lambda **config: Centres(**config),
}


@pytest.fixture
def toy_catalogue(monkeypatch):
    """The process catalogue with a plugin ``toy`` registering ``centres`` and broken ones."""
    module = types.ModuleType("toy_objectives")

    @mmenc.hookimpl
    def mmenc_register_objectives(register):
        register(mmenc.ObjectiveSpec("centres", Centres, "mean embeddings to learned centres"))
        for name, target in BAD.items():
            register(mmenc.ObjectiveSpec(name, target))

    module.mmenc_register_objectives = mmenc_register_objectives
    cat = mmenc.build_catalogue(sources=[PluginSource("toy", "toy-dist", "1.0", module=module)])
    assert cat.plugin("toy").status == "ok", cat.plugin("toy").error
    monkeypatch.setitem(registry._CACHE, "default", cat)
    Centres.calls.clear()
    Centres.built.clear()
    return cat


def config(manifest, out, objectives, steps=3):
    return {"model": {"recipe": "clip-tiny"}, "objectives": objectives,
            "data": {"train": str(manifest)}, "batch_size": 4, "steps": steps, "seed": 1,
            "log_every": 1, "optim": {"lr": 1e-2}, "checkpoint": {"every": steps, "keep": 1},
            "output_dir": str(out), "progress": False}


def test_a_plugin_objective_trains_through_mmenc_pretrain(tmp_path, toy_catalogue):
    manifest = write_toy_pairs(tmp_path / "data", n=8)
    result = pretrain(config(manifest, tmp_path / "run", [
        {"name": "contrastive", "modalities": ["image", "text"]},
        {"name": "centres", "modalities": ["text", "image"], "weight": 0.5,
         "config": {"scale": 2.0}},
    ]))
    assert result.step == 3
    assert Centres.built == [("clip-tiny", ("text", "image"), 32)]  # for_model saw the model
    assert Centres.calls == [("text", "image")] * 3  # the config's order, once a step
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    draws = [r["centres/draw"] for r in rows]
    assert len(set(draws)) == 3 and all(0 <= d < 1 for d in draws)  # its own generator
    assert all(abs(r["loss"] - r["contrastive/loss"] - 0.5 * r["centres/loss"]) < 1e-5
               for r in rows)
    state, _ = train_state.read(result.checkpoint)
    assert int(state["tasks.centres.objective.after"]) == 3  # after_step ran after each step
    assert state["tasks.centres.objective.centre"].abs().sum() > 0  # it was trained
    assert "rng.0.gen.centres" in state


def test_the_same_seed_gives_the_same_plugin_draws(tmp_path, toy_catalogue):
    manifest = write_toy_pairs(tmp_path / "data", n=8)
    entry = [{"name": "centres", "modalities": ["image", "text"]}]
    runs = [pretrain(config(manifest, tmp_path / f"run{i}", entry, steps=2)) for i in range(2)]
    assert runs[0].metrics == {**runs[1].metrics, "items_per_s": runs[0].metrics["items_per_s"]}


@pytest.mark.parametrize(("name", "message"), [
    ("no-step", "objective 'no-step' (plugin 'toy') cannot be trained by `mmenc pretrain`: "
                "NoStep has no step"),
    ("zero-arity", "objective 'zero-arity' (plugin 'toy') cannot be trained by `mmenc "
                   "pretrain`: BadZeroArity.arity must be a positive integer, got 0"),
    ("text-arity", "BadTextArity.arity must be a positive integer, got '2'"),
    ("loose-params", "BadLooseParams.params must be a collection of option names, got 'scale'"),
    ("untaken-params", "BadUntakenParams.params names sharpness, which its constructor does "
                       "not take"),
    ("misnamed", "BadCentresTwo.name is 'centres-two', not the name it is registered under"),
    ("a-function", "objective 'a-function' (plugin 'toy') cannot be trained by `mmenc "
                   "pretrain`: its target is function"),
])
def test_a_registered_objective_that_breaks_the_protocol_is_named(tmp_path, toy_catalogue,
                                                                  name, message):
    entry = {"name": name, "modalities": ["image", "text"][:1 if name == "no-step" else 2]}
    with pytest.raises(ConfigError) as info:
        load_config(config(tmp_path / "m.jsonl", tmp_path / "run", [entry]))
    text = str(info.value)
    assert text.startswith("<config>: objectives[0].name: "), text
    assert message in text
    trainable = text.split("trainable objectives: ")[1]
    assert "centres" in trainable and "contrastive" in trainable and name not in trainable
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "centres", "modalities": ["text"]},
     "objectives[0].modalities: centres needs 2 modalities, got ['text']"),
    ({"name": "centres", "modalities": ["image", "text"], "config": {"sacle": 2}},
     "objectives[0].config.sacle: unknown option of centres; did you mean 'scale'? "
     "(known: scale, width)"),
    ({"name": "masked-modeling", "modalities": ["text"], "config": {"momentum": 0.9}},
     "objectives[0].config.momentum: unknown option of masked-modeling (known: dim, "
     "ignore_index, mask_id, mask_prob, special_ids, transform, vocab_size)"),
    ({"name": "centers", "modalities": ["image", "text"]},
     "objectives[0].name: unknown objective 'centers'; did you mean 'centres'"),
    ({"name": "distillation", "modalities": ["image", "text"]},
     "(momentum distillation is the contrastive option 'momentum' with 'alpha')"),
])
def test_an_entry_the_declaration_refuses_is_named(tmp_path, toy_catalogue, entry, message):
    with pytest.raises(ConfigError) as info:
        load_config(config(tmp_path / "m.jsonl", tmp_path / "run", [entry]))
    assert message in str(info.value)


def test_an_unknown_name_lists_the_registered_objectives(monkeypatch):
    # more objectives than UnknownNameError lists by itself
    module = types.ModuleType("many_objectives")

    @mmenc.hookimpl
    def mmenc_register_objectives(register):
        for i in range(12):
            register(mmenc.ObjectiveSpec(f"extra-{i}", Centres))

    module.mmenc_register_objectives = mmenc_register_objectives
    cat = mmenc.build_catalogue(sources=[PluginSource("many", "many-dist", "1.0",
                                                      module=module)])
    with pytest.raises(ConfigError) as info:
        objective_class("zzz", cat)
    text = str(info.value)
    assert text.startswith("unknown objective 'zzz'")
    listed = text.split("(registered: ")[1].rstrip(")").split(", ")
    assert listed == cat.names("objective") and "contrastive" in listed and len(listed) > 12


def test_every_installed_objective_that_pretrain_trains_keeps_the_protocol():
    names = trainable_objectives()
    assert {"contrastive", "masked-modeling", "matching"} <= set(names)
    for name in names:
        cls = objective_class(name)
        assert isinstance(cls, Objective) and cls.name == name
        taken = inspect.signature(cls.__init__).parameters
        assert set(cls.params) <= set(taken), name
    with pytest.raises(ConfigError, match="cannot be trained"):
        objective_class("distillation")


def test_builtin_steps_on_a_plain_mapping_match_the_shared_step():
    """Outside the trainer, ``step`` takes a plain {modality: batch}; it gives what the trainer's
    shared step gives (embeddings computed once, matching negatives from the contrastive
    similarities of the same step)."""
    from mmenc.builtin.image import example_images
    from mmenc.objectives.pretraining import ContrastiveObjective, MatchingObjective

    torch.manual_seed(0)
    model = mmenc.create_model("clip-tiny").eval()
    texts = ["a gradient", "a red checkerboard", "grey", "a clear blue"]
    batches = {"image": model.tokenize(example_images(), "image"),
               "text": model.tokenize(texts, "text")}
    contrastive = ContrastiveObjective.for_model(model, ["image", "text"])
    matching = MatchingObjective.for_model(model, ["image", "text"])

    def run(view):
        loss_c, _ = contrastive.step(model, view(), torch.Generator().manual_seed(0))
        loss_m, logs = matching.step(model, view(), torch.Generator().manual_seed(5))
        return loss_c, loss_m, logs

    shared = SharedStep(model, batches)
    with torch.no_grad():
        plain = run(lambda: dict(batches))
        trainer = run(lambda: shared.view(["image", "text"]))
    assert torch.equal(plain[0], trainer[0])
    assert ("image", "text") in shared.similarities
    # a plain mapping has no contrastive similarities: its negatives come from cosine / 0.07,
    # which is what the untrained temperature (1 / 0.07) gives
    assert torch.allclose(plain[1], trainer[1], atol=1e-6) and plain[2] == trainer[2]
    with pytest.raises(KeyError):
        shared.view(["image"])["text"]  # an objective sees only its own modalities


def test_resuming_from_state_of_other_objectives_names_the_keys(tmp_path):
    """A checkpoint whose objective tensors do not fit the run's objectives (written with the
    contrastive temperature at ``tasks.contrastive.objective.logit_scale``, where it is now
    ``...objective.loss.logit_scale``) is a CheckpointError naming the keys."""
    from safetensors.torch import save_file

    from mmenc.errors import CheckpointError

    manifest = write_toy_pairs(tmp_path / "data", n=8)
    cfg = config(manifest, tmp_path / "run", [{"name": "contrastive",
                                                "modalities": ["image", "text"]}], steps=1)
    result = pretrain(cfg)
    path = result.checkpoint / train_state.STATE
    tensors, _ = train_state.read(result.checkpoint)
    save_file({k.replace("objective.loss.", "objective."): v for k, v in tensors.items()},
              str(path))
    with pytest.raises(CheckpointError) as info:
        pretrain(cfg, resume=True)
    assert str(info.value) == (f"{result.checkpoint}: its objectives' state does not fit this "
                               "run's objectives (missing: tasks.contrastive.objective.loss."
                               "logit_scale; not expected: tasks.contrastive.objective."
                               "logit_scale)")


def test_the_contract_check_holds_a_trainable_objective_to_the_protocol():
    from mmenc import testing
    from mmenc.objectives.pretraining import ContrastiveObjective

    testing.check_objective(mmenc.ObjectiveSpec("contrastive", ContrastiveObjective))
    odd = type("OddArity", (ContrastiveObjective,), {"arity": 0})
    with pytest.raises(AssertionError, match="objective 'contrastive'.*does not follow the "
                                             "objective protocol: OddArity.arity must be a "
                                             "positive integer, got 0"):
        testing.check_objective(mmenc.ObjectiveSpec("contrastive", odd))
    with pytest.raises(AssertionError, match="ContrastiveObjective.name is 'contrastive', not "
                                             "the name it is registered under"):
        testing.check_objective(mmenc.ObjectiveSpec("infonce", ContrastiveObjective))
