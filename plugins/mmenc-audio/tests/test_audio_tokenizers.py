"""Acoustic tokenizers and BEATs' objectives: the random-projection tokenizer, the EMA codebook
with k-means initialisation, block masking, masked label prediction and tokenizer
distillation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mmenc
from mmenc_audio.audio import example_audio
from mmenc_audio.codebook import NormEMACodebook, RandomProjectionQuantizer, spherical_kmeans
from mmenc_audio.objectives import (
    MaskedAcousticLabelLoss,
    TokenizerDistillationLoss,
    block_mask,
    cosine_loss,
    encode_visible,
    tokenizer_distillation_step,
)


def _clusters(k=4, per=50, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=g), dim=-1)
    x = centres.repeat_interleave(per, 0) + 0.05 * torch.randn(k * per, dim, generator=g)
    return centres, F.normalize(x, dim=-1), torch.arange(k).repeat_interleave(per)


def test_random_projection_tokenizer_is_frozen_and_deterministic() -> None:
    rp = RandomProjectionQuantizer(256, 16, 64, seed=3)
    assert not list(rp.parameters())
    x = torch.randn(2, 24, 256)
    a = rp(x)
    assert a.shape == (2, 24) and a.dtype == torch.int64 and int(a.max()) < 64
    assert torch.equal(a, RandomProjectionQuantizer(256, 16, 64, seed=3)(x))
    assert not torch.equal(a, RandomProjectionQuantizer(256, 16, 64, seed=4)(x))
    assert torch.equal(rp(3.0 * x), a)  # labels depend on the direction only
    z = F.normalize(x @ rp.projection, dim=-1)
    assert torch.equal(a, (z @ rp.codes.T).argmax(-1))  # nearest = most similar on the sphere


def test_spherical_kmeans_finds_separated_clusters() -> None:
    centres, x, truth = _clusters()
    found, sizes = spherical_kmeans(x, 4, iters=10, generator=torch.Generator().manual_seed(1))
    assert sizes.sum() == len(x)
    assign = (x @ found.T).argmax(1)
    for c in range(4):  # each true cluster maps to one found cluster
        assert assign[truth == c].unique().numel() == 1
    assert torch.allclose(found.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_codebook_kmeans_init_then_ema_updates_in_training_only() -> None:
    _, x, truth = _clusters()
    cb = NormEMACodebook(4, 8, decay=0.5)
    cb.eval()
    before = cb.weight.clone()
    cb(x)
    assert torch.equal(cb.weight, before) and cb.initted.item() == 0  # eval changes nothing
    cb.train()
    z_q, loss, labels = cb(x)
    assert cb.initted.item() == 1
    for c in range(4):
        assert labels[truth == c].unique().numel() == 1
    assert loss.item() < 0.01  # vectors sit next to their code
    assert torch.allclose(cb.weight.norm(dim=-1), torch.ones(4), atol=1e-5)
    # straight-through: the forward value is the code, the gradient flows to the input
    cb.eval()
    inp = x.clone().requires_grad_(True)
    z_q, loss, labels = cb(inp)
    assert torch.allclose(z_q, cb.weight[labels], atol=1e-6)
    (z_q.sum() + loss).backward()
    assert inp.grad is not None and torch.isfinite(inp.grad).all()
    cb.train()
    # EMA: a shifted cluster pulls its code towards the new mean
    code = labels[0].item()
    moved = F.normalize(x[truth == 0] + 0.3 * torch.randn(1, 8), dim=-1)
    target = F.normalize(moved.mean(0), dim=-1)
    dist_before = (cb.weight[code] - target).norm()
    for _ in range(5):
        cb(moved)
    assert (cb.weight[code] - target).norm() < dist_before
    assert cb.usage[code] > 0


def test_codebook_labels_are_nearest_codes() -> None:
    cb = NormEMACodebook(16, 6)
    z = torch.randn(3, 5, 6)
    labels = cb.labels(z)
    dist = torch.cdist(F.normalize(z, dim=-1).reshape(-1, 6), cb.weight)
    assert torch.equal(labels.reshape(-1), dist.argmin(1))


def test_block_mask_ratio_blocks_and_padding() -> None:
    mask = torch.ones(3, 64, dtype=torch.bool)
    mask[1, 40:] = False
    mask[2, :] = False
    g = torch.Generator().manual_seed(0)
    m = block_mask(mask, 0.75, 8, g)
    assert int(m[0].sum()) == 48 and int(m[1].sum()) == 30 and int(m[2].sum()) == 0
    assert not bool((m & ~mask).any())
    rows = m[0].view(8, 8)  # with block 8 and 64 real patches, whole rows are masked
    assert bool((rows.all(1) | ~rows.any(1)).all())
    with pytest.raises(ValueError):
        block_mask(mask, 1.0)


def test_masked_label_loss_scores_masked_patches_only() -> None:
    torch.manual_seed(0)
    obj = MaskedAcousticLabelLoss(dim=16, num_labels=10, heads=2)
    inputs = obj.example_inputs()
    inputs["hidden"] = torch.randn(2, 24, 16)
    loss, logs = obj(**inputs)
    assert logs["masked"] == int((inputs["masked"] & inputs["mask"]).sum())
    other = inputs["labels"].clone()
    other[~inputs["masked"]] = (other[~inputs["masked"]] + 1) % 10
    assert torch.equal(obj(**{**inputs, "labels": other})[0], loss)
    changed = inputs["hidden"].clone()
    changed[inputs["masked"]] += 5.0  # states at masked places are replaced by the mask token
    assert torch.allclose(obj(**{**inputs, "hidden": changed})[0], loss)


def test_masked_label_prediction_learns_with_the_tiny_model() -> None:
    torch.manual_seed(0)
    model = mmenc.create_model("beats-tiny").train()
    batch = model.tokenize(example_audio(), "audio")
    labels = RandomProjectionQuantizer(256, 8, 16, seed=0)(batch.values)
    obj = MaskedAcousticLabelLoss(dim=32, num_labels=16, mask_ratio=0.5)
    masked = obj.choose(batch.mask, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([*model.parameters(), *obj.parameters()], lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = obj(encode_visible(model, batch, masked), labels, masked, batch.mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_encode_visible_ignores_what_is_masked() -> None:
    torch.manual_seed(0)
    model = mmenc.create_model("beats-tiny").eval()
    batch = model.tokenize(example_audio()[:2], "audio")
    masked = block_mask(batch.mask, 0.5, 8, torch.Generator().manual_seed(0))
    noisy = batch.values.clone()
    noisy[masked] = torch.randn(int(masked.sum()), 256)
    from dataclasses import replace

    with torch.no_grad():
        a = encode_visible(model, batch, masked)
        b = encode_visible(model, replace(batch, values=noisy), masked)
    keep = batch.mask & ~masked
    assert torch.allclose(a[keep], b[keep], atol=1e-5)


def test_cosine_loss() -> None:
    x = torch.randn(2, 5, 4)
    assert cosine_loss(x, 3 * x).abs() < 1e-6
    assert torch.isclose(cosine_loss(x, -x), torch.tensor(2.0))
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 0] = True
    y = x.clone()
    y[1] = -y[1]
    assert cosine_loss(x, y, mask).abs() < 1e-6


def test_tokenizer_distillation_trains_codebook_and_estimator() -> None:
    torch.manual_seed(0)
    teacher = mmenc.create_model("beats-tiny").eval()
    tok = mmenc.create_model("beats-tokenizer-tiny").train()
    batch = tok.tokenize(example_audio(), "audio")
    with torch.no_grad():
        target = teacher.forward_features(batch, "audio").hidden
    obj = TokenizerDistillationLoss(code_dim=8, teacher_dim=32)
    opt = torch.optim.Adam([*tok.parameters(), *obj.parameters()], lr=3e-3)
    assert tok.codebook.initted.item() == 0
    losses = []
    for _ in range(12):
        loss, logs = tokenizer_distillation_step(tok, obj, batch, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["cosine"].item())
    assert tok.codebook.initted.item() == 1 and logs["codes_used"] > 1
    assert losses[-1] < losses[0]
    assert tok.quantize_layer[0].weight.grad is not None  # straight-through reaches the encoder


def test_acoustic_label_tokenizer_kinds(tmp_path):
    from mmenc.testing import check_tokenizer
    from mmenc_audio.acoustic import PAD_LABEL, AcousticLabelTokenizer, build_acoustic_tokenizer

    check_tokenizer(mmenc.catalogue().get("tokenizer", "audio-acoustic-labels"))
    clips = example_audio()
    rp = AcousticLabelTokenizer(num_codes=64, code_dim=8, seed=1)
    batch = rp(clips)
    assert batch.ids.shape == batch.mask.shape and batch.pad_id == PAD_LABEL
    assert bool((batch.ids[~batch.mask] == PAD_LABEL).all())
    assert bool((batch.ids[batch.mask] >= 0).all()) and int(batch.ids.max()) < 64
    again = build_acoustic_tokenizer(rp.config())
    assert torch.equal(again(clips).ids, batch.ids)
    # a trained tokenizer saved by mmenc labels the same patches as the model itself
    torch.manual_seed(0)
    tok_model = mmenc.create_model("beats-tokenizer-tiny").eval()
    tok_model.save_pretrained(tmp_path / "tok")
    trained = build_acoustic_tokenizer({"kind": "model", "model": str(tmp_path / "tok")})
    got = trained(clips)
    with torch.no_grad():
        want = tok_model.labels(tok_model.tokenize(clips, "audio"))
    assert torch.equal(got.ids.masked_fill(~got.mask, -1), want)
    assert trained.num_codes == 32
    with pytest.raises(ValueError, match="needs the folder"):
        AcousticLabelTokenizer(kind="model")
    tiny = mmenc.create_model("beats-tiny")
    tiny.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="no codebook"):
        AcousticLabelTokenizer(kind="model", model=str(tmp_path / "plain"))
