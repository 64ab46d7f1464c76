"""Compound MLM, the adversarial masker, mask fine-tuning and the task heads on a tiny model."""

from __future__ import annotations

import mmenc
import torch
from mmenc.objectives.distill import IGNORE_INDEX

from mmenc_midi.midi import example_midi
from mmenc_midi.objectives import (
    AdversarialMasker,
    SequenceClassifier,
    TokenClassifier,
    adversarial_step,
    compound_mlm,
    mask_finetune_inputs,
    mlm_step,
    token_classification_loss,
    update_mask_book,
)
from mmenc_midi.vocab import load_vocab


def _model_and_batch(name: str = "midibert-cp-tiny"):
    torch.manual_seed(0)
    model = mmenc.create_model(name)
    return model, model.tokenize(example_midi(), "midi")


def test_compound_masking_corrupts_whole_positions_with_field_mask_ids():
    vocab = load_vocab("cp")
    mlm = compound_mlm("cp", dim=32)
    ids = torch.tensor([[0, 3, 40, 7]] * 400).view(4, 100, 4)
    real = torch.ones(4, 100, dtype=torch.bool)
    real[:, 90:] = False
    inputs, labels = mlm.mask(ids, special=~real, generator=torch.Generator().manual_seed(0))
    selected = (labels != IGNORE_INDEX).all(dim=-1)
    assert ((labels != IGNORE_INDEX).any(dim=-1) == selected).all()  # all fields or none
    assert not selected[:, 90:].any()
    share = selected[:, :90].float().mean().item()
    assert 0.10 < share < 0.20
    masked = (inputs == torch.tensor(vocab.mask_ids)).all(dim=-1)
    assert masked[selected].float().mean() > 0.65  # about 80% of the selected positions
    assert not masked[~selected].any()
    assert (labels[selected] == ids[selected]).all()


def test_mlm_step_trains_the_tiny_model():
    model, batch = _model_and_batch()
    mlm = compound_mlm("cp", dim=model.width, mask_prob=0.3)
    params = list(model.parameters()) + list(mlm.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for step in range(25):
        loss, logs = mlm_step(model, mlm, batch, torch.Generator().manual_seed(step % 3))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert {"acc_0", "loss_3"} <= set(logs)
    assert sum(losses[-3:]) < 0.6 * sum(losses[:3])


def test_adversarial_masker_picks_top_scores_within_the_allowed_notes():
    masker = AdversarialMasker(dim=8)
    scores = torch.arange(40, dtype=torch.float).repeat(2, 1) / 40  # later notes score higher
    allowed = torch.ones(2, 40, dtype=torch.bool)
    allowed[1, 30:] = False
    chosen = masker.select(scores, allowed, torch.Generator().manual_seed(0))
    for i in range(2):
        picked = chosen[i].nonzero().squeeze(-1)
        assert 1 <= len(picked) <= int(40 * 0.15)
        assert allowed[i, picked].all()
        top = scores[i].masked_fill(~allowed[i], -1).topk(len(picked)).indices
        assert set(picked.tolist()) == set(top.tolist())


def test_masker_loss_pushes_scores_towards_hard_notes():
    masker = AdversarialMasker(dim=8, target_share=0.5)
    scores = torch.full((1, 10), 0.5, requires_grad=True)
    token_loss = torch.arange(10, dtype=torch.float)[None]
    corrupted = torch.ones(1, 10, dtype=torch.bool)
    loss, _ = masker(scores, token_loss, corrupted)
    loss.backward()
    assert (scores.grad[0, 5:] < 0).all()  # hardest half: raise the score
    assert (scores.grad[0, :5] > 0).all()  # easiest half: lower it


def test_adversarial_step_reaches_encoder_heads_and_masker():
    model, batch = _model_and_batch("adv-midibert-octuple-tiny")
    vocab = load_vocab("octuple")
    mlm = compound_mlm("octuple", dim=model.width)
    masker = AdversarialMasker(model.width, list(vocab.sizes), list(vocab.mask_ids), hidden=16)
    book = torch.ones(batch.mask.shape, dtype=torch.bool)
    loss, logs = adversarial_step(model, mlm, masker, batch, book,
                                  torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and {"masker_loss", "masked_share", "loss"} <= set(logs)
    assert masker.head[1].weight.grad is not None and masker.head[1].weight.grad.abs().sum() > 0
    assert model.fields.in_linear.weight.grad.abs().sum() > 0
    assert mlm.heads[0].weight.grad is not None
    scores = torch.rand(batch.mask.shape, generator=torch.Generator().manual_seed(1))
    new_book = update_mask_book(book, scores, batch.mask, torch.Generator().manual_seed(2),
                                release=0.0)
    frozen = ~new_book & batch.mask
    assert frozen.any() and (new_book | batch.mask).all()
    for i in range(len(book)):  # the frozen notes are the top-scored ones
        k = int(frozen[i].sum())
        top = scores[i].masked_fill(~batch.mask[i], -1).topk(k).indices
        assert set(frozen[i].nonzero().squeeze(-1).tolist()) == set(top.tolist())


def test_mask_finetuning_and_heads():
    model, batch = _model_and_batch()
    inputs, corrupted = mask_finetune_inputs(batch.ids, batch.mask, "cp", prob=0.5,
                                             generator=torch.Generator().manual_seed(0))
    assert corrupted.any() and not corrupted[~batch.mask].any()
    assert (inputs[~corrupted] == batch.ids[~corrupted]).all()
    features = model.forward_ids(inputs, batch.mask)
    tokens = TokenClassifier(model.width, 4)(features.hidden)
    assert tokens.shape == (*batch.mask.shape, 4)
    labels = torch.randint(0, 4, batch.mask.shape)
    loss = token_classification_loss(tokens, labels, batch.mask & ~corrupted)
    assert torch.isfinite(loss)
    head = SequenceClassifier(model.width, 8).eval()
    logits = head(features.hidden, batch.mask)
    assert logits.shape == (3, 8)
    padded = batch.padded(5)
    with torch.no_grad():
        again = head(model.forward_ids(padded.ids, padded.mask).hidden, padded.mask)
        first = head(model.forward_ids(batch.ids, batch.mask).hidden, batch.mask)
    assert torch.allclose(first, again, atol=1e-5)  # pads do not change the class scores
