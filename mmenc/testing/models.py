"""Contract checks of model recipes: one function per property."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmenc.batch import Features, TokenBatch
from mmenc.model import CONFIG, WEIGHTS, Encoder
from mmenc.specs import ModelSpec, resolve
from mmenc.testing._common import (
    _DROPOUTS,
    ATOL,
    GRAD_ATOL,
    PAD,
    _check_grads,
    _close,
    _examples,
    _fail,
    _finite,
    _seeded,
)
from mmenc.testing.components import (
    _same_batch,
)


@contextmanager
def _offline() -> Iterator[None]:
    """Refuse network connections, and tell hub clients to stay offline instead of retrying."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"tried to reach the network: {args[1:] or args!r}")

    saved = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection,
             socket.getaddrinfo)
    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    socket.socket.connect = socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = socket.getaddrinfo = refuse
    os.environ.update(dict.fromkeys(env, "1"))
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex = saved[:2]  # type: ignore[method-assign]
        socket.create_connection, socket.getaddrinfo = saved[2:]
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _build(spec: ModelSpec) -> Encoder:
    from mmenc.factory import create_model

    torch.manual_seed(0)
    return create_model(spec.name)


def _training_without_dropout(model: Encoder) -> Encoder:
    """Train mode (what checkpointing and gradients are for) made deterministic."""
    model.train()
    for module in model.modules():
        if isinstance(module, _DROPOUTS):
            module.p = 0.0
        if isinstance(getattr(module, "attn_dropout", None), float):  # mmenc.nn attention
            module.attn_dropout = 0.0  # type: ignore[assignment]
    return model


def _batches(model: Encoder, spec: ModelSpec) -> dict[str, TokenBatch]:
    return {m: model.tokenize(_examples(m), m) for m in spec.modalities}


def check_model_builds_offline(spec: ModelSpec) -> None:
    """``create_model`` builds the recipe without the network, with a tokenizer per modality."""
    where = f"model {spec.name!r}"
    with _offline():
        model = _build(spec)
    if not isinstance(model, Encoder):
        raise _fail(where, f"the builder returned {type(model).__name__}, not an mmenc.Encoder")
    if model.recipe != spec.name or set(model.modalities) != set(spec.modalities):
        raise _fail(where, f"built recipe {model.recipe!r} for {model.modalities}, the spec says "
                           f"{spec.modalities}")
    for modality, tokenizer in model.tokenizers.items():
        if getattr(tokenizer, "modality", None) != modality:
            raise _fail(where, f"the tokenizer of {modality!r} reads {tokenizer.modality!r}")
    if not any(p.numel() for p in model.parameters()):
        raise _fail(where, "has no parameters")


def check_model_finite(spec: ModelSpec) -> None:
    """Every modality's examples give finite ``[b e]`` embeddings (one shared ``e``) and finite
    features, hidden states included."""
    where = f"model {spec.name!r}"
    model = _build(spec).eval()
    widths = {}
    with torch.no_grad():
        for m, batch in _batches(model, spec).items():
            b = len(batch)
            emb = model.embed(batch, m)
            if emb.dim() != 2 or emb.shape[0] != b:
                raise _fail(where, f"{m}: embed gave {tuple(emb.shape)}, expected [{b} e]")
            _finite(emb, where, f"{m} embeddings")
            widths[m] = emb.shape[1]
            f = model.forward_features(batch, m, output_hidden_states=True)
            if not isinstance(f, Features) or f.hidden.dim() != 3 or f.hidden.shape[0] != b:
                raise _fail(where, f"{m}: forward_features must give Features with hidden [b n d]")
            _finite(f.hidden, where, f"{m} hidden")
            if f.mask is not None and f.mask.shape != f.hidden.shape[:2]:
                raise _fail(where, f"{m}: mask {tuple(f.mask.shape)} does not fit hidden "
                                   f"{tuple(f.hidden.shape)}")
            if f.pooled is not None:
                _finite(f.pooled, where, f"{m} pooled")
            for i, layer in enumerate(f.hidden_states or ()):
                _finite(layer, where, f"{m} hidden_states[{i}]")
    if len(set(widths.values())) > 1:
        raise _fail(where, f"embeddings of different widths {widths}: no shared space")


