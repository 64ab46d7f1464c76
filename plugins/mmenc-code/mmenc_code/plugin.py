"""The code plugin's registrations (targets are imported on first use)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmenc.hookspecs import hookimpl
from mmenc.specs import (
    ConverterSpec,
    ModalitySpec,
    ModelSpec,
    ObjectiveSpec,
    ParitySpec,
    TokenizerSpec,
)

_P = "mmenc_code"


@hookimpl
def mmenc_register_modalities(register: Callable[[ModalitySpec], None]) -> None:
    register(ModalitySpec("code", f"{_P}.modality:load_code", f"{_P}.modality:example_code",
                          "source code (str, UTF-8 bytes or a file path)"))
    register(ModalitySpec("ast", f"{_P}.modality:load_code", f"{_P}.modality:example_code",
                          "source code seen through its flattened syntax tree (tree-sitter)"))


@hookimpl
def mmenc_register_tokenizers(register: Callable[[TokenizerSpec], None]) -> None:
    for name, modality, factory, what in (
        ("unixcoder", "code", "code_tokenizer", "code"),
        ("unixcoder-text", "text", "text_tokenizer", "comments and queries"),
        ("unixcoder-ast", "ast", "ast_tokenizer", "flattened syntax trees"),
    ):
        register(TokenizerSpec(name, modality, f"{_P}.tokenizer:{factory}",
                               f"UniXcoder byte-level BPE with mode prefixes: {what}"))


@hookimpl
def mmenc_register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    register(ObjectiveSpec("unidirectional-lm", f"{_P}.objectives:UnidirectionalLM",
                           "next-token prediction in the decoder-only (causal) mode"))
    register(ObjectiveSpec("span-denoising", f"{_P}.objectives:SpanDenoising",
                           "T5-style span corruption in the encoder-decoder (prefix) mode"))


@hookimpl
def mmenc_register_models(register: Callable[[Any], None]) -> None:
    register(ModelSpec("unixcoder-base", ("code", "text", "ast"), f"{_P}.model:build_unixcoder",
                       f"{_P}.recipes:UNIXCODER_BASE", "dual",
                       "UniXcoder: one RoBERTa encoder for code, comments and ASTs (base size)"))
    register(ModelSpec("unixcoder-tiny", ("code", "text", "ast"), f"{_P}.model:build_unixcoder",
                       f"{_P}.recipes:UNIXCODER_TINY", "dual",
                       "tiny UniXcoder with a byte-level vocabulary", tiny=True))
    register(ModelSpec("code-text-tiny", ("code", "text"),
                       "mmenc.builtin.towers:build_tower_encoder",
                       f"{_P}.recipes:CODE_TEXT_TINY", "dual",
                       "tiny code-text dual encoder (towers can start from a converted text "
                       "encoder)", tiny=True))
    register(ConverterSpec("unixcoder", f"{_P}.convert:convert_unixcoder",
                           "official UniXcoder HF folder (config.json + pytorch_model.bin or "
                           "model.safetensors, vocab.json + merges.txt)"))
    register(ParitySpec("unixcoder", "unixcoder", f"{_P}.convert:run_unixcoder"))
