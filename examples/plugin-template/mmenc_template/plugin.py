"""The plugin's hooks: what mmenc-template adds to mmenc's catalogue.

mmenc imports this module (the ``mmenc`` entry point in ``pyproject.toml``) every time it builds
its catalogue, ``mmenc models`` included, so it holds only specs: their targets are
``"module:attribute"`` strings that mmenc imports on first use. numpy, torch and ``mmenc.nn``
stay out of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmenc.hookspecs import hookimpl
from mmenc.specs import CommandSpec, ModalitySpec, ModelSpec, TokenizerSpec

MODALITY = "timeseries"
TOKENIZER = "timeseries-patches"
_P = "mmenc_template"

TINY_TOKENIZER: dict[str, Any] = {
    "tokenizer": TOKENIZER,
    "patch_size": 8,
    "max_patches": 32,
    "normalize": True,
    "pad_value": 0.0,
}
TINY: dict[str, Any] = {
    # keyword arguments of mmenc.nn.TrunkConfig; written out so this module needs no torch
    "trunk": {"dim": 32, "depth": 2, "heads": 2, "ffn_dim": 64, "norm": "pre"},
    "embed_dim": 32,
    "tokenizers": {MODALITY: TINY_TOKENIZER},
}


@hookimpl
def mmenc_register_modalities(register: Callable[[ModalitySpec], None]) -> None:
    register(ModalitySpec(MODALITY, f"{_P}.modality:load_timeseries",
                          f"{_P}.modality:example_timeseries",
                          "1-D series of floats (list, tuple, numpy array or .npy file)"))


@hookimpl
def mmenc_register_tokenizers(register: Callable[[TokenizerSpec], None]) -> None:
    register(TokenizerSpec(TOKENIZER, MODALITY, f"{_P}.tokenizer:build_tokenizer",
                           "fixed-length patches of samples, padded"))


@hookimpl
def mmenc_register_models(register: Callable[[Any], None]) -> None:
    register(ModelSpec("timeseries-tiny", (MODALITY,), f"{_P}.model:build", TINY,
                       description="tiny patch transformer for time series", tiny=True))


@hookimpl
def mmenc_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(CommandSpec("template-info", f"{_P}.cli:template_info",
                         "what the mmenc-template plugin registered"))
