"""Objectives against direct, slow computations (python loops, explicit softmax)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mmenc import objectives
from mmenc.objectives.contrastive import ContrastiveLoss, MomentumQueue, info_nce
from mmenc.objectives.distill import (
    MomentumDistillation,
    copy_params,
    distill_mlm_loss,
    momentum_copy,
    momentum_update,
    soft_targets,
)
from mmenc.objectives.masked import MaskedModelingLoss, mask_tokens, masked_lm_loss
from mmenc.objectives.matching import (
    MatchingLoss,
    itm_scores,
    matching_pairs,
    sample_hard_negatives,
)

IGNORE = -100


def _unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _dot(u, v):
    return sum(x * y for x, y in zip(u, v, strict=True))


def _soft_ce(logits_row, target_row):
    """-sum_j t_j log softmax(l)_j with an explicit softmax."""
    top = max(logits_row)
    log_z = top + math.log(sum(math.exp(x - top) for x in logits_row))
    return -sum(t * (x - log_z) for x, t in zip(logits_row, target_row, strict=True))


def _ce(logits_row, label):
    return _soft_ce(logits_row, [1.0 if j == label else 0.0 for j in range(len(logits_row))])


def _manual_contrast(a, b, a_keys, b_keys, scale, targets_a2b, targets_b2a):
    """Mean of the two directions' mean soft cross-entropies, from python lists."""
    a, b = [_unit(r) for r in a], [_unit(r) for r in b]
    a_keys, b_keys = [_unit(r) for r in a_keys], [_unit(r) for r in b_keys]
    a2b = [_soft_ce([scale * _dot(q, k) for k in b_keys], t)
           for q, t in zip(a, targets_a2b, strict=True)]
    b2a = [_soft_ce([scale * _dot(q, k) for k in a_keys], t)
           for q, t in zip(b, targets_b2a, strict=True)]
    return (sum(a2b) / len(a2b) + sum(b2a) / len(b2a)) / 2


def _one_hot(n, m):
    return [[1.0 if j == i else 0.0 for j in range(m)] for i in range(n)]


# -- contrastive --------------------------------------------------------------------------------
def test_info_nce_matches_loops():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    loss, logs = info_nce(a, b, torch.tensor(7.0))
    eye = _one_hot(5, 5)
    expected = _manual_contrast(a.tolist(), b.tolist(), a.tolist(), b.tolist(), 7.0, eye, eye)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert logs["logit_scale"] == pytest.approx(7.0)
    # symmetric: swapping the modalities gives the same loss
    assert info_nce(b, a, torch.tensor(7.0))[0].item() == pytest.approx(loss.item(), abs=1e-6)
    # perfectly aligned pairs are retrieved
    assert info_nce(a, a, torch.tensor(50.0))[1]["acc_a2b"] == 1.0


def test_temperature_is_learned_and_clamped():
    loss_fn = ContrastiveLoss()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    a, b = loss_fn.example_inputs().values()
    with torch.no_grad():
        loss_fn.logit_scale.fill_(10.0)
    assert loss_fn(a, b)[1]["logit_scale"] == pytest.approx(100.0)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(-3.0)
    assert loss_fn(a, b)[1]["logit_scale"] == pytest.approx(1.0)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(2.0)
    loss_fn(a, b)[0].backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad.abs() > 0


def test_matryoshka_is_the_mean_over_prefixes():
    dims = (2, 4, 8)
    loss_fn = ContrastiveLoss(dims=dims)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    loss, logs = loss_fn(a, b)
    scale = 1 / 0.07
    eye = _one_hot(4, 4)
    per_dim = []
    for d in dims:
        pa, pb = a[:, :d].tolist(), b[:, :d].tolist()
        per_dim.append(_manual_contrast(pa, pb, pa, pb, scale, eye, eye))
        assert logs[f"loss_d{d}"] == pytest.approx(per_dim[-1], abs=1e-5)
    assert loss.item() == pytest.approx(sum(per_dim) / len(dims), abs=1e-5)
    with pytest.raises(ValueError, match="exceeds"):
        ContrastiveLoss(dims=(16,))(a, b)


