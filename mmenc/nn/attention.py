"""Self- and cross-attention on ``F.scaled_dot_product_attention``.

Axis legend (einops):
    b  batch
    h  heads
    n  query tokens
    m  key tokens (context tokens for cross-attention)
    d  width per head
    c  context width (``cross_dim``)

Self-attention keeps q, k and v in one fused ``qkv`` Linear (one GEMM instead of three);
cross-attention keeps ``q`` apart from a fused ``kv`` over the context, whose width may differ.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with an optional per-layer relative-position term.

    Args:
        dim: model width.
        heads: attention heads; ``dim`` must divide evenly.
        qkv_bias: whether q/k/v projections have biases.
        attn_dropout: dropout on attention weights (training only).
        relative: a module ``(q, k, shared_bias) -> [b h n m]`` adding to the logits, e.g.
            ``GatedRelativeBias`` or ``KeyQueryRelative``; None for none.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        qkv_bias: bool = True,
        attn_dropout: float = 0.0,
        relative: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.out = nn.Linear(dim, dim)
        self.relative = relative

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        shared_bias: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Inputs:
            x: [b n dim].
            attn_mask: additive [b|1 h|1 n n] float mask (padding, causal, folded bias) or None.
            shared_bias: [1 h n n] relative bias handed to ``relative`` (gated scheme only).
            is_causal: let sdpa apply the causal mask itself (only when attn_mask is None).

        Returns:
            [b n dim].
        """
        qkv = self.qkv(x)  # [b n 3*h*d]
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if self.relative is not None:
            extra = self.relative(q, k, shared_bias)  # [b h n n]
            attn_mask = extra if attn_mask is None else attn_mask + extra
        dropout = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout, is_causal)  # [b h n d]
        projected: Tensor = self.out(rearrange(out, "b h n d -> b n (h d)"))
        return projected


class CrossAttention(nn.Module):
    """Multi-head attention from the tokens to a context sequence (ALBEF / BridgeTower style).

    Args:
        dim: width of the queries and of the output.
        context_dim: width of the context; keys and values are projected from it to ``dim``.
        heads: attention heads.
        qkv_bias: whether the projections have biases.
        attn_dropout: dropout on attention weights (training only).
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        heads: int,
        qkv_bias: bool = True,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """Inputs:
            x: [b n dim] queries.
            context: [b m c].
            context_mask: additive [b 1 1 m] float mask over the context, or None.

        Returns:
            [b n dim].
        """
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads)
        kv = self.kv(context)  # [b m 2*h*d]
        k, v = rearrange(kv, "b m (two h d) -> two b h m d", two=2, h=self.heads)
        dropout = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, context_mask, dropout)  # [b h n d]
        projected: Tensor = self.out(rearrange(out, "b h n d -> b n (h d)"))
        return projected
