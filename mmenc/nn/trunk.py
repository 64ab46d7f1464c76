"""The trunk: one bidirectional transformer stack shared by every mmenc model.

Axis legend (einops):
    b  batch
    h  heads
    n  tokens
    m  context tokens
    d  model width
    c  context width

``TrunkConfig`` is the small, JSON-serialisable description stored in ``config.json``;
``build_trunk`` turns it into modules. ``Trunk`` itself takes built modules, never a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmenc.nn.attention import CrossAttention, SelfAttention
from mmenc.nn.block import ACTIVATIONS, NORMS, Block, FeedForward, deepnorm_alpha
from mmenc.nn.masks import attention_mask, context_attention_mask, drop_if_all_real
from mmenc.nn.positions import (
    ConvPositions,
    GatedRelativeBias,
    KeyQueryRelative,
    RelativePositionBias,
)

RELATIVE: tuple[str, ...] = ("none", "t5", "gated", "key_query")


@dataclass(frozen=True)
class TrunkConfig:
    """Shape and flavour of a trunk; round-trips through ``dataclasses.asdict``.

    Fields whose default is not obvious:
        norm: "pre" (ViT/CLIP), "post" (BERT/RoBERTa) or "deepnorm" (BEATs).
        eps: 1e-5 is torch's LayerNorm default; BERT uses 1e-12, timm ViT 1e-6.
        relative: "none", "t5" (log-bucket bias shared by layers), "gated" (BEATs: the t5 bias
            gated per layer by the queries) or "key_query" (BERT ``relative_key_query``).
        num_buckets, max_distance: bucket layout for "t5"/"gated" (BEATs: 320, 800).
        max_positions: longest sequence for "key_query" (the distance table has 2x-1 rows).
        conv_pos: kernel of the convolutional positions (wav2vec2/BEATs: 128); 0 turns them off.
        input_norm: LayerNorm after the positions, before layer 0 (BEATs' post-norm stack).
        final_norm: LayerNorm after the last layer; None means "yes for pre-norm", which is
            where the stack's output is otherwise unnormalised.
        cross_dim: context width for cross-attention sub-layers; None means no cross-attention.
        cross_every: with cross_dim, put cross-attention in layers i with i % cross_every == 0.
        cross_layers: with cross_dim, the explicit layer indices instead (overrides cross_every).
    """

    dim: int
    depth: int
    heads: int
    ffn_dim: int
    norm: str = "pre"
    activation: str = "gelu"
    eps: float = 1e-5
    dropout: float = 0.0
    attn_dropout: float = 0.0
    qkv_bias: bool = True
    relative: str = "none"
    num_buckets: int = 32
    max_distance: int = 128
    max_positions: int = 512
    conv_pos: int = 0
    conv_pos_groups: int = 16
    input_norm: bool = False
    final_norm: bool | None = None
    cross_dim: int | None = None
    cross_every: int = 1
    cross_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.relative not in RELATIVE:
            raise ValueError(f"relative must be one of {RELATIVE}, got {self.relative!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        for name in ("dim", "depth", "heads", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.conv_pos and (self.conv_pos_groups <= 0 or self.dim % self.conv_pos_groups):
            raise ValueError(
                f"dim={self.dim} is not divisible by conv_pos_groups={self.conv_pos_groups}"
            )
        if self.cross_layers is not None:
            # JSON gives a list back; keep the frozen config hashable
            object.__setattr__(self, "cross_layers", tuple(int(i) for i in self.cross_layers))

    @property
    def use_final_norm(self) -> bool:
        """``final_norm`` with None resolved (kept unresolved so ``replace(norm=...)`` follows)."""
        return self.norm == "pre" if self.final_norm is None else self.final_norm

    def has_cross(self, layer: int) -> bool:
        """Whether layer ``layer`` gets a cross-attention sub-layer."""
        if self.cross_dim is None:
            return False
        if self.cross_layers is not None:
            return layer in self.cross_layers
        return layer % self.cross_every == 0


@dataclass
class TrunkOutput:
    """What a trunk (or an encoder around it) returns.

    Attributes:
        last_hidden_state: [b n d] output, after the final norm if any.
        hidden_states: with ``output_hidden_states=True``, depth+1 tensors [b n d]: the input of
            layer 0 (after positions and input norm), then each layer's output (before the
            final norm, as in HF).
        pooled: [b d] pooled output for encoders that pool, else None.
    """

    last_hidden_state: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    pooled: Tensor | None = None


class Trunk(nn.Module):
    """A stack of blocks with the positional parts that live at trunk level.

    Args:
        layers: the blocks, applied in order.
        rel_bias: the relative bias shared by all layers ("t5"/"gated"), or None.
        conv_pos: convolutional positions added to the input, or None.
        input_norm: LayerNorm applied to the input after the positions, or None.
        final_norm: LayerNorm applied after the last layer, or None.
    """

    def __init__(
        self,
        layers: Sequence[Block],
        rel_bias: RelativePositionBias | None = None,
        conv_pos: ConvPositions | None = None,
        input_norm: nn.LayerNorm | None = None,
        final_norm: nn.LayerNorm | None = None,
    ) -> None:
        super().__init__()
        self.conv_pos = conv_pos
        self.input_norm = input_norm
        self.rel_bias = rel_bias
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.grad_checkpointing = False
        # A plain shared bias is folded into the mask once; a per-layer term (gated) needs it raw.
        self._per_layer_bias = any(layer.attn.relative is not None for layer in layers)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def _self_attention_inputs(
        self, x: Tensor, mask: Tensor | None, attn_mode: str, prefix_len: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, bool]:
        """The additive mask, the raw shared bias (gated scheme only) and sdpa's is_causal flag."""
        n = x.shape[1]
        bias = self.rel_bias(n) if self.rel_bias is not None else None  # [1 h n n]
        if attn_mode == "causal" and mask is None and bias is None and not self._per_layer_bias:
            return None, None, True  # sdpa's own causal path needs no mask tensor at all
        attn_mask = attention_mask(n, x.dtype, attn_mode, mask, prefix_len, x.device)
        if bias is None or self._per_layer_bias:
            return attn_mask, bias, False
        folded = bias if attn_mask is None else attn_mask + bias  # [b|1 h n n]
        return folded, None, False

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        attn_mode: str = "bidirectional",
        prefix_len: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> TrunkOutput:
        """Inputs:
            x: [b n d].
            mask: [b n] bool, True = real token; None = no padding.
            attn_mode: "bidirectional", "causal" or "prefix".
            prefix_len: [b] int64, the bidirectional prefix of each item for "prefix".
            context: [b m c] for cross-attention layers.
            context_mask: [b m] bool, True = real context token.
            output_hidden_states: also return every layer's output.

        Returns:
            ``TrunkOutput`` with ``last_hidden_state`` [b n d] and optional ``hidden_states``.
        """
        if self.conv_pos is not None:
            if mask is not None:  # pads must not leak into their neighbours through the conv
                x = x.masked_fill(~mask.bool()[..., None], 0.0)
            x = x + self.conv_pos(x)
        if self.input_norm is not None:
            x = self.input_norm(x)
        attn_mask, shared_bias, is_causal = self._self_attention_inputs(
            x, drop_if_all_real(mask), attn_mode, prefix_len
        )
        cross_mask = context_attention_mask(context_mask, x.dtype)

        hidden: list[Tensor] = [x]
        checkpointing = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            args = (x, attn_mask, shared_bias, is_causal, context, cross_mask)
            x = checkpoint(layer, *args, use_reentrant=False) if checkpointing else layer(*args)
            if output_hidden_states:
                hidden.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return TrunkOutput(x, tuple(hidden) if output_hidden_states else None)


