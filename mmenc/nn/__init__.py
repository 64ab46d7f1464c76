"""The shared transformer trunk of mmenc and the stems built on it.

``TrunkConfig`` + ``build_trunk`` make a ``Trunk``; ``TextTransformer`` and ``VisionTransformer``
put a stem (``TextEmbeddings``, ``VisionEmbeddings``) in front of one.
"""

from mmenc.nn.attention import CrossAttention, SelfAttention
from mmenc.nn.block import ACTIVATIONS, Block, FeedForward, deepnorm_alpha
from mmenc.nn.embeddings import Pooler, TextEmbeddings, VisionEmbeddings, interpolate_positions
from mmenc.nn.encoders import TextTransformer, VisionTransformer
from mmenc.nn.init import init_weights
from mmenc.nn.masks import additive_mask, allowed_positions, attention_mask, masked_mean
from mmenc.nn.positions import (
    ConvPositions,
    GatedRelativeBias,
    KeyQueryRelative,
    LearnedPositions,
    RelativePositionBias,
    padding_aware_position_ids,
    relative_position_bucket,
)
from mmenc.nn.trunk import Trunk, TrunkConfig, TrunkOutput, build_trunk

__all__ = [
    "ACTIVATIONS",
    "Block",
    "ConvPositions",
    "CrossAttention",
    "FeedForward",
    "GatedRelativeBias",
    "KeyQueryRelative",
    "LearnedPositions",
    "Pooler",
    "RelativePositionBias",
    "SelfAttention",
    "TextEmbeddings",
    "TextTransformer",
    "Trunk",
    "TrunkConfig",
    "TrunkOutput",
    "VisionEmbeddings",
    "VisionTransformer",
    "additive_mask",
    "allowed_positions",
    "attention_mask",
    "build_trunk",
    "deepnorm_alpha",
    "init_weights",
    "interpolate_positions",
    "masked_mean",
    "padding_aware_position_ids",
    "relative_position_bucket",
]
