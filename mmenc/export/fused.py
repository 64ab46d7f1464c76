"""Self-attention exported as ONNX Runtime's fused ``com.microsoft.Attention`` node.

Traced as is, ``F.scaled_dot_product_attention`` becomes a dozen small nodes per layer
(shape arithmetic, two scalings, transposes, the mask addition, softmax) that ONNX Runtime's
optimiser does not recognise. While :func:`fused_attention` is active, every
:class:`mmenc.nn.SelfAttention` without a relative-position term is traced as one
``Attention`` node: the packed ``qkv`` GEMM, the softmax and the value product in one CPU
kernel, with the trunk's additive mask passed as its ``attention_bias``. The eager result is
computed by the module's own code, so tracing sees the same values.

Modules with a relative term (BEATs' gated bias reads the queries) or asking sdpa for
causality keep the traced decomposition.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.nn.attention import SelfAttention

DOMAIN = "com.microsoft"


def _eager(x: Tensor, weight: Tensor, bias: Tensor, heads: int,
           attn_mask: Tensor | None) -> Tensor:
    b, n, _ = x.shape
    qkv = F.linear(x, weight, bias).reshape(b, n, 3, heads, -1)  # [b n 3 h d]
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [b h n d]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask)  # [b h n d]
    return out.transpose(1, 2).reshape(b, n, -1)  # [b n h*d]


def _transposed(g: Any, weight: Any) -> Any:
    return g.op("Transpose", weight, perm_i=[1, 0])  # [dim 3*dim]: q | k | v columns


class _Attention(torch.autograd.Function):
    """Eager: packed projection and sdpa; exported: one ``com.microsoft.Attention`` node.
    Both return the heads concatenated, before the output projection."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, heads: int) -> Tensor:
        return _eager(x, weight, bias, heads, None)

    @staticmethod
    def symbolic(g: Any, x: Any, weight: Any, bias: Any, heads: int) -> Any:
        return g.op(f"{DOMAIN}::Attention", x, _transposed(g, weight), bias, num_heads_i=heads)


class _MaskedAttention(torch.autograd.Function):
    """:class:`_Attention` with the trunk's additive mask: a key-padding mask ``[b 1 1 m]``
    goes in as ``mask_index`` (``[b m]`` int32, 1 = real key), any other ``[b|1 1 n m]`` mask
    as ``attention_bias``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, attn_mask: Tensor,
                heads: int, padding_only: bool) -> Tensor:
        return _eager(x, weight, bias, heads, attn_mask)

    @staticmethod
    def symbolic(g: Any, x: Any, weight: Any, bias: Any, attn_mask: Any, heads: int,
                 padding_only: bool) -> Any:
        from torch.onnx.symbolic_helper import _optional_input_placeholder_tensor

        if padding_only:  # [b 1 1 m] additive -> [b m] int32 keys
            keys = g.op("Squeeze", attn_mask, g.op("Constant", value_t=torch.tensor([1, 2])))
            zero = g.op("Constant", value_t=torch.tensor(0.0))
            real = g.op("Equal", keys, g.op("CastLike", zero, keys))
            mask_index = g.op("Cast", real, to_i=6)  # INT32
            return g.op(f"{DOMAIN}::Attention", x, _transposed(g, weight), bias, mask_index,
                        num_heads_i=heads)
        none = _optional_input_placeholder_tensor(g)
        return g.op(f"{DOMAIN}::Attention", x, _transposed(g, weight), bias, none, none,
                    attn_mask, num_heads_i=heads)  # mask_index, past, attention_bias


_ORIGINAL = SelfAttention.forward


def _fusable(module: nn.Module) -> bool:
    return (isinstance(module, SelfAttention) and module.relative is None
            and module.qkv.bias is not None)


def _fused_forward(self: SelfAttention, x: Tensor, attn_mask: Tensor | None = None,
                   shared_bias: Tensor | None = None, is_causal: bool = False) -> Tensor:
    if not _fusable(self) or is_causal or self.training:
        return _ORIGINAL(self, x, attn_mask, shared_bias, is_causal)
    if attn_mask is None:
        # torch's Function.apply is unannotated
        heads = _Attention.apply(x, self.qkv.weight, self.qkv.bias, self.heads)  # type: ignore[no-untyped-call]
    else:
        padding_only = attn_mask.dim() == 4 and attn_mask.shape[2] == 1
        if not padding_only:  # the node wants the query axis spelled out
            attn_mask = attn_mask.expand(-1, -1, x.shape[1], -1)
        heads = _MaskedAttention.apply(  # type: ignore[no-untyped-call]
            x, self.qkv.weight, self.qkv.bias, attn_mask, self.heads, padding_only)
    return self.out(heads)  # type: ignore[no-any-return]


@contextmanager
def fused_attention(model: nn.Module) -> Iterator[int]:
    """Trace ``model``'s plain self-attention layers as fused nodes; yields how many."""
    count = sum(_fusable(m) for m in model.modules())
    SelfAttention.forward = _fused_forward  # type: ignore[method-assign]
    try:
        yield count
    finally:
        SelfAttention.forward = _ORIGINAL  # type: ignore[method-assign]
