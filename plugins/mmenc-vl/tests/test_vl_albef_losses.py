"""ALBEF's pre-training losses against an independent re-run of the official loss code.

The reference is built from the shared official fixture's checkpoint into timm's
``VisionTransformer`` (ALBEF's ``vit.py``) and HF BERT layers (ALBEF's ``xbert.py``), and computes
ITC (momentum features + queues, soft targets), ITM (one hard negative per side) and MLM (with the
momentum model's soft labels) in the order of the official ``ALBEF.forward`` in
``models/model_pretrain.py``: momentum update first, the queues last. Both sides see the same
weights, the same batch and the same random choices: mmenc's draws (masked positions and
replacements, hard-negative indices) are recorded and replayed in the reference.
"""

from __future__ import annotations

import copy
import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmenc.batch import TokenBatch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("timm")

OFFICIAL = Path(__file__).resolve().parents[4] / "shared" / "parity" / "albef" / "small"


def _vit(cfg: dict, vit: dict) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=cfg["image_res"], patch_size=16, embed_dim=vit["embed_dim"],
                             depth=vit["depth"], num_heads=vit["num_heads"], mlp_ratio=4,
                             qkv_bias=True, num_classes=0, global_pool="token",
                             norm_layer=partial(nn.LayerNorm, eps=1e-6))


def _bert(bert: dict, layers: int, cross: bool) -> nn.Module:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=bert["vocab_size"], hidden_size=bert["hidden_size"],
                     num_hidden_layers=layers, num_attention_heads=bert["num_attention_heads"],
                     intermediate_size=bert["intermediate_size"],
                     max_position_embeddings=bert["max_position_embeddings"],
                     type_vocab_size=bert["type_vocab_size"], layer_norm_eps=bert["layer_norm_eps"],
                     is_decoder=cross, add_cross_attention=cross)
    cfg._attn_implementation = "eager"
    model = BertModel(cfg, add_pooling_layer=False)
    if cross:  # xbert: cross-attention keys and values read encoder_width-wide image tokens
        for layer in model.encoder.layer:
            dim = bert["hidden_size"]
            layer.crossattention.self.key = nn.Linear(bert["encoder_width"], dim)
            layer.crossattention.self.value = nn.Linear(bert["encoder_width"], dim)
    return model