def test_queue_enqueue_wraps():
    queue = MomentumQueue(dim=2, size=5)
    first = torch.arange(6.0).reshape(3, 2)
    second = -torch.arange(1.0, 7.0).reshape(3, 2)
    queue.enqueue(first)
    queue.enqueue(second)  # 3 + 3 > 5: the third row wraps to slot 0
    assert torch.equal(queue.keys(), torch.stack([second[2], first[1], first[2], second[0],
                                                  second[1]]))
    assert int(queue.ptr) == 1
    big = torch.arange(14.0).reshape(7, 2)
    queue.enqueue(big)  # more rows than slots: the last 5 are kept, the oldest slot first
    assert sorted(queue.keys()[:, 0].tolist()) == big[2:, 0].tolist()
    assert int(queue.ptr) == 1


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_queue_loss_matches_loops(alpha):
    torch.manual_seed(0)
    loss_fn = ContrastiveLoss(dim=6, queue_size=7, alpha=alpha)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    a_m, b_m = a + 0.3 * torch.randn(3, 6, generator=g), b + 0.3 * torch.randn(3, 6, generator=g)
    queue_a, queue_b = loss_fn.queue_a.keys().clone(), loss_fn.queue_b.keys().clone()
    loss, _ = loss_fn(a, b, a_m, b_m)

    scale = 1 / 0.07
    a_keys = [_unit(r) for r in a_m.tolist()] + queue_a.tolist()
    b_keys = [_unit(r) for r in b_m.tolist()] + queue_b.tolist()

    def targets(queries, keys):  # ALBEF: alpha * softmax(sim_m) + (1 - alpha) * one-hot
        rows = []
        for i, q in enumerate(queries):
            sims = [scale * _dot(_unit(q), _unit(k)) for k in keys]
            z = sum(math.exp(s) for s in sims)
            rows.append([alpha * math.exp(s) / z + (1 - alpha) * (j == i)
                         for j, s in enumerate(sims)])
        return rows

    expected = _manual_contrast(a.tolist(), b.tolist(), a_keys, b_keys, scale,
                                targets(a_m.tolist(), b_keys), targets(b_m.tolist(), a_keys))
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # training mode enqueued the normalised momentum features behind the 3 first slots
    assert torch.allclose(loss_fn.queue_a.keys()[:3], F.normalize(a_m, dim=-1))
    assert int(loss_fn.queue_b.ptr) == 3
    loss_fn.eval()
    loss_fn(a, b, a_m, b_m)
    assert int(loss_fn.queue_b.ptr) == 3


def test_distillation_needs_momentum_features():
    with pytest.raises(ValueError, match="a_m and b_m"):
        ContrastiveLoss(alpha=0.4)(torch.randn(2, 4), torch.randn(2, 4))