def _pad_values(batch: TokenBatch, extra: int) -> TokenBatch:
    """A continuous batch with ``extra`` masked tokens of noise appended (axis 1)."""
    assert batch.values is not None and batch.mask is not None
    b, n = batch.mask.shape
    noise = 3 * _seeded(b, extra, *batch.values.shape[2:], seed=1).to(batch.values.dtype)
    extras = {k: torch.cat([v, v.new_zeros((b, extra, *v.shape[2:]))], dim=1)
              if v.dim() >= 2 and v.shape[1] == n else v for k, v in batch.extras.items()}
    return replace(batch, values=torch.cat([batch.values, noise], dim=1),
                   mask=torch.cat([batch.mask, batch.mask.new_zeros(b, extra)], dim=1),
                   extras=extras)


def check_model_padding(spec: ModelSpec) -> None:
    """Pad tokens change neither the embeddings nor the states of real tokens (id batches, and
    continuous batches with a ``[b n]`` mask; others are skipped)."""
    where = f"model {spec.name!r}"
    model = _build(spec).eval()
    checked = []
    for m, batch in _batches(model, spec).items():
        if batch.ids is not None:
            padded = batch.padded(PAD)
        elif (batch.values is not None and batch.mask is not None
              and batch.values.shape[:2] == batch.mask.shape):
            padded = _pad_values(batch, PAD)
        else:
            continue
        with torch.no_grad():
            _close(model.embed(padded, m), model.embed(batch, m), ATOL, where,
                   f"{m} embeddings with and without {PAD} pads")
            f = model.forward_features(batch, m, output_hidden_states=True)
            g = model.forward_features(padded, m, output_hidden_states=True)
        n = f.hidden.shape[1]
        if g.hidden.shape[1] != n + PAD:
            raise _fail(where, f"{m}: {PAD} pads gave {g.hidden.shape[1] - n} more states")
        if g.mask is None or bool(g.mask[:, n:].any()):
            raise _fail(where, f"{m}: the features' mask does not mark the pads")
        real = f.mask if f.mask is not None else torch.ones(f.hidden.shape[:2], dtype=torch.bool)
        _close(g.hidden[:, :n][real], f.hidden[real], ATOL, where, f"{m} real-token states")
        if f.hidden_states is not None and g.hidden_states is not None:
            for i, (x, y) in enumerate(zip(f.hidden_states, g.hidden_states, strict=True)):
                if x.shape[:2] == real.shape and y.shape[1] == n + PAD:  # token-aligned layers
                    _close(y[:, :n][real], x[real], ATOL, where, f"{m} hidden_states[{i}]")
        checked.append(m)
    if not checked:
        raise unittest.SkipTest(f"{where}: no id batch or masked continuous batch to pad")


def _run_for_grads(model: Encoder,
                   batches: dict[str, TokenBatch]) -> tuple[dict[str, Tensor], int]:
    """Embeddings under a fixed random loss, backpropagated; also how many tensors the forward
    pass saved for backward."""
    saved = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal saved
        saved += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = {m: model.embed(batch, m) for m, batch in batches.items()}
    loss = torch.zeros(())
    for i, out in enumerate(outs.values()):
        loss = loss + (out * _seeded(*out.shape, seed=i)).sum()
    loss.backward()
    return {m: o.detach() for m, o in outs.items()}, saved


def check_model_grad_checkpointing(spec: ModelSpec) -> None:
    """In train mode without dropout, ``set_grad_checkpointing(True)`` saves fewer activations
    and gives the same outputs and gradients."""
    where = f"model {spec.name!r}"
    plain = _training_without_dropout(_build(spec))
    ckpt = _training_without_dropout(_build(spec))
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing(True)
    batches = _batches(plain, spec)
    outs, saved = _run_for_grads(plain, batches)
    outs_ckpt, saved_ckpt = _run_for_grads(ckpt, batches)
    for m in outs:
        _close(outs_ckpt[m], outs[m], GRAD_ATOL, where, f"{m} outputs with checkpointing")
    grads = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        q = grads[name]
        if (p.grad is None) != (q.grad is None):
            only = "without" if q.grad is None else "with"
            raise _fail(where, f"{name} gets a gradient only {only} checkpointing")
        if p.grad is not None and q.grad is not None:
            _close(q.grad, p.grad, GRAD_ATOL, where, f"gradients of {name} with checkpointing")
    if saved_ckpt >= saved:
        raise _fail(where, f"set_grad_checkpointing(True) changed nothing: the forward pass saved "
                           f"{saved} tensors without and {saved_ckpt} with it")


