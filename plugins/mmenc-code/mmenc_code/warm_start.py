"""Start UniXcoder from a pretrained BERT-style text encoder (the converted all-MiniLM-L6-v2).

UniXcoder and mmenc's text tower are the same module (``build_text_transformer``: word,
position and token-type embeddings, post-norm layers), so the one encoder UniXcoder shares
between its ``code``, ``text`` and ``ast`` views takes a text tower's weights by name. What
differs is convention, and the encoder takes the source's:

============================ ====================================== ========================
                             UniXcoder (RoBERTa)                    MiniLM (BERT)
============================ ====================================== ========================
positions                    from ``pad_id + 1`` = 2, padding-aware from 0
token types                  10 rows, type 0 used                   2 rows, type 0 used
LayerNorm eps                1e-5                                   1e-12
pad id                       1 (``<pad>``)                          0 (``[PAD]``)
language-model head          the word embeddings (tied, no bias)    (none kept)
============================ ====================================== ========================

The sizes (width, depth, heads, feed-forward width, vocabulary) must already be the source's:
a difference is a :class:`~mmenc.errors.ConfigError` naming the parameter to change. The
dropout rates and the pooler stay the recipe's.

The vocabulary is the source's WordPiece (HF ``tokenizers``), its special tokens renamed for
UniXcoder (:func:`wordpiece_specials`): ``[CLS]`` is ``<s>``, ``[SEP]`` ``</s>``, ``[PAD]``
``<pad>``, ``[UNK]`` ``<unk>``, ``[MASK]`` ``<mask>``, and the mode tokens, span sentinels
and AST markers take the ``[unusedN]`` slots in order. A saved model keeps the renamed
vocabulary in its folder and reloads it as is.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from torch import Tensor, nn

from mmenc.checkpoint import copy_weights
from mmenc.errors import ConfigError

RENAMED = {"[CLS]": "<s>", "[SEP]": "</s>", "[PAD]": "<pad>", "[UNK]": "<unk>",
           "[MASK]": "<mask>"}
"""BERT's special tokens and UniXcoder's names for them."""
UNUSED = re.compile(r"\[unused(\d+)\]")
SIZES = (("trunk", "dim"), ("trunk", "depth"), ("trunk", "heads"), ("trunk", "ffn_dim"),
         ("vocab_size",))
"""The encoder settings that must match the source's (``model.overrides.encoder....``)."""
KEPT = ("dropout", "pooler")
"""Encoder settings that stay the recipe's."""


def _model_type(tok: Any) -> str:
    import json

    return str(json.loads(tok.to_str())["model"]["type"])


def wordpiece_specials(tok: Any, ast_lang: str | None = "python") -> Any:
    """A copy of a WordPiece ``tokenizers.Tokenizer`` (BERT's layout: ``[CLS]`` ...
    ``[unusedN]``) whose special tokens carry UniXcoder's names, the mode tokens, sentinels
    and (with ``ast_lang``) the grammar's AST markers on ``[unusedN]`` slots, all of them
    special (never split, never lower-cased). A vocabulary already renamed is returned as a
    copy; one with too few ``[unusedN]`` slots, or one that is not WordPiece, is a
    ConfigError."""
    from tokenizers import Tokenizer, models  # type: ignore[import-untyped]

    from mmenc_code.tokenizer import _added, vocabulary_tokens

    tok = Tokenizer.from_str(tok.to_str())
    vocab = tok.get_vocab(with_added_tokens=True)
    wanted = vocabulary_tokens(ast_lang)
    if all(t in vocab for t in wanted):
        return tok
    if _model_type(tok) != "WordPiece":
        raise ConfigError(f"wordpiece tokenizer: the vocabulary is {_model_type(tok)}, not "
                          "WordPiece")
    missing = [t for t in RENAMED if t not in vocab]
    if missing:
        raise ConfigError(f"wordpiece tokenizer: the vocabulary lacks {', '.join(missing)}")
    new = [t for t in wanted if t not in RENAMED.values()]
    slots = sorted((int(m.group(1)), tok_) for tok_ in vocab
                   if (m := UNUSED.fullmatch(tok_)) is not None)
    if len(slots) < len(new):
        raise ConfigError(f"wordpiece tokenizer: {len(new)} UniXcoder tokens (modes, "
                          f"sentinels, AST markers of {ast_lang!r}) need as many [unusedN] "
                          f"slots; the vocabulary has {len(slots)}")
    base = tok.get_vocab(with_added_tokens=False)
    for old, name in [*RENAMED.items(), *zip([s for _, s in slots], new, strict=False)]:
        base[name] = base.pop(old)
    import json

    options = json.loads(tok.to_str())["model"]
    renamed = Tokenizer(models.WordPiece(
        vocab=base, unk_token="<unk>",
        continuing_subword_prefix=options.get("continuing_subword_prefix", "##"),
        max_input_chars_per_word=int(options.get("max_input_chars_per_word", 100))))
    renamed.normalizer = tok.normalizer
    renamed.pre_tokenizer = tok.pre_tokenizer
    renamed.decoder = tok.decoder
    renamed.add_special_tokens([_added(t) for t in wanted])
    return renamed


