"""UniXcoder's generative objectives on the shared encoder.

Both run the model themselves (``step(model, {modality: batch}, generator)``, the objective
protocol of ``mmenc pretrain``), in another attention mode than the batch was tokenized for,
and predict tokens through the tied language-model head:

- :class:`UnidirectionalLM`: the decoder-only mode (causal attention), every body token predicted
  from the tokens before it.
- :class:`SpanDenoising`: the encoder-decoder mode. Spans covering ``noise`` of the body (mean
  length ``span``) are replaced by sentinels ``<mask0>``, ``<mask1>``, ...; the target, appended
  after the source, lists each sentinel followed by its span. Attention is bidirectional over the
  source and causal over the target (``prefix_len`` = source length).

Masked language modelling is mmenc's ``masked-modeling`` objective, and the multi-modal
contrastive objective between views is ``contrastive`` on two of ``code``, ``text``, ``ast``.
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

PREFIX = 3  # <s> MODE </s>


def token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy over the labelled positions (``-100`` = not predicted).

    Inputs: logits [b n v]; labels [b n]. Returns ``(loss, {"accuracy", "tokens"})``.
    """
    keep = labels.ne(-100)
    if not bool(keep.any()):
        return logits.sum() * 0.0, {"accuracy": 0.0, "tokens": 0.0}
    picked = logits[keep]
    loss = F.cross_entropy(picked.float(), labels[keep])
    with torch.no_grad():
        accuracy = float((picked.argmax(-1) == labels[keep]).float().mean())
    return loss, {"accuracy": accuracy, "tokens": float(keep.sum())}


def _tokenizer(model: Any, modality: str) -> Any:
    tok = model.tokenizers.get(modality)
    if tok is None or not hasattr(tok, "ids") or not hasattr(model, "lm_logits"):
        raise ConfigError(f"{modality!r}: generative objectives need a UniXcoder model and "
                          "tokenizer (lm_logits, mode tokens)")
    return tok


class _TokenObjective(nn.Module):
    """Shared by both: ``forward(logits, labels)`` and the contract's example inputs; each reads
    one modality under ``mmenc pretrain``."""

    arity = 1

    def forward(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        return token_loss(logits, labels)

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 11, (2, 5), generator=g)
        labels[0, :2] = -100
        return {"logits": torch.randn(2, 5, 11, generator=g, requires_grad=True),
                "labels": labels}


class UnidirectionalLM(_TokenObjective):
    """Next-token prediction in the decoder-only mode."""

    name = "unidirectional-lm"
    params = frozenset()

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        ((modality, batch),) = batches.items()
        tok = _tokenizer(model, modality)
        ids = batch.ids.clone()
        mask = batch.mask if batch.mask is not None else ids.ne(tok.pad_id)
        ids[:, 1] = tok.ids["<decoder-only>"]
        causal = replace(batch, ids=ids, mask=mask,
                         extras={**batch.extras, "prefix_len": ids.new_zeros(len(ids))})
        hidden = model.forward_features(causal, modality).hidden  # [b n d]
        labels = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        labels[:, : PREFIX - 1] = -100  # the prefix is given, the body predicted
        return token_loss(model.lm_logits(hidden[:, :-1]), labels)


def corrupt_spans(body: list[int], sentinels: list[int], noise: float, span: float,
                  generator: torch.Generator) -> tuple[list[int], list[int]]:
    """T5's span corruption of one body: ``(source body, target)``.

    The number of noise tokens is ``round(len * noise)`` (at least one), split into
    ``round(noise tokens / span)`` spans (at most one per sentinel) at random boundaries; the
    kept tokens are split at random around them.
    """
    n = len(body)
    n_noise = min(max(1, round(n * noise)), n - 1)
    spans = max(1, min(round(n_noise / span), len(sentinels), n - n_noise))

    def split(total: int, parts: int) -> list[int]:
        # ``parts`` positive lengths summing to ``total``
        cuts = torch.randperm(total - 1, generator=generator)[: parts - 1] + 1
        edges = [0, *sorted(cuts.tolist()), total]
        return [b - a for a, b in zip(edges, edges[1:], strict=False)]

    noise_lengths = split(n_noise, spans)
    keep_lengths = split(n - n_noise, spans)
    source: list[int] = []
    target: list[int] = []
    pos = 0
    for k, (keep, drop) in enumerate(zip(keep_lengths, noise_lengths, strict=True)):
        source += body[pos: pos + keep] + [sentinels[k]]
        pos += keep
        target += [sentinels[k]] + body[pos: pos + drop]
        pos += drop
    return source, target


class SpanDenoising(_TokenObjective):
    """Span corruption in the encoder-decoder mode.

    Args:
        noise: share of body tokens masked.
        span: mean span length.
    """

    name = "span-denoising"
    params = frozenset({"noise", "span"})

    def __init__(self, noise: float = 0.15, span: float = 3.0) -> None:
        super().__init__()
        if not 0 < noise < 1 or span < 1:
            raise ConfigError(f"span-denoising: noise in (0, 1) and span >= 1, got {noise}, {span}")
        self.noise, self.span = noise, span

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        ((modality, batch),) = batches.items()
        tok = _tokenizer(model, modality)
        if not tok.sentinel_ids:
            raise ConfigError(f"span-denoising on {modality!r}: the vocabulary has no <mask0>")
        limit = int(model.config["encoder"]["max_positions"]) - tok.pad_id - 1
        rows, prefixes, starts = [], [], []
        mask = batch.mask if batch.mask is not None else batch.ids.ne(tok.pad_id)
        for ids, real in zip(batch.ids.tolist(), mask.tolist(), strict=True):
            length = sum(real)
            body = ids[PREFIX: length - 1]  # between <s> MODE </s> and the closing </s>
            head = [tok.cls_id, tok.ids["<encoder-decoder>"], tok.sep_id]
            if len(body) < 2:
                rows.append(head + body + [tok.sep_id])
                prefixes.append(len(rows[-1]))
                starts.append(len(rows[-1]))
                continue
            source, target = corrupt_spans(body, tok.sentinel_ids, self.noise, self.span,
                                           generator)
            source = head + source + [tok.sep_id]
            row = (source + target + [tok.sep_id])[:limit]
            rows.append(row)
            prefixes.append(len(source))
            starts.append(len(source))
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), tok.pad_id, dtype=torch.long)
        real = torch.zeros(len(rows), n, dtype=torch.bool)
        labels = torch.full((len(rows), n - 1), -100, dtype=torch.long)
        for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
            ids[i, : len(row)] = torch.tensor(row)
            real[i, : len(row)] = True
            if start < len(row):
                labels[i, start - 1: len(row) - 1] = torch.tensor(row[start:])
        device = batch.ids.device
        seq = TokenBatch(ids=ids.to(device), mask=real.to(device), pad_id=tok.pad_id,
                         extras={"prefix_len": torch.tensor(prefixes, device=device)})
        hidden = model.forward_features(seq, modality).hidden
        return token_loss(model.lm_logits(hidden[:, :-1]), labels.to(device))
