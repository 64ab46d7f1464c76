"""The typed configurations of the vision-text recipes (ALBEF, BridgeTower).

Each builder reads its recipe's dict into one of these frozen dataclasses before it builds
anything, so a malformed ``config.json`` fails there, naming the key. The dicts stay the format
on disk (``recipes`` writes the defaults); ``towers`` and ``tokenizers`` are checked by the
tower kinds and tokenizers that read them.

Token ids left ``None`` are read from the text tokenizer (its ``[MASK]``/``<mask>``,
``[CLS]``/``<s>`` and ``[PAD]``/``<pad>`` tokens); the recipes and converters write them out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from mmenc.errors import ConfigError
from mmenc.recipe_config import RecipeConfig

# token id field -> the tokens that carry it in BERT's and RoBERTa's vocabularies
SPECIAL_TOKENS = {"pad_token_id": ("[PAD]", "<pad>"), "cls_token_id": ("[CLS]", "<s>"),
                  "mask_token_id": ("[MASK]", "<mask>")}


@dataclass(frozen=True)
class CrossAttentionConfig:
    """The ``cross-attention`` fusion of ALBEF: see :class:`mmenc_vl.albef.CrossAttentionFusion`."""

    depth: int
    heads: int
    ffn_dim: int
    name: str = "cross-attention"
    query: str = "text"
    context: str = "image"
    norm: str = "post"
    eps: float = 1e-12  # BERT's LayerNorm
    activation: str = "gelu"
    dropout: float = 0.0
    attn_dropout: float = 0.0

    def kwargs(self) -> dict[str, Any]:
        """The fusion module's keyword arguments (every field but ``name``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "name"}


@dataclass(frozen=True)
class BridgeConfig:
    """The ``bridge`` fusion of BridgeTower: see :class:`mmenc_vl.bridgetower.BridgeFusion`."""

    dim: int
    depth: int
    heads: int
    ffn_dim: int
    name: str = "bridge"
    eps: float = 1e-5
    activation: str = "gelu"
    order: tuple[str, ...] = ("text", "image")
    post_norm: tuple[str, ...] = ()
    post_norm_eps: float = 1e-5
    link: str = "add"
    pooler: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    layer_eps: float | None = None  # None: eps

    def kwargs(self) -> dict[str, Any]:
        """The fusion module's keyword arguments (every field but ``name``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "name"}


@dataclass(frozen=True, kw_only=True)
class VisionTextConfig(RecipeConfig):
    """What the vision-text recipes share: a text and an image tower, their tokenizers, and
    the pre-training options.

    Fields whose default is not obvious:
        pretraining: keep the heads and state continued pre-training needs.
        itm_head: build the ITM head; None means "when pretraining".
        temp: the initial contrastive temperature (learned).
        mlm_probability: the share of text tokens MLM masks (80/10/10).
        mask_token_id: the text tokenizer's mask id; None reads it from the tokenizer.
        init: "fan-in" scales the initial weights by their fan-in; "bert" or None: BERT's
            std 0.02.
        source: where a converted model came from (``{"format", "path"}``), for the record.
    """

    towers: dict[str, dict[str, Any]]
    tokenizers: dict[str, dict[str, Any]]
    pretraining: bool = False
    itm_head: bool | None = None
    temp: float = 0.07
    mlm_probability: float = 0.15
    mask_token_id: int | None = None
    init: str | None = None
    source: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if set(self.towers) != {"text", "image"}:
            raise ConfigError(f"config.towers: a 'text' and an 'image' tower are needed, got "
                              f"{', '.join(self.towers) or 'none'}")
        if self.init not in (None, "bert", "fan-in"):
            raise ConfigError(f"config.init: expected 'bert', 'fan-in' or null, got "
                              f"{self.init!r}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"config.mlm_probability: must be in (0, 1), got "
                              f"{self.mlm_probability}")

    @property
    def has_itm_head(self) -> bool:
        return self.pretraining if self.itm_head is None else self.itm_head

    def token_id(self, key: str, tokenizer: Any) -> int:
        """The token id ``key`` (``mask_token_id``...): the configured one, else the text
        tokenizer's."""
        value = getattr(self, key)
        if value is not None:
            return int(value)
        inner = getattr(tokenizer, "tokenizer", None)
        for token in SPECIAL_TOKENS[key] if inner is not None else ():
            found = inner.token_to_id(token)  # type: ignore[union-attr]
            if found is not None:
                return int(found)
        raise ConfigError(f"config.{key}: not set, and the text tokenizer has none of "
                          f"{', '.join(SPECIAL_TOKENS[key])}")


@dataclass(frozen=True, kw_only=True)
class ALBEFConfig(VisionTextConfig):
    """ALBEF (:mod:`mmenc_vl.albef`): BERT text layers, the cross-attention fusion layers,
    projections to ``embed_dim``; momentum copies and feature queues when pre-training.

    Fields whose default is not obvious:
        queue_size: feature queue length (ALBEF: 65536).
        momentum: the momentum encoders' EMA factor.
        alpha: the weight of the momentum model's soft targets (distillation).
        pad_token_id, cls_token_id: tokens MLM never masks; None reads them from the tokenizer.
    """

    embed_dim: int
    fusion: CrossAttentionConfig
    queue_size: int = 65536
    momentum: float = 0.995
    alpha: float = 0.4
    pad_token_id: int | None = None
    cls_token_id: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pretraining and self.itm_head is False:
            raise ConfigError("config.itm_head: pre-training needs the ITM head (itm_head: true)")


@dataclass(frozen=True, kw_only=True)
class BridgeTowerConfig(VisionTextConfig):
    """BridgeTower (:mod:`mmenc_vl.bridgetower`): RoBERTa and CLIP towers joined by the bridge
    fusion, projections to ``embed_dim`` (None: no projection, no contrastive step).

    Fields whose default is not obvious:
        mlm_head: build the MLM head; None means "when pretraining".
        special_token_ids: tokens MLM never masks; None reads ``<s>``, ``<pad>`` and ``</s>``
            from the tokenizer.
        pooling: modality -> how ``embed`` pools the uni-modal states (default ``cls``).
        itc_start: where a warm start (``mmenc_vl.warm_start``) leaves the ITC path of a
            warm-started tower: ``fresh`` (the paper: new transform and projection) or
            ``sources`` (the source model's own pooling and projection).
    """

    fusion: BridgeConfig
    embed_dim: int | None = None
    mlm_head: bool | None = None
    special_token_ids: tuple[int, ...] | None = None
    pooling: dict[str, str] = dataclasses.field(default_factory=dict)
    itc_start: Literal["fresh", "sources"] = "fresh"

    @property
    def has_mlm_head(self) -> bool:
        return self.pretraining if self.mlm_head is None else self.mlm_head

    def special_ids(self, tokenizer: Any) -> list[int]:
        """The ids MLM never masks: the configured ones, else the tokenizer's ``<s>``,
        ``<pad>``, ``</s>`` (or ``[CLS]``, ``[PAD]``, ``[SEP]``)."""
        if self.special_token_ids is not None:
            return list(self.special_token_ids)
        inner = getattr(tokenizer, "tokenizer", None)
        found = [inner.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "[CLS]", "[PAD]", "[SEP]")
                 ] if inner is not None else []
        return [int(i) for i in found if i is not None]
