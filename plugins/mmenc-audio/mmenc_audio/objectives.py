"""BEATs' objectives: masked acoustic-label prediction and tokenizer distillation.

Axis legend: ``b`` batch, ``n`` patches, ``d`` encoder width, ``c`` code width, ``t`` teacher
width, ``K`` label vocabulary.

- :func:`block_mask` picks the patches to mask: runs of ``block`` consecutive patches (with
  ``block`` = patches per time row, whole rows of the spectrogram) until ``ratio`` of the real
  patches are masked.
- :class:`MaskedAcousticLabelLoss` (``masked-acoustic-labels``): the encoder sees only the
  visible patches (:func:`encode_visible`: masked patches are treated as padding, so relative
  positions are kept); a learned mask token takes the place of every masked patch, a small
  label predictor (a pre-norm trunk with a T5 relative bias) runs over the whole sequence and a
  linear head predicts each masked patch's acoustic label (cross-entropy over masked real
  patches only).
- :class:`TokenizerDistillationLoss` (``tokenizer-distillation``): the tokenizer's quantised
  code vectors (straight-through, :class:`mmenc_audio.codebook.NormEMACodebook`) go through a
  small estimator that reconstructs the teacher's last-layer features; the loss is
  ``1 - cos(estimate, teacher)`` averaged over real patches, plus the codebook's commitment
  loss. :func:`tokenizer_distillation_step` glues a tokenizer model, its codebook and this
  objective together.

Both classes train under ``mmenc pretrain`` through their ``step(model, batches, generator)``
(``batches``: ``{"audio": batch}``): the masked-label objective labels the fbank patches of the
batch itself (a random projection, or a saved acoustic tokenizer named by ``labels={"kind":
"model", "model": DIR}``), and the distillation objective runs the saved teacher named by
``teacher=DIR``. Neither the labeller nor the teacher is a submodule: they are not trained and
not saved with the objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.batch import TokenBatch
from mmenc.errors import ConfigError
from mmenc.nn import TrunkConfig, build_trunk


def block_mask(mask: Tensor, ratio: float = 0.75, block: int = 8,
               generator: torch.Generator | None = None) -> Tensor:
    """Choose patches to mask, in blocks.

    Inputs:
        mask: [b n] bool, True = real patch.
        ratio: share of each item's real patches to mask (rounded down, at least one).
        block: patches per block (BEATs' 128 mel bins / 16 = 8: one time row).
    Returns:
        [b n] bool, True = masked; never True at padding.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    b, n = mask.shape
    out = torch.zeros(b, n, dtype=torch.bool)
    real = mask.cpu()
    for i in range(b):
        count = int(real[i].sum())
        if count == 0:
            continue
        want = max(1, int(count * ratio))
        starts = torch.randperm((count + block - 1) // block, generator=generator) * block
        chosen = 0
        for s in starts.tolist():
            take = min(block, count - s, want - chosen)
            out[i, s : s + take] = True
            chosen += take
            if chosen >= want:
                break
    return out.to(mask.device)


def encode_visible(model: Any, batch: TokenBatch, masked: Tensor) -> Tensor:
    """The encoder's states when it sees only the visible patches: ``[b n d]``, masked
    patches are left out of attention (and zeroed before the convolutional positions)."""
    real = batch.mask if batch.mask is not None else torch.ones_like(masked)
    return model.forward_features(replace(batch, mask=real & ~masked), "audio").hidden


class MaskedAcousticLabelLoss(nn.Module):
    """Predict the acoustic labels of masked patches.

    Args:
        dim: encoder width d.
        num_labels: K, the acoustic tokenizer's codebook size (None: the labeller's, or 64).
        predictor_depth: layers of the label predictor (0: a linear head on the mask tokens
            alone would see nothing, so at least 1).
        heads: heads of the label predictor.
        mask_ratio, block: of :func:`block_mask` (used by :meth:`choose`).
        labels: the labeller :meth:`step` uses, as options of
            :class:`mmenc_audio.acoustic.AcousticLabelTokenizer` (``{"kind":
            "random-projection", "num_codes": K, "code_dim": 16, "seed": 0}`` or ``{"kind":
            "model", "model": "DIR"}``); None: a random projection with ``num_labels`` codes.
    """

    name = "masked-acoustic-labels"
    arity = 1
    params = frozenset({"dim", "num_labels", "predictor_depth", "heads", "mask_ratio", "block",
                        "labels"})

    def __init__(self, dim: int = 32, num_labels: int | None = None, predictor_depth: int = 1,
                 heads: int = 2, mask_ratio: float = 0.75, block: int = 8,
                 labels: dict[str, Any] | None = None) -> None:
        super().__init__()
        if predictor_depth < 1:
            raise ValueError("predictor_depth must be at least 1")
        self.labels_config = None if labels is None else dict(labels)
        self._labeller: Any = None
        if self.labels_config is not None:
            self._labeller = self._build_labeller(self.labels_config)
            if num_labels is not None and int(num_labels) != self._labeller.num_codes:
                raise ConfigError(f"masked-acoustic-labels: num_labels={num_labels} but the "
                                  f"labeller has {self._labeller.num_codes} codes")
            num_labels = self._labeller.num_codes
        num_labels = 64 if num_labels is None else int(num_labels)
        self.dim, self.num_labels = dim, num_labels
        self.mask_ratio, self.block = mask_ratio, block
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.predictor = build_trunk(TrunkConfig(dim=dim, depth=predictor_depth, heads=heads,
                                                 ffn_dim=2 * dim, norm="pre", relative="t5",
                                                 num_buckets=32, max_distance=128))
        self.head = nn.Linear(dim, num_labels)

    @staticmethod
    def _build_labeller(options: dict[str, Any]) -> Any:
        from mmenc_audio.acoustic import AcousticLabelTokenizer

        try:
            return AcousticLabelTokenizer(**options)
        except TypeError as exc:
            raise ConfigError(f"masked-acoustic-labels: labels: {exc}") from None

    @property
    def labeller(self) -> Any:
        """The :class:`~mmenc_audio.acoustic.AcousticLabelTokenizer` of :meth:`step`."""
        if self._labeller is None:
            self._labeller = self._build_labeller({"num_codes": self.num_labels})
        return self._labeller

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
        """One training forward under ``mmenc pretrain``: label every patch of the batch (fbank
        patches ``values`` [b n 256]), mask blocks, encode the visible patches, predict.

        Returns:
            ``(loss, logs)`` as :meth:`forward`.
        """
        ((modality, batch),) = batches.items()
        if batch.values is None:
            raise ConfigError(f"masked-acoustic-labels on {modality!r}: the batch has no fbank "
                              "patches")
        labels = self.labeller.label_batch(batch)  # [b n], -100 at padding
        mask = batch.mask if batch.mask is not None else torch.ones(
            labels.shape, dtype=torch.bool, device=labels.device)
        masked = self.choose(mask, generator)
        hidden = model.forward_features(replace(batch, mask=mask & ~masked), modality).hidden
        return self(hidden, labels, masked, mask)

    def choose(self, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """:func:`block_mask` with this objective's ratio and block."""
        return block_mask(mask, self.mask_ratio, self.block, generator)

    def forward(self, hidden: Tensor, labels: Tensor, masked: Tensor,
                mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs:
            hidden: [b n d] encoder states of the visible patches (:func:`encode_visible`).
            labels: [b n] int64 acoustic labels of every patch.
            masked: [b n] bool, True = masked patch (its label is predicted).
            mask: [b n] bool, True = real patch; None: all real.
        Returns:
            ``(loss, logs)``: mean cross-entropy over masked real patches; logs ``accuracy``
            and ``masked`` (how many patches were predicted).
        """
        real = mask if mask is not None else torch.ones_like(masked)
        target = masked & real
        x = torch.where(masked[..., None], self.mask_token.to(hidden.dtype), hidden)
        x = self.predictor(x, mask=real).last_hidden_state
        logits = self.head(x[target])  # [m K]
        gold = labels[target]
        if gold.numel() == 0:
            loss = logits.sum() * 0.0 + x.sum() * 0.0
            return loss, {"accuracy": 0.0, "masked": 0}
        loss = F.cross_entropy(logits.float(), gold)
        accuracy = (logits.argmax(-1) == gold).float().mean().detach()
        return loss, {"accuracy": accuracy, "masked": int(gold.numel())}

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        b, n = 2, 24
        mask = torch.ones(b, n, dtype=torch.bool)
        mask[1, 16:] = False
        return {"hidden": torch.randn(b, n, self.dim, generator=g),
                "labels": torch.randint(self.num_labels, (b, n), generator=g),
                "masked": block_mask(mask, self.mask_ratio, self.block, g), "mask": mask}


class Estimator(nn.Module):
    """A small transformer from code vectors to teacher features: ``[b n c] -> [b n t]``."""

    def __init__(self, code_dim: int, teacher_dim: int, width: int = 32, depth: int = 1,
                 heads: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(code_dim, width)
        self.trunk = build_trunk(TrunkConfig(dim=width, depth=depth, heads=heads,
                                             ffn_dim=2 * width, norm="pre", relative="t5",
                                             num_buckets=32, max_distance=128))
        self.out = nn.Linear(width, teacher_dim)

    def forward(self, codes: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.out(self.trunk(self.inp(codes), mask=mask).last_hidden_state)


def cosine_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``1 - cos(pred, target)`` per patch, averaged over real patches."""
    per = 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1)  # [b n]
    if mask is None:
        return per.mean()
    w = mask.to(per.dtype)
    return (per * w).sum() / w.sum().clamp(min=1.0)


class TokenizerDistillationLoss(nn.Module):
    """Train an acoustic tokenizer so its codes keep what the teacher knows.

    Args:
        code_dim: c, the quantiser width.
        teacher_dim: t, the teacher's width (None: the teacher's, or 32).
        width, depth, heads: of the estimator.
        teacher: folder of the saved teacher model :meth:`step` runs (a BEATs model of the
            previous iteration); needed by :meth:`step` only.
    """

    name = "tokenizer-distillation"
    arity = 1
    params = frozenset({"code_dim", "teacher_dim", "width", "depth", "heads", "teacher"})

    def __init__(self, code_dim: int = 8, teacher_dim: int | None = None, width: int = 32,
                 depth: int = 1, heads: int = 2, teacher: str | None = None) -> None:
        super().__init__()
        self.teacher_path = None if teacher is None else str(teacher)
        self._teacher: Any = None
        if self.teacher_path is not None:
            import mmenc

            teacher_model = mmenc.load(self.teacher_path).eval().requires_grad_(False)
            object.__setattr__(self, "_teacher", teacher_model)  # not a submodule: not saved
            width_of = int(self._teacher.config["trunk"]["dim"])
            if teacher_dim is not None and int(teacher_dim) != width_of:
                raise ConfigError(f"tokenizer-distillation: teacher_dim={teacher_dim} but the "
                                  f"teacher {self.teacher_path} is {width_of} wide")
            teacher_dim = width_of
        teacher_dim = 32 if teacher_dim is None else int(teacher_dim)
        self.code_dim, self.teacher_dim = code_dim, teacher_dim
        self.estimator = Estimator(code_dim, teacher_dim, width, depth, heads)

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
        """One training forward under ``mmenc pretrain``: ``model`` is the acoustic tokenizer
        being trained, the teacher sees the same (unmasked) batch.

        Returns:
            ``(loss, logs)`` with ``cosine``, ``commitment`` and ``codes_used``.
        """
        ((modality, batch),) = batches.items()
        if self._teacher is None:
            raise ConfigError("tokenizer-distillation: set config.teacher to the folder of a "
                              "saved teacher model")
        device = batch.values.device if batch.values is not None else torch.device("cpu")
        self._teacher.to(device)
        with torch.no_grad():
            teacher_hidden = self._teacher.forward_features(batch, modality).hidden
        loss, logs = tokenizer_distillation_step(model, self, batch, teacher_hidden)
        logs.pop("labels")
        return loss, logs

    def forward(self, codes: Tensor, teacher: Tensor, mask: Tensor | None = None,
                commitment: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs:
            codes: [b n c] quantised (straight-through) code vectors.
            teacher: [b n t] the teacher's features (no gradient is needed).
            mask: [b n] bool, True = real patch.
            commitment: the codebook's commitment loss, added when given.
        Returns:
            ``(loss, logs)`` with ``cosine`` and ``commitment``.
        """
        cos = cosine_loss(self.estimator(codes, mask), teacher.detach(), mask)
        commit = commitment if commitment is not None else cos.new_zeros(())
        return cos + commit, {"cosine": cos.detach(), "commitment": commit.detach()}

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        mask = torch.ones(2, 16, dtype=torch.bool)
        mask[0, 10:] = False
        return {"codes": F.normalize(torch.randn(2, 16, self.code_dim, generator=g), dim=-1),
                "teacher": torch.randn(2, 16, self.teacher_dim, generator=g), "mask": mask}


def tokenizer_distillation_step(tokenizer: Any, objective: TokenizerDistillationLoss,
                                batch: TokenBatch,
                                teacher_hidden: Tensor) -> tuple[Tensor, dict[str, Any]]:
    """One training forward of an acoustic tokenizer (a :class:`BEATsEncoder` with a codebook,
    in train mode: the codebook k-means-initialises on its first batch and EMA-updates).

    Returns:
        ``(loss, logs)``; logs also hold ``labels`` [b n] and ``codes_used``.
    """
    f = tokenizer.forward_features(batch, "audio")
    z_q, commit, labels = tokenizer.codebook(tokenizer.code_vectors(f.hidden))
    loss, logs = objective(z_q, teacher_hidden, f.mask, commit)
    real = labels if f.mask is None else labels[f.mask]
    return loss, {**logs, "labels": labels, "codes_used": int(real.unique().numel())}
