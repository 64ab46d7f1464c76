"""UniXcoder's objectives: span corruption, the attention modes they rely on, and a pretraining
run that mixes every objective over the three views."""

from __future__ import annotations

import json

import pytest
import torch

import mmenc
from mmenc.batch import TokenBatch
from mmenc.errors import ConfigError
from mmenc.train import pretrain
from mmenc_code.objectives import SpanDenoising, UnidirectionalLM, corrupt_spans

torch.set_num_threads(1)

SNIPPETS = [
    ("def add(a, b):\n    return a + b", "Return the sum of a and b."),
    ("def mul(a, b):\n    return a * b", "Multiply two numbers."),
    ("def first(xs):\n    return xs[0]", "The first item of a list."),
    ("def last(xs):\n    return xs[-1]", "The last item of a list."),
    ("class Box:\n    def get(self):\n        return self.value", "Get the stored value."),
    ("def neg(x):\n    return -x", "Negate a number."),
]


@pytest.mark.parametrize("seed", range(5))
def test_corrupted_spans_put_back_give_the_body(seed):
    g = torch.Generator().manual_seed(seed)
    body = list(range(100, 100 + 37))
    sentinels = [1, 2, 3, 4, 5]
    source, target = corrupt_spans(body, sentinels, noise=0.3, span=3, generator=g)
    spans: dict[int, list[int]] = {}
    current = None
    for t in target:
        if t in sentinels:
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    rebuilt = [x for t in source for x in (spans[t] if t in sentinels else [t])]
    assert rebuilt == body
    assert sum(len(v) for v in spans.values()) == round(37 * 0.3)
    assert all(spans.values())


def test_prefix_mode_is_bidirectional_in_the_source_and_causal_after():
    model = mmenc.create_model("unixcoder-tiny").eval()
    ids = torch.randint(30, 500, (1, 12))
    changed = ids.clone()
    changed[0, 9] += 1  # a target token
    prefix = {"prefix_len": torch.tensor([6])}

    def states(x):
        return model.forward_features(TokenBatch(ids=x, pad_id=1, extras=prefix), "code").hidden

    a, b = states(ids), states(changed)
    assert torch.equal(a[0, :9], b[0, :9])  # nothing before position 9 sees it
    assert not torch.allclose(a[0, 10:], b[0, 10:])
    changed = ids.clone()
    changed[0, 5] += 1  # a source token: the whole source sees it
    assert not torch.allclose(states(changed)[0, 0], a[0, 0])


def test_objectives_step_and_learn():
    model = mmenc.create_model("unixcoder-tiny")
    g = torch.Generator().manual_seed(0)
    batch = model.tokenize([c for c, _ in SNIPPETS], "code")
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for objective in (UnidirectionalLM(), SpanDenoising(noise=0.2)):
        first = None
        for _ in range(40):
            loss, logs = objective.step(model, {"code": batch}, g)
            assert torch.isfinite(loss) and logs["tokens"] > 0
            first = first if first is not None else float(loss.detach())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        assert float(loss) < 0.7 * first, type(objective).__name__


def test_pretrain_with_every_objective(tmp_path):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"code": c, "text": t, "ast": c}) + "\n"
                                for c, t in SNIPPETS * 4))
    config = {
        "model": {"recipe": "unixcoder-tiny"},
        "objectives": [
            {"name": "contrastive", "modalities": ["text", "code"]},
            {"name": "contrastive", "modalities": ["ast", "text"], "label": "ast-text"},
            {"name": "masked-modeling", "modalities": ["code"]},
            {"name": "unidirectional-lm", "modalities": ["code"], "weight": 0.5},
            {"name": "span-denoising", "modalities": ["code"], "config": {"noise": 0.2}},
        ],
        "data": {"train": str(manifest)},
        "batch_size": 8, "steps": 3, "log_every": 1, "seed": 0,
        "output_dir": str(tmp_path / "run"), "progress": False,
    }
    result = pretrain(config)
    assert result.step == 3
    for label in ("contrastive", "ast-text", "masked-modeling", "unidirectional-lm",
                  "span-denoising"):
        assert f"{label}/loss" in result.metrics
    model = mmenc.load(result.model_dir)
    assert torch.isfinite(model.encode(["def f(): pass"], "ast")).all()


def test_bad_objective_options_are_named(tmp_path):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"code": "x = 1", "text": "one"}) + "\n")
    base = {"model": {"recipe": "unixcoder-tiny"}, "data": {"train": str(manifest)},
            "steps": 1, "batch_size": 1, "output_dir": str(tmp_path / "run")}
    with pytest.raises(ConfigError, match="noise"):
        pretrain({**base, "objectives": [{"name": "span-denoising", "modalities": ["code"],
                                          "config": {"noise": 2.0}}]})
    with pytest.raises(ConfigError, match="needs 1 modality"):
        pretrain({**base, "objectives": [{"name": "unidirectional-lm",
                                          "modalities": ["code", "text"]}]})
    with pytest.raises(ConfigError, match="unknown option"):
        pretrain({**base, "objectives": [{"name": "unidirectional-lm", "modalities": ["code"],
                                          "config": {"nosie": 0.1}}]})