# -- all-gather with gradients across two real processes ----------------------------------------
def _ddp_worker(rank: int, world: int, init: str, a, b, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        loss_fn = ContrastiveLoss(dims=(3, 6))
        rows = slice(rank * 2, rank * 2 + 2)
        a_local = a[rows].clone().requires_grad_(True)
        b_local = b[rows].clone().requires_grad_(True)
        loss, _ = loss_fn(a_local, b_local)
        loss.backward()
        torch.save({"loss": loss.detach(), "a": a_local.grad, "b": b_local.grad,
                    "scale": loss_fn.logit_scale.grad}, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_all_gather_with_grad_matches_one_process(tmp_path):
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    init, out = f"file://{tmp_path / 'store'}", str(tmp_path / "result")
    mp.start_processes(_ddp_worker, args=(2, init, a, b, out), nprocs=2, start_method="spawn")
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]

    loss_fn = ContrastiveLoss(dims=(3, 6))
    a_all, b_all = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss, _ = loss_fn(a_all, b_all)
    loss.backward()
    # DDP averages over ranks: the global loss is the mean of the ranks' losses, and each
    # rank's gradient (already summed over every rank's loss) over the world size is the
    # global gradient of its rows
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(loss.item(), abs=1e-6)
    for side, full in (("a", a_all.grad), ("b", b_all.grad)):
        gathered = torch.cat([ranks[0][side], ranks[1][side]]) / 2
        assert torch.allclose(gathered, full, atol=1e-6), side
    scale_grad = (ranks[0]["scale"] + ranks[1]["scale"]) / 2
    assert scale_grad.item() == pytest.approx(loss_fn.logit_scale.grad.item(), abs=1e-6)


# -- masked token modelling ---------------------------------------------------------------------
def test_mask_tokens_statistics():
    g = torch.Generator().manual_seed(0)
    vocab, mask_id = 1000, 3
    ids = torch.randint(5, vocab, (200, 500), generator=g)
    special = torch.rand(200, 500, generator=g) < 0.1
    special[:, 0] = True
    inputs, labels = mask_tokens(ids, mask_id=mask_id, vocab_size=vocab, special=special,
                                 generator=g)
    selected = labels != IGNORE
    assert not selected[special].any()
    assert torch.equal(inputs[special], ids[special])
    assert torch.equal(inputs[~selected], ids[~selected])
    assert torch.equal(labels[selected], ids[selected])
    assert selected.sum() / (~special).sum() == pytest.approx(0.15, abs=0.005)
    n = selected.sum().item()
    masked = (inputs[selected] == mask_id).sum().item() / n
    kept = (inputs[selected] == ids[selected]).sum().item() / n
    assert masked == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1, abs=0.01)
    assert 1 - masked - kept == pytest.approx(0.1, abs=0.01)  # random tokens
    first, second = (mask_tokens(ids, mask_id=mask_id, vocab_size=vocab,
                                 generator=torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_mask_tokens_compound_masks_whole_positions():
    g = torch.Generator().manual_seed(1)
    vocab, mask_ids = (4, 50, 300), (1000, 2000, 3000)
    ids = torch.stack([torch.randint(0, v, (64, 200), generator=g) for v in vocab], dim=-1)
    inputs, labels = mask_tokens(ids, mask_id=mask_ids, vocab_size=vocab, mask_prob=0.3,
                                 generator=g)
    selected = labels != IGNORE  # [b n f]
    assert torch.equal(selected, selected[..., :1].expand_as(selected))  # per position
    is_mask = inputs == torch.tensor(mask_ids)
    assert torch.equal(is_mask, is_mask[..., :1].expand_as(is_mask))  # all fields together
    assert is_mask[..., 0].sum() / selected[..., 0].sum() == pytest.approx(0.8, abs=0.02)
    changed = (inputs != ids).any(-1) & ~is_mask[..., 0]  # random replacements
    for f, v in enumerate(vocab):
        assert int(inputs[..., f][~is_mask[..., f]].max()) < v  # from the field's own vocabulary
    assert int(inputs[..., 2][changed].max()) > 50  # ... not from the smallest one
    assert torch.equal(inputs[~selected], ids[~selected])


def _manual_mlm(logits, labels):
    terms = [_ce(row, y) for row, y in zip(logits.reshape(-1, logits.shape[-1]).tolist(),
                                           labels.reshape(-1).tolist(), strict=True) if y != IGNORE]
    return sum(terms) / len(terms)


def test_masked_lm_loss_matches_manual_ce():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 9, generator=g)
    labels = torch.randint(0, 9, (2, 5), generator=g)
    labels[0, :3] = IGNORE
    loss, logs = masked_lm_loss(logits, labels)
    assert loss.item() == pytest.approx(_manual_mlm(logits, labels), abs=1e-5)
    sel = labels != IGNORE
    assert logs["acc"] == pytest.approx((logits.argmax(-1)[sel] == labels[sel]).float().mean())

    vocab = (3, 7)
    fields = [torch.randn(2, 5, v, generator=g) for v in vocab]
    compound = torch.stack([torch.randint(0, v, (2, 5), generator=g) for v in vocab], -1)
    compound[1, 1:] = IGNORE
    loss, logs = masked_lm_loss(fields, compound)
    per_field = [_manual_mlm(x, compound[..., i]) for i, x in enumerate(fields)]
    assert loss.item() == pytest.approx(sum(per_field) / 2, abs=1e-5)
    assert logs["loss_1"] == pytest.approx(per_field[1], abs=1e-5)
    assert {"acc", "acc_0", "acc_1"} <= set(logs)


def test_nothing_selected_gives_zero_loss_without_nan():
    logits = torch.randn(2, 4, 6, requires_grad=True)
    loss, logs = masked_lm_loss(logits, torch.full((2, 4), IGNORE))
    loss.backward()
    assert loss.item() == 0.0 and logs["acc"] == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    head = MaskedModelingLoss(dim=8, vocab_sizes=(5, 6))
    loss, _ = head(torch.randn(2, 4, 8), torch.full((2, 4, 2), IGNORE))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    loss, _ = distill_mlm_loss(logits, logits, torch.full((2, 4), IGNORE), 0.4)
    assert loss.item() == 0.0


def test_masked_modeling_heads_on_selected_positions_and_tied_weights():
    torch.manual_seed(0)
    embedding = nn.Embedding(11, 8)
    mlm = MaskedModelingLoss(dim=8, vocab_sizes=11, decoder_weights=embedding.weight, mask_ids=1)
    hidden = torch.randn(2, 6, 8)
    inputs, labels = mlm.mask(torch.randint(2, 11, (2, 6)), generator=torch.Generator()
                              .manual_seed(5))
    labels[0, 0] = 4  # at least one selected position
    loss, _ = mlm(hidden, labels)
    full, _ = masked_lm_loss(mlm.logits(hidden), labels)  # decoding every position
    assert loss.item() == pytest.approx(full.item(), abs=1e-6)
    loss.backward()
    assert mlm.heads[0].weight is embedding.weight and embedding.weight.grad is not None


# -- matching -----------------------------------------------------------------------------------
def test_hard_negatives_follow_the_softmax_and_skip_the_positive():
    sim = torch.tensor([[5.0, 1.0, 2.0, 0.0], [0.5, 5.0, 0.0, 3.0], [1.0, 0.0, 4.0, 0.2],
                        [0.0, 2.0, 1.0, 4.0]])
    exclude = torch.zeros(4, 4, dtype=torch.bool)
    exclude[2, 0] = True  # e.g. another caption of the same image
    # 1000 independent copies as the diagonal blocks of one batch: off-block pairs are
    # excluded and carry no softmax mass, so every block samples from the 4 x 4 problem
    draws = 1000
    off_block = torch.block_diag(*[torch.ones(4, 4)] * draws) == 0
    big = torch.block_diag(*[sim] * draws).masked_fill(off_block, -1e4)  # [4R 4R]
    neg_b, neg_a = sample_hard_negatives(big, torch.Generator().manual_seed(0),
                                         off_block | torch.block_diag(*[exclude] * draws))
    rows = torch.arange(4 * draws) % 4
    counts_b, counts_a = torch.zeros(4, 4), torch.zeros(4, 4)
    counts_b.index_put_((rows, neg_b % 4), torch.ones(4 * draws), accumulate=True)
    counts_a.index_put_((rows, neg_a % 4), torch.ones(4 * draws), accumulate=True)
    assert torch.equal(neg_b // 4, torch.arange(4 * draws) // 4)  # never outside its block
    for i in range(4):
        assert counts_b[i, i] == 0 and counts_a[i, i] == 0
        for counts, row, banned in ((counts_b, sim[i].tolist(), exclude[i].tolist()),
                                    (counts_a, sim[:, i].tolist(), exclude[:, i].tolist())):
            z = sum(math.exp(s) for s in row)
            w = [0.0 if j == i or banned[j] else math.exp(s) / z + 1e-5
                 for j, s in enumerate(row)]
            for j in range(4):
                assert counts[i, j].item() / draws == pytest.approx(w[j] / sum(w), abs=0.05)
    assert counts_b[2, 0] == 0 and counts_a[0, 2] == 0
    with pytest.raises(ValueError):
        sample_hard_negatives(torch.zeros(1, 1))


def test_matching_loss_matches_manual():
    torch.manual_seed(0)
    itm = MatchingLoss(dim=5)
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    sim = torch.randn(3, 3, generator=g)
    calls = []

    def fuse(a_idx, b_idx):
        calls.append((a_idx.tolist(), b_idx.tolist()))
        return torch.tanh(a[a_idx] + 2 * b[b_idx])

    loss, logs = itm(sim, fuse, generator=torch.Generator().manual_seed(9))
    neg_b, neg_a = sample_hard_negatives(sim, torch.Generator().manual_seed(9))
    pairs = [(i, i, 1) for i in range(3)] + [(i, int(neg_b[i]), 0) for i in range(3)] + \
            [(int(neg_a[j]), j, 0) for j in range(3)]
    assert calls == [([p[0] for p in pairs], [p[1] for p in pairs])]
    w, bias = itm.head.proj.weight.tolist(), itm.head.proj.bias.tolist()
    terms = []
    for i, j, label in pairs:
        fused = torch.tanh(a[i] + 2 * b[j]).tolist()
        terms.append(_ce([_dot(w[c], fused) + bias[c] for c in range(2)], label))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-5)
    assert 0.0 <= logs["acc"] <= 1.0
    fused = torch.randn(4, 5)
    logits = itm.head(fused)
    expected = [math.exp(r[1]) / (math.exp(r[0]) + math.exp(r[1])) for r in logits.tolist()]
    assert itm_scores(itm.head, fused).tolist() == pytest.approx(expected, abs=1e-6)
    assert matching_pairs(neg_b, neg_a)[2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]


# -- momentum distillation ----------------------------------------------------------------------
def test_soft_targets_and_distilled_mlm_match_manual():
    g = torch.Generator().manual_seed(8)
    sim_m, hard = torch.randn(3, 5, generator=g), torch.eye(3, 5)
    got = soft_targets(sim_m, 0.4, hard)
    for i, row in enumerate(sim_m.tolist()):
        z = sum(math.exp(s) for s in row)
        expected = [0.4 * math.exp(s) / z + 0.6 * hard[i, j].item() for j, s in enumerate(row)]
        assert got[i].tolist() == pytest.approx(expected, abs=1e-6)

    logits, logits_m = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    labels = torch.randint(0, 6, (2, 4), generator=g)
    labels[1, 2:] = IGNORE
    loss, logs = distill_mlm_loss(logits, logits_m, labels, alpha=0.3)
    hard_terms, soft_terms = [], []
    for x, x_m, y in zip(logits.reshape(-1, 6).tolist(), logits_m.reshape(-1, 6).tolist(),
                         labels.reshape(-1).tolist(), strict=True):
        if y == IGNORE:
            continue
        z = sum(math.exp(v) for v in x_m)
        hard_terms.append(_ce(x, y))
        soft_terms.append(_soft_ce(x, [math.exp(v) / z for v in x_m]))
    hard_ce, soft_ce = sum(hard_terms) / len(hard_terms), sum(soft_terms) / len(soft_terms)
    assert loss.item() == pytest.approx(0.7 * hard_ce + 0.3 * soft_ce, abs=1e-5)
    assert logs["loss_mlm"] == pytest.approx(hard_ce, abs=1e-5)


def test_momentum_update_formula_and_copy():
    torch.manual_seed(0)
    online, other = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in other.parameters()]
    momentum_update(online, other, m=0.9)
    for p, p_m, old in zip(online.parameters(), other.parameters(), before, strict=True):
        assert torch.allclose(p_m, 0.9 * old + 0.1 * p, atol=1e-7)
    copy_params(online, other)
    assert all(torch.equal(p, q) and not q.requires_grad
               for p, q in zip(online.parameters(), other.parameters(), strict=True))
    teacher = momentum_copy(online)
    assert all(not p.requires_grad for p in teacher.parameters())
    schedule = MomentumDistillation(alpha=0.4, warmup_steps=100)
    assert [schedule.alpha_at(s) for s in (0, 50, 100, 500)] == pytest.approx([0, 0.2, 0.4, 0.4])


# -- the objective contract ---------------------------------------------------------------------
@pytest.mark.parametrize(("factory", "config"), [
    ("contrastive_loss", {}),
    ("contrastive_loss", {"dims": (4, 8, 16)}),
    ("contrastive_loss", {"dim": 16, "queue_size": 10, "alpha": 0.4, "dims": (8, 16)}),
    ("masked_modeling_loss", {}),
    ("masked_modeling_loss", {"vocab_sizes": (5, 7, 9), "transform": False}),
    ("matching_loss", {}),
    ("distillation_loss", {}),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v[k]}" for k in v) or "default")
def test_objective_contract(factory, config):
    from mmenc import testing
    from mmenc.specs import ObjectiveSpec

    testing.check_objective(ObjectiveSpec(factory.replace("_", "-"),
                                          f"mmenc.objectives:{factory}"), config)
    module = getattr(objectives, factory)(**config)
    first, second = module.example_inputs(), module.example_inputs()
    assert all(torch.equal(first[k], second[k]) for k in first)  # deterministic
