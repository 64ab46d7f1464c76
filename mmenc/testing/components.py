"""Contract checks of modalities, tokenizers, fusions, tower kinds and objectives."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch, Tokenizer
from mmenc.errors import InputError
from mmenc.specs import (
    FusionSpec,
    ModalitySpec,
    ObjectiveSpec,
    TokenizerSpec,
    TowerSpec,
    resolve,
)
from mmenc.testing._common import (
    ATOL,
    PAD,
    _check_grads,
    _close,
    _fail,
    _finite,
    _loaded_examples,
    _seeded,
    _tiny_recipes,
)


def check_modality(spec: ModalitySpec) -> None:
    """The loader accepts every example item and refuses ``object()`` with ``InputError``."""
    where = f"modality {spec.name!r}"
    load = resolve(spec.loader)
    items = list(resolve(spec.example)())
    if not items:
        raise _fail(where, "example() returned no items")
    for i, item in enumerate(items):
        try:
            load(item)
        except Exception as exc:
            raise _fail(where, f"the loader refused example {i} "
                               f"({type(exc).__name__}: {exc})") from exc
    try:
        load(object())
    except InputError as exc:
        if not str(exc):
            raise _fail(where, "InputError for object() has an empty message") from None
    except Exception as exc:
        raise _fail(where, f"object() raised {type(exc).__name__} instead of "
                           f"mmenc.errors.InputError ({exc})") from exc
    else:
        raise _fail(where, "the loader accepted object()")


def check_token_batch(batch: object, size: int, where: str) -> None:
    """A well-formed ``TokenBatch`` of ``size`` items: typed ids or finite values, a bool mask
    ``[b n]`` with at least one real token per item, batch-first extras."""
    if not isinstance(batch, TokenBatch):
        raise _fail(where, f"expected a TokenBatch, got {type(batch).__name__}")
    ref = batch.ids if batch.ids is not None else batch.values
    if ref is None:
        raise _fail(where, "the batch has neither ids nor values")
    if ref.dim() < 2 or ref.shape[0] != size:
        raise _fail(where, f"expected {size} rows, got shape {tuple(ref.shape)}")
    if batch.ids is not None and (batch.ids.is_floating_point() or batch.ids.dtype == torch.bool):
        raise _fail(where, f"ids must be integers, got {batch.ids.dtype}")
    if batch.values is not None:
        if not batch.values.is_floating_point():
            raise _fail(where, f"values must be floating point, got {batch.values.dtype}")
        _finite(batch.values, where, "values")
    if batch.mask is not None:
        if batch.mask.dtype != torch.bool or batch.mask.shape != ref.shape[:2]:
            raise _fail(where, f"mask must be bool {tuple(ref.shape[:2])}, got "
                               f"{batch.mask.dtype} {tuple(batch.mask.shape)}")
        if not bool(batch.mask.any(dim=1).all()):
            raise _fail(where, "an item has no real token")
    for key, value in batch.extras.items():
        if not isinstance(value, Tensor) or value.shape[:1] != (size,):
            raise _fail(where, f"extra {key!r} is not a batch-first tensor")


def _same_batch(a: TokenBatch, b: TokenBatch, where: str) -> None:
    for name in ("ids", "values", "mask"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and not torch.equal(x, y)):
            raise _fail(where, f"the batches' {name} differ")
    if a.pad_id != b.pad_id or set(a.extras) != set(b.extras):
        raise _fail(where, "the batches' pad_id or extras differ")
    for key in a.extras:
        if not torch.equal(a.extras[key], b.extras[key]):
            raise _fail(where, f"the batches' extra {key!r} differs")


def _recipe_tokenizer_config(name: str) -> dict[str, Any] | None:
    for recipe in _tiny_recipes():
        tokenizers = recipe.default_config().get("tokenizers")
        if not isinstance(tokenizers, Mapping):
            continue
        for modality, cfg in tokenizers.items():
            if isinstance(cfg, Mapping) and cfg.get("tokenizer", modality) == name:
                return dict(cfg)
    return None


def check_tokenizer(spec: TokenizerSpec) -> None:
    """Builds, tokenizes the modality's examples, and round-trips through ``config()``."""
    where = f"tokenizer {spec.name!r}"
    factory = resolve(spec.factory)
    try:
        tokenizer = factory({}, None)
    except Exception as exc:
        config = _recipe_tokenizer_config(spec.name)
        if config is None:
            raise _fail(where, f"cannot be built from {{}} ({type(exc).__name__}: {exc}) and "
                               "no tiny recipe configures it") from exc
        tokenizer = factory(config, None)
    if not isinstance(tokenizer, Tokenizer):
        raise _fail(where, f"{type(tokenizer).__name__} lacks modality, __call__, config or save")
    if tokenizer.modality != spec.modality:
        raise _fail(where, f"modality is {tokenizer.modality!r}, the spec says {spec.modality!r}")
    items = _loaded_examples(spec.modality)
    batch = tokenizer(items)
    check_token_batch(batch, len(items), where)
    config = tokenizer.config()
    try:
        text = json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise _fail(where, f"config() is not JSON-serialisable ({exc})") from None
    if config.get("tokenizer", spec.modality) != spec.name:
        raise _fail(where, f"config()['tokenizer'] is {config.get('tokenizer')!r}: a saved model "
                           "could not find this tokenizer again")
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save(directory)
        again = factory(json.loads(text), Path(directory))
        _same_batch(batch, again(items), f"{where} rebuilt from config()")