class Reference(nn.Module):
    """One of ALBEF's two encoder sets (online or momentum) in timm / HF modules."""

    def __init__(self, fixture: dict, sd: dict, suffix: str) -> None:
        super().__init__()
        cfg, bert = fixture["config"], fixture["bert_config"]
        k = bert["fusion_layer"]
        self.vit = _vit(cfg, fixture["vit_override"])
        self.text = _bert(bert, k, cross=False)
        self.fusion = _bert(bert, bert["num_hidden_layers"] - k, cross=True)
        dim, vocab = bert["hidden_size"], bert["vocab_size"]
        self.vision_proj = nn.Linear(cfg["vision_width"], cfg["embed_dim"])
        self.text_proj = nn.Linear(dim, cfg["embed_dim"])
        self.mlm_dense = nn.Linear(dim, dim)
        self.mlm_norm = nn.LayerNorm(dim, eps=bert["layer_norm_eps"])
        self.mlm_bias = nn.Parameter(torch.zeros(vocab))
        self._load(sd, suffix, k)

    def _load(self, sd: dict, suffix: str, k: int) -> None:
        def strip(prefix: str) -> dict:
            return {key[len(prefix):]: v for key, v in sd.items() if key.startswith(prefix)}

        self.vit.load_state_dict(strip(f"visual_encoder{suffix}."))
        bert = strip(f"text_encoder{suffix}.bert.")
        text = {key: v for key, v in bert.items() if not key.startswith("encoder.layer.")}
        fusion = {}
        for key, v in bert.items():
            if key.startswith("encoder.layer."):
                i, rest = key[len("encoder.layer."):].split(".", 1)
                if int(i) < k:
                    text[key] = v
                else:
                    fusion[f"encoder.layer.{int(i) - k}.{rest}"] = v
        text.pop("embeddings.position_ids", None)
        self.text.load_state_dict(text, strict=False)
        self.fusion.encoder.load_state_dict(strip_prefix(fusion, "encoder."))
        for name in ("vision_proj", "text_proj"):
            getattr(self, name).load_state_dict(strip(f"{name}{suffix}."))
        cls = strip(f"text_encoder{suffix}.cls.predictions.")
        self.mlm_dense.load_state_dict(strip_prefix(cls, "transform.dense."))
        self.mlm_norm.load_state_dict(strip_prefix(cls, "transform.LayerNorm."))
        with torch.no_grad():
            self.mlm_bias.copy_(cls["bias"])

    def encode_text(self, ids, mask):  # [b n] -> [b n d]
        return self.text(input_ids=ids, attention_mask=mask).last_hidden_state

    def fuse(self, text_embeds, mask, image_embeds):  # xbert's mode='fusion'
        ext = (1.0 - mask[:, None, None, :].float()) * -10000.0  # [b 1 1 n]
        h = text_embeds
        for layer in self.fusion.encoder.layer:
            h = layer(h, attention_mask=ext, encoder_hidden_states=image_embeds,
                      encoder_attention_mask=None)[0]
        return h

    def mlm_logits(self, hidden):  # BertOnlyMLMHead, decoder tied to the word embeddings
        h = self.mlm_norm(F.gelu(self.mlm_dense(hidden)))
        return h @ self.text.embeddings.word_embeddings.weight.T + self.mlm_bias


def strip_prefix(d: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}


