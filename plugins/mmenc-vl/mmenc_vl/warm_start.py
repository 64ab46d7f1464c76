"""Start ALBEF from pretrained towers, as the paper does.

ALBEF initialises its text encoder and its fusion encoder from one BERT: the lower layers are
the text encoder, the upper layers the fusion encoder, whose cross-attention blocks (BERT has
none) start fresh. :func:`warm_start_text` does the same with any saved mmenc model that has a
BERT-style text tower (the converted all-MiniLM-L6-v2: 6 layers, e.g. 3 text + 3 fusion),
and takes its tokenizer, so the vocabulary and the pad / CLS / mask ids come from it.
:func:`warm_start_image` takes the image tower (weights and preprocessing) of any saved mmenc
model that has one: a two-tower image-text model, a bound model, another ALBEF.

Both copy weights by the registered parameter names of mmenc's towers; a shape that differs is
a :class:`~mmenc.errors.ConfigError` naming the parameter and the config key to change.
"""

from __future__ import annotations

import copy
from typing import Any

from mmenc.checkpoint import copy_weights
from mmenc.errors import ConfigError
from torch import Tensor, nn

CROSS = ("cross_attn.", "cross_norm.")
"""Parameters of a fusion layer that a text-only layer lacks: they keep their fresh values."""
SPECIAL_TOKENS = {"pad_token_id": ("[PAD]", "<pad>"), "cls_token_id": ("[CLS]", "<s>"),
                  "mask_token_id": ("[MASK]", "<mask>")}


def source_tower(source: Any, modality: str) -> tuple[Any, dict[str, Any], Any]:
    """``(tower, tower config, tokenizer)`` of ``modality`` in a saved model: a model with
    ``towers[modality]`` and ``config["towers"][modality]`` (two-tower models, ALBEF), a
    bound model's tower wrapping such a model, or, for the ``text`` tower, a one-modality
    model (a text encoder, or a code encoder's tower)."""
    name = getattr(source, "recipe", type(source).__name__)
    towers = getattr(source, "towers", None)
    modalities = tuple(getattr(source, "modalities", ()))
    inner = modality
    if modality == "text" and modality not in modalities and len(modalities) == 1:
        inner = modalities[0]
    if towers is None or inner not in towers:
        raise ConfigError(f"model.warm_start.{modality}: {name!r} has no {modality!r} tower "
                          f"(its modalities: {', '.join(modalities) or 'none'})")
    tower = towers[inner]
    wrapped = getattr(tower, "encoder", None)  # a bound model's tower around an encoder
    if wrapped is not None and hasattr(tower, "inner"):
        return source_tower(wrapped, str(tower.inner))
    config = source.config.get("towers", {}).get(inner)
    if not isinstance(config, dict) or "kind" not in config:
        raise ConfigError(f"model.warm_start.{modality}: the {inner!r} tower of {name!r} is "
                          "not an mmenc text or vision transformer")
    return tower, config, source.tokenizers[inner]


def _copy(target: nn.Module, state: dict[str, Tensor], where: str, source: str,
          skip: tuple[str, ...] = (), rows: tuple[str, ...] = ()) -> list[str]:
    """Copy ``state`` into every parameter and buffer of ``target`` not starting with one of
    ``skip``; the parameters in ``rows`` (position tables) take the first rows of a longer
    source. Returns the names left as they were."""
    return copy_weights(
        target, state, skip=skip, rows=rows,
        missing=lambda key: (f"model.warm_start: {source} has no {where}.{key} "
                             "(the towers are built differently)"),
        mismatch=lambda key, here, there: (
            f"model.warm_start: {where}.{key} is {here} here but {there} in {source}; give the "
            "recipe the source's sizes (towers.text: trunk dim, heads, ffn_dim, vocab_size; "
            "fusion: heads, ffn_dim)"))


