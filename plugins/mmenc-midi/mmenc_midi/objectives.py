"""Training objectives and task heads of MIDI-BERT and Adversarial-MidiBERT.

- :class:`CompoundMLM` (:func:`compound_mlm`): MIDI-BERT's masked modelling over compound
  tokens, mmenc's :class:`~mmenc.objectives.masked.MaskedModelingLoss` with one linear decoder
  per field (no transform, as MIDI-BERT's ``MLM`` head), 15% of the positions, 80/10/10 with
  each field's own mask id and vocabulary; its ``step`` lets ``mmenc pretrain`` train it.
- :class:`AdversarialMasker`: Adversarial-MidiBERT's learned masker. A small head scores every
  note from the encoder's states on the clean input; the notes to corrupt are the top-scored
  ones (a random 10-30% of the allowed notes, at most 15% of the sequence), so the masker picks
  what the encoder finds hard. The masker is trained towards 1 on the corrupted notes with the
  highest reconstruction loss and towards 0 on those with the lowest (MSE), while the encoder
  minimises the reconstruction loss: the two play against each other. A *mask book* per
  training item freezes notes the masker keeps choosing and frees random ones again.
- :func:`mask_finetune_inputs`: mask fine-tuning, 15% of the notes corrupted (mask / random) in
  fine-tuning inputs, the corrupted notes left out of token-level losses.
- :class:`SequenceClassifier` (composer, genre, emotion: MIDI-BERT's attentive pooling with
  ``r`` heads, then an MLP) and :class:`TokenClassifier` (melody / velocity per note).

Axis legend: ``b`` batch, ``n`` notes, ``f`` fields, ``d`` width, ``r`` pooling heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmenc.batch import TokenBatch
from mmenc.objectives.distill import IGNORE_INDEX
from mmenc.objectives.masked import MaskedModelingLoss, mask_tokens
from torch import Tensor, nn

from mmenc_midi.vocab import load_vocab


class CompoundMLM(MaskedModelingLoss):
    """MIDI-BERT's compound masked modelling as an objective that ``mmenc pretrain`` trains
    (catalogue name ``compound-mlm``): :meth:`step` corrupts the real notes of a batch and
    predicts every field of the selected ones with one linear decoder per field.

    Args:
        scheme: ``cp`` or ``octuple`` (the model's dictionary).
        dim: the encoder's width.
        mask_prob: share of the real notes selected (80% mask / 10% random / 10% kept).
        ignore_index: the label of unselected notes.
    """

    name = "compound-mlm"
    arity = 1
    params = frozenset({"scheme", "dim", "mask_prob"})

    def __init__(self, scheme: str = "cp", dim: int = 32, mask_prob: float = 0.15,
                 ignore_index: int = IGNORE_INDEX) -> None:
        vocab = load_vocab(scheme)
        super().__init__(dim=dim, vocab_sizes=list(vocab.sizes), transform=False,
                         mask_ids=list(vocab.mask_ids), mask_prob=mask_prob,
                         ignore_index=ignore_index)
        self.scheme = scheme

    def logits(self, hidden: Tensor) -> list[Tensor]:
        """``[... d]`` -> one ``[... v_i]`` per field."""
        return [head(hidden) for head in self.heads]

    @classmethod
    def for_model(cls, model: Any, modalities: list[str], **config: Any) -> CompoundMLM:
        """The objective for ``model``'s MIDI-BERT encoder: ``scheme`` and ``dim`` default to
        the encoder's dictionary and width."""
        encoder = midi_encoder(model, modalities[0], config.get("dim"), cls.name)
        config.setdefault("scheme", encoder.config.get("scheme", "cp"))
        config.setdefault("dim", encoder.width)
        return cls(**config)

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """One pretraining loss on the batch of the entry's modality (what ``mmenc pretrain``
        calls); the model is a MIDI-BERT recipe or a model whose ``towers[modality]`` is one."""
        ((modality, batch),) = batches.items()
        if batch.ids is None or batch.ids.dim() != 3:
            raise ValueError("compound-mlm needs compound ids [b n f]")
        return mlm_step(midi_encoder(model, modality, self.dim, self.name), self, batch,
                        generator)


def compound_mlm(scheme: str = "cp", dim: int = 32, mask_prob: float = 0.15,
                 **config: Any) -> CompoundMLM:
    """MIDI-BERT's compound masked modelling for the ``cp`` or ``octuple`` dictionary."""
    return CompoundMLM(scheme, dim, mask_prob, **config)


def midi_encoder(model: Any, modality: str, dim: int | None, objective: str) -> Any:
    """The MIDI-BERT encoder of ``model`` for ``modality`` (``model`` itself, or its tower),
    checked to be ``dim`` wide (None: any width)."""
    towers = getattr(model, "towers", None)
    encoder = towers[modality] if towers is not None and modality in towers else model
    if not callable(getattr(encoder, "forward_ids", None)):
        raise TypeError(f"{objective} trains MIDI-BERT encoders; "
                        f"{getattr(model, 'recipe', type(model).__name__)!r} has none for "
                        f"{modality!r}")
    width = getattr(encoder, "width", dim)
    if dim is not None and width != dim:
        raise ValueError(f"{objective} was built for width {dim}, the encoder is {width} "
                         f"wide: set config.dim: {width}")
    return encoder


def mlm_step(model: Any, objective: MaskedModelingLoss, batch: TokenBatch,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """One masked-modelling loss on a batch: corrupt real notes, encode, predict every field."""
    assert batch.ids is not None
    real = batch.mask if batch.mask is not None else model.attention_mask(batch.ids)
    inputs, labels = objective.mask(batch.ids, special=~real, generator=generator)
    hidden = model.forward_ids(inputs, real).hidden
    return objective(hidden, labels)


def token_losses(logits: list[Tensor], targets: Tensor,
                 weights: Sequence[float] | None = None) -> Tensor:
    """Per-note reconstruction loss: the (weighted) sum over fields of the cross-entropy,
    ``[b n]`` from a list of ``[b n v_i]`` logits and ``[b n f]`` targets."""
    f = len(logits)
    w = [1.0 / f] * f if weights is None else list(weights)
    total = torch.zeros(targets.shape[:2], device=targets.device)
    for i, x in enumerate(logits):
        ce = F.cross_entropy(x.flatten(0, 1), targets[..., i].flatten(), reduction="none")
        total = total + w[i] * ce.view(targets.shape[:2])
    return total


class AdversarialMasker(nn.Module):
    """Adversarial-MidiBERT's masker head, its note selection and its loss.

    Args:
        dim: encoder width.
        vocab_sizes: per field, for random replacement tokens.
        mask_ids: per field mask ids.
        hidden: width of the scoring MLP.
        dropout: dropout before the MLP.
        share: range of the share of allowed notes selected per item.
        max_prob: at most this share of the sequence is selected.
        target_share: share of the selected notes used as positive and as negative targets.
    """

    def __init__(self, dim: int = 32, vocab_sizes: Sequence[int] = (4, 18, 88, 66),
                 mask_ids: Sequence[int] = (3, 17, 87, 65), hidden: int = 256,
                 dropout: float = 0.1, share: tuple[float, float] = (0.1, 0.3),
                 max_prob: float = 0.15, target_share: float = 0.3) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 1), nn.Sigmoid())
        self.vocab_sizes, self.mask_ids = list(vocab_sizes), list(mask_ids)
        self.share, self.max_prob, self.target_share = share, max_prob, target_share
        self.dim = dim

    def scores(self, hidden: Tensor) -> Tensor:
        """``[b n d]`` clean-input states -> ``[b n]`` masking scores in (0, 1)."""
        return self.head(hidden).squeeze(-1)

    @torch.no_grad()
    def select(self, scores: Tensor, allowed: Tensor,
               generator: torch.Generator | None = None) -> Tensor:
        """``[b n]`` bool: per item the top-scored allowed notes, ``U(share)`` of the allowed
        ones and at most ``max_prob`` of the sequence."""
        b, n = scores.shape
        chosen = torch.zeros(b, n, dtype=torch.bool, device=scores.device)
        device = generator.device if generator is not None else scores.device
        draw = torch.rand(b, generator=generator, device=device).tolist()
        for i in range(b):
            k = int((self.share[0] + draw[i] * (self.share[1] - self.share[0]))
                    * int(allowed[i].sum()))
            k = min(k, int(n * self.max_prob))
            if k > 0:
                s = scores[i].masked_fill(~allowed[i], float("-inf"))
                chosen[i, s.topk(k).indices] = True
        return chosen

    @torch.no_grad()
    def corrupt(self, ids: Tensor, chosen: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """80/10/10 on the chosen notes.

        Returns:
            ``(inputs [b n f], labels [b n f] (IGNORE_INDEX where not chosen),
            corrupted [b n] (masked or replaced, not the unchanged 10%))``.
        """
        inputs, labels = mask_tokens(ids, mask_id=self.mask_ids, vocab_size=self.vocab_sizes,
                                     mask_prob=1.0, special=~chosen, generator=generator)
        corrupted = (inputs != ids).any(dim=-1)
        return inputs, labels, corrupted

    def forward(self, scores: Tensor, token_loss: Tensor,
                corrupted: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The masker's loss: MSE towards 1 on the corrupted notes the encoder reconstructs
        worst, towards 0 on those it reconstructs best (``target_share`` of them each).

        Inputs:
            scores: ``[b n]`` from :meth:`scores` (with gradient).
            token_loss: ``[b n]`` reconstruction loss per note (its gradient is not used).
            corrupted: ``[b n]`` bool.
        """
        token_loss = token_loss.detach()
        terms = []
        for i in range(scores.shape[0]):
            idx = corrupted[i].nonzero().squeeze(-1)
            k = int(self.target_share * len(idx))
            if k == 0:
                continue
            order = token_loss[i, idx].argsort(descending=True)
            hard, easy = idx[order[:k]], idx[order[-k:]]
            terms.append(F.mse_loss(scores[i, hard], torch.ones_like(scores[i, hard]))
                         + F.mse_loss(scores[i, easy], torch.zeros_like(scores[i, easy])))
        loss = torch.stack(terms).mean() if terms else scores.sum() * 0.0
        return loss, {"masker_loss": float(loss.detach()),
                      "masked_share": float(corrupted.float().mean())}


class _MaskerObjective(nn.Module):
    """The masker as a catalogue objective: ``forward(hidden, token_loss, corrupted)``."""

    def __init__(self, masker: AdversarialMasker) -> None:
        super().__init__()
        self.masker = masker

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        b, n = 2, 20
        return {"hidden": torch.randn(b, n, self.masker.dim, generator=g),
                "token_loss": torch.rand(b, n, generator=g),
                "corrupted": torch.rand(b, n, generator=g) < 0.5}

    def forward(self, hidden: Tensor, token_loss: Tensor,
                corrupted: Tensor) -> tuple[Tensor, dict[str, float]]:
        return self.masker(self.masker.scores(hidden), token_loss, corrupted)


def adversarial_masker(scheme: str = "cp", dim: int = 32, **config: Any) -> _MaskerObjective:
    """Catalogue factory of the adversarial masker for the ``cp`` or ``octuple`` dictionary."""
    vocab = load_vocab(scheme)
    return _MaskerObjective(AdversarialMasker(dim, list(vocab.sizes), list(vocab.mask_ids),
                                              **config))


def adversarial_step(model: Any, mlm: MaskedModelingLoss, masker: AdversarialMasker,
                     batch: TokenBatch, mask_book: Tensor | None = None,
                     generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """One Adversarial-MidiBERT pretraining loss: masker scores on the clean input, top-scored
    notes corrupted, reconstruction loss for the encoder and MLM heads, masker loss for the
    masker (and, through its scores, the shared encoder).

    Inputs:
        mask_book: ``[b n]`` bool, False for notes the book has frozen (None: all allowed).
    Returns:
        ``(reconstruction + masker loss, logs)``.
    """
    assert batch.ids is not None
    ids = batch.ids
    real = batch.mask if batch.mask is not None else model.attention_mask(ids)
    scores = masker.scores(model.forward_ids(ids, real).hidden)  # [b n]
    allowed = real if mask_book is None else real & mask_book
    chosen = masker.select(scores.detach(), allowed, generator)
    inputs, labels, corrupted = masker.corrupt(ids, chosen, generator)
    hidden = model.forward_ids(inputs, real).hidden
    rec, logs = mlm(hidden, labels)
    per_note = token_losses(mlm.logits(hidden.detach()), ids)  # [b n]
    adv, adv_logs = masker(scores, per_note, corrupted)
    return rec + adv, {**logs, **adv_logs}


class AdversarialPretraining(nn.Module):
    """Adversarial-MidiBERT pretraining as one objective that ``mmenc pretrain`` trains: the
    compound MLM heads and the masker together (catalogue name ``adversarial-masker``).

    :meth:`step` runs the encoder twice per batch, as :func:`adversarial_step` does: on the
    clean notes for the masker's scores, and on the notes the masker corrupted for the
    reconstruction. The model is a MIDI-BERT recipe, or a model whose ``towers[modality]`` is
    one (the MIDI tower of ``midi-text-*``, trained alongside a contrastive objective). No mask
    book is kept (every real note may be chosen at every step).

    Args:
        scheme: ``cp`` or ``octuple`` (the model's dictionary).
        dim: the encoder's width.
        mask_prob, share, max_prob, target_share, hidden, dropout: see
            :func:`compound_mlm` and :class:`AdversarialMasker`.
    """

    name = "adversarial-masker"
    arity = 1
    params = frozenset({"scheme", "dim", "mask_prob", "hidden", "dropout", "share", "max_prob",
                        "target_share"})

    def __init__(self, scheme: str = "cp", dim: int = 32, mask_prob: float = 0.15,
                 hidden: int = 256, dropout: float = 0.1,
                 share: tuple[float, float] | list[float] = (0.1, 0.3), max_prob: float = 0.15,
                 target_share: float = 0.3) -> None:
        super().__init__()
        vocab = load_vocab(scheme)
        self.scheme, self.dim = scheme, dim
        self.mlm = compound_mlm(scheme, dim, mask_prob)
        self.masker = AdversarialMasker(dim, list(vocab.sizes), list(vocab.mask_ids), hidden,
                                        dropout, (float(share[0]), float(share[1])), max_prob,
                                        target_share)

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        b, n = 2, 20
        vocab = load_vocab(self.scheme)
        ids = torch.stack([torch.randint(0, min(pad, mask), (b, n), generator=g)
                           for pad, mask in zip(vocab.pad_ids, vocab.mask_ids, strict=True)],
                          dim=-1)  # [b n f], below each field's special ids
        chosen = torch.rand(b, n, generator=g) < 0.3
        inputs, labels, corrupted = self.masker.corrupt(ids, chosen, g)
        return {"clean": torch.randn(b, n, self.dim, generator=g),
                "hidden": torch.randn(b, n, self.dim, generator=g),
                "ids": ids, "labels": labels, "corrupted": corrupted | chosen}

    def forward(self, clean: Tensor, hidden: Tensor, ids: Tensor, labels: Tensor,
                corrupted: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The losses from the encoder's states.

        Inputs:
            clean: ``[b n d]`` states of the clean input (the masker scores them).
            hidden: ``[b n d]`` states of the corrupted input (the MLM heads decode them).
            ids: ``[b n f]`` clean ids; labels: ``[b n f]`` (``IGNORE_INDEX`` where not chosen);
            corrupted: ``[b n]`` bool, the notes masked or replaced.
        Returns:
            ``(reconstruction + masker loss, logs)``.
        """
        rec, logs = self.mlm(hidden, labels)
        per_note = token_losses(self.mlm.logits(hidden.detach()), ids)  # [b n]
        adv, adv_logs = self.masker(self.masker.scores(clean), per_note, corrupted)
        return rec + adv, {**logs, **adv_logs}

    def encoder(self, model: Any, modality: str) -> Any:
        """The MIDI-BERT encoder of ``model`` for ``modality``."""
        return midi_encoder(model, modality, self.dim, self.name)

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """One pretraining loss on the batch of the entry's modality (what ``mmenc pretrain``
        calls)."""
        ((modality, batch),) = batches.items()
        if batch.ids is None or batch.ids.dim() != 3:
            raise ValueError("adversarial-masker needs compound ids [b n f]")
        encoder = self.encoder(model, modality)
        ids = batch.ids
        real = batch.mask if batch.mask is not None else encoder.attention_mask(ids)
        clean = encoder.forward_ids(ids, real).hidden
        chosen = self.masker.select(self.masker.scores(clean).detach(), real, generator)
        inputs, labels, corrupted = self.masker.corrupt(ids, chosen, generator)
        hidden = encoder.forward_ids(inputs, real).hidden
        return self(clean, hidden, ids, labels, corrupted)


@torch.no_grad()
def update_mask_book(book: Tensor, scores: Tensor, allowed: Tensor,
                     generator: torch.Generator | None = None,
                     freeze: tuple[float, float] = (0.1, 0.3),
                     release: float = 0.1) -> Tensor:
    """Freeze each item's top-scored open notes (a ``U(freeze)`` share of them) and open a
    random ``U(0, release)`` share of all notes again; ``book`` ``[b n]`` bool, True = open."""
    book = book.clone()
    b, n = book.shape
    u = torch.rand(b, 2, generator=generator)
    for i in range(b):
        open_i = book[i] & allowed[i]
        k = int((freeze[0] + float(u[i, 0]) * (freeze[1] - freeze[0])) * int(open_i.sum()))
        if k > 0:
            book[i, scores[i].masked_fill(~open_i, float("-inf")).topk(k).indices] = False
        book[i] |= torch.rand(n, generator=generator) < float(u[i, 1]) * release
    return book


def mask_finetune_inputs(ids: Tensor, real: Tensor, scheme: str = "cp", prob: float = 0.15,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Mask fine-tuning: corrupt ``prob`` of the real notes (80% mask, 10% random token, 10%
    kept). Returns ``(inputs, corrupted [b n])``; token-level losses skip corrupted notes."""
    vocab = load_vocab(scheme)
    inputs, _ = mask_tokens(ids, mask_id=list(vocab.mask_ids), vocab_size=list(vocab.sizes),
                            mask_prob=prob, special=~real, generator=generator)
    return inputs, (inputs != ids).any(dim=-1)


class TokenClassifier(nn.Module):
    """Per-note classes (melody / velocity): dropout, Linear(d, 256), ReLU, Linear(256, c)."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, hidden: Tensor) -> Tensor:
        """``[b n d]`` -> logits ``[b n c]``."""
        return self.net(hidden)


class SequenceClassifier(nn.Module):
    """One class per sequence (composer, genre, emotion): ``r`` attention distributions over
    the notes (``softmax(W2 tanh(W1 h))``, pads excluded), the ``r`` weighted sums
    concatenated, then Linear(r*d, 256), ReLU, Linear(256, c)."""

    def __init__(self, dim: int, num_classes: int, da: int = 128, r: int = 4,
                 hidden: int = 256) -> None:
        super().__init__()
        self.ws1 = nn.Linear(dim, da, bias=False)
        self.ws2 = nn.Linear(da, r, bias=False)
        self.classifier = nn.Sequential(nn.Linear(dim * r, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[b n d]`` (and ``[b n]`` True = real) -> logits ``[b c]``."""
        logits = self.ws2(torch.tanh(self.ws1(hidden)))  # [b n r]
        if mask is not None:
            logits = logits.masked_fill(~mask[..., None], torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=1).transpose(1, 2)  # [b r n]
        pooled = torch.bmm(weights, hidden)  # [b r d]
        return self.classifier(pooled.flatten(1))


def token_classification_loss(logits: Tensor, labels: Tensor, keep: Tensor) -> Tensor:
    """Cross-entropy over the notes where ``keep`` is True (real, not corrupted)."""
    labels = labels.masked_fill(~keep, IGNORE_INDEX)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
