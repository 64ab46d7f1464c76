"""Start ALBEF and BridgeTower from pretrained towers, as the papers do.

ALBEF initialises its text encoder and its fusion encoder from one BERT: the lower layers are
the text encoder, the upper layers the fusion encoder, whose cross-attention blocks (BERT has
none) start fresh. :func:`warm_start_text` does the same with any saved mmenc model that has a
BERT-style text tower (the converted all-MiniLM-L6-v2: 6 layers, e.g. 3 text + 3 fusion),
and takes its tokenizer, so the vocabulary and the pad / CLS / mask ids come from it.
:func:`warm_start_image` takes the image tower (weights and preprocessing) of any saved mmenc
model that has one: a two-tower image-text model, a bound model, another ALBEF.

BridgeTower starts whole towers and fresh cross-modal layers (:func:`warm_start_bridgetower`);
with ``itc_start: sources`` its ITC also starts as the sources' own embeddings
(:func:`start_itc`), so that a BridgeTower started from MiniLM and a bound model's image tower
begins where that dual encoder is.

All copy weights by the registered parameter names of mmenc's towers; a shape that differs is
a :class:`~mmenc.errors.ConfigError` naming the parameter and the config key to change.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from mmenc.checkpoint import copy_weights
from mmenc.errors import ConfigError
from torch import Tensor, nn

CROSS = ("cross_attn.", "cross_norm.")
"""Parameters of a fusion layer that a text-only layer lacks: they keep their fresh values."""
SPECIAL_TOKENS = {"pad_token_id": ("[PAD]", "<pad>"), "cls_token_id": ("[CLS]", "<s>"),
                  "mask_token_id": ("[MASK]", "<mask>")}


def _inner(source: Any, modality: str) -> str:
    """The source's own name of ``modality``: the same, or for ``text`` the only modality of
    a one-modality model (a text encoder, or a code encoder's tower)."""
    modalities = tuple(getattr(source, "modalities", ()))
    if modality == "text" and modality not in modalities and len(modalities) == 1:
        return str(modalities[0])
    return modality


def source_tower(source: Any, modality: str) -> tuple[Any, dict[str, Any], Any]:
    """``(tower, tower config, tokenizer)`` of ``modality`` in a saved model: a model with
    ``towers[modality]`` and ``config["towers"][modality]`` (two-tower models, ALBEF), a
    bound model's tower wrapping such a model, or, for the ``text`` tower, a one-modality
    model (a text encoder, or a code encoder's tower)."""
    name = getattr(source, "recipe", type(source).__name__)
    towers = getattr(source, "towers", None)
    modalities = tuple(getattr(source, "modalities", ()))
    inner = _inner(source, modality)
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
    model.config.update(_take_tokenizer(model, tokenizer, name))
    if getattr(model, "pretraining", False):
        model.momentum_update(0.0)
    return {"text": list(range(n_text)), "fusion": list(range(n_text, depth))}


def _take_tokenizer(model: Any, tokenizer: Any, name: str) -> dict[str, int]:
    """Give ``model`` a copy of ``tokenizer`` (the model's ``max_length`` and caption cleaning
    kept). Returns its pad, CLS and mask ids (:data:`SPECIAL_TOKENS`)."""
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
    model.config["towers"]["text"]["pad_id"] = ids["pad_token_id"]
    return ids


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
    tower = _take_image_tower(model, tower, config, tokenizer)
    if getattr(model, "pretraining", False):
        momentum = copy.deepcopy(tower)
        momentum.requires_grad_(False)
        model.momentum["towers"]["image"] = momentum


def _take_image_tower(model: Any, tower: nn.Module, config: dict[str, Any],
                      tokenizer: Any) -> nn.Module:
    tower = copy.deepcopy(tower)
    tower.requires_grad_(True)
    model.towers["image"] = tower
    model.kinds["image"] = "vision"
    model.config["towers"]["image"] = copy.deepcopy(config)
    model.tokenizers["image"] = tokenizer
    model.config["tokenizers"]["image"] = tokenizer.config()
    return tower


def warm_start(model: Any, modality: str, source: Any) -> None:
    """``model.warm_start(modality, source)`` of an ALBEF model (see the module docstring)."""
    if modality == "text":
        warm_start_text(model, source)
    elif modality == "image":
        warm_start_image(model, source)
    else:
        raise ConfigError(f"model.warm_start.{modality}: ALBEF starts 'text' or 'image' "
                          "towers from saved models")


# -- BridgeTower -------------------------------------------------------------------------------
def embedding_map(source: Any, modality: str) -> tuple[str, Tensor, Tensor | None]:
    """How ``source`` turns the states of its ``modality`` tower into its embedding, as
    ``(pooling, weight, bias)``: the pooled states ``x`` give ``x @ weight.T + bias``, in the
    space its embeddings are compared in. For a bound model's tower that is the wrapped
    encoder's projection, then the tower's projection to the hub, then the rotation turned
    back, so that the result is in the hub's own space (where the hub's text embeddings are).
    """
    name = getattr(source, "recipe", type(source).__name__)
    inner = _inner(source, modality)
    tower = source.towers[inner]
    wrapped = getattr(tower, "encoder", None)
    if wrapped is not None and hasattr(tower, "inner"):
        pooling, weight, bias = embedding_map(wrapped, str(tower.inner))
        outer = tower.proj.weight.detach()
        rotation = getattr(source, "rotation", None)  # embeddings are x @ rotation
        if rotation is not None:
            outer = rotation.detach() @ outer
        return pooling, outer @ weight, None if bias is None else outer @ bias
    how = getattr(source, "pooling", {}).get(inner)
    projections = getattr(source, "proj", {})
    proj = projections[inner] if inner in projections else None
    if how is None or proj is None:
        raise ConfigError(f"model.warm_start.{modality}: {name!r} has no pooled, projected "
                          f"{modality!r} embedding to start the ITC from")
    if isinstance(proj, nn.Identity):
        width = int(source.config["towers"][inner]["trunk"]["dim"])
        return str(how), torch.eye(width), None
    if not isinstance(proj, nn.Linear):
        raise ConfigError(f"model.warm_start.{modality}: the {modality!r} projection of "
                          f"{name!r} is not linear ({type(proj).__name__})")
    bias = None if proj.bias is None else proj.bias.detach()
    return str(how), proj.weight.detach(), bias


def start_itc(model: Any, modality: str, source: Any) -> None:
    """Make BridgeTower's uni-modal embedding of ``modality`` (its ITC input) the source's own
    embedding: the source's pooling; the fusion's transform of the tower states takes the
    source's projection (:func:`embedding_map`); the token type row of ``modality`` and the
    ITC projection start as zero and the identity. The fusion width and ``embed_dim`` must be
    the source's embedding width, and the modality must have no ``post_norm``."""
    name = getattr(source, "recipe", type(source).__name__)
    fusion = model.fusion
    if modality in fusion.post_norm:
        raise ConfigError(f"model.warm_start.{modality}: itc_start 'sources' needs the "
                          f"{modality!r} states as the source pools them; remove {modality!r} "
                          "from fusion.post_norm")
    pooling, weight, bias = embedding_map(source, modality)
    transform = fusion.transform[modality]
    proj = model.proj[modality]
    if tuple(weight.shape) != tuple(transform.weight.shape):
        raise ConfigError(
            f"model.warm_start.{modality}: {name!r} embeds {modality} with a "
            f"{weight.shape[1]} -> {weight.shape[0]} map, this BridgeTower's transform is "
            f"{transform.in_features} -> {transform.out_features}; with itc_start 'sources' "
            "fusion.dim must be the source's embedding width")
    if not isinstance(proj, nn.Linear) or proj.in_features != proj.out_features:
        raise ConfigError(f"model.warm_start.{modality}: itc_start 'sources' needs embed_dim "
                          f"equal to fusion.dim ({transform.out_features})")
    with torch.no_grad():
        transform.weight.copy_(weight)
        transform.bias.copy_(bias if bias is not None else torch.zeros_like(transform.bias))
        fusion.token_type.weight[fusion.type_index[modality]].zero_()
        proj.weight.copy_(torch.eye(proj.in_features))
    model.pooling[modality] = pooling
    model.config.setdefault("pooling", {})[modality] = pooling


def warm_start_bridgetower(model: Any, modality: str, source: Any) -> None:
    """``model.warm_start(modality, source)`` of a BridgeTower model. BridgeTower starts its
    towers whole (RoBERTa, CLIP's ViT) and its cross-modal layers fresh:

    - ``text``: every layer and the embeddings of ``source``'s text tower (the depths must
      agree) and its tokenizer; the mask id follows the tokenizer and MLM leaves its special
      tokens alone.
    - ``image``: ``source``'s image tower, weights, configuration and preprocessing (a
      two-tower image-text model, a bound model); its width must be the recipe's.

    With ``itc_start: sources`` in the recipe each warm-started modality also brings its
    source's embedding into the ITC (:func:`start_itc`): started from MiniLM and from the image
    tower of a bound model whose hub is that MiniLM, the ITC starts as that dual encoder.
    """
    name = getattr(source, "recipe", type(source).__name__)
    if modality not in ("text", "image"):
        raise ConfigError(f"model.warm_start.{modality}: BridgeTower starts 'text' or 'image' "
                          "towers from saved models")
    tower, config, tokenizer = source_tower(source, modality)
    kind = "text" if modality == "text" else "vision"
    if config.get("kind") != kind:
        raise ConfigError(f"model.warm_start.{modality}: the {modality} tower of {name!r} is "
                          f"not a {kind} transformer")
    if modality == "text":
        depth, mine = len(tower.trunk.layers), len(model.towers["text"].trunk.layers)
        if depth != mine:
            raise ConfigError(f"model.warm_start.text: {name!r} has {depth} layers, this "
                              f"BridgeTower's text tower {mine} (towers.text.trunk.depth)")
        _copy(model.towers["text"], tower.state_dict(), "towers.text", name,
              skip=("pooler.",), rows=("embeddings.position.weight",))
        ids = _take_tokenizer(model, tokenizer, name)
        model.config["mask_token_id"] = ids["mask_token_id"]
        model.config.pop("special_token_ids", None)  # read from the tokenizer
    else:
        width = int(config["trunk"]["dim"])
        mine = int(model.config["towers"]["image"]["trunk"]["dim"])
        if width != mine:
            raise ConfigError(f"model.warm_start.image: the image tower of {name!r} is {width} "
                              f"wide, this BridgeTower's {mine} (towers.image.trunk.dim)")
        _take_image_tower(model, tower, config, tokenizer)
    if model.settings.itc_start == "sources":
        start_itc(model, modality, source)