def warm_start_text(model: Any, source: Any) -> dict[str, list[int]]:
    """Start ``model``'s text layers and fusion layers from ``source``'s text tower: with
    ``t`` text and ``f`` fusion layers, the text tower takes the source's embeddings and
    layers ``0 .. t-1``, fusion layer ``j`` the self-attention, feed-forward and norms of
    source layer ``t + j``; the cross-attention blocks stay as initialised. ``t + f`` must
    be the source's depth. The text tokenizer becomes the source's (the recipe's
    ``max_length`` and caption cleaning kept) and the pad / CLS / mask ids follow it.

    Returns:
        ``{"text": source layers of the text tower, "fusion": those of the fusion layers}``.
    """
    name = getattr(source, "recipe", type(source).__name__)
    tower, config, tokenizer = source_tower(source, "text")
    if config.get("kind") != "text":
        raise ConfigError(f"model.warm_start.text: the text tower of {name!r} is not a text "
                          "transformer")
    n_text = len(model.towers["text"].trunk.layers)
    n_fusion = len(model.fusion.trunk.layers)
    depth = len(tower.trunk.layers)
    if n_text + n_fusion != depth:
        raise ConfigError(f"model.warm_start.text: {name!r} has {depth} layers but this ALBEF "
                          f"has {n_text} text + {n_fusion} fusion layers; make their sum "
                          f"{depth} (towers.text.trunk.depth and fusion.depth)")
    state = tower.state_dict()
    target = model.towers["text"]
    own = {k: v for k, v in state.items() if not k.startswith("trunk.layers.")}
    for i in range(n_text):
        prefix = f"trunk.layers.{i}."
        own.update({k: v for k, v in state.items() if k.startswith(prefix)})
    _copy(target, own, "towers.text", name, skip=("pooler.",),
          rows=("embeddings.position.weight",))
    for j, layer in enumerate(model.fusion.trunk.layers):
        prefix = f"trunk.layers.{n_text + j}."
        layer_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        _copy(layer, layer_state, f"fusion.trunk.layers.{j}", name, skip=CROSS)
    _take_tokenizer(model, tokenizer, name)
    if getattr(model, "pretraining", False):
        model.momentum_update(0.0)
    return {"text": list(range(n_text)), "fusion": list(range(n_text, depth))}


def _take_tokenizer(model: Any, tokenizer: Any, name: str) -> None:
    from mmenc.builtin.text import TextTokenizer
    from tokenizers import Tokenizer  # type: ignore[import-untyped]

    inner = getattr(tokenizer, "tokenizer", None)
    if not isinstance(tokenizer, TextTokenizer) or inner is None:
        raise ConfigError(f"model.warm_start.text: {name!r} has no text tokenizer to take "
                          "(a checkpoint converted without its tokenizer files)")
    vocab = int(model.config["towers"]["text"]["vocab_size"])
    if tokenizer.vocab_size > vocab:
        raise ConfigError(f"model.warm_start.text: the tokenizer of {name!r} has "
                          f"{tokenizer.vocab_size} tokens, the word embeddings {vocab}")
    ids: dict[str, int] = {}
    for key, tokens in SPECIAL_TOKENS.items():
        found = [inner.token_to_id(t) for t in tokens if inner.token_to_id(t) is not None]
        if not found:
            raise ConfigError(f"model.warm_start.text: the tokenizer of {name!r} has none of "
                              f"{', '.join(tokens)} (needed as {key})")
        ids[key] = int(found[0])
    old = model.tokenizers["text"]
    taken = TextTokenizer(Tokenizer.from_str(inner.to_str()),
                          getattr(old, "max_length", tokenizer.max_length),
                          pad_id=ids["pad_token_id"], file=tokenizer.file,
                          clean=getattr(old, "clean", None))
    model.tokenizers["text"] = taken
    model.config["tokenizers"]["text"] = taken.config()
    model.config.update(ids)
    model.config["towers"]["text"]["pad_id"] = ids["pad_token_id"]


def warm_start_image(model: Any, source: Any) -> None:
    """Replace ``model``'s image tower with a copy of ``source``'s (weights, configuration
    and image preprocessing). Its width must be the fusion's context width."""
    name = getattr(source, "recipe", type(source).__name__)
    tower, config, tokenizer = source_tower(source, "image")
    if config.get("kind") != "vision":
        raise ConfigError(f"model.warm_start.image: the image tower of {name!r} is not a "
                          "vision transformer")
    width, mine = int(config["trunk"]["dim"]), model.width("image")
    if width != mine:
        raise ConfigError(f"model.warm_start.image: the image tower of {name!r} is {width} "
                          f"wide, this ALBEF's {mine} (towers.image.trunk.dim); the fusion "
                          "cross-attends to that width")
    tower = copy.deepcopy(tower)
    tower.requires_grad_(True)
    model.towers["image"] = tower
    model.kinds["image"] = "vision"
    model.config["towers"]["image"] = copy.deepcopy(config)
    model.tokenizers["image"] = tokenizer
    model.config["tokenizers"]["image"] = tokenizer.config()
    if getattr(model, "pretraining", False):
        momentum = copy.deepcopy(tower)
        momentum.requires_grad_(False)
        model.momentum["towers"]["image"] = momentum


def warm_start(model: Any, modality: str, source: Any) -> None:
    """``model.warm_start(modality, source)`` of an ALBEF model (see the module docstring)."""
    if modality == "text":
        warm_start_text(model, source)
    elif modality == "image":
        warm_start_image(model, source)
    else:
        raise ConfigError(f"model.warm_start.{modality}: ALBEF starts 'text' or 'image' "
                          "towers from saved models")