# -- fusions and objectives ---------------------------------------------------------------------
def _recipe_fusion_config(name: str) -> dict[str, Any]:
    for recipe in _tiny_recipes():
        fusion = recipe.default_config().get("fusion")
        if recipe.fusion == name and isinstance(fusion, Mapping) and fusion.get("name") == name:
            return {k: v for k, v in fusion.items() if k != "name"}
    return {}


def check_fusion(spec: FusionSpec, config: Mapping[str, Any] | None = None,
                 widths: Mapping[str, int] | None = None) -> None:
    """Runs two modalities of random features; outputs are finite and ignore pad tokens.

    Args:
        spec: the fusion.
        config: keyword arguments of the factory besides ``widths``; by default those of the
            first tiny recipe that uses the fusion (``config["fusion"]`` without its name).
        widths: modality -> width of its features (two modalities of different widths).
    """
    where = f"fusion {spec.name!r}"
    config = _recipe_fusion_config(spec.name) if config is None else dict(config)
    widths = dict(widths or {"first": 24, "second": 16})
    torch.manual_seed(0)
    fusion = resolve(spec.factory)(widths=widths, **config)
    if not isinstance(fusion, nn.Module):
        raise _fail(where, f"the factory returned {type(fusion).__name__}, not an nn.Module")
    fusion.eval()
    b, lengths = 3, {m: 4 + 3 * i for i, m in enumerate(widths)}
    states, padded = {}, {}
    for i, (m, width) in enumerate(widths.items()):
        hidden = _seeded(b, lengths[m], width, seed=i)
        if i % 2:  # every other modality without a mask: the fusion must accept both
            states[m] = padded[m] = Features(hidden)
            continue
        mask = torch.arange(lengths[m])[None] < torch.tensor([lengths[m], 2, 1])[:, None]  # [b n]
        states[m] = Features(hidden, mask)
        garbage = 3 * _seeded(b, PAD, width, seed=10 + i)
        padded[m] = Features(torch.cat([hidden, garbage], dim=1),
                             torch.cat([mask, mask.new_zeros(b, PAD)], dim=1))
    with torch.no_grad():
        out, out_padded = fusion(states), fusion(padded)
    if not isinstance(out, dict) or set(out) != set(widths):
        raise _fail(where, f"expected a dict of Features for {sorted(widths)}")
    for m, f in out.items():
        n = lengths[m]
        if not isinstance(f, Features) or f.hidden.dim() != 3 or f.hidden.shape[:2] != (b, n):
            raise _fail(where, f"{m}: expected Features with hidden [{b} {n} d]")
        _finite(f.hidden, where, f"{m} hidden")
        real = states[m].mask if states[m].mask is not None else torch.ones(b, n, dtype=torch.bool)
        got = out_padded[m].hidden[:, :n]
        _close(got[real], f.hidden[real], ATOL, where, f"{m} real-token states with pads")


def check_objective(spec: ObjectiveSpec, config: Mapping[str, Any] | None = None) -> None:
    """``forward(**example_inputs())`` gives a finite scalar loss that reaches every parameter;
    a class with a ``step`` follows :class:`mmenc.objectives.protocol.Objective`."""
    where = f"objective {spec.name!r}"
    torch.manual_seed(0)
    objective = resolve(spec.factory)(**dict(config or {}))
    if not isinstance(objective, nn.Module):
        raise _fail(where, f"the factory returned {type(objective).__name__}, not an nn.Module")
    example_inputs = getattr(objective, "example_inputs", None)
    if not callable(example_inputs):
        raise _fail(where, "has no example_inputs()")
    inputs = example_inputs()
    if not isinstance(inputs, dict):
        raise _fail(where, f"example_inputs() returned {type(inputs).__name__}, not a dict")
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()
              if isinstance(v, Tensor) and v.is_floating_point()}
    result = objective(**{**inputs, **leaves})
    if not isinstance(result, tuple) or len(result) != 2:
        raise _fail(where, "forward must return (loss, logs)")
    loss, logs = result
    if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.is_floating_point():
        raise _fail(where, "the loss must be a floating-point scalar tensor")
    _finite(loss, where, "the loss")
    if not isinstance(logs, dict):
        raise _fail(where, f"logs must be a dict, got {type(logs).__name__}")
    for key, value in logs.items():
        if not isinstance(key, str) or not isinstance(value, int | float | Tensor):
            raise _fail(where, f"log {key!r} is a {type(value).__name__}, not a number or tensor")
        value = value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))
        _finite(value, where, f"log {key!r}")
    if not loss.requires_grad:
        raise _fail(where, "the loss has no gradient")
    loss.backward()
    _check_grads(objective, where)
    if leaves and all(v.grad is None for v in leaves.values()):
        raise _fail(where, f"the loss does not depend on its inputs {sorted(leaves)}")
    target = resolve(spec.factory)
    if isinstance(target, type) and hasattr(target, "step"):  # one `mmenc pretrain` trains
        from mmenc.objectives.protocol import protocol_problem

        problem = protocol_problem(target, spec.name)
        if problem is not None:
            raise _fail(where, f"does not follow the objective protocol: {problem}")