def build_trunk(cfg: TrunkConfig) -> Trunk:
    """Build a ``Trunk`` from its config."""
    head_dim = cfg.dim // cfg.heads
    alpha = deepnorm_alpha(cfg.depth) if cfg.norm == "deepnorm" else 1.0
    layers = []
    for i in range(cfg.depth):
        relative: nn.Module | None = None
        if cfg.relative == "gated":
            relative = GatedRelativeBias(cfg.heads, head_dim)
        elif cfg.relative == "key_query":
            relative = KeyQueryRelative(cfg.max_positions, head_dim)
        cross = None
        if cfg.has_cross(i):
            assert cfg.cross_dim is not None
            cross = CrossAttention(
                cfg.dim, cfg.cross_dim, cfg.heads, cfg.qkv_bias, cfg.attn_dropout
            )
        attn = SelfAttention(cfg.dim, cfg.heads, cfg.qkv_bias, cfg.attn_dropout, relative)
        ffn = FeedForward(cfg.dim, cfg.ffn_dim, cfg.activation)
        layers.append(Block(attn, ffn, cfg.dim, cfg.norm, cfg.eps, cfg.dropout, cross, alpha))
    rel_bias = None
    if cfg.relative in ("t5", "gated"):
        rel_bias = RelativePositionBias(cfg.heads, cfg.num_buckets, cfg.max_distance)
    conv_pos = ConvPositions(cfg.dim, cfg.conv_pos, cfg.conv_pos_groups) if cfg.conv_pos else None
    return Trunk(
        layers,
        rel_bias=rel_bias,
        conv_pos=conv_pos,
        input_norm=nn.LayerNorm(cfg.dim, eps=cfg.eps) if cfg.input_norm else None,
        final_norm=nn.LayerNorm(cfg.dim, eps=cfg.eps) if cfg.use_final_norm else None,
    )