def check_model_all_params_get_grad(spec: ModelSpec) -> None:
    """A loss over every modality's embedding (and, for a fusion other than ``dual``, over
    ``forward_fused`` of all modalities together) gives every parameter a finite gradient."""
    where = f"model {spec.name!r}"
    model = _training_without_dropout(_build(spec))
    batches = _batches(model, spec)
    loss = torch.zeros(())
    for i, (m, batch) in enumerate(batches.items()):
        emb = model.embed(batch, m)
        loss = loss + (emb * _seeded(*emb.shape, seed=i)).sum()
    forward_fused = getattr(model, "forward_fused", None)
    if spec.fusion != "dual" and callable(forward_fused):
        k = min(len(b) for b in batches.values())  # one batch size for every modality
        fused = forward_fused({m: b.select(slice(0, k)) for m, b in batches.items()})
        for i, f in enumerate(fused.values()):
            loss = loss + (f.hidden * _seeded(*f.hidden.shape, seed=10 + i)).sum()
    loss.backward()
    _check_grads(model, where)


def check_model_save_load(spec: ModelSpec) -> None:
    """``save_pretrained`` then ``mmenc.load`` gives the same weights, tokens and embeddings."""
    from mmenc.model import load

    where = f"model {spec.name!r}"
    model = _build(spec).eval()
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        for name in (WEIGHTS, CONFIG):
            if not (Path(directory) / name).is_file():
                raise _fail(where, f"save_pretrained wrote no {name}")
        loaded = load(directory).eval()
        if loaded.recipe != spec.name:
            raise _fail(where, f"loaded as recipe {loaded.recipe!r}")
        own, other = model.state_dict(), loaded.state_dict()
        if set(own) != set(other):
            raise _fail(where, f"state dict keys differ after loading: "
                               f"{sorted(set(own) ^ set(other))[:8]}")
        changed = [k for k in own if not torch.equal(own[k], other[k])]
        if changed:
            raise _fail(where, f"weights differ after loading: {changed[:8]}")
        with torch.no_grad():
            for m in spec.modalities:
                items = _examples(m)
                batch, again = model.tokenize(items, m), loaded.tokenize(items, m)
                _same_batch(batch, again, f"{where} {m} tokens after loading")
                if not torch.equal(model.embed(batch, m), loaded.embed(again, m)):
                    raise _fail(where, f"{m} embeddings differ after loading")


def check_model_config_roundtrip(spec: ModelSpec) -> None:
    """The model's config is JSON, and its JSON rebuilds the same state-dict keys and shapes."""
    where = f"model {spec.name!r}"
    model = _build(spec)
    try:
        config = json.loads(json.dumps(model.config))
    except (TypeError, ValueError) as exc:
        raise _fail(where, f"config is not JSON-serialisable ({exc})") from None
    rebuilt = resolve(spec.builder)(config, directory=None)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    again = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if shapes != again:
        diff = sorted(k for k in set(shapes) | set(again) if shapes.get(k) != again.get(k))
        raise _fail(where, f"the JSON config rebuilds different parameters: {diff[:8]}")


MODEL_CHECKS: tuple[Callable[[ModelSpec], None], ...] = (
    check_model_builds_offline,
    check_model_finite,
    check_model_padding,
    check_model_grad_checkpointing,
    check_model_all_params_get_grad,
    check_model_save_load,
    check_model_config_roundtrip,
)
"""Every model check, for ``pytest.mark.parametrize(..., ids=check_name)``."""

model_checks = MODEL_CHECKS

