"""Contract checks that every registered modality, tokenizer, fusion, tower kind, objective and
model passes.

Each check raises ``AssertionError`` naming the spec and what broke. A check with nothing to
test for a spec (padding a model whose batches are all continuous and unmasked) raises
``unittest.SkipTest``, which pytest reports as a skip. A plugin runs them from its own tests::

    import pytest
    import mmenc
    from mmenc.testing import MODEL_CHECKS, check_name

    @pytest.mark.parametrize("check", MODEL_CHECKS, ids=check_name)
    def test_model(check):
        check(mmenc.catalogue().get("model", "my-model-tiny"))

The contracts:

- modality: ``loader(item)`` accepts every ``example()`` item and refuses a clearly bad item
  (``object()``) with :class:`~mmenc.errors.InputError`.
- tokenizer: ``factory(config, directory)`` builds from ``{}`` (or, when it cannot, from the
  tokenizer configuration of the first tiny recipe that uses it); it turns the loaded examples
  into a :class:`~mmenc.batch.TokenBatch` with one row per item; ``config()`` is JSON, names the
  tokenizer (``"tokenizer"``, defaulting to the modality) and, with the files ``save`` writes,
  rebuilds a tokenizer that gives identical batches.
- fusion: ``factory(widths={modality: width}, **config)`` is a module mapping
  ``{modality: Features}`` to ``{modality: Features}`` with finite ``[b n d]`` states, where pad
  tokens change nothing at real tokens.
- tower kind: ``factory(config, tokenizer)`` (config and tokenizer of the first tiny recipe
  with a tower of that kind) is a :class:`~mmenc.batch.Tower` whose ``forward_features`` gives
  finite ``[b n width]`` states on the modality's examples, a fitting mask, ``pooled [b width]``
  when there is one, and every layer's states when asked.
- objective: ``factory(**config)`` is a module whose ``example_inputs()`` returns a dict of
  keyword arguments and whose ``forward(**inputs)`` returns ``(loss, logs)``: ``loss`` a finite
  scalar tensor whose gradient reaches every trainable parameter and at least one floating
  input, ``logs`` a dict from names to numbers or tensors, all finite. A class with a ``step``
  (one ``mmenc pretrain`` trains) also follows :class:`mmenc.objectives.protocol.Objective`:
  ``name`` is its registered name, ``arity`` a positive integer, ``params`` option names its
  constructor takes.
- model (tiny recipes, built with :func:`mmenc.create_model`): one function per property,
  listed in :data:`MODEL_CHECKS`.
"""

from __future__ import annotations

import sys
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

from mmenc.registry import Catalogue, build_catalogue
from mmenc.specs import ModelSpec
from mmenc.testing._common import ATOL, GRAD_ATOL, PAD
from mmenc.testing.components import (
    check_fusion,
    check_modality,
    check_objective,
    check_token_batch,
    check_tokenizer,
    check_tower,
)
from mmenc.testing.models import (
    MODEL_CHECKS,
    check_model_all_params_get_grad,
    check_model_builds_offline,
    check_model_config_roundtrip,
    check_model_finite,
    check_model_grad_checkpointing,
    check_model_padding,
    check_model_save_load,
    model_checks,
)

__all__ = [
    "ATOL", "GRAD_ATOL", "PAD", "MODEL_CHECKS", "model_checks", "check_modality",
    "check_tokenizer", "check_token_batch", "check_fusion", "check_tower", "check_objective",
    "check_model", "check_name", "check_model_builds_offline", "check_model_finite",
    "check_model_padding", "check_model_grad_checkpointing", "check_model_all_params_get_grad",
    "check_model_save_load", "check_model_config_roundtrip", "with_plugins",
]


def check_name(check: Callable[..., None]) -> str:
    """A check's short name for test ids: ``check_model_save_load`` -> ``save_load``."""
    return check.__name__.removeprefix("check_model_").removeprefix("check_")


def check_model(spec: ModelSpec) -> None:
    """Every check of :data:`MODEL_CHECKS` (a skipped one is passed over)."""
    for check in MODEL_CHECKS:
        try:
            check(spec)
        except unittest.SkipTest:
            continue


# -- plugins that are not installed -------------------------------------------------------------
@contextmanager
def with_plugins(*modules: ModuleType) -> Iterator[Catalogue]:
    """Make the process catalogue include plugin modules that are not installed as entry points
    (a plugin's own tests before ``pip install``); the previous catalogue comes back after.

    Yields:
        the catalogue in use inside the block.
    """
    from mmenc.plugins import PluginSource
    from mmenc.registry import _CACHE

    sources = []
    for module in modules:
        top = module.__name__.split(".")[0]
        version = str(getattr(sys.modules.get(top), "__version__", "unknown"))
        sources.append(PluginSource(module.__name__, top, version, module=module))
    previous = _CACHE.get("default")
    _CACHE["default"] = build_catalogue(sources=sources)
    try:
        yield _CACHE["default"]
    finally:
        if previous is None:
            _CACHE.pop("default", None)
        else:
            _CACHE["default"] = previous

