"""Encoders composed from a stem and a trunk: ``TextTransformer`` and ``VisionTransformer``.

Axis legend (einops):
    b  batch
    n  tokens
    d  model width
"""

from __future__ import annotations

from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch
from mmenc.nn.embeddings import Pooler, TextEmbeddings, VisionEmbeddings
from mmenc.nn.trunk import Trunk, TrunkOutput


class TextTransformer(nn.Module):
    """A BERT/RoBERTa-style text encoder.

    Args:
        embeddings: the token stem.
        trunk: the transformer stack.
        pooler: BERT's pooler; None leaves ``pooled`` empty.
    """

    def __init__(
        self, embeddings: TextEmbeddings, trunk: Trunk, pooler: Pooler | None = None
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.trunk = trunk
        self.pooler = pooler

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """See ``Trunk.set_grad_checkpointing``."""
        self.trunk.set_grad_checkpointing(enable)

    def forward(
        self,
        input_ids: Tensor,
        mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attn_mode: str = "bidirectional",
        prefix_len: Tensor | None = None,
        position_ids: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> TrunkOutput:
        """Inputs:
            input_ids: [b n] int64.
            mask: [b n] bool, True = real token.
            token_type_ids: [b n] int64 or None.
            attn_mode, prefix_len, context, context_mask, output_hidden_states: see ``Trunk``.
            position_ids: [b n] int64 to override the stem's positions.

        Returns:
            ``TrunkOutput``; ``pooled`` [b d] when there is a pooler.
        """
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # [b n d]
        out: TrunkOutput = self.trunk(
            x,
            mask=mask,
            attn_mode=attn_mode,
            prefix_len=prefix_len,
            context=context,
            context_mask=context_mask,
            output_hidden_states=output_hidden_states,
        )
        if self.pooler is not None:
            out.pooled = self.pooler(out.last_hidden_state)
        return out

    @property
    def width(self) -> int:
        """The width ``d`` of the token states."""
        return int(self.embeddings.word.embedding_dim)

    def forward_features(self, batch: TokenBatch, *,
                         output_hidden_states: bool = False) -> Features:
        """The tower protocol (:class:`mmenc.batch.Tower`) on a batch of token ids ``[b n]``
        (``token_type_ids`` from the batch's extras): hidden ``[b n d]``, the batch's mask,
        ``pooled`` from the pooler when there is one."""
        if batch.ids is None:
            raise ValueError("a text tower reads token ids [b n], got a batch without ids")
        out = self(batch.ids, mask=batch.mask, token_type_ids=batch.extras.get("token_type_ids"),
                   output_hidden_states=output_hidden_states)
        return Features(out.last_hidden_state, batch.mask, getattr(out, "pooled", None),
                        out.hidden_states)


class VisionTransformer(nn.Module):
    """A ViT image encoder; ``pooled`` is the class token of the output (when there is one).

    Args:
        embeddings: the patch stem.
        trunk: the transformer stack (pre-norm with a final norm for timm/CLIP ViTs).
    """

    def __init__(self, embeddings: VisionEmbeddings, trunk: Trunk) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.trunk = trunk

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """See ``Trunk.set_grad_checkpointing``."""
        self.trunk.set_grad_checkpointing(enable)

    def forward(self, images: Tensor, output_hidden_states: bool = False) -> TrunkOutput:
        """Inputs:
            images: [b c H W].
            output_hidden_states: also return every layer's output.

        Returns:
            ``TrunkOutput``; ``pooled`` [b d] is the class token when the stem has one.
        """
        out: TrunkOutput = self.trunk(self.embeddings(images),
                                      output_hidden_states=output_hidden_states)
        if self.embeddings.cls_token is not None:
            out.pooled = out.last_hidden_state[:, 0]
        return out

    @property
    def width(self) -> int:
        """The width ``d`` of the token states."""
        return int(self.embeddings.patch.out_channels)

    def forward_features(self, batch: TokenBatch, *,
                         output_hidden_states: bool = False) -> Features:
        """The tower protocol (:class:`mmenc.batch.Tower`) on a batch of pixels ``[b c H W]``:
        hidden ``[b n d]`` (class token first when there is one), no mask, no ``pooled``
        (a tower encoder pools with ``cls`` or ``mean``)."""
        if batch.values is None:
            raise ValueError("a vision tower reads pixels [b c H W], got a batch without values")
        out = self(batch.values, output_hidden_states=output_hidden_states)
        return Features(out.last_hidden_state, None, None, out.hidden_states)