# -- tower kinds ----------------------------------------------------------------------------------
def _recipe_tower(name: str) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """``(modality, tower section, tokenizer config)`` of the first tiny recipe with a tower of
    kind ``name``, or None."""
    for recipe in _tiny_recipes():
        config = recipe.default_config()
        towers, tokenizers = config.get("towers"), config.get("tokenizers")
        if not isinstance(towers, Mapping) or not isinstance(tokenizers, Mapping):
            continue
        for m, section in towers.items():
            if isinstance(section, Mapping) and section.get("kind") == name and m in tokenizers:
                return m, dict(section), dict(tokenizers[m])
    return None


def check_tower(spec: TowerSpec, modality: str | None = None,
                config: Mapping[str, Any] | None = None,
                tokenizer: Mapping[str, Any] | None = None) -> None:
    """``factory(config, tokenizer)`` builds a :class:`~mmenc.batch.Tower`: on the modality's
    examples, ``forward_features(batch, *, output_hidden_states=...)`` gives finite
    :class:`Features` with ``hidden [b n width]``, a mask that fits, ``pooled [b width]`` when
    there is one, and, when asked, every layer's states without changing ``hidden``.

    Args:
        spec: the tower kind.
        modality, config, tokenizer: the modality, the tower section (without ``kind``) and the
            tokenizer configuration; by default those of the first tiny recipe with a tower of
            this kind (none: the check is skipped).
    """
    import unittest

    from mmenc.batch import Tower
    from mmenc.builtin.towers import build_tokenizers

    where = f"tower kind {spec.name!r}"
    if modality is None or config is None or tokenizer is None:
        found = _recipe_tower(spec.name)
        if found is None:
            raise unittest.SkipTest(f"{where}: no tiny recipe has a tower of this kind")
        modality, config, tokenizer = found
    tok = build_tokenizers({modality: dict(tokenizer)})[modality]
    body = {k: v for k, v in config.items() if k != "kind"}
    torch.manual_seed(0)
    tower = resolve(spec.factory)(body, tok)
    if not isinstance(tower, nn.Module) or not isinstance(tower, Tower):
        raise _fail(where, f"the factory returned {type(tower).__name__}, not an nn.Module with "
                           "width and forward_features (mmenc.batch.Tower)")
    width = tower.width
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise _fail(where, f"width is {width!r}, not a positive int")
    batch = tok(_loaded_examples(modality))
    b = len(batch)
    tower.eval()
    with torch.no_grad():
        f = tower.forward_features(batch)
        deep = tower.forward_features(batch, output_hidden_states=True)
    if not isinstance(f, Features) or f.hidden.dim() != 3 or f.hidden.shape[0] != b \
            or f.hidden.shape[2] != width:
        shape = tuple(f.hidden.shape) if isinstance(f, Features) else type(f).__name__
        raise _fail(where, f"forward_features gave {shape}, expected Features with hidden "
                           f"[{b} n {width}] (width {width})")
    _finite(f.hidden, where, "hidden")
    if f.mask is not None and f.mask.shape != f.hidden.shape[:2]:
        raise _fail(where, f"mask {tuple(f.mask.shape)} does not fit hidden "
                           f"{tuple(f.hidden.shape)}")
    if f.pooled is not None:
        if tuple(f.pooled.shape) != (b, width):
            raise _fail(where, f"pooled is {tuple(f.pooled.shape)}, expected [{b} {width}]")
        _finite(f.pooled, where, "pooled")
    if not isinstance(deep, Features) or not deep.hidden_states:
        raise _fail(where, "output_hidden_states=True gave no hidden_states")
    for i, layer in enumerate(deep.hidden_states):
        _finite(layer, where, f"hidden_states[{i}]")
    _close(deep.hidden, f.hidden, ATOL, where, "hidden with output_hidden_states=True")
