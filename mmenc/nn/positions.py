"""Positional schemes of the trunk and its stems.

Axis legend (einops):
    b  batch
    h  heads
    n  query tokens
    m  key tokens
    d  feature dim (per head inside attention)
    j  relative distances, 2n-1 of them
    k  convolution taps

Absolute positions (``LearnedPositions``) are added by stems; relative ones enter attention as an
additive bias: T5 log buckets (``RelativePositionBias``, one table shared by all layers), BEATs'
query-gated variant of it (``GatedRelativeBias``, per layer) and BERT's ``relative_key_query``
(``KeyQueryRelative``, per layer). ``ConvPositions`` is wav2vec2/BEATs' convolutional embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def padding_aware_position_ids(ids: Tensor, pad_id: int) -> Tensor:
    """RoBERTa's position ids: real tokens count from ``pad_id + 1``, pads sit at ``pad_id``.

    Inputs:
        ids: [b n] token ids.

    Returns:
        [b n] int64 position ids.
    """
    real = (ids != pad_id).long()  # [b n]
    return torch.cumsum(real, dim=1) * real + pad_id


class LearnedPositions(nn.Module):
    """A learned absolute position table looked up by position id.

    Args:
        num_positions: rows of the table (max sequence length, plus offsets if any).
        dim: width of each row.
    """

    def __init__(self, num_positions: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_positions, dim) * 0.02)

    def forward(self, position_ids: Tensor) -> Tensor:
        """Inputs:
            position_ids: [b n] or [n] int64.

        Returns:
            [b n d] or [n d].
        """
        return F.embedding(position_ids, self.weight)


def relative_position_bucket(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bidirectional log buckets of ``key - query`` distances (as BEATs uses them).

    Half of the buckets hold keys to the right. Within a half, distances below a quarter of
    ``num_buckets`` get their own bucket; larger ones share log-spaced buckets up to
    ``max_distance``, and everything beyond lands in the last one.

    Inputs:
        relative: int64 tensor of ``key_pos - query_pos``.

    Returns:
        int64 bucket ids in ``[0, num_buckets)``, same shape.
    """
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    # clamp(min=1) only keeps log() finite; distances below max_exact take the exact branch anyway.
    # The float32 op order matches the reference so boundary distances land in the same bucket.
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(
        max_distance / max_exact
    )
    large = max_exact + (log_ratio * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class RelativePositionBias(nn.Module):
    """A per-head bias indexed by bucketed relative distance, computed once per forward.

    Args:
        heads: attention heads.
        num_buckets: total buckets (both directions).
        max_distance: distance at which the log buckets saturate.
    """

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.weight = nn.Parameter(torch.randn(num_buckets, heads) * 0.02)

    def forward(self, n: int, m: int | None = None) -> Tensor:
        """Inputs:
            n: query length; m: key length (default n).

        Returns:
            [1 h n m] bias in logit units.
        """
        m = n if m is None else m
        device = self.weight.device
        query = torch.arange(n, device=device)[:, None]  # [n 1]
        key = torch.arange(m, device=device)[None, :]  # [1 m]
        buckets = relative_position_bucket(key - query, self.num_buckets, self.max_distance)
        bias = F.embedding(buckets, self.weight)  # [n m h]
        return rearrange(bias, "n m h -> 1 h n m")


class GatedRelativeBias(nn.Module):
    """BEATs' gate on the shared relative bias, computed per layer from the queries.

    Every head's query vector goes through a head-wise Linear(head_dim, 8); the two groups of four
    outputs, summed and squashed, give gates a and b; the bias is scaled by ``a*(b*s - 1) + 2``,
    with s a learned per-head scale. So each query decides how much position matters to it.

    Args:
        heads: attention heads.
        head_dim: query width per head.
    """

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(head_dim, 8)
        self.scale = nn.Parameter(torch.ones(1, heads, 1, 1))

    def forward(self, q: Tensor, k: Tensor, shared_bias: Tensor | None) -> Tensor:
        """Inputs:
            q: [b h n d] projected queries including their bias, before the 1/sqrt(d) scaling.
            k: [b h m d] keys (unused, part of the relative-term interface).
            shared_bias: [1 h n m] from ``RelativePositionBias``.

        Returns:
            [b h n m] additive bias.
        """
        if shared_bias is None:
            raise ValueError("GatedRelativeBias needs the shared relative bias of the trunk")
        gates = self.linear(q).unflatten(-1, (2, 4)).sum(-1).sigmoid()  # [b h n 2]
        gate_a, gate_b = gates.chunk(2, dim=-1)  # [b h n 1] each
        gate = gate_a * (gate_b * self.scale - 1.0) + 2.0  # [b h n 1]
        bias: Tensor = gate * shared_bias
        return bias


class KeyQueryRelative(nn.Module):
    """HF BERT's ``relative_key_query`` term: ``(q_l . D[l-r] + k_r . D[l-r]) / sqrt(d)``.

    Computed as two small matmuls against the 2n-1 distances that occur, then gathered into the
    [n m] grid, instead of materialising an [n m d] table of distance vectors.

    Args:
        max_positions: longest supported sequence; the table has ``2*max_positions - 1`` rows.
        head_dim: width of each distance vector.
    """

    def __init__(self, max_positions: int, head_dim: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.distance = nn.Embedding(2 * max_positions - 1, head_dim)

    def forward(self, q: Tensor, k: Tensor, shared_bias: Tensor | None = None) -> Tensor:
        """Inputs:
            q: [b h n d] queries before scaling; k: [b h n d] keys (self-attention only).
            shared_bias: unused, part of the relative-term interface.

        Returns:
            [b h n n] additive bias, already divided by sqrt(d).
        """
        n = q.shape[-2]
        if n > self.max_positions:
            raise ValueError(f"sequence of {n} tokens exceeds max_positions={self.max_positions}")
        # rows for distances l - r = -(n-1) .. n-1; row j holds distance j - (n-1)
        window = self.distance.weight[self.max_positions - n : self.max_positions + n - 1]  # [j d]
        idx = torch.arange(n, device=q.device)
        grid = idx[:, None] - idx[None, :] + (n - 1)  # [n m]  row of distance l - r
        q_dist = q @ window.T  # [b h n j]
        k_dist = k @ window.T  # [b h m j]
        by_query = q_dist.gather(-1, grid.expand(*q_dist.shape[:-1], n))  # [b h n m]
        by_key = k_dist.gather(-1, grid.T.expand(*k_dist.shape[:-1], n))  # [b h m n]
        return (by_query + by_key.transpose(-1, -2)) / math.sqrt(q.shape[-1])


class ConvPositions(nn.Module):
    """wav2vec2/BEATs convolutional positions: a grouped, weight-normalised Conv1d plus GELU.

    The weight is ``g * v / ||v||`` with the norm taken per kernel tap (over output and input
    channels, weight-norm ``dim=2``), stored as ``weight_g`` [1 1 k] and ``weight_v`` [d d/g k]
    so official checkpoints load by name. The trunk adds the output to its input.

    Args:
        dim: channels.
        kernel: kernel size; an even kernel drops the last output frame (SamePad) so the
            length is kept.
        groups: convolution groups.
    """

    def __init__(self, dim: int, kernel: int, groups: int = 16) -> None:
        super().__init__()
        self.kernel = kernel
        self.groups = groups
        v = torch.randn(dim, dim // groups, kernel) * math.sqrt(4.0 / (kernel * dim))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))  # [1 1 k]
        self.bias = nn.Parameter(torch.zeros(dim))

    def weight(self) -> Tensor:
        """The effective [d d/g k] convolution weight."""
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)
        weight: Tensor = self.weight_v * (self.weight_g / norm)
        return weight

    def forward(self, x: Tensor) -> Tensor:
        """Inputs:
            x: [b n d].

        Returns:
            [b n d] positional features (not yet added to x).
        """
        y = rearrange(x, "b n d -> b d n")
        y = F.conv1d(y, self.weight(), self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[..., :-1]  # padding k//2 on both sides yields n+1 frames for an even kernel
        return rearrange(F.gelu(y), "b d n -> b n d")
