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
from pathlib import Path
from typing import Any

import torch
from mmenc.batch import Features, TokenBatch
from mmenc.model import Encoder
from mmenc.nn import Pooler, TrunkConfig, build_trunk, masked_mean
from torch import Tensor, nn

MODALITY = "midi"
POOLINGS = ("mean", "cls", "pooler")


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
        super().__init__("midibert", config, {MODALITY: tokenizer})
        trunk_cfg = TrunkConfig(**config["trunk"])
        dim = trunk_cfg.dim
        self.pad_ids = tuple(int(p) for p in config["pad_ids"])
        self.fields = FieldEmbeddings(list(config["vocab_sizes"]), int(config["emb_dim"]), dim)
        self.type_bias = nn.Parameter(torch.zeros(dim))
        self.embed_norm = nn.LayerNorm(dim, eps=trunk_cfg.eps)
        self.embed_drop = nn.Dropout(float(config.get("dropout", 0.0)))
        self.trunk = build_trunk(trunk_cfg)
        self.pooler = Pooler(dim) if config.get("pooler", False) else None
        self.pooling = config.get("pooling", "mean")
        if self.pooling not in POOLINGS or (self.pooling == "pooler" and self.pooler is None):
            raise ValueError(f"pooling must be one of {POOLINGS} (pooler needs pooler: true), "
                             f"got {self.pooling!r}")
        embed_dim = config.get("embed_dim")
        self.proj = nn.Linear(dim, embed_dim, bias=False) if embed_dim else nn.Identity()

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


def check_tokenizer(config: dict[str, Any], tokenizer: Any) -> None:
    """The tokenizer fits the model: the same field sizes, no more notes than positions."""
    vocab_sizes = list(config["vocab_sizes"])
    if hasattr(tokenizer, "vocab") and list(tokenizer.vocab.sizes) != vocab_sizes:
        raise ValueError(f"the tokenizer's field sizes {list(tokenizer.vocab.sizes)} do not "
                         f"match the model's {vocab_sizes}")
    positions = int(config["trunk"].get("max_positions", 512))
    if getattr(tokenizer, "max_len", 0) > positions:
        raise ValueError(f"the tokenizer keeps {tokenizer.max_len} notes but the relative "
                         f"position table covers {positions}")


def build_midibert(config: dict[str, Any], directory: Path | None = None) -> MidiBertEncoder:
    """Build the encoder and its tokenizer from a configuration."""
    from mmenc_midi.tokenizers import tokenizer_for

    tokenizer = tokenizer_for(config["tokenizers"][MODALITY])
    check_tokenizer(config, tokenizer)
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
    check_tokenizer(config, tokenizer)
    return MidiBertEncoder({**config, "tokenizers": {MODALITY: tokenizer.config()}}, tokenizer)


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
