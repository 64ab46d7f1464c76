"""Tower encoders: warm starts and frozen towers."""

from __future__ import annotations

import torch

import mmenc


def frozen_clip():
    torch.manual_seed(0)
    model = mmenc.create_model("clip-tiny")
    for p in model.towers["text"].parameters():
        p.requires_grad_(False)
    return model


def test_frozen_tower_runs_without_dropout_and_once_per_caption():
    model = frozen_clip()
    model.config["towers"]["text"]["dropout"] = 0.5
    for m in model.towers["text"].modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    batch = model.tokenize(["a cat", "a dog", "a cat", ""], "text")
    model.train()
    train_emb = model.embed(batch, "text")
    model.eval()
    assert torch.allclose(train_emb, model.embed(batch, "text"), atol=1e-6)
    model.train()
    version, cache = model._frozen_cache["text"]
    assert len(cache) == 3                       # the repeated caption is computed once
    model.embed(batch, "text").sum().backward()  # the projection still trains
    assert model.proj["text"].weight.grad is not None


def test_frozen_cache_follows_weight_changes():
    model = frozen_clip()
    model.train()
    batch = model.tokenize(["a cat"], "text")
    before = model.embed(batch, "text").detach()
    with torch.no_grad():
        model.towers["text"].embeddings.norm.bias.add_(1.0)
    assert not torch.allclose(before, model.embed(batch, "text").detach())


def test_warm_start_takes_tower_tokenizer_and_pooling(tmp_path):
    source = mmenc.create_model("text-tiny")
    source.config["pooling"]["text"] = "cls"
    source.pooling["text"] = "cls"
    model = mmenc.create_model("clip-tiny")
    model.warm_start("text", source)
    assert model.towers["text"] is source.towers["text"]
    assert model.pooling["text"] == "cls"
    model.save_pretrained(tmp_path / "m")
    again = mmenc.load(tmp_path / "m")
    items = ["warm start"]
    assert torch.equal(model.encode(items, "text"), again.encode(items, "text"))
