"""MIDI-BERT on mmenc's shared trunk.

    ids [b n f] -> per field: Embedding(v_i, e)(ids[..., i]) * sqrt(e)     (e = 256 in MIDI-BERT)
                -> concat [b n f*e] -> in_linear -> [b n d]
                -> + type_bias (BERT's token-type row 0) -> LayerNorm -> dropout
                -> trunk (post-norm, relative key-query scores, no absolute positions)
                -> hidden [b n d]; pooler (dense + tanh on token 0) when configured

Configuration (stored in ``config.json``)::

    {"fields": [...], "vocab_sizes": [...], "pad_ids": [...], "mask_ids": [...],
     "emb_dim": 256, "trunk": {...TrunkConfig...}, "pooler": true, "pooling": "mean",
     "embed_dim": null, "dropout": 0.1, "tokenizers": {"midi": {...}}}

Axis legend: ``b`` batch, ``n`` notes, ``f`` fields, ``e`` field embedding width, ``d`` width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from mmenc.batch import Features, TokenBatch
from mmenc.errors import ConfigError
from mmenc.model import Encoder
from mmenc.nn import Pooler, TrunkConfig, build_trunk, masked_mean
from mmenc.recipe_config import RecipeConfig
from torch import Tensor, nn

MODALITY = "midi"
POOLINGS = ("mean", "cls", "pooler")


@dataclass(frozen=True, kw_only=True)
class MidiBertConfig(RecipeConfig):
    """The typed configuration of MIDI-BERT (the dict :func:`mmenc_midi.recipes.midibert`
    writes; a ``midi`` tower's section is the same without ``tokenizers``).

    Fields whose default is not obvious:
        scheme: the compound-token dictionary, ``cp`` (MIDI-BERT) or ``octuple``.
        fields, vocab_sizes, pad_ids, mask_ids: one entry per compound-token field.
        emb_dim: width of each field's embedding before their concatenation is projected.
        pooling: ``mean`` over real notes, the ``cls`` token, or the ``pooler`` (needs it).
        source: where a converted model came from (``{"format", "path"}``), for the record.
    """

    scheme: Literal["cp", "octuple"]
    fields: tuple[str, ...]
    vocab_sizes: tuple[int, ...]
    pad_ids: tuple[int, ...]
    mask_ids: tuple[int, ...]
    emb_dim: int
    trunk: TrunkConfig
    tokenizers: dict[str, dict[str, Any]]
    dropout: float = 0.0
    pooler: bool = False
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    embed_dim: int | None = None
    source: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.fields)
        for key in ("vocab_sizes", "pad_ids", "mask_ids"):
            if len(getattr(self, key)) != n:
                raise ConfigError(f"config.{key}: {len(getattr(self, key))} entries for "
                                  f"{n} fields")
        for key in ("pad_ids", "mask_ids"):
            for i, (token, size) in enumerate(zip(getattr(self, key), self.vocab_sizes,
                                                  strict=True)):
                if not 0 <= token < size:
                    raise ConfigError(f"config.{key}[{i}]: token id {token} is outside "
                                      f"0..{size - 1} (vocab_sizes[{i}])")
        if self.pooling == "pooler" and not self.pooler:
            raise ConfigError("config.pooling: 'pooler' needs pooler: true")


class FieldEmbeddings(nn.Module):
    """One table per field, each lookup scaled by ``sqrt(emb_dim)``, concatenated, projected.

    Args:
        vocab_sizes: rows of each field's table.
        emb_dim: width of each table (MIDI-BERT: 256).
        dim: output width.
    """

    def __init__(self, vocab_sizes: list[int], emb_dim: int, dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(v, emb_dim) for v in vocab_sizes)
        self.scale = math.sqrt(emb_dim)
        self.in_linear = nn.Linear(emb_dim * len(vocab_sizes), dim)

    def forward(self, ids: Tensor) -> Tensor:
        """Inputs: ids ``[b n f]``. Returns: ``[b n d]`` (MIDI-BERT's ``in_linear`` output)."""
        embs = [table(ids[..., i]) * self.scale for i, table in enumerate(self.tables)]
        return self.in_linear(torch.cat(embs, dim=-1))  # [b n f*e] -> [b n d]


class MidiBertEncoder(Encoder):
    """Compound MIDI tokens -> token states, pooled and projected embeddings.

    Args:
        config: see the module docstring.
        tokenizer: the ``midi`` tokenizer (CP or Octuple).
    """

    def __init__(self, config: dict[str, Any], tokenizer: Any) -> None:
        settings = MidiBertConfig.read(config)
        super().__init__(config, {MODALITY: tokenizer})
        trunk_cfg = settings.trunk
        dim = trunk_cfg.dim
        self.pad_ids = settings.pad_ids
        self.fields = FieldEmbeddings(list(settings.vocab_sizes), settings.emb_dim, dim)
        self.type_bias = nn.Parameter(torch.zeros(dim))
        self.embed_norm = nn.LayerNorm(dim, eps=trunk_cfg.eps)
        self.embed_drop = nn.Dropout(settings.dropout)
        self.trunk = build_trunk(trunk_cfg)
        self.pooler = Pooler(dim) if settings.pooler else None
        self.pooling = settings.pooling
        embed_dim = settings.embed_dim
        self.proj = nn.Linear(dim, embed_dim, bias=False) if embed_dim else nn.Identity()

    @property
    def settings(self) -> MidiBertConfig:
        """The typed view of ``config``."""
        return MidiBertConfig.read(self.config)

    @property
    def width(self) -> int:
        return int(self.config["trunk"]["dim"])

    def attention_mask(self, ids: Tensor) -> Tensor:
        """MIDI-BERT's mask: True where the Bar field is not its pad id."""
        return ids[..., 0] != self.pad_ids[0]

    def input_embeddings(self, ids: Tensor) -> Tensor:
        """``[b n f]`` ids -> ``[b n d]``, the ``in_linear`` output fed to the trunk's stem."""
        return self.fields(ids)

    def forward_ids(self, ids: Tensor, mask: Tensor | None = None,
                    output_hidden_states: bool = False,
                    inputs_embeds: Tensor | None = None) -> Features:
        """The model on raw ``[b n f]`` ids (``mask`` defaults to :meth:`attention_mask`);
        ``inputs_embeds`` replaces the field embeddings (``[b n d]``)."""
        if mask is None:
            mask = self.attention_mask(ids)
        x = self.input_embeddings(ids) if inputs_embeds is None else inputs_embeds
        x = self.embed_drop(self.embed_norm(x + self.type_bias))
        out = self.trunk(x, mask=mask, output_hidden_states=output_hidden_states)
        pooled = self.pooler(out.last_hidden_state) if self.pooler is not None else None
        return Features(out.last_hidden_state, mask, pooled, out.hidden_states)

    def forward_features(self, batch: TokenBatch, modality: str = MODALITY,
                         output_hidden_states: bool = False) -> Features:
        """Inputs:
            batch: ``ids [b n f]`` with ``mask [b n]`` (None: MIDI-BERT's Bar-pad mask).
        Returns:
            ``Features`` with ``hidden [b n d]``, the mask, ``pooled [b d]`` (the BERT pooler,
            when the model has one) and, when asked, ``hidden_states`` (00 = embeddings).
        """
        self.check_modality(modality)
        if batch.ids is None or batch.ids.dim() != 3:
            raise ValueError("a midi batch carries compound ids [b n f]")
        return self.forward_ids(batch.ids, batch.mask, output_hidden_states)

    def pool(self, features: Features) -> Tensor:
        if self.pooling == "mean":
            return masked_mean(features.hidden, features.mask)
        if self.pooling == "cls":
            return features.hidden[:, 0]
        assert features.pooled is not None
        return features.pooled

    def embed(self, batch: TokenBatch, modality: str = MODALITY) -> Tensor:
        """Items in the embedding space, ``[b e]`` (``e = d`` without a projection)."""
        return self.proj(self.pool(self.forward_features(batch, modality)))


def check_tokenizer(config: MidiBertConfig, tokenizer: Any) -> None:
    """The tokenizer fits the model: the same field sizes, no more notes than positions."""
    vocab_sizes = list(config.vocab_sizes)
    if hasattr(tokenizer, "vocab") and list(tokenizer.vocab.sizes) != vocab_sizes:
        raise ValueError(f"the tokenizer's field sizes {list(tokenizer.vocab.sizes)} do not "
                         f"match the model's {vocab_sizes}")
    positions = config.trunk.max_positions
    if getattr(tokenizer, "max_len", 0) > positions:
        raise ValueError(f"the tokenizer keeps {tokenizer.max_len} notes but the relative "
                         f"position table covers {positions}")


def build_midibert(config: dict[str, Any], directory: Path | None = None) -> MidiBertEncoder:
    """Build the encoder and its tokenizer from a configuration, read into a
    :class:`MidiBertConfig` first."""
    from mmenc_midi.tokenizers import tokenizer_for

    settings = MidiBertConfig.read(config)
    if MODALITY not in settings.tokenizers:
        raise ConfigError(f"config.tokenizers: MIDI-BERT needs a {MODALITY!r} tokenizer")
    tokenizer = tokenizer_for(settings.tokenizers[MODALITY])
    check_tokenizer(settings, tokenizer)
    return MidiBertEncoder(config, tokenizer)


# -- the ``midi`` tower kind ------------------------------------------------------------------
TOWER_KIND = "midi"
TOWER_OPTIONS = {"pooler": False, "embed_dim": None, "pooling": "mean"}
"""A MIDI tower is a MIDI-BERT model without pooler or projection: a tower encoder pools and
projects its token states (``midi-text-tiny``: mean-pooled, projected to the shared space)."""


def midi_tower(config: dict[str, Any], tokenizer: Any) -> MidiBertEncoder:
    """Factory of the ``midi`` tower kind: a :class:`MidiBertEncoder` on the modality's
    tokenizer (CP or Octuple), whose field sizes it must match. Configuration: a
    :func:`mmenc_midi.recipes.midibert` configuration without ``tokenizers``."""
    config = {**config, "tokenizers": {MODALITY: tokenizer.config()}}
    check_tokenizer(MidiBertConfig.read(config), tokenizer)
    return MidiBertEncoder(config, tokenizer)


def midi_tower_from(source: Any) -> tuple[MidiBertEncoder, dict[str, Any], Any]:
    """A ``midi`` tower started from a saved MIDI-BERT model (``midibert-*``, e.g. one
    pretrained with ``compound-mlm``): its weights without its pooler and projection, its
    configuration section and its tokenizer (``TowerEncoder.warm_start``)."""
    if not isinstance(source, MidiBertEncoder):
        raise ValueError(f"a {TOWER_KIND!r} tower starts from a MIDI-BERT model, got "
                         f"{getattr(source, 'recipe', type(source).__name__)!r}")
    body = {k: v for k, v in source.config.items() if k != "tokenizers"}
    body.update(TOWER_OPTIONS)
    tokenizer = source.tokenizers[MODALITY]
    tower = midi_tower(body, tokenizer)
    skip = ("pooler.", "proj.")
    tower.load_state_dict({k: v for k, v in source.state_dict().items()
                           if not k.startswith(skip)})
    return tower, body, tokenizer