def text_tower_of(source: Any) -> tuple[nn.Module, dict[str, Any], Any]:
    """``(tower, tower config, tokenizer)`` of the BERT-style text tower of a saved mmenc
    model: its ``text`` tower, or the only tower of a one-modality model."""
    name = getattr(source, "recipe", type(source).__name__)
    towers = getattr(source, "towers", None)
    modalities = tuple(getattr(source, "modalities", ()))
    inner = "text" if "text" in modalities else (modalities[0] if len(modalities) == 1
                                                 else None)
    config = (getattr(source, "config", {}) or {}).get("towers", {}).get(inner)
    if towers is None or inner not in towers or not isinstance(config, dict) \
            or config.get("kind") != "text":
        raise ConfigError(f"model.warm_start.text: {name!r} has no BERT-style text tower "
                          f"(its modalities: {', '.join(modalities) or 'none'})")
    tokenizer = source.tokenizers[inner]
    if getattr(tokenizer, "tokenizer", None) is None:
        raise ConfigError(f"model.warm_start.text: {name!r} has no text tokenizer to take "
                          "(a checkpoint converted without its tokenizer files)")
    return towers[inner], config, tokenizer


def _get(config: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        config = config[key]
    return config


def encoder_config(model: Any, source_config: dict[str, Any], name: str) -> dict[str, Any]:
    """The encoder configuration ``model`` takes: the source's, with the recipe's dropout
    and pooler; a size that differs is a ConfigError naming it."""
    mine = model.config["encoder"]
    for path in SIZES:
        here, there = _get(mine, path), _get(source_config, path)
        if int(here) != int(there):
            key = ".".join(path)
            raise ConfigError(f"model.warm_start.text: encoder.{key} is {here} here but "
                              f"{there} in {name!r}; set model.overrides.encoder.{key}: "
                              f"{there}")
    config = copy.deepcopy({k: v for k, v in source_config.items() if k != "kind"})
    for key in KEPT:
        config[key] = mine[key]
    for key in ("dropout", "attn_dropout"):
        config["trunk"][key] = mine["trunk"][key]
    return config


def _copy(target: nn.Module, state: dict[str, Tensor], name: str) -> None:
    copy_weights(
        target, state,
        missing=lambda key: (f"model.warm_start.text: {name!r} has no {key} (the towers are "
                             "built differently)"),
        mismatch=lambda key, here, there: (f"model.warm_start.text: encoder.{key} is {here} "
                                           f"here but {there} in {name!r}"))


def warm_start(model: Any, modality: str, source: Any) -> None:
    """Start ``model``'s encoder (shared by every view) and its tokenizers from ``source``'s
    BERT-style text tower (see the module docstring). ``modality`` must be ``text``: the
    ``model.warm_start: {text: PATH}`` entry of ``mmenc pretrain``."""
    from mmenc.keymaps.hf_text import build_text_transformer
    from mmenc_code.tokenizer import UniXcoderTokenizer

    if modality != "text":
        raise ConfigError(f"model.warm_start.{modality}: UniXcoder starts its one encoder "
                          "from a text encoder; name it under model.warm_start.text")
    name = getattr(source, "recipe", type(source).__name__)
    tower, source_config, source_tok = text_tower_of(source)
    config = encoder_config(model, source_config, name)
    longest = max(t.max_length for t in model.tokenizers.values())
    positions = int(config["max_positions"]) - (int(config["pad_id"]) + 1
                                               if config.get("padding_aware_positions") else 0)
    if longest > positions:
        raise ConfigError(f"model.warm_start.text: a tokenizer's max_length is {longest}, "
                          f"more than the {positions} positions of {name!r}; set "
                          "model.overrides.tokenizers.<view>.max_length")
    encoder = build_text_transformer(config)
    _copy(encoder, tower.state_dict(), name)
    tokenizers = {}
    for view, old in model.tokenizers.items():
        tok = UniXcoderTokenizer(wordpiece_specials(source_tok.tokenizer, old.lang), view=old.view,
                                 mode=old.mode, max_length=old.max_length, lang=old.lang,
                                 name=old.name, chars_per_token=old.chars_per_token,
                                 max_depth=old.max_depth)
        if tok.vocab_size > int(config["vocab_size"]):
            raise ConfigError(f"model.warm_start.text: the {view} tokenizer of {name!r} has "
                              f"{tok.vocab_size} tokens, the embeddings {config['vocab_size']}")
        tokenizers[view] = tok
    model.encoder = encoder
    model.config["encoder"] = config
    for view, tok in tokenizers.items():
        model.tokenizers[view] = tok
        model.config["tokenizers"][view] = tok.config()
