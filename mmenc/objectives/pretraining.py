"""The built-in objectives of ``mmenc pretrain``: ``contrastive``, ``masked-modeling`` and
``matching``, implementing :class:`~mmenc.objectives.protocol.Objective` like any plugin's.

Each wraps its loss module (``self.loss``) and runs the model in ``step``; ``forward`` and
``example_inputs`` are the loss module's, so the catalogue's contract checks run on them.
``for_model`` fills in what the model knows (widths, the tokenizer's mask token, a momentum
teacher); it probes a width even when the config gives one, so that a run draws the same
random numbers either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch
from mmenc.errors import ConfigError
from mmenc.objectives.contrastive import ContrastiveLoss
from mmenc.objectives.distill import IGNORE_INDEX
from mmenc.objectives.masked import MaskedModelingLoss
from mmenc.objectives.matching import MatchingLoss
from mmenc.objectives.protocol import SharedStep, StepBatches

_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<cls>", "<sep>", "[CLS]", "[SEP]", "[PAD]")


def step_batches(model: Any, batches: Mapping[str, TokenBatch]) -> StepBatches:
    """``batches`` as the trainer passes them (embeddings computed once per modality); a plain
    mapping gets a step of its own."""
    if isinstance(batches, StepBatches):
        return batches
    return SharedStep(model, batches).view(list(batches))


def probe_width(model: Any, modalities: Sequence[str], kind: str) -> int:
    """The width of ``kind`` (``embed``, ``features`` or ``fused``) of the first modality, from
    a forward pass on the modalities' example items in eval mode (no dropout, so no random
    numbers drawn: the run stays the same whether or not an objective probes)."""
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    device = next(model.parameters()).device
    batches = {m: model.tokenize(resolve(catalogue().get("modality", m).example)()[:2], m)
               .to(device) for m in modalities}
    first = modalities[0]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        if kind == "fused":
            out = model.forward_fused(batches)[first].hidden
        elif kind == "features":
            out = model.forward_features(batches[first], first).hidden
        else:
            out = model.embed(batches[first], first)
    model.train(was_training)
    return int(out.shape[-1])


def pooled(features: Features, how: str) -> Tensor:
    """``[b d]``: the first token's state, or the mean over real tokens."""
    if how == "cls":
        return features.hidden[:, 0]
    from mmenc.nn import masked_mean

    return masked_mean(features.hidden, features.mask)


class ContrastiveObjective(nn.Module):
    """InfoNCE between the embeddings of two modalities (:class:`ContrastiveLoss`); with
    ``momentum``, an exponential moving average of the model is the teacher of the queue and
    the soft targets (``alpha``)."""

    name = "contrastive"
    arity = 2
    params = frozenset({"dim", "dims", "queue_size", "alpha", "temperature", "max_scale",
                        "learn_temperature", "momentum"})

    def __init__(self, dim: int | None = None, dims: Sequence[int] | None = None,
                 queue_size: int = 0, alpha: float = 0.0, temperature: float = 0.07,
                 max_scale: float = 100.0, learn_temperature: bool = True,
                 momentum: float | None = None) -> None:
        super().__init__()
        self.loss = ContrastiveLoss(dim=dim, dims=dims, queue_size=queue_size, alpha=alpha,
                                    temperature=temperature, max_scale=max_scale,
                                    learn_temperature=learn_temperature)
        self.momentum = momentum
        self.teacher: nn.Module | None = None

    @classmethod
    def for_model(cls, model: Any, modalities: list[str],
                  **config: Any) -> ContrastiveObjective:
        if config.get("alpha", 0) and config.get("momentum") is None:
            raise ConfigError("contrastive: alpha > 0 needs a teacher: set momentum (e.g. 0.995)")
        width = probe_width(model, modalities[:1], "embed")
        config.setdefault("dim", width)
        objective = cls(**config)
        if objective.momentum is not None:
            from mmenc.objectives.distill import momentum_copy

            objective.teacher = momentum_copy(model)
        return objective

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
        shared = step_batches(model, batches)
        ma, mb = shared
        a, b = shared.embed(ma), shared.embed(mb)  # [b e]
        a_m = b_m = None
        teacher: Any = self.teacher
        if teacher is not None:
            teacher.eval()  # a teacher gives targets: no dropout
            with torch.no_grad():
                a_m = teacher.embed(shared[ma], ma)
                b_m = teacher.embed(shared[mb], mb)
        loss, logs = self.loss(a, b, a_m, b_m)
        with torch.no_grad():  # kept for a matching objective on the same pair
            sim = self.loss.scale() * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
            shared.similarities[(ma, mb)] = sim  # [b b]
        return loss, logs

    def after_step(self, model: Any) -> None:
        """Move the teacher towards the model: ``p_m <- m p_m + (1 - m) p``."""
        if self.teacher is not None and self.momentum is not None:
            from mmenc.objectives.distill import momentum_update

            momentum_update(model, self.teacher, self.momentum)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        """:class:`ContrastiveLoss`'s forward."""
        return self.loss(*args, **kwargs)  # type: ignore[no-any-return]

    def example_inputs(self) -> dict[str, Tensor]:
        return self.loss.example_inputs()


