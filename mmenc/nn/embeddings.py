"""Stems shared by the text and image towers: token and patch embeddings, and the BERT pooler.

Axis legend (einops):
    b  batch
    n  tokens
    d  model width
    c  image channels
    gh, gw  patch-grid height and width
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mmenc.nn.positions import LearnedPositions, padding_aware_position_ids

POSITION_TYPES: tuple[str, ...] = ("absolute", "none")


class TextEmbeddings(nn.Module):
    """Word + learned position + token-type embeddings, then LayerNorm and dropout (BERT/RoBERTa).

    Args:
        vocab_size: rows of the word table.
        dim: model width.
        max_positions: rows of the position table.
        type_vocab_size: rows of the token-type table; 0 for none.
        pad_id: padding token id (used by padding-aware positions).
        eps: LayerNorm epsilon.
        dropout: dropout on the output (training only).
        position_type: "absolute" adds learned positions; "none" leaves positions to the trunk
            (e.g. BERT ``relative_key_query``).
        padding_aware_positions: RoBERTa's ids: real tokens count from ``pad_id + 1`` and pads
            sit at ``pad_id``, so padding never shifts the positions of real tokens.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        pad_id: int = 0,
        eps: float = 1e-12,
        dropout: float = 0.0,
        position_type: str = "absolute",
        padding_aware_positions: bool = False,
    ) -> None:
        super().__init__()
        if position_type not in POSITION_TYPES:
            raise ValueError(
                f"position_type must be one of {POSITION_TYPES}, got {position_type!r}"
            )
        self.pad_id = pad_id
        self.padding_aware_positions = padding_aware_positions
        self.word = nn.Embedding(vocab_size, dim)
        self.position = (
            LearnedPositions(max_positions, dim) if position_type == "absolute" else None
        )
        self.token_type = nn.Embedding(type_vocab_size, dim) if type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Inputs:
            input_ids: [b n] int64.
            token_type_ids: [b n] int64; None means type 0 everywhere.
            position_ids: [b n] int64 to override the default positions.

        Returns:
            [b n d].
        """
        x = self.word(input_ids)  # [b n d]
        if self.token_type is not None:
            if token_type_ids is None:
                x = x + self.token_type.weight[0]  # type 0 everywhere: one broadcast add, no gather
            else:
                x = x + self.token_type(token_type_ids)
        if self.position is not None:
            if position_ids is None:
                if self.padding_aware_positions:
                    position_ids = padding_aware_position_ids(input_ids, self.pad_id)
                else:
                    position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = x + self.position(position_ids)
        out: Tensor = self.drop(self.norm(x))
        return out


class Pooler(nn.Module):
    """BERT's pooler: dense + tanh on the first token.

    Args:
        dim: model width.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, hidden: Tensor) -> Tensor:
        """Inputs: hidden [b n d]. Returns: [b d]."""
        return torch.tanh(self.dense(hidden[:, 0]))


def interpolate_positions(
    weight: Tensor, grid: tuple[int, int], extra_tokens: int, antialias: bool = False
) -> Tensor:
    """Resize a square grid of patch positions bicubically, keeping the leading extra tokens.

    Inputs:
        weight: [extra + g*g d] position table of a square g x g grid.
        grid: the target (gh, gw).
        extra_tokens: leading rows that are not on the grid (the class token).
        antialias: torch's antialiased bicubic (PIL's kernel, which timm uses); it differs from
            the plain one (ALBEF's) even when upsampling.

    Returns:
        [extra + gh*gw d].
    """
    extra, patches = weight[:extra_tokens], weight[extra_tokens:]
    side = math.isqrt(patches.shape[0])
    if side * side != patches.shape[0]:
        raise ValueError(f"{patches.shape[0]} patch positions do not form a square grid")
    if (side, side) == grid:
        return weight
    patches = rearrange(patches, "(gh gw) d -> 1 d gh gw", gh=side)
    patches = F.interpolate(
        patches, size=grid, mode="bicubic", align_corners=False, antialias=antialias
    )
    return torch.cat([extra, rearrange(patches, "1 d gh gw -> (gh gw) d")], dim=0)


class VisionEmbeddings(nn.Module):
    """ViT stem: Conv2d patches, a class token and learned positions, with an optional LayerNorm.

    Images of another size than ``image_size`` get their patch positions resized bicubically
    (class token kept), as ALBEF's ``interpolate_pos_embed`` and timm's dynamic image size do.

    Args:
        image_size: side of the training images in pixels (sets the position grid).
        patch_size: side of a patch.
        dim: model width.
        in_chans: image channels.
        class_token: prepend a learned class token.
        pre_norm: LayerNorm on the embeddings (CLIP's ``ln_pre``).
        patch_bias: bias in the patch projection (CLIP has none).
        eps: LayerNorm epsilon.
        antialias: resize positions with the antialiased bicubic kernel (timm) instead of the
            plain one (ALBEF); see ``interpolate_positions``.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        dim: int,
        in_chans: int = 3,
        class_token: bool = True,
        pre_norm: bool = False,
        patch_bias: bool = True,
        eps: float = 1e-6,
        antialias: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not a multiple of patch_size={patch_size}"
            )
        self.patch_size = patch_size
        self.extra_tokens = int(class_token)
        self.antialias = antialias
        grid = image_size // patch_size
        self.patch = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if class_token else None
        self.position = LearnedPositions(self.extra_tokens + grid * grid, dim)
        self.norm = nn.LayerNorm(dim, eps=eps) if pre_norm else None

    def forward(self, images: Tensor) -> Tensor:
        """Inputs:
            images: [b c H W], H and W multiples of the patch size.

        Returns:
            [b 1+gh*gw d] with a class token, else [b gh*gw d].
        """
        patches = self.patch(images)  # [b d gh gw]
        grid = (patches.shape[-2], patches.shape[-1])
        x = rearrange(patches, "b d gh gw -> b (gh gw) d")
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + interpolate_positions(self.position.weight, grid, self.extra_tokens, self.antialias)
        out: Tensor = self.norm(x) if self.norm is not None else x
        return out
