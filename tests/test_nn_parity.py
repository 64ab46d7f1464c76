"""Parity of converted HF BERT/RoBERTa and timm ViT checkpoints with the original models."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from mmenc.keymaps.hf_text import (
    build_text_transformer,
    convert_hf_text_state_dict,
    load_converted,
    load_hf_text,
    text_config_from_hf,
)

transformers = pytest.importorskip("transformers")

TOL = 1e-5


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Give LayerNorms and biases random values, so a dropped or swapped one changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))


def hf_text_model(kind: str, position: str = "absolute") -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    common = dict(
        vocab_size=99,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=40,
        type_vocab_size=3,
        position_embedding_type=position,
    )
    if kind == "bert":
        # HF runs relative_key_query only in its eager attention
        attn = "eager" if position != "absolute" else "sdpa"
        config = transformers.BertConfig(**common, pad_token_id=0, attn_implementation=attn)
        model = transformers.BertModel(config)
    else:
        config = transformers.RobertaConfig(**common, pad_token_id=1, attn_implementation="sdpa")
        model = transformers.RobertaModel(config)
    randomise(model)
    return model.eval(), config.to_dict()


def text_inputs(pad_id: int, padded: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (3, 12), generator=gen)
    mask = torch.ones(3, 12, dtype=torch.bool)
    if padded:
        mask[1, 7:] = False
        mask[2, 3:] = False
        ids[~mask] = pad_id
    types = torch.randint(0, 3, (3, 12), generator=gen)
    return ids, mask, types


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


CASES = [("bert", "absolute"), ("roberta", "absolute"), ("bert", "relative_key_query")]


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize(("kind", "position"), CASES, ids=[f"{k}-{p}" for k, p in CASES])
def test_hf_text_parity(kind: str, position: str, padded: bool) -> None:
    hf, config = hf_text_model(kind, position)
    ours = load_hf_text(hf.state_dict(), config)
    ids, mask, types = text_inputs(config["pad_token_id"], padded)
    with torch.no_grad():
        ref = hf(
            input_ids=ids,
            attention_mask=mask.long(),
            token_type_ids=types,
            output_hidden_states=True,
        )
        out = ours(ids, mask=mask, token_type_ids=types, output_hidden_states=True)
    assert max_diff(out.last_hidden_state, ref.last_hidden_state) < TOL
    assert out.pooled is not None and max_diff(out.pooled, ref.pooler_output) < TOL
    assert out.hidden_states is not None and len(out.hidden_states) == len(ref.hidden_states) == 3
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert max_diff(mine, theirs) < TOL


def test_hf_prefixed_checkpoint_reports_heads() -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=99,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )
    mlm = transformers.BertForMaskedLM(config).eval()
    converted = convert_hf_text_state_dict(mlm.state_dict(), config.to_dict())
    assert any(k.startswith("cls.") for k in converted.ignored)
    assert all(not k.startswith("cls.") for k in converted)
    model = build_text_transformer(text_config_from_hf(config.to_dict(), pooler=False))
    load_converted(model, converted)
    ids = torch.randint(3, 99, (2, 9))
    with torch.no_grad():
        ref = mlm.bert(input_ids=ids).last_hidden_state
        assert max_diff(model.eval()(ids).last_hidden_state, ref) < TOL


@pytest.mark.parametrize("perturb", ["tensor", "swap_qk", "drop_ln_bias"])
def test_perturbed_checkpoint_changes_outputs(perturb: str) -> None:
    hf, config = hf_text_model("bert")
    sd = dict(hf.state_dict())
    prefix = "encoder.layer.1.attention"
    if perturb == "tensor":
        sd["encoder.layer.0.output.dense.weight"] = sd["encoder.layer.0.output.dense.weight"] * 1.01
    elif perturb == "swap_qk":
        q, k = sd[f"{prefix}.self.query.weight"], sd[f"{prefix}.self.key.weight"]
        sd[f"{prefix}.self.query.weight"], sd[f"{prefix}.self.key.weight"] = k, q
    else:
        sd[f"{prefix}.output.LayerNorm.bias"] = torch.zeros(64)
    ids, mask, types = text_inputs(0, padded=False)
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types).last_hidden_state
        out = load_hf_text(sd, config)(ids, token_type_ids=types).last_hidden_state
    assert max_diff(out, ref) > 10 * TOL  # far outside the parity tolerance


def test_load_converted_names_bad_keys() -> None:
    hf, config = hf_text_model("bert")
    converted = dict(convert_hf_text_state_dict(hf.state_dict(), config))
    del converted["trunk.layers.0.attn.qkv.bias"]
    converted["trunk.layers.0.extra"] = torch.zeros(1)
    converted["pooler.dense.bias"] = torch.zeros(3)
    model = build_text_transformer(text_config_from_hf(config))
    with pytest.raises(ValueError) as err:
        load_converted(model, converted)
    message = str(err.value)
    assert "trunk.layers.0.attn.qkv.bias" in message
    assert "trunk.layers.0.extra" in message
    assert "pooler.dense.bias: checkpoint (3,) vs model (64,)" in message


def test_unmapped_base_key_is_an_error() -> None:
    hf, config = hf_text_model("bert")
    sd = dict(hf.state_dict())
    sd["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(4)
    with pytest.raises(ValueError, match="rotary"):
        convert_hf_text_state_dict(sd, config)


def test_timm_vit_parity() -> None:
    timm = pytest.importorskip("timm")
    from mmenc.keymaps.timm_vit import load_timm_vit

    torch.manual_seed(0)
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=5
    )
    randomise(ref)
    ref.eval()
    ours = load_timm_vit(ref.state_dict(), heads=4)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ref.forward_features(images)
        out = ours(images)
    assert max_diff(out.last_hidden_state, expected) < TOL
    assert out.pooled is not None and max_diff(out.pooled, expected[:, 0]) < TOL


def test_timm_vit_position_interpolation() -> None:
    """Other image sizes resize positions bicubically, antialiased as in timm, class token kept."""
    timm = pytest.importorskip("timm")
    from mmenc.keymaps.timm_vit import load_timm_vit

    torch.manual_seed(0)
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=32,
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=4,
        num_classes=0,
        dynamic_img_size=True,
    )
    randomise(ref)
    ref.eval()
    ours = load_timm_vit(ref.state_dict(), heads=4)
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = ref.forward_features(images)
        out = ours(images)
    assert out.last_hidden_state.shape == (2, 1 + 4 * 3, 64)
    assert max_diff(out.last_hidden_state, expected) < TOL