def token_info(model: Any, modality: str,
               options: Mapping[str, Any]) -> tuple[int, int, list[int]]:
    """``(mask id, vocabulary size, special ids)`` from the options, else the tokenizer."""
    tok = model.tokenizers[modality]
    inner = getattr(tok, "tokenizer", None)
    vocab_of = inner.get_vocab() if inner is not None and hasattr(inner, "get_vocab") else {}
    mask_id = options.get("mask_id", getattr(tok, "mask_id", None))
    if mask_id is None:
        mask_id = next((vocab_of[t] for t in ("<mask>", "[MASK]") if t in vocab_of), None)
    if mask_id is None:
        raise ConfigError(f"masked-modeling on {modality!r}: the tokenizer has no mask token; "
                          "set config.mask_id")
    tower = model.config.get("towers", {}).get(modality, {})
    vocab = options.get("vocab_size", tower.get("vocab_size", getattr(tok, "vocab_size", None)))
    if vocab is None:
        raise ConfigError(f"masked-modeling on {modality!r}: unknown vocabulary size; "
                          "set config.vocab_size")
    special = options.get("special_ids", getattr(tok, "special_ids", None))
    if special is None:
        special = [vocab_of[t] for t in _SPECIAL_TOKENS if t in vocab_of]
    return int(mask_id), int(vocab), [int(i) for i in special]


class MaskedModelingObjective(nn.Module):
    """Mask an id modality (BERT's 80/10/10; pads and ``special_ids`` never), run the model on
    the masked batch and predict the original tokens (:class:`MaskedModelingLoss`)."""

    name = "masked-modeling"
    arity = 1
    params = frozenset({"dim", "vocab_size", "mask_id", "special_ids", "mask_prob",
                        "transform", "ignore_index"})

    def __init__(self, dim: int = 32, vocab_size: int = 64, mask_id: int | None = None,
                 special_ids: Sequence[int] = (), mask_prob: float = 0.15,
                 transform: bool = True, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.loss = MaskedModelingLoss(dim=dim, vocab_sizes=vocab_size, mask_ids=mask_id,
                                       mask_prob=mask_prob, transform=transform,
                                       ignore_index=ignore_index)
        self.special_ids = torch.tensor(list(special_ids), dtype=torch.long)

    @classmethod
    def for_model(cls, model: Any, modalities: list[str],
                  **config: Any) -> MaskedModelingObjective:
        mask_id, vocab, special = token_info(model, modalities[0], config)
        for key in ("mask_id", "vocab_size", "special_ids"):
            config.pop(key, None)
        width = probe_width(model, modalities, "features")
        config.setdefault("dim", width)
        return cls(vocab_size=vocab, mask_id=mask_id, special_ids=special, **config)

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
        ((m, batch),) = batches.items()
        if batch.ids is None:
            raise ConfigError(f"masked-modeling needs token ids, and modality {m!r} has none")
        ids = batch.ids
        mask = (batch.mask if batch.mask is not None
                else torch.ones(ids.shape[:2], dtype=torch.bool, device=ids.device))
        special = ~mask
        if ids.dim() == 2 and self.special_ids.numel():
            special |= torch.isin(ids, self.special_ids.to(ids.device))
        inputs, labels = self.loss.mask(ids, special, generator)
        hidden = model.forward_features(replace(batch, ids=inputs), m).hidden  # [b n d]
        return self.loss(hidden, labels)  # type: ignore[no-any-return]

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        """:class:`MaskedModelingLoss`'s forward."""
        return self.loss(*args, **kwargs)  # type: ignore[no-any-return]

    def example_inputs(self) -> dict[str, Tensor]:
        return self.loss.example_inputs()


class MatchingObjective(nn.Module):
    """Matched pairs against hard negatives drawn from the contrastive similarities of the same
    step (else cosine / ``temperature``), scored on the fused states (``forward_fused``, pooled
    by ``pool``: ``cls`` or ``mean``); a dual encoder scores embedding products
    (:class:`MatchingLoss`)."""

    name = "matching"
    arity = 2
    params = frozenset({"dim", "pool", "temperature"})

    def __init__(self, dim: int = 32, pool: str = "cls", temperature: float = 0.07) -> None:
        super().__init__()
        self.loss = MatchingLoss(dim=dim)
        self.pool, self.temperature = pool, float(temperature)
        self.fused = False

    @classmethod
    def for_model(cls, model: Any, modalities: list[str], **config: Any) -> MatchingObjective:
        fusion = getattr(model, "fusion", None)
        fused = fusion is not None and type(fusion).__name__ != "DualFusion"
        if fused and not hasattr(model, "forward_fused"):
            raise ConfigError(f"matching: {model.recipe} has a fusion but no forward_fused")
        width = probe_width(model, modalities, "fused" if fused else "embed")
        config.setdefault("dim", width)
        objective = cls(**config)
        objective.fused = fused
        return objective

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
        shared = step_batches(model, batches)
        ma, mb = shared
        if (ma, mb) in shared.similarities:
            sim = shared.similarities[(ma, mb)]
        elif (mb, ma) in shared.similarities:
            sim = shared.similarities[(mb, ma)].T
        else:  # the embeddings are kept with their graph: other objectives may need it
            a = F.normalize(shared.embed(ma).detach(), dim=-1)
            b = F.normalize(shared.embed(mb).detach(), dim=-1)
            sim = a @ b.T / self.temperature  # [b b]
        sim = sim.detach()
        if not self.fused:
            return self.loss(sim, a=shared.embed(ma), b=shared.embed(mb),  # type: ignore[no-any-return]
                             generator=generator)
        batch_a, batch_b = shared[ma], shared[mb]

        def fuse(a_idx: Tensor, b_idx: Tensor) -> Tensor:
            states = model.forward_fused({ma: batch_a.select(a_idx), mb: batch_b.select(b_idx)})
            return pooled(states[ma], self.pool)  # [k d]

        return self.loss(sim, fuse=fuse, generator=generator)  # type: ignore[no-any-return]

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        """:class:`MatchingLoss`'s forward."""
        return self.loss(*args, **kwargs)  # type: ignore[no-any-return]

    def example_inputs(self) -> dict[str, Tensor]:
        return self.loss.example_inputs()