def official_losses(online: Reference, momentum: Reference, state: dict, image, ids, mask,
                    masked_ids, labels, neg_image_idx, neg_text_idx, alpha, m):
    """ALBEF.forward of model_pretrain.py, with its random draws passed in."""
    temp = state["temp"].clamp(0.001, 0.5)
    image_embeds = online.vit.forward_features(image)
    image_feat = F.normalize(online.vision_proj(image_embeds[:, 0]), dim=-1)
    text_embeds = online.encode_text(ids, mask)
    text_feat = F.normalize(online.text_proj(text_embeds[:, 0]), dim=-1)
    with torch.no_grad():
        for p, p_m in zip(online.parameters(), momentum.parameters(), strict=True):
            p_m.data = p_m.data * m + p.data * (1.0 - m)
        image_embeds_m = momentum.vit.forward_features(image)
        image_feat_m = F.normalize(momentum.vision_proj(image_embeds_m[:, 0]), dim=-1)
        image_feat_all = torch.cat([image_feat_m.t(), state["image_queue"].clone()], dim=1)
        text_out_m = momentum.encode_text(ids, mask)
        text_feat_m = F.normalize(momentum.text_proj(text_out_m[:, 0]), dim=-1)
        text_feat_all = torch.cat([text_feat_m.t(), state["text_queue"].clone()], dim=1)
        sim_i2t_m = image_feat_m @ text_feat_all / temp
        sim_t2i_m = text_feat_m @ image_feat_all / temp
        sim_targets = torch.zeros(sim_i2t_m.size())
        sim_targets.fill_diagonal_(1)
        sim_i2t_targets = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * sim_targets
        sim_t2i_targets = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * sim_targets
    sim_i2t = image_feat @ text_feat_all / temp
    sim_t2i = text_feat @ image_feat_all / temp
    loss_i2t = -torch.sum(F.log_softmax(sim_i2t, dim=1) * sim_i2t_targets, dim=1).mean()
    loss_t2i = -torch.sum(F.log_softmax(sim_t2i, dim=1) * sim_t2i_targets, dim=1).mean()
    loss_ita = (loss_i2t + loss_t2i) / 2

    bs = image.size(0)
    out_pos = online.fuse(text_embeds, mask, image_embeds)
    image_neg = image_embeds[neg_image_idx]  # a negative image for each text
    text_neg, mask_neg = text_embeds[neg_text_idx], mask[neg_text_idx]  # a text for each image
    out_neg = online.fuse(torch.cat([text_embeds, text_neg]), torch.cat([mask, mask_neg]),
                          torch.cat([image_neg, image_embeds]))
    vl = torch.cat([out_pos[:, 0], out_neg[:, 0]], dim=0)
    itm_labels = torch.cat([torch.ones(bs, dtype=torch.long), torch.zeros(2 * bs,
                                                                          dtype=torch.long)])
    loss_itm = F.cross_entropy(state["itm_head"](vl), itm_labels)

    with torch.no_grad():
        logits_m = momentum.mlm_logits(momentum.fuse(momentum.encode_text(masked_ids, mask), mask,
                                                     image_embeds_m))
    scores = online.mlm_logits(online.fuse(online.encode_text(masked_ids, mask), mask,
                                           image_embeds))
    loss_mlm = F.cross_entropy(scores.view(-1, scores.shape[-1]), labels.view(-1))
    distill = -torch.sum(F.log_softmax(scores, dim=-1) * F.softmax(logits_m, dim=-1), dim=-1)
    loss_mlm = (1 - alpha) * loss_mlm + alpha * distill[labels != -100].mean()

    ptr = int(state["queue_ptr"])
    state["image_queue"][:, ptr:ptr + bs] = image_feat_m.T
    state["text_queue"][:, ptr:ptr + bs] = text_feat_m.T
    sims = {"i2t": sim_i2t[:, :bs].detach(), "t2i": sim_t2i[:, :bs].detach()}
    return {"loss_itc": loss_ita, "loss_itm": loss_itm, "loss_mlm": loss_mlm}, sims


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not OFFICIAL.is_dir():
        pytest.skip(f"{OFFICIAL} is not present")
    from mmenc.factory import convert

    from mmenc_vl.convert_albef import albef_options

    out = tmp_path_factory.mktemp("albef-losses") / "model"
    fixture = json.loads((OFFICIAL / "fixture.json").read_text())
    convert("albef", OFFICIAL / "checkpoint.pth", out, **albef_options(fixture))
    return out


def _batch(g: torch.Generator, fixture: dict, b: int = 4, n: int = 9):
    vocab = fixture["bert_config"]["vocab_size"]
    ids = torch.randint(1000, vocab, (b, n), generator=g)
    ids[:, 0] = 101  # [CLS]
    mask = torch.ones(b, n, dtype=torch.long)
    for i in range(1, b):
        ids[i, n - i:] = 0
        mask[i, n - i:] = 0
    image = torch.randn(b, 3, fixture["config"]["image_res"], fixture["config"]["image_res"],
                        generator=g)
    return ids, mask, image


