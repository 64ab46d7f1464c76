"""Objectives glued to a model: each task turns a step's batches into one objective's
``(loss, logs)``, and :class:`TrainModule` sums them with their weights.

The whole :class:`TrainModule` (model + objectives' heads, temperatures, queues, teachers) is
what DistributedDataParallel wraps, so every learnable tensor is averaged over the ranks.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch
from mmenc.errors import ConfigError
from mmenc.model import Encoder
from mmenc.train.config import ObjectiveConfig

_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<cls>", "<sep>", "[CLS]", "[SEP]", "[PAD]")


class StepCache:
    """One step's batches, and what several objectives share: each modality's embedding is
    computed once, and contrastive similarities are kept for the matching negatives."""

    def __init__(self, model: Encoder, batches: dict[str, TokenBatch]) -> None:
        self.model, self.batches = model, batches
        self._embeddings: dict[str, Tensor] = {}
        self.sims: dict[tuple[str, str], Tensor] = {}

    def embed(self, modality: str) -> Tensor:
        if modality not in self._embeddings:
            self._embeddings[modality] = self.model.embed(self.batches[modality], modality)
        return self._embeddings[modality]


class Task(nn.Module):
    """One weighted objective on one or two modalities.

    Args:
        label: the name its metrics are logged under.
        weight: its share of the total loss.
        modalities: the modalities it reads.
        seed: seeds the generator of its random choices (masks, negatives).
        device: where the generator draws (the model's device).
    """

    def __init__(self, label: str, weight: float, modalities: list[str], seed: str,
                 device: torch.device) -> None:
        super().__init__()
        self.label, self.weight, self.modalities = label, weight, list(modalities)
        digest = hashlib.sha256(f"{seed}/{label}".encode()).hexdigest()
        self.generator = torch.Generator(device=device).manual_seed(int(digest[:15], 16))

    def forward(self, model: Encoder, cache: StepCache) -> tuple[Tensor, dict[str, float]]:
        """Inputs:
            model: the encoder being trained (unwrapped).
            cache: this step's batches and shared embeddings.
        Returns:
            ``(loss, logs)`` of the objective.
        """
        raise NotImplementedError

    def after_step(self, model: Encoder) -> None:
        """Called after each optimiser step (momentum teachers move here)."""


class ContrastiveTask(Task):
    """InfoNCE between the embeddings of two modalities; with ``momentum`` in the config, an
    exponential moving average of the model is the teacher of the queue and soft targets."""

    def __init__(self, objective: nn.Module, model: Encoder, momentum: float | None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objective = objective
        self.momentum = momentum
        self.teacher: nn.Module | None = None
        if momentum is not None:
            from mmenc.objectives.distill import momentum_copy

            self.teacher = momentum_copy(model)

    def forward(self, model: Encoder, cache: StepCache) -> tuple[Tensor, dict[str, float]]:
        ma, mb = self.modalities
        a, b = cache.embed(ma), cache.embed(mb)  # [b e]
        a_m = b_m = None
        if self.teacher is not None:
            self.teacher.eval()  # a teacher gives targets: no dropout
            with torch.no_grad():
                a_m = self.teacher.embed(cache.batches[ma], ma)
                b_m = self.teacher.embed(cache.batches[mb], mb)
        loss, logs = self.objective(a, b, a_m, b_m)
        with torch.no_grad():
            scale = self.objective.scale()
            cache.sims[(ma, mb)] = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
        return loss, logs

    def after_step(self, model: Encoder) -> None:
        if self.teacher is not None and self.momentum is not None:
            from mmenc.objectives.distill import momentum_update

            momentum_update(model, self.teacher, self.momentum)


class MaskedModelingTask(Task):
    """Mask an id modality (BERT's 80/10/10), run the model on the masked batch and predict
    the original tokens with the objective's heads."""

    def __init__(self, objective: nn.Module, special_ids: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objective = objective
        self.special_ids = torch.tensor(special_ids, dtype=torch.long)

    def forward(self, model: Encoder, cache: StepCache) -> tuple[Tensor, dict[str, float]]:
        (m,) = self.modalities
        batch = cache.batches[m]
        if batch.ids is None:
            raise ConfigError(f"masked-modeling needs token ids, and modality {m!r} has none")
        ids = batch.ids
        mask = (batch.mask if batch.mask is not None
                else torch.ones(ids.shape[:2], dtype=torch.bool, device=ids.device))
        special = ~mask
        if ids.dim() == 2 and self.special_ids.numel():
            special |= torch.isin(ids, self.special_ids.to(ids.device))
        inputs, labels = self.objective.mask(ids, special, self.generator)
        hidden = model.forward_features(replace(batch, ids=inputs), m).hidden  # [b n d]
        return self.objective(hidden, labels)  # type: ignore[no-any-return]


class MatchingTask(Task):
    """Matched pairs against hard negatives drawn from the contrastive similarities, scored on
    the fused states (``forward_fused``, pooled); a dual encoder scores embedding products."""

    def __init__(self, objective: nn.Module, fused: bool, pool: str, temperature: float,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objective, self.fused = objective, fused
        self.pool, self.temperature = pool, temperature

    def forward(self, model: Encoder, cache: StepCache) -> tuple[Tensor, dict[str, float]]:
        ma, mb = self.modalities
        if (ma, mb) in cache.sims:
            sim = cache.sims[(ma, mb)]
        elif (mb, ma) in cache.sims:
            sim = cache.sims[(mb, ma)].T
        else:  # the embeddings are cached with their graph: other objectives may need it
            a = F.normalize(cache.embed(ma).detach(), dim=-1)
            b = F.normalize(cache.embed(mb).detach(), dim=-1)
            sim = a @ b.T / self.temperature  # [b b]
        sim = sim.detach()
        if not self.fused:
            return self.objective(sim, a=cache.embed(ma), b=cache.embed(mb),  # type: ignore[no-any-return]
                                  generator=self.generator)
        batch_a, batch_b = cache.batches[ma], cache.batches[mb]

        def fuse(a_idx: Tensor, b_idx: Tensor) -> Tensor:
            states = model.forward_fused({ma: batch_a.select(a_idx), mb: batch_b.select(b_idx)})
            return pooled(states[ma], self.pool)  # [k d]

        return self.objective(sim, fuse=fuse, generator=self.generator)  # type: ignore[no-any-return]


class StepTask(Task):
    """An objective that runs the model itself: its module's
    ``step(model, batch, modality, generator) -> (loss, logs)`` reads one modality's batch (a
    plugin objective that needs another attention mode or its own corruption of the tokens);
    with ``arity = 2`` on the module, ``step(model, {modality: batch}, (a, b), generator)``
    reads a pair of modalities (a model's own multi-objective pre-training step)."""

    def __init__(self, objective: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objective = objective

    def forward(self, model: Encoder, cache: StepCache) -> tuple[Tensor, dict[str, float]]:
        if len(self.modalities) == 1:
            (m,) = self.modalities
            return self.objective.step(model, cache.batches[m], m, self.generator)  # type: ignore[no-any-return,operator]
        batches = {m: cache.batches[m] for m in self.modalities}
        return self.objective.step(model, batches, tuple(self.modalities), self.generator)  # type: ignore[no-any-return,operator]


def pooled(features: Features, how: str) -> Tensor:
    """``[b d]``: the first token's state, or the mean over real tokens."""
    if how == "cls":
        return features.hidden[:, 0]
    from mmenc.nn import masked_mean

    return masked_mean(features.hidden, features.mask)  # type: ignore[no-any-return]


class TrainModule(nn.Module):
    """The model and its tasks; ``forward`` is one step's weighted total loss.

    Args:
        model: the encoder.
        tasks: label -> task.
    """

    def __init__(self, model: Encoder, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.model = model
        self.tasks = nn.ModuleDict(tasks)

    def forward(self, batches: dict[str, TokenBatch]) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs:
            batches: modality -> this rank's batch.
        Returns:
            ``(total, losses)``: the weighted sum, and each task's loss and logs as 0-d tensors
            (``"{label}/{key}"``), ready to be averaged over ranks.
        """
        cache = StepCache(self.model, batches)
        total: Tensor | None = None
        out: dict[str, Tensor] = {}
        for label, task in self.tasks.items():
            loss, logs = task(self.model, cache)
            total = task.weight * loss if total is None else total + task.weight * loss
            out[f"{label}/loss"] = loss.detach().float()
            for key, value in logs.items():
                if key != "loss":
                    out[f"{label}/{key}"] = torch.tensor(float(value), device=loss.device)
        assert total is not None
        return total, out

    def after_step(self) -> None:
        for task in self.tasks.values():
            task.after_step(self.model)  # type: ignore[operator]


# -- building -----------------------------------------------------------------------------
def _probe(model: Encoder, modalities: list[str], kind: str) -> int:
    """The width of ``kind`` (``embed``, ``features`` or ``fused``) of the first modality, from
    a forward pass on the modalities' example items in eval mode (no dropout, so no random
    numbers drawn: the run stays the same whether or not a task probes)."""
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
            out = model.forward_fused(batches)[first].hidden  # type: ignore[attr-defined]
        elif kind == "features":
            out = model.forward_features(batches[first], first).hidden
        else:
            out = model.embed(batches[first], first)
    model.train(was_training)
    return int(out.shape[-1])


def _token_info(model: Encoder, modality: str,
                options: dict[str, Any]) -> tuple[int, int, list[int]]:
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


def build_task(spec: ObjectiveConfig, model: Encoder, seed: int, rank: int = 0) -> Task:
    """The task of one objective entry, its objective built by the catalogue factory; its
    random choices are seeded by ``seed``, its label and ``rank``."""
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    factory = resolve(catalogue().get("objective", spec.name).factory)
    options = dict(spec.config)
    common = {"label": spec.label or spec.name, "weight": spec.weight,
              "modalities": spec.modalities, "seed": f"{seed}/{rank}",
              "device": next(model.parameters()).device}
    if spec.name == "contrastive":
        momentum = options.pop("momentum", None)
        if options.get("alpha", 0) and momentum is None:
            raise ConfigError(f"{common['label']}: alpha > 0 needs a teacher: set momentum "
                              "(e.g. 0.995)")
        options.setdefault("dim", _probe(model, spec.modalities[:1], "embed"))
        return ContrastiveTask(factory(**options), model, momentum, **common)
    if spec.name == "masked-modeling":
        mask_id, vocab, special = _token_info(model, spec.modalities[0], options)
        for key in ("mask_id", "vocab_size", "special_ids"):
            options.pop(key, None)
        options.setdefault("dim", _probe(model, spec.modalities, "features"))
        return MaskedModelingTask(factory(vocab_sizes=vocab, mask_ids=mask_id, **options),
                                  special, **common)
    if spec.name != "matching":
        objective = factory(**options)
        if not callable(getattr(objective, "step", None)):
            raise ConfigError(f"{common['label']}: objective {spec.name!r} has no "
                              "step(model, batch, modality, generator) to train with")
        arity = int(getattr(objective, "arity", 1))
        if len(spec.modalities) != arity:
            raise ConfigError(f"{common['label']}: {spec.name} reads {arity} modalit"
                              f"{'y' if arity == 1 else 'ies'}, got {spec.modalities}")
        return StepTask(objective, **common)
    pool, temperature = options.pop("pool", "cls"), float(options.pop("temperature", 0.07))
    fusion = getattr(model, "fusion", None)
    fused = fusion is not None and type(fusion).__name__ != "DualFusion"
    if fused and not hasattr(model, "forward_fused"):
        raise ConfigError(f"matching: {model.recipe} has a fusion but no forward_fused")
    options.setdefault("dim", _probe(model, spec.modalities, "fused" if fused else "embed"))
    return MatchingTask(factory(**options), fused, pool, temperature, **common)

