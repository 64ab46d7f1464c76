"""Batches that flow between tokenizers, towers and fusions.

Axis legend: ``b`` batch, ``n`` tokens, ``f`` fields of a compound token, ``d`` model width.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class TokenBatch:
    """A tokenized batch of one modality.

    Attributes:
        ids: ``[b n]`` or ``[b n f]`` integer tokens (text, code, MIDI); None for continuous input.
        values: continuous input (pixels ``[b c h w]``, waveforms ``[b t]``, patches); None for ids.
        mask: ``[b n]`` bool, True for real tokens; None when every position is real.
        pad_id: the pad token of ``ids`` (one per field for compound tokens).
        extras: named side inputs (``token_type_ids``, ``prefix_len``, ...), batch-first tensors.
    """

    ids: Tensor | None = None
    values: Tensor | None = None
    mask: Tensor | None = None
    pad_id: int | tuple[int, ...] = 0
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        ref = self.ids if self.ids is not None else self.values
        assert ref is not None, "empty TokenBatch"
        return int(ref.shape[0])

    def to(self, device: torch.device | str) -> TokenBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            ids=move(self.ids),
            values=move(self.values),
            mask=move(self.mask),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )

    def select(self, index: Tensor | slice) -> TokenBatch:
        """Rows of the batch (``index`` over the batch axis)."""

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return replace(
            self,
            ids=pick(self.ids),
            values=pick(self.values),
            mask=pick(self.mask),
            extras={k: v[index] for k, v in self.extras.items()},
        )

    def padded(self, extra: int) -> TokenBatch:
        """The same batch with ``extra`` pad tokens appended to every row (ids batches only).

        Used by the contract checks: padding must not change the outputs of real tokens.
        """
        if self.ids is None:
            raise ValueError("only id batches can be padded")
        b, n = self.ids.shape[:2]
        tail_shape = (b, extra, *self.ids.shape[2:])
        pad = torch.as_tensor(self.pad_id, dtype=self.ids.dtype).expand(tail_shape)
        mask = self.mask if self.mask is not None else torch.ones(b, n, dtype=torch.bool)
        extras = {}
        for k, v in self.extras.items():
            if v.dim() >= 2 and v.shape[1] == n:
                v = torch.cat([v, v.new_zeros((b, extra, *v.shape[2:]))], dim=1)
            extras[k] = v
        return replace(
            self,
            ids=torch.cat([self.ids, pad.to(self.ids.device)], dim=1),
            mask=torch.cat([mask, mask.new_zeros(b, extra)], dim=1),
            extras=extras,
        )


@dataclass
class Features:
    """A tower's or fusion's output for one modality.

    Attributes:
        hidden: ``[b n d]`` token states.
        mask: ``[b n]`` bool, True for real tokens (None: all real).
        pooled: ``[b d]`` one vector per item, before any projection (None: not defined).
        hidden_states: every layer's output when asked for.
    """

    hidden: Tensor
    mask: Tensor | None = None
    pooled: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None


@runtime_checkable
class Tokenizer(Protocol):
    """Turns loaded raw items of one modality into a :class:`TokenBatch`.

    A tokenizer that owns files (a vocabulary) writes them in ``save`` and is rebuilt by its
    factory from ``(config, directory)``; ``config()`` is what goes into ``config.json``.
    """

    modality: str

    def __call__(self, items: list[object]) -> TokenBatch: ...

    def config(self) -> dict[str, object]: ...

    def save(self, directory: str) -> None: ...


@runtime_checkable
class Tower(Protocol):
    """A module that turns a batch of one modality into token states: mmenc's text and vision
    transformers, a MIDI-BERT or BEATs model, a timm model behind an adapter, anything a plugin
    registers as a tower kind (:class:`mmenc.specs.TowerSpec`).

    ``width`` is the last axis of ``hidden`` (and of ``pooled``): what a projection or a fusion
    after the tower is sized by, known without running the tower.
    """

    @property
    def width(self) -> int: ...

    def forward_features(self, batch: TokenBatch, *,
                         output_hidden_states: bool = False) -> Features: ...