@pytest.mark.parametrize("seed", [0, 1])
def test_albef_losses_match_the_official_loss_code(converted, monkeypatch, seed):
    import mmenc
    import mmenc.objectives.masked as masked_mod
    import mmenc.objectives.matching as matching_mod

    fixture = json.loads((OFFICIAL / "fixture.json").read_text())
    sd = torch.load(OFFICIAL / "checkpoint.pth", weights_only=True)["model"]
    online, momentum = Reference(fixture, sd, ""), Reference(fixture, sd, "_m")
    itm_head = nn.Linear(fixture["bert_config"]["hidden_size"], 2)
    itm_head.load_state_dict(strip_prefix(sd, "itm_head."))
    state = {"temp": sd["temp"].clone(), "image_queue": sd["image_queue"].clone(),
             "text_queue": sd["text_queue"].clone(), "queue_ptr": sd["queue_ptr"].clone(),
             "itm_head": itm_head}
    for module in (online, momentum, itm_head):
        module.eval()

    model = mmenc.load(converted).eval()
    recorded: dict = {}
    sample, mask_tokens = matching_mod.sample_hard_negatives, masked_mod.mask_tokens

    def record_sample(sim, *args, **kwargs):
        out = sample(sim, *args, **kwargs)
        recorded["sampled_from"] = (sim.detach().clone(), kwargs.get("sim_b2a"))
        recorded["negatives"] = out
        return out

    def record_mask(ids, **kwargs):
        out = mask_tokens(ids, **kwargs)
        recorded["masked"] = out
        return out

    monkeypatch.setattr(matching_mod, "sample_hard_negatives", record_sample)
    monkeypatch.setattr(masked_mod, "mask_tokens", record_mask)
    ids, mask, image = _batch(torch.Generator().manual_seed(seed), fixture)
    alpha, m = fixture["config"]["alpha"], fixture["config"]["momentum"]
    text = TokenBatch(ids=ids, mask=mask.bool(), pad_id=0)
    _, logs = model.pretraining_losses(text, TokenBatch(values=image), alpha=alpha,
                                       generator=torch.Generator().manual_seed(seed))

    masked_ids, labels = recorded["masked"]
    assert (labels != -100).any(), "the draw masked nothing: pick another seed"
    neg_image, neg_text = recorded["negatives"]
    ref, sims = official_losses(online, momentum, state, image, ids, mask, masked_ids, labels,
                                neg_image, neg_text, alpha, m)
    for name, value in ref.items():
        assert abs(logs[name] - float(value.detach())) <= 1e-5, (name, logs[name], float(value))
    # the hard negatives are drawn from the official similarities: a negative image for each
    # text from sim_t2i, a negative text for each image from sim_i2t
    sim_a2b, sim_b2a = recorded["sampled_from"]
    torch.testing.assert_close(sim_a2b, sims["t2i"], atol=1e-4, rtol=0)
    torch.testing.assert_close(sim_b2a, sims["i2t"], atol=1e-4, rtol=0)
    # the queues hold the momentum features, written after the step as the official code does
    torch.testing.assert_close(model.image_queue, state["image_queue"], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.text_queue, state["text_queue"], atol=1e-5, rtol=0)


def test_a_perturbed_loss_input_is_caught(converted):
    """The comparison can fail: the reference's ITC with a different temperature disagrees."""
    import mmenc

    fixture = json.loads((OFFICIAL / "fixture.json").read_text())
    sd = torch.load(OFFICIAL / "checkpoint.pth", weights_only=True)["model"]
    online, momentum = Reference(fixture, sd, ""), Reference(fixture, sd, "_m")
    itm_head = nn.Linear(fixture["bert_config"]["hidden_size"], 2)
    itm_head.load_state_dict(strip_prefix(sd, "itm_head."))
    state = {"temp": sd["temp"] * 1.1, "image_queue": sd["image_queue"].clone(),
             "text_queue": sd["text_queue"].clone(), "queue_ptr": sd["queue_ptr"].clone(),
             "itm_head": itm_head}
    for module in (online, momentum, itm_head):
        module.eval()
    model = mmenc.load(converted).eval()
    ids, mask, image = _batch(torch.Generator().manual_seed(0), fixture)
    _, logs = model.pretraining_losses(TokenBatch(ids=ids, mask=mask.bool(), pad_id=0),
                                       TokenBatch(values=image), alpha=0.4,
                                       generator=torch.Generator().manual_seed(0))
    b = len(ids)
    labels = torch.full_like(ids, -100)
    ref, _ = official_losses(online, copy.deepcopy(momentum), state, image, ids, mask, ids,
                             labels, torch.roll(torch.arange(b), 1), torch.roll(torch.arange(b), 1),
                             0.4, 0.995)
    assert abs(logs["loss_itc"] - float(ref["loss_itc"])) > 1e-3
