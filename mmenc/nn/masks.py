"""Attention masks for the trunk: one additive float mask per forward, shared by every layer.

Axis legend (einops):
    b  batch
    h  heads (a mask broadcasts over it with size 1)
    n  query tokens
    m  key tokens (n for self-attention, the context length for cross-attention)
    d  feature dim

Convention: a boolean ``mask`` [b n] is True for a real token (HF ``attention_mask``). Blocked
positions get ``torch.finfo(dtype).min`` rather than ``-inf``: a query row whose keys are all
blocked (a padding row, or a sequence made only of padding) then softmaxes to uniform weights, as
in HF, instead of NaN.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

AttnMode = Literal["bidirectional", "causal", "prefix"]
ATTN_MODES: tuple[str, ...] = ("bidirectional", "causal", "prefix")


def allowed_positions(
    n: int,
    attn_mode: str = "bidirectional",
    mask: Tensor | None = None,
    prefix_len: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """Which key each query may attend to, as a boolean tensor (True = allowed).

    Args:
        n: sequence length.
        attn_mode: "bidirectional", "causal" or "prefix" (bidirectional over the first
            ``prefix_len[b]`` tokens of item b, causal after them).
        mask: [b n] key-padding mask, True = real token.
        prefix_len: [b] integer lengths, required for "prefix".
        device: where to build the mask when ``mask`` does not say.

    Returns:
        [b|1 1 n n] bool, or None when everything is allowed.
    """
    if attn_mode not in ATTN_MODES:
        raise ValueError(f"attn_mode must be one of {ATTN_MODES}, got {attn_mode!r}")
    if mask is not None:
        device = mask.device
    allowed: Tensor | None = None
    if attn_mode != "bidirectional":
        idx = torch.arange(n, device=device)
        allowed = idx[None, :] <= idx[:, None]  # [n m]  key <= query
        if attn_mode == "prefix":
            if prefix_len is None:
                raise ValueError('attn_mode="prefix" needs prefix_len [b]')
            # A query may see every prefix key; for a query inside the prefix that is exactly the
            # bidirectional prefix block, and causality already holds everywhere else.
            in_prefix = idx[None, :] < prefix_len.to(device)[:, None]  # [b m]
            allowed = allowed[None] | in_prefix[:, None, :]  # [b n m]
            allowed = allowed[:, None]  # [b 1 n m]
        else:
            allowed = allowed[None, None]  # [1 1 n m]
    if mask is not None:
        keys = mask.bool()[:, None, None, :]  # [b 1 1 m]
        allowed = keys if allowed is None else allowed & keys
    return allowed


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """Turn a boolean allowed-mask into the additive float mask sdpa expects.

    Inputs:
        allowed: bool, True = may attend, any shape.

    Returns:
        float tensor of the same shape: 0 where allowed, ``finfo(dtype).min`` where blocked.
    """
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


def attention_mask(
    n: int,
    dtype: torch.dtype,
    attn_mode: str = "bidirectional",
    mask: Tensor | None = None,
    prefix_len: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """The additive self-attention mask [b|1 1 n n], or None when nothing is blocked."""
    allowed = allowed_positions(n, attn_mode, mask, prefix_len, device)
    return None if allowed is None else additive_mask(allowed, dtype)


def context_attention_mask(context_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """The additive cross-attention mask [b 1 1 m] for a [b m] context padding mask."""
    if context_mask is None or drop_if_all_real(context_mask) is None:
        return None
    return additive_mask(context_mask.bool()[:, None, None, :], dtype)


def drop_if_all_real(mask: Tensor | None) -> Tensor | None:
    """Return None for a padding mask without padding, so sdpa can use its unmasked kernel.

    The check reads the mask's values (a host sync), so it is skipped while compiling or tracing,
    where a data-dependent branch would break the graph.
    """
    if mask is None:
        return None
    if torch.compiler.is_compiling() or torch.jit.is_tracing():  # type: ignore[attr-defined, no-untyped-call]  # torch: untyped
        return mask
    return None if bool(mask.all()) else mask


def masked_mean(hidden: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over real tokens.

    Inputs:
        hidden: [b n d].
        mask: [b n] bool, True = real token; None averages every token.

    Returns:
        [b d]; an item without real tokens gives zeros, not NaN.
    """
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype)[..., None]  # [b n 1]
    total = (hidden * weights).sum(dim=1)  # [b d]
    count = weights.sum(dim=1).clamp(min=1.0)  # [b 1]
    return total / count
