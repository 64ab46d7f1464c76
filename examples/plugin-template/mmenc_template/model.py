"""The ``timeseries-tiny`` recipe: a patch transformer on mmenc's shared trunk.

patches -> linear stem + learned positions -> trunk (pre-norm) -> mean over real patches ->
projection. Configuration (stored in ``config.json``)::

    {"trunk": {...keyword arguments of mmenc.nn.TrunkConfig...},
     "embed_dim": 32,                                  # null: no projection
     "tokenizers": {"timeseries": {...PatchTokenizer.config()...}}}

The patch width and the number of positions come from the tokenizer's configuration, so the
two can never disagree.

Axis legend: ``b`` batch, ``n`` patches, ``p`` samples per patch, ``d`` trunk width,
``e`` embedding width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch
from mmenc.model import Encoder
from mmenc.nn import LearnedPositions, Trunk, TrunkConfig, build_trunk, masked_mean
from mmenc_template.tokenizer import PatchTokenizer, build_tokenizer

MODALITY = "timeseries"


class TimeseriesEncoder(Encoder):
    """One modality, one trunk.

    Args:
        config: the recipe configuration (see the module docstring).
        tokenizer: the patch tokenizer.
        stem: patch -> token, ``p -> d``.
        positions: one learned row per patch position.
        trunk: the transformer stack.
        proj: pooled state -> embedding, ``d -> e``.
    """

    def __init__(self, config: dict[str, Any], tokenizer: PatchTokenizer, stem: nn.Linear,
                 positions: LearnedPositions, trunk: Trunk, proj: nn.Module) -> None:
        super().__init__(config, {MODALITY: tokenizer})
        self.stem = stem
        self.positions = positions
        self.trunk = trunk
        self.proj = proj

    def forward_features(self, batch: TokenBatch, modality: str,
                         output_hidden_states: bool = False) -> Features:
        """Inputs:
            batch: ``values`` [b n p] and ``mask`` [b n] from :class:`PatchTokenizer`.
        Returns:
            ``Features`` with ``hidden`` [b n d], the batch's mask and ``pooled`` [b d], the
            mean over real patches.
        """
        self.check_modality(modality)
        if batch.values is None:
            raise ValueError("a timeseries batch carries values [b n p], not ids")
        n = batch.values.shape[1]
        positions = torch.arange(n, device=batch.values.device)
        x = self.stem(batch.values) + self.positions(positions)  # [b n d]
        out = self.trunk(x, mask=batch.mask, output_hidden_states=output_hidden_states)
        pooled = masked_mean(out.last_hidden_state, batch.mask)  # [b d]
        return Features(out.last_hidden_state, batch.mask, pooled, out.hidden_states)

    def embed(self, batch: TokenBatch, modality: str) -> Tensor:
        """Series in the embedding space, ``[b e]``, not normalised."""
        pooled = self.forward_features(batch, modality).pooled
        assert pooled is not None  # forward_features always pools
        return self.proj(pooled)


def build(config: dict[str, Any], directory: Path | None = None) -> TimeseriesEncoder:
    """Build the encoder; ``directory`` is the saved model's folder (the tokenizer keeps no
    files there, it is passed on for tokenizers that do)."""
    tokenizer = build_tokenizer(config["tokenizers"][MODALITY], directory)
    trunk = TrunkConfig(**config["trunk"])
    embed_dim = config.get("embed_dim")
    return TimeseriesEncoder(
        config,
        tokenizer,
        stem=nn.Linear(tokenizer.patch_size, trunk.dim),
        positions=LearnedPositions(tokenizer.max_patches, trunk.dim),
        trunk=build_trunk(trunk),
        proj=nn.Linear(trunk.dim, embed_dim, bias=False) if embed_dim else nn.Identity(),
    )
