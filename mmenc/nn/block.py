"""Transformer blocks: post-norm (BERT), pre-norm (ViT/CLIP) and DeepNorm (BEATs).

Axis legend (einops):
    b  batch
    n  tokens
    m  context tokens
    d  model width

Every block is self-attention, an optional cross-attention sub-layer, then a feed-forward
network, each wrapped in a residual connection and a LayerNorm whose place depends on ``norm``:

    pre       x = x + f(LN(x))
    post      x = LN(x + f(x))
    deepnorm  x = LN(alpha * x + f(x)), alpha = (2 * depth) ** 0.25, so deep post-LN stacks train
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.nn.attention import CrossAttention, SelfAttention

NORMS: tuple[str, ...] = ("post", "pre", "deepnorm")


def quick_gelu(x: Tensor) -> Tensor:
    """CLIP's sigmoid approximation of GELU."""
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation (HF ``gelu_new`` / ``gelu_pytorch_tanh``)."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact erf form, as BERT and timm use
    "gelu_tanh": gelu_tanh,
    "quick_gelu": quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
}


def deepnorm_alpha(depth: int) -> float:
    """DeepNorm's residual scale for an encoder of ``depth`` layers."""
    return float((2.0 * depth) ** 0.25)


class FeedForward(nn.Module):
    """Two Linears around an activation.

    Args:
        dim: model width.
        ffn_dim: hidden width.
        activation: a name in ``ACTIVATIONS``.
    """

    def __init__(self, dim: int, ffn_dim: int, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Inputs: x [b n d]. Returns: [b n d]."""
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class Block(nn.Module):
    """One transformer layer.

    Args:
        attn: the self-attention module.
        ffn: the feed-forward module.
        dim: model width (for the LayerNorms).
        norm: "post", "pre" or "deepnorm".
        eps: LayerNorm epsilon.
        dropout: dropout on each sub-layer's output before the residual add (training only).
        cross_attn: optional cross-attention sub-layer, run between self-attention and the FFN.
        alpha: residual scale for "deepnorm" (see ``deepnorm_alpha``); must be 1 otherwise.
    """

    def __init__(
        self,
        attn: SelfAttention,
        ffn: FeedForward,
        dim: int,
        norm: str = "pre",
        eps: float = 1e-5,
        dropout: float = 0.0,
        cross_attn: CrossAttention | None = None,
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if norm != "deepnorm" and alpha != 1.0:
            raise ValueError("a residual scale alpha != 1 only makes sense with norm='deepnorm'")
        self.norm = norm
        self.alpha = alpha
        self.attn = attn
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = cross_attn
        self.cross_norm = nn.LayerNorm(dim, eps=eps) if cross_attn is not None else None
        self.ffn = ffn
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)

    def _residual(self, x: Tensor, norm: nn.Module, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm == "pre":
            res: Tensor = x + self.drop(sublayer(norm(x)))
            return res
        out = self.drop(sublayer(x))
        # post-norm skips the multiply by 1 (one elementwise pass per sub-layer)
        normed: Tensor = norm(x * self.alpha + out if self.alpha != 1.0 else x + out)
        return normed

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        shared_bias: Tensor | None = None,
        is_causal: bool = False,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """Inputs:
            x: [b n d].
            attn_mask: additive self-attention mask [b|1 h|1 n n] or None.
            shared_bias: [1 h n n] relative bias for a gated relative term, else None.
            is_causal: let sdpa apply causality (only with attn_mask None).
            context: [b m c] for the cross-attention sub-layer (required when it exists).
            context_mask: additive [b 1 1 m] mask over the context or None.

        Returns:
            [b n d].
        """
        x = self._residual(
            x, self.attn_norm, lambda h: self.attn(h, attn_mask, shared_bias, is_causal)
        )
        if self.cross_attn is not None and self.cross_norm is not None:
            if context is None:
                raise ValueError("this block has cross-attention; pass context=[b m cross_dim]")
            cross = self.cross_attn
            x = self._residual(x, self.cross_norm, lambda h: cross(h, context, context_mask))
        return self._residual(x, self.ffn_norm, self.ffn)
