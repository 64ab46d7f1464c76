"""Behaviour of the shared trunk (mmenc.nn), checked against slow direct computations."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.nn import (
    ConvPositions,
    GatedRelativeBias,
    KeyQueryRelative,
    RelativePositionBias,
    SelfAttention,
    TextEmbeddings,
    TextTransformer,
    TrunkConfig,
    VisionEmbeddings,
    VisionTransformer,
    build_trunk,
    interpolate_positions,
    masked_mean,
    padding_aware_position_ids,
    relative_position_bucket,
)

TOL = 1e-5
SMALL = TrunkConfig(dim=32, depth=2, heads=4, ffn_dim=64)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random LayerNorm weights/biases and biases, so a dropped one shows up in a comparison."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(
                    (1.0 if name.endswith("norm.weight") else 0.0)
                    + 0.1 * torch.randn(p.shape, generator=gen)
                )
    return model


def trunk(**changes: object) -> nn.Module:
    torch.manual_seed(0)
    return randomise(build_trunk(replace(SMALL, **changes))).eval()


def slow_attention(attn: SelfAttention, x: Tensor, logits_bias: Tensor | None = None) -> Tensor:
    """Attention written out head by head, with an optional additive logit term [b h n n]."""
    b, n, dim = x.shape
    h = attn.heads
    d = dim // h
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(dim, dim=-1)
    q, k, v = (t.reshape(b, n, h, d).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(d)
    if logits_bias is not None:
        logits = logits + logits_bias
    out = logits.softmax(-1) @ v  # [b h n d]
    return attn.out(out.transpose(1, 2).reshape(b, n, dim))


@pytest.mark.parametrize("norm", ["post", "pre", "deepnorm"])
def test_block_matches_formula(norm: str) -> None:
    model = trunk(norm=norm, depth=3, final_norm=False)
    block = model.layers[0]
    x = torch.randn(2, 6, 32)
    alpha = (2 * 3) ** 0.25 if norm == "deepnorm" else 1.0
    ffn = block.ffn
    if norm == "pre":
        h = x + slow_attention(block.attn, block.attn_norm(x))
        expected = h + ffn(block.ffn_norm(h))
    else:
        h = block.attn_norm(x * alpha + slow_attention(block.attn, x))
        expected = block.ffn_norm(h * alpha + ffn.fc2(F.gelu(ffn.fc1(h))))
    with torch.no_grad():
        assert (block(x) - expected).abs().max() < TOL


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "quick_gelu", "relu", "silu"])
def test_activations(activation: str) -> None:
    ffn = trunk(activation=activation).layers[0].ffn
    x = torch.randn(3, 32)
    hidden = ffn.fc1(x)
    expected = {
        "gelu": 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2))),
        "gelu_tanh": 0.5
        * hidden
        * (1 + torch.tanh(math.sqrt(2 / math.pi) * (hidden + 0.044715 * hidden**3))),
        "quick_gelu": hidden * torch.sigmoid(1.702 * hidden),
        "relu": hidden.clamp(min=0),
        "silu": hidden * torch.sigmoid(hidden),
    }[activation]
    with torch.no_grad():
        assert (ffn(x) - ffn.fc2(expected)).abs().max() < TOL


def test_causal_outputs_ignore_later_tokens() -> None:
    model = trunk()
    x = torch.randn(2, 7, 32)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 3, 32)
    with torch.no_grad():
        a = model(x, attn_mode="causal").last_hidden_state
        b = model(y, attn_mode="causal").last_hidden_state
        bidir = model(y).last_hidden_state
    assert (a[:, :4] - b[:, :4]).abs().max() < TOL
    assert (a[:, :4] - bidir[:, :4]).abs().max() > 1e-3


def test_prefix_mode() -> None:
    model = trunk()
    x = torch.randn(2, 8, 32)
    prefix = torch.tensor([3, 5])
    with torch.no_grad():
        base = model(x, attn_mode="prefix", prefix_len=prefix).last_hidden_state
        later = x.clone()
        later[:, 6:] = torch.randn(2, 2, 32)  # after both prefixes: the prefixes must not see it
        out = model(later, attn_mode="prefix", prefix_len=prefix).last_hidden_state
        assert (out[:, :6] - base[:, :6]).abs().max() < TOL
        inside = x.clone()
        inside[:, 2] = torch.randn(2, 32)  # the last prefix token of item 0: token 0 must see it
        out = model(inside, attn_mode="prefix", prefix_len=prefix).last_hidden_state
        assert (out[:, 0] - base[:, 0]).abs().max() > 1e-3
        # item 1's prefix is 5: its token 4 sees token 2; a causal model at token 1 would not
        causal = model(inside, attn_mode="causal").last_hidden_state
        base_causal = model(x, attn_mode="causal").last_hidden_state
        assert (causal[:, 1] - base_causal[:, 1]).abs().max() < TOL


@pytest.mark.parametrize("relative", ["none", "t5", "gated", "key_query"])
@pytest.mark.parametrize("attn_mode", ["bidirectional", "causal"])
def test_padding_does_not_change_real_tokens(relative: str, attn_mode: str) -> None:
    model = trunk(
        relative=relative, norm="deepnorm" if relative == "gated" else "post", max_positions=16
    )
    x = torch.randn(2, 5, 32)
    padded = torch.cat([x, torch.randn(2, 3, 32)], dim=1)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 5:] = False
    with torch.no_grad():
        plain = model(x, attn_mode=attn_mode).last_hidden_state
        out = model(padded, mask=mask, attn_mode=attn_mode).last_hidden_state
    assert (out[:, :5] - plain).abs().max() < TOL


def test_fully_padded_rows_are_finite() -> None:
    model = trunk(relative="gated", conv_pos=4, conv_pos_groups=4, cross_dim=16)
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[True] * 5, [False] * 5])
    context = torch.randn(2, 3, 16)
    context_mask = torch.tensor([[True, True, False], [False, False, False]])
    for mode in ("bidirectional", "causal"):
        out = model(x, mask=mask, attn_mode=mode, context=context, context_mask=context_mask)
        assert torch.isfinite(out.last_hidden_state).all()


def slow_bucket(rel: int, num_buckets: int, max_distance: int) -> int:
    half = num_buckets // 2
    offset = half if rel > 0 else 0
    dist = abs(rel)
    max_exact = half // 2
    if dist < max_exact:
        return offset + dist
    log_bucket = max_exact + int(
        math.log(dist / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    )
    return offset + min(log_bucket, half - 1)


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (320, 800)])
def test_relative_buckets(num_buckets: int, max_distance: int) -> None:
    rel = torch.arange(-1500, 1501)
    fast = relative_position_bucket(rel, num_buckets, max_distance)
    slow = torch.tensor([slow_bucket(int(r), num_buckets, max_distance) for r in rel])
    assert torch.equal(fast, slow)
    half = num_buckets // 2
    assert fast[1500] == 0 and fast[1501] == half + 1 and fast[1499] == 1
    assert fast[0] == half - 1 and fast[-1] == num_buckets - 1


def test_t5_bias_shared_and_exact() -> None:
    model = trunk(relative="t5", num_buckets=8, max_distance=16, norm="post")
    assert [k for k in model.state_dict() if "rel_bias" in k] == ["rel_bias.weight"]
    x = torch.randn(2, 6, 32)
    idx = torch.arange(6)
    bias = model.rel_bias.weight[
        relative_position_bucket(idx[None] - idx[:, None], 8, 16)
    ]  # [n m h]
    bias = bias.permute(2, 0, 1)[None]
    expected = x
    for block in model.layers:
        h = block.attn_norm(expected + slow_attention(block.attn, expected, bias))
        expected = block.ffn_norm(h + block.ffn(h))
    with torch.no_grad():
        assert (model(x).last_hidden_state - expected).abs().max() < TOL


def test_gated_relative_bias_matches_beats_formula() -> None:
    torch.manual_seed(0)
    heads, dim, n = 4, 32, 7
    attn = randomise(SelfAttention(dim, heads, relative=GatedRelativeBias(heads, dim // heads)))
    with torch.no_grad():
        attn.relative.scale.copy_(1 + 0.3 * torch.randn(1, heads, 1, 1))
    table = RelativePositionBias(heads, num_buckets=16, max_distance=32)
    x = torch.randn(2, n, dim)
    shared = table(n)  # [1 h n n]
    # slow: per query, gate = a*(b*s - 1) + 2 from the raw projected query
    q = (x @ attn.qkv.weight[:dim].T + attn.qkv.bias[:dim]).reshape(2, n, heads, -1).transpose(1, 2)
    lin = q @ attn.relative.linear.weight.T + attn.relative.linear.bias  # [b h n 8]
    gate_a = torch.sigmoid(lin[..., :4].sum(-1, keepdim=True))
    gate_b = torch.sigmoid(lin[..., 4:].sum(-1, keepdim=True))
    gate = gate_a * (gate_b * attn.relative.scale - 1) + 2
    with torch.no_grad():
        expected = slow_attention(attn, x, gate * shared)
        assert (attn(x, shared_bias=shared) - expected).abs().max() < TOL
        assert (attn(x, shared_bias=shared) - slow_attention(attn, x, shared)).abs().max() > 1e-4


def test_key_query_matches_hf_formula() -> None:
    torch.manual_seed(0)
    heads, dim, n, max_pos = 4, 32, 9, 12
    attn = randomise(SelfAttention(dim, heads, relative=KeyQueryRelative(max_pos, dim // heads)))
    x = torch.randn(2, n, dim)
    q, k, _ = (x @ attn.qkv.weight.T + attn.qkv.bias).split(dim, dim=-1)
    q, k = (t.reshape(2, n, heads, -1).transpose(1, 2) for t in (q, k))
    idx = torch.arange(n)
    table = attn.relative.distance.weight[idx[:, None] - idx[None, :] + max_pos - 1]  # [l r d]
    rel = torch.einsum("bhld,lrd->bhlr", q, table) + torch.einsum("bhrd,lrd->bhlr", k, table)
    with torch.no_grad():
        expected = slow_attention(attn, x, rel / math.sqrt(dim // heads))
        assert (attn(x) - expected).abs().max() < TOL
    with pytest.raises(ValueError, match="max_positions"):
        attn(torch.randn(1, max_pos + 1, dim))


@pytest.mark.parametrize("kernel", [4, 5])
def test_conv_positions_match_weight_norm_conv(kernel: int) -> None:
    torch.manual_seed(0)
    dim, groups = 16, 4
    conv_pos = ConvPositions(dim, kernel, groups)
    with torch.no_grad():
        conv_pos.weight_g.mul_(1 + 0.1 * torch.randn_like(conv_pos.weight_g))
        conv_pos.bias.normal_()
    reference = nn.utils.parametrizations.weight_norm(
        nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups), name="weight", dim=2
    )
    with torch.no_grad():
        reference.parametrizations.weight.original0.copy_(conv_pos.weight_g)
        reference.parametrizations.weight.original1.copy_(conv_pos.weight_v)
        reference.bias.copy_(conv_pos.bias)
    x = torch.randn(2, 11, dim)
    with torch.no_grad():
        y = reference(x.transpose(1, 2))
        y = F.gelu(y[..., :-1] if kernel % 2 == 0 else y).transpose(1, 2)
        assert (conv_pos(x) - y).abs().max() < TOL
    model = trunk(conv_pos=kernel, conv_pos_groups=groups, input_norm=True, norm="deepnorm")
    with torch.no_grad():
        out = model(x.repeat(1, 1, 2), output_hidden_states=True)
        x2 = x.repeat(1, 1, 2)
        expected = model.input_norm(x2 + model.conv_pos(x2))
        assert (out.hidden_states[0] - expected).abs().max() < TOL


def test_cross_attention() -> None:
    model = trunk(norm="post", cross_dim=24, cross_layers=[1])
    assert model.layers[0].cross_attn is None and model.layers[1].cross_attn is not None
    assert model.layers[1].cross_attn.kv.weight.shape == (64, 24)
    x = torch.randn(2, 5, 32)
    context = torch.randn(2, 4, 24)
    context_mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    with torch.no_grad():
        base = model(x, context=context, context_mask=context_mask).last_hidden_state
        other = context.clone()
        other[0, 3] = torch.randn(24)
        other[1, 2:] = torch.randn(2, 24)
        assert (
            model(x, context=other, context_mask=context_mask).last_hidden_state - base
        ).abs().max() < TOL
        other[:, 0] = torch.randn(2, 24)
        assert (
            model(x, context=other, context_mask=context_mask).last_hidden_state - base
        ).abs().max() > 1e-3
    with pytest.raises(ValueError, match="context"):
        model(x)


def test_cross_attention_pre_norm_formula() -> None:
    model = trunk(cross_dim=16, final_norm=False)
    block = model.layers[0]
    x, context = torch.randn(2, 5, 32), torch.randn(2, 3, 16)
    cross = block.cross_attn
    h = x + slow_attention(block.attn, block.attn_norm(x))
    q = cross.q(block.cross_norm(h)).reshape(2, 5, 4, 8).transpose(1, 2)
    k, v = (t.reshape(2, 3, 4, 8).transpose(1, 2) for t in cross.kv(context).split(32, dim=-1))
    attended = (
        ((q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 32)
    )
    h = h + cross.out(attended)
    expected = h + block.ffn(block.ffn_norm(h))
    with torch.no_grad():
        assert (block(x, context=context) - expected).abs().max() < TOL


def full_featured() -> TrunkConfig:
    return replace(
        SMALL,
        norm="deepnorm",
        relative="gated",
        num_buckets=16,
        max_distance=32,
        conv_pos=4,
        conv_pos_groups=4,
        input_norm=True,
        final_norm=True,
        cross_dim=16,
        dropout=0.1,
        attn_dropout=0.1,
    )


def test_grad_checkpointing_same_outputs_and_grads() -> None:
    torch.manual_seed(0)
    model = build_trunk(full_featured()).train()
    x, context = torch.randn(2, 6, 32), torch.randn(2, 3, 16)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])

    def run(checkpointing: bool) -> tuple[Tensor, list[Tensor]]:
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad()
        torch.manual_seed(1)
        out = model(x, mask=mask, context=context).last_hidden_state
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    out_a, grads_a = run(False)
    out_b, grads_b = run(True)
    assert torch.equal(out_a, out_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("relative", ["gated", "key_query"])
def test_every_parameter_gets_a_gradient(relative: str) -> None:
    torch.manual_seed(0)
    model = build_trunk(replace(full_featured(), relative=relative, max_positions=8)).train()
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = model(torch.randn(2, 6, 32), mask=mask, context=torch.randn(2, 3, 16))
    out.last_hidden_state.sum().backward()
    missing = [
        name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing


def test_hidden_states() -> None:
    model = trunk(depth=3)
    x = torch.randn(2, 4, 32)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    assert out.hidden_states is not None and len(out.hidden_states) == 4
    assert torch.equal(out.hidden_states[0], x)
    assert torch.allclose(model.final_norm(out.hidden_states[-1]), out.last_hidden_state)
    assert model(x).hidden_states is None


def test_trunk_config_round_trip() -> None:
    cfg = replace(full_featured(), cross_layers=(0, 1))
    assert TrunkConfig(**asdict(cfg)) == cfg
    assert TrunkConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg
    pre = TrunkConfig(dim=8, depth=1, heads=2, ffn_dim=8)
    assert pre.use_final_norm and not replace(pre, norm="post").use_final_norm
    with pytest.raises(ValueError, match="norm"):
        TrunkConfig(dim=8, depth=1, heads=2, ffn_dim=8, norm="sandwich")


def test_state_dict_names() -> None:
    keys = set(
        build_trunk(
            replace(SMALL, cross_dim=16, relative="gated", conv_pos=4, conv_pos_groups=4)
        ).state_dict()
    )
    for key in (
        "layers.0.attn.qkv.weight",
        "layers.0.attn.out.bias",
        "layers.0.attn_norm.weight",
        "layers.0.ffn.fc1.weight",
        "layers.0.ffn.fc2.bias",
        "layers.0.ffn_norm.bias",
        "layers.1.cross_attn.q.weight",
        "layers.1.cross_attn.kv.weight",
        "layers.1.cross_attn.out.weight",
        "layers.1.cross_norm.weight",
        "layers.0.attn.relative.linear.weight",
        "layers.0.attn.relative.scale",
        "rel_bias.weight",
        "conv_pos.weight_g",
        "conv_pos.weight_v",
        "conv_pos.bias",
        "final_norm.weight",
    ):
        assert key in keys


def test_text_transformer_and_helpers() -> None:
    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    assert padding_aware_position_ids(ids, pad_id=1).tolist() == [
        [2, 3, 4, 5, 1, 1],
        [2, 3, 4, 1, 1, 1],
    ]
    torch.manual_seed(0)
    emb = TextEmbeddings(10, 32, max_positions=8, pad_id=1, padding_aware_positions=True)
    model = TextTransformer(emb, build_trunk(replace(SMALL, norm="post"))).eval()
    mask = ids != 1
    with torch.no_grad():
        out = model(ids, mask=mask)
        short = model(ids[:1, :4])
    assert out.pooled is None
    assert (out.last_hidden_state[:1, :4] - short.last_hidden_state).abs().max() < TOL
    hidden = torch.randn(2, 3, 4)
    mean = masked_mean(hidden, torch.tensor([[True, True, False], [False, False, False]]))
    assert torch.allclose(mean[0], hidden[0, :2].mean(0)) and torch.equal(mean[1], torch.zeros(4))


def test_vision_transformer_other_image_size() -> None:
    torch.manual_seed(0)
    emb = VisionEmbeddings(image_size=32, patch_size=8, dim=32, pre_norm=True)
    model = VisionTransformer(emb, build_trunk(SMALL)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).last_hidden_state.shape == (2, 17, 32)
        out = model(torch.randn(1, 3, 48, 64))
    assert out.last_hidden_state.shape == (1, 1 + 6 * 8, 32) and out.pooled is not None
    # ALBEF's interpolate_pos_embed: class token kept, the 4x4 grid resized as an image
    weight = emb.position.weight
    resized = interpolate_positions(weight, (6, 8), extra_tokens=1)
    grid = weight[1:].reshape(4, 4, 32).permute(2, 0, 1)[None]  # [1 d 4 4], row-major patches
    grid = F.interpolate(grid, size=(6, 8), mode="bicubic", align_corners=False)
    assert torch.equal(resized[0], weight[0])
    assert torch.allclose(resized[1:], grid[0].permute(1, 2, 0).reshape(48, 32), atol=1e-6)
    assert interpolate_positions(weight, (4, 4), extra_tokens=1) is weight


@pytest.mark.parametrize("field,value", [("heads", 0), ("dim", -8), ("depth", 0),
                                         ("ffn_dim", 0), ("heads", 2.5)])
def test_trunk_config_refuses_non_positive_sizes(field, value):
    from dataclasses import replace

    base = TrunkConfig(dim=16, depth=1, heads=2, ffn_dim=32)
    with pytest.raises(ValueError, match=field):
        replace(base, **{field: value})
