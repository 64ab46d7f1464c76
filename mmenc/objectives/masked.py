"""Masked token modelling: BERT's 80/10/10 corruption and the cross-entropy on the corrupted
positions, for plain tokens and for compound tokens (several fields per position: MIDI CP /
Octuple, as MIDI-BERT).

Axis legend:
    b  batch
    n  tokens
    f  fields of a compound token
    d  model width
    v  vocabulary (of one field)
    k  selected (masked) positions
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.objectives.distill import IGNORE_INDEX, distill_mlm_loss


def _per_field(value: int | Sequence[int], fields: int, name: str) -> Tensor:
    values = [value] * fields if isinstance(value, int) else list(value)
    if len(values) != fields:
        raise ValueError(f"{name}: {len(values)} values for {fields} fields")
    return torch.tensor(values, dtype=torch.long)


def mask_tokens(ids: Tensor, *, mask_id: int | Sequence[int], vocab_size: int | Sequence[int],
                mask_prob: float = 0.15, special: Tensor | None = None,
                generator: torch.Generator | None = None, mask_ratio: float = 0.8,
                random_ratio: float = 0.1,
                ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """Select positions with probability ``mask_prob`` and corrupt them (BERT's 80/10/10).

    Of the selected positions, ``mask_ratio`` become the mask token, ``random_ratio`` a token
    drawn uniformly from the vocabulary, and the rest stay unchanged (so the model cannot
    assume that an unmasked token is always right). For compound tokens ``[b n f]`` the
    selection and the 80/10/10 draw are per position, so every field of a selected position
    is corrupted together and no field leaks another; random tokens come from each field's
    own vocabulary and masks use each field's own mask id.

    Inputs:
        ids: ``[b n]`` or ``[b n f]`` integer tokens.
        mask_id: the mask token (one per field for compound tokens, or one for all).
        vocab_size: vocabulary size (one per field, or one for all).
        mask_prob: probability that a position is selected.
        special: ``[b n]`` bool, True where a position must never be selected (pads, CLS, SEP).
        generator: random source (on the device of ``ids``).
        mask_ratio, random_ratio: shares of the selected positions replaced by the mask
            token and by a random token.
        ignore_index: the label of positions that were not selected.
    Returns:
        ``(inputs, labels)``: the corrupted ids, and the original ids where selected,
        ``ignore_index`` elsewhere; both shaped like ``ids``.
    """
    compound = ids.dim() == 3
    x = ids if compound else ids.unsqueeze(-1)  # [b n f]
    b, n, f = x.shape
    device = ids.device
    mask_ids = _per_field(mask_id, f, "mask_id").to(device)  # [f]
    vocab = _per_field(vocab_size, f, "vocab_size").to(device)  # [f]

    selected = torch.rand(b, n, generator=generator, device=device) < mask_prob  # [b n]
    if special is not None:
        selected &= ~special.to(device=device, dtype=torch.bool)
    action = torch.rand(b, n, generator=generator, device=device)  # [b n]: which of 80/10/10
    to_mask = selected & (action < mask_ratio)
    to_random = selected & (action >= mask_ratio) & (action < mask_ratio + random_ratio)
    # float64 so that u * vocab stays below vocab for large vocabularies
    u = torch.rand(b, n, f, generator=generator, device=device, dtype=torch.float64)
    random_ids = (u * vocab).long().clamp_max(vocab - 1).to(x.dtype)  # [b n f]

    inputs = torch.where(to_mask[..., None], mask_ids.to(x.dtype).expand(b, n, f), x)
    inputs = torch.where(to_random[..., None], random_ids, inputs)
    labels = torch.where(selected[..., None], x, torch.full_like(x, ignore_index))
    if not compound:
        inputs, labels = inputs.squeeze(-1), labels.squeeze(-1)
    return inputs, labels


def _field_loss(logits: Tensor, labels: Tensor,
                ignore_index: int) -> tuple[Tensor, float, int]:
    """(mean CE over selected positions, correct count, selected count) of one field."""
    v = logits.shape[-1]
    labels = labels.reshape(-1)  # [(b n)]
    keep = labels != ignore_index
    logits = logits.reshape(-1, v)[keep]  # [k v]
    count = int(keep.sum())
    if count == 0:
        # nothing selected: a zero that keeps the graph, instead of CE's 0/0 = NaN
        return logits.sum() * 0.0, 0.0, 0
    loss = F.cross_entropy(logits, labels[keep])
    correct = float((logits.detach().argmax(dim=-1) == labels[keep]).sum())
    return loss, correct, count


def masked_lm_loss(logits: Tensor | list[Tensor], labels: Tensor,
                   ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, dict[str, float]]:
    """Mean cross-entropy over the selected positions (compound: the mean of the fields').

    Inputs:
        logits: ``[b n v]`` (or ``[k v]``); for compound tokens a list of ``f`` such tensors,
            each over its field's vocabulary.
        labels: ``[b n]`` (``[k]``), or ``[b n f]`` (``[k f]``) with a list of logits;
            ``ignore_index`` where nothing is predicted.
        ignore_index: the label of unselected positions.
    Returns:
        ``(loss, logs)``; logs ``loss``, ``acc`` and, for compound tokens, ``acc_{i}`` and
        ``loss_{i}`` per field. With nothing selected the loss is 0 (with a gradient).
    """
    compound = isinstance(logits, list)
    fields = logits if compound else [logits]
    per_field = [labels[..., i] for i in range(len(fields))] if compound else [labels]
    terms = [_field_loss(x, y, ignore_index) for x, y in zip(fields, per_field, strict=True)]
    loss = torch.stack([t[0] for t in terms]).mean()
    count = sum(t[2] for t in terms)
    logs = {"loss": float(loss.detach()),
            "acc": sum(t[1] for t in terms) / count if count else 0.0}
    if compound:
        for i, (field_loss, correct, field_count) in enumerate(terms):
            logs[f"loss_{i}"] = float(field_loss.detach())
            logs[f"acc_{i}"] = correct / field_count if field_count else 0.0
    return loss, logs


class PredictionHead(nn.Module):
    """BERT's masked-token head: dense + GELU + LayerNorm, then a decoder to the vocabulary.

    Args:
        dim: model width ``d``.
        vocab_size: ``v``.
        decoder_weight: a ``[v d]`` parameter to share as the decoder weight (tied to the
            input embedding); None for a decoder of its own.
        transform: whether to apply dense + GELU + LayerNorm first (MIDI-BERT decodes the
            hidden states directly).
        eps: LayerNorm epsilon (BERT's 1e-12).
    """

    def __init__(self, dim: int, vocab_size: int, decoder_weight: nn.Parameter | None = None,
                 transform: bool = True, eps: float = 1e-12) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=eps)
                                       ) if transform else nn.Identity()
        if decoder_weight is not None and tuple(decoder_weight.shape) != (vocab_size, dim):
            raise ValueError(f"decoder_weight is {tuple(decoder_weight.shape)}, expected "
                             f"({vocab_size}, {dim})")
        self.weight = decoder_weight if decoder_weight is not None else nn.Parameter(
            torch.empty(vocab_size, dim).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        """Inputs: hidden ``[... d]``. Returns: logits ``[... v]``."""
        return F.linear(self.transform(hidden), self.weight, self.bias)


class MaskedModelingLoss(nn.Module):
    """Prediction heads (one per field) and the masked-modelling loss on the selected positions.

    The heads run on the selected positions only: the same loss as decoding every position,
    without the ``[b n v]`` GEMM on the tokens that carry no label.

    Args:
        dim: model width ``d``.
        vocab_sizes: the vocabulary size, or one per field for compound tokens.
        decoder_weights: tied decoder weights (one, or one per field; None entries untied).
        transform: dense + GELU + LayerNorm before each decoder.
        mask_ids: mask token(s), enabling :meth:`mask`.
        mask_prob: selection probability of :meth:`mask`.
        ignore_index: the label of unselected positions.
    """

    def __init__(self, dim: int, vocab_sizes: int | Sequence[int],
                 decoder_weights: nn.Parameter | Sequence[nn.Parameter | None] | None = None,
                 transform: bool = True, mask_ids: int | Sequence[int] | None = None,
                 mask_prob: float = 0.15, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.compound = not isinstance(vocab_sizes, int)
        self.vocab_sizes = [vocab_sizes] if isinstance(vocab_sizes, int) else list(vocab_sizes)
        weights = (list(decoder_weights) if isinstance(decoder_weights, Sequence)
                   else [decoder_weights] * len(self.vocab_sizes))
        self.heads = nn.ModuleList(PredictionHead(dim, v, w, transform)
                                   for v, w in zip(self.vocab_sizes, weights, strict=True))
        self.dim, self.mask_ids, self.mask_prob = dim, mask_ids, mask_prob
        self.ignore_index = ignore_index

    def mask(self, ids: Tensor, special: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """:func:`mask_tokens` with this objective's mask ids, vocabularies and probability."""
        if self.mask_ids is None:
            raise ValueError("this objective was built without mask_ids")
        vocab = self.vocab_sizes if self.compound else self.vocab_sizes[0]
        return mask_tokens(ids, mask_id=self.mask_ids, vocab_size=vocab, mask_prob=self.mask_prob,
                           special=special, generator=generator, ignore_index=self.ignore_index)

    def logits(self, hidden: Tensor) -> Tensor | list[Tensor]:
        """``[... d]`` -> ``[... v]``, or a list per field for compound tokens."""
        out = [head(hidden) for head in self.heads]
        return out if self.compound else out[0]

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        b, n = 2, 6
        labels = torch.stack([torch.randint(0, v, (b, n), generator=g) for v in self.vocab_sizes],
                             dim=-1)  # [b n f]
        labels[:, ::2] = self.ignore_index  # every other position unselected
        return {"hidden": torch.randn(b, n, self.dim, generator=g),
                "labels": labels if self.compound else labels[..., 0]}

    def forward(self, hidden: Tensor, labels: Tensor, logits_m: Tensor | list[Tensor] | None = None,
                alpha: float = 0.0) -> tuple[Tensor, dict[str, float]]:
        """Inputs:
            hidden: ``[b n d]`` final hidden states of the corrupted inputs.
            labels: ``[b n]`` (``[b n f]``) from :func:`mask_tokens`.
            logits_m: a momentum teacher's logits for distillation, at every position
                ``[b n v]`` or at the selected ones ``[k v]`` (a list per field); None: none.
            alpha: weight of the teacher's soft labels.
        Returns:
            ``(loss, logs)`` as :func:`masked_lm_loss` (or :func:`distill_mlm_loss`).
        """
        keep = labels != self.ignore_index
        selected = keep.any(dim=-1) if self.compound else keep  # [b n]
        logits = self.logits(hidden[selected])  # [k v] (or a list)
        targets = labels[selected]  # [k] or [k f]
        if logits_m is None or alpha == 0.0:
            return masked_lm_loss(logits, targets, self.ignore_index)
        teacher = [logits_m] if isinstance(logits_m, Tensor) else list(logits_m)
        teacher = [t[selected] if t.dim() == hidden.dim() else t for t in teacher]  # [k v]
        return distill_mlm_loss(logits, teacher if self.compound else teacher[0], targets, alpha,
                                self.ignore_index)
