"""Vision-text speed: an ALBEF pre-training step, and a BridgeTower forward, against the reference
structure on identical weights.

``albef``: one pre-training step (ITC with momentum features, queues and distillation, ITM with
hard negatives, MLM with distillation; forward, backward and an AdamW step) of

  * ``official``: a re-run of ALBEF's ``model_pretrain.py`` structure: timm's
    ``VisionTransformer`` (eager attention, as ALBEF's ``vit.py``), HF BERT layers (eager; the
    layers from ``fusion_layer`` on cross-attend to the image, as ``xbert.py``), the MLM head over
    every position for the student and the momentum teacher, hard negatives drawn row by row
    with ``torch.multinomial``, the momentum update parameter by parameter;
  * ``mmenc``: ``ALBEFEncoder.pretraining_losses`` of the same weights, written in the official
    checkpoint layout and read with ``mmenc.convert("albef", ...)``.

The first step's ITC loss of both sides is compared (same weights, same queues, no random draw
in it). ``bridgetower``: ``BridgeTowerModel`` of HF transformers against mmenc's converted
``forward_fused`` on one batch (inference), max abs difference of the cross-modal states.

    python benchmarks/vl.py albef --size small --repeats 3
    python benchmarks/vl.py bridgetower --size small --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALBEF_SIZES = {
    "small": dict(vit_dim=128, vit_depth=4, vit_heads=4, image_size=64, patch=8, dim=128,
                  heads=4, text_layers=2, fusion_layers=2, embed_dim=128, queue=1024, batch=64,
                  length=12),
    "base": dict(vit_dim=768, vit_depth=12, vit_heads=12, image_size=256, patch=16, dim=768,
                 heads=12, text_layers=6, fusion_layers=6, embed_dim=256, queue=65536, batch=8,
                 length=30),
}
BRIDGETOWER_SIZES = {
    "small": dict(dim=128, layers=4, heads=4, cross=2, image_size=64, patch=8, batch=32,
                  length=16),
    "base": dict(dim=768, layers=12, heads=12, cross=6, image_size=288, patch=16, batch=8,
                 length=40),
}
VOCAB, PAD, CLS, SEP, MASK = 30522, 0, 101, 102, 103


# -- ALBEF, the official structure ----------------------------------------------------------
class OfficialALBEF(nn.Module):
    """ALBEF's pre-training model as ``model_pretrain.py`` lays it out (the online half, or the
    momentum half without the ITM head)."""

    def __init__(self, s: dict[str, Any]) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        from transformers import BertConfig, BertModel

        self.visual_encoder = VisionTransformer(
            img_size=s["image_size"], patch_size=s["patch"], embed_dim=s["vit_dim"],
            depth=s["vit_depth"], num_heads=s["vit_heads"], mlp_ratio=4, qkv_bias=True,
            num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6), global_pool="token")
        for block in self.visual_encoder.blocks:
            block.attn.fused_attn = False
        layers = s["text_layers"] + s["fusion_layers"]
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=s["dim"], num_hidden_layers=layers,
                         num_attention_heads=s["heads"], intermediate_size=4 * s["dim"],
                         layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
        cfg._attn_implementation = "eager"
        self.bert = BertModel(cfg, add_pooling_layer=False)
        cross = BertConfig(**{**cfg.to_dict(), "is_decoder": True, "add_cross_attention": True,
                              "num_hidden_layers": s["fusion_layers"]})
        cross._attn_implementation = "eager"
        fusion = BertModel(cross, add_pooling_layer=False).encoder.layer
        for layer in fusion:  # xbert: keys and values read the image width
            layer.crossattention.self.key = nn.Linear(s["vit_dim"], s["dim"])
            layer.crossattention.self.value = nn.Linear(s["vit_dim"], s["dim"])
        self.bert.encoder.layer = nn.ModuleList(
            list(self.bert.encoder.layer[: s["text_layers"]]) + list(fusion))
        self.fusion_layer = s["text_layers"]
        self.vision_proj = nn.Linear(s["vit_dim"], s["embed_dim"])
        self.text_proj = nn.Linear(s["dim"], s["embed_dim"])
        self.mlm_dense = nn.Linear(s["dim"], s["dim"])
        self.mlm_norm = nn.LayerNorm(s["dim"], eps=1e-12)
        self.mlm_bias = nn.Parameter(torch.zeros(VOCAB))

    def text(self, ids: Tensor, ext: Tensor) -> Tensor:
        h = self.bert.embeddings(input_ids=ids)
        for layer in self.bert.encoder.layer[: self.fusion_layer]:
            h = layer(h, attention_mask=ext)[0]
        return h

    def fusion(self, h: Tensor, ext: Tensor, image: Tensor) -> Tensor:
        for layer in self.bert.encoder.layer[self.fusion_layer:]:
            h = layer(h, attention_mask=ext, encoder_hidden_states=image)[0]
        return h

    def mlm_logits(self, ids: Tensor, ext: Tensor, image: Tensor) -> Tensor:
        h = self.fusion(self.text(ids, ext), ext, image)
        h = self.mlm_norm(F.gelu(self.mlm_dense(h)))
        return F.linear(h, self.bert.embeddings.word_embeddings.weight, self.mlm_bias)


class OfficialPretrain(nn.Module):
    def __init__(self, s: dict[str, Any]) -> None:
        super().__init__()
        self.online, self.momentum = OfficialALBEF(s), OfficialALBEF(s)
        self.itm_head = nn.Linear(s["dim"], 2)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.register_buffer("image_queue", F.normalize(torch.randn(s["embed_dim"], s["queue"]),
                                                        dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(s["embed_dim"], s["queue"]),
                                                       dim=0))
        self.queue_ptr = 0
        self.momentum.requires_grad_(False)

    def forward(self, image: Tensor, ids: Tensor, mask: Tensor, alpha: float = 0.4,
                ) -> tuple[Tensor, Tensor]:
        o, m = self.online, self.momentum
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        ext = (1.0 - mask[:, None, None, :].float()) * -10000.0
        image_embeds = o.visual_encoder.forward_features(image)
        image_feat = F.normalize(o.vision_proj(image_embeds[:, 0]), dim=-1)
        text_embeds = o.text(ids, ext)
        text_feat = F.normalize(o.text_proj(text_embeds[:, 0]), dim=-1)
        with torch.no_grad():
            for p, p_m in zip(o.parameters(), m.parameters(), strict=True):
                p_m.data = p_m.data * 0.995 + p.data * (1.0 - 0.995)
            image_embeds_m = m.visual_encoder.forward_features(image)
            image_feat_m = F.normalize(m.vision_proj(image_embeds_m[:, 0]), dim=-1)
            image_all = torch.cat([image_feat_m.t(), self.image_queue.clone().detach()], dim=1)
            text_m = m.text(ids, ext)
            text_feat_m = F.normalize(m.text_proj(text_m[:, 0]), dim=-1)
            text_all = torch.cat([text_feat_m.t(), self.text_queue.clone().detach()], dim=1)
            sim_i2t_m = image_feat_m @ text_all / self.temp
            sim_t2i_m = text_feat_m @ image_all / self.temp
            targets = torch.zeros(sim_i2t_m.size())
            targets.fill_diagonal_(1)
            i2t_targets = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * targets
            t2i_targets = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * targets
        sim_i2t = image_feat @ text_all / self.temp
        sim_t2i = text_feat @ image_all / self.temp
        loss_ita = (-torch.sum(F.log_softmax(sim_i2t, dim=1) * i2t_targets, dim=1).mean()
                    - torch.sum(F.log_softmax(sim_t2i, dim=1) * t2i_targets, dim=1).mean()) / 2
        with torch.no_grad():
            bs = image.size(0)
            ptr = self.queue_ptr
            self.image_queue[:, ptr:ptr + bs] = image_feat_m.T
            self.text_queue[:, ptr:ptr + bs] = text_feat_m.T
            self.queue_ptr = (ptr + bs) % self.image_queue.shape[1]

        output_pos = o.fusion(text_embeds, ext, image_embeds)
        with torch.no_grad():
            weights_i2t = F.softmax(sim_i2t[:, :bs], dim=1) + 1e-4
            weights_i2t.fill_diagonal_(0)
            weights_t2i = F.softmax(sim_t2i[:, :bs], dim=1) + 1e-4
            weights_t2i.fill_diagonal_(0)
        image_neg = torch.stack([image_embeds[torch.multinomial(weights_t2i[b], 1).item()]
                                 for b in range(bs)])
        picks = [torch.multinomial(weights_i2t[b], 1).item() for b in range(bs)]
        text_neg = torch.stack([text_embeds[i] for i in picks])
        ext_neg = torch.stack([ext[i] for i in picks])
        output_neg = o.fusion(torch.cat([text_embeds, text_neg]), torch.cat([ext, ext_neg]),
                              torch.cat([image_neg, image_embeds]))
        vl = self.itm_head(torch.cat([output_pos[:, 0], output_neg[:, 0]]))
        labels = torch.cat([torch.ones(bs), torch.zeros(2 * bs)]).long()
        loss_itm = F.cross_entropy(vl, labels)

        input_ids, mlm_labels = ids.clone(), ids.clone()
        chosen = torch.bernoulli(torch.full(ids.shape, 0.15)).bool()
        chosen[ids == PAD] = False
        chosen[ids == CLS] = False
        mlm_labels[~chosen] = -100
        replaced = torch.bernoulli(torch.full(ids.shape, 0.8)).bool() & chosen
        input_ids[replaced] = MASK
        rand = torch.bernoulli(torch.full(ids.shape, 0.5)).bool() & chosen & ~replaced
        input_ids[rand] = torch.randint(VOCAB, ids.shape)[rand]
        with torch.no_grad():
            logits_m = m.mlm_logits(input_ids, ext, image_embeds_m)
        logits = o.mlm_logits(input_ids, ext, image_embeds)
        loss_mlm = F.cross_entropy(logits.view(-1, VOCAB), mlm_labels.view(-1))
        distill = -torch.sum(F.log_softmax(logits, dim=-1) * F.softmax(logits_m, dim=-1), dim=-1)
        distill = distill[mlm_labels != -100].mean()
        loss_mlm = (1 - alpha) * loss_mlm + alpha * distill
        return loss_ita + loss_itm + loss_mlm, loss_ita.detach()


def albef_checkpoint(model: OfficialPretrain, path: Path) -> None:
    """The weights in ALBEF's checkpoint layout (``{'model': state_dict}``)."""
    sd: dict[str, Tensor] = {"temp": model.temp.detach().clone(),
                             "image_queue": model.image_queue.clone(),
                             "text_queue": model.text_queue.clone(),
                             "queue_ptr": torch.zeros(1, dtype=torch.long)}
    for suffix, half in (("", model.online), ("_m", model.momentum)):
        for k, v in half.visual_encoder.state_dict().items():
            sd[f"visual_encoder{suffix}.{k}"] = v
        for k, v in half.bert.state_dict().items():
            sd[f"text_encoder{suffix}.bert.{k}"] = v
        for name in ("vision_proj", "text_proj"):
            for p in ("weight", "bias"):
                sd[f"{name}{suffix}.{p}"] = getattr(getattr(half, name), p)
        cls = f"text_encoder{suffix}.cls.predictions."
        sd[cls + "bias"] = half.mlm_bias
        sd[cls + "transform.dense.weight"] = half.mlm_dense.weight
        sd[cls + "transform.dense.bias"] = half.mlm_dense.bias
        sd[cls + "transform.LayerNorm.weight"] = half.mlm_norm.weight
        sd[cls + "transform.LayerNorm.bias"] = half.mlm_norm.bias
        sd[cls + "decoder.weight"] = half.bert.embeddings.word_embeddings.weight
    for p in ("weight", "bias"):
        sd[f"itm_head.{p}"] = getattr(model.itm_head, p)
    torch.save({"model": {k: v.detach().clone() for k, v in sd.items()}}, path)


def text_batch(n: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    ids = torch.randint(1000, VOCAB, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    ids[:, 0] = CLS
    for i in range(n):
        end = length - (i % (length // 2))
        ids[i, end - 1] = SEP
        ids[i, end:] = PAD
        mask[i, end:] = 0
    return ids, mask


def bench_albef(s: dict[str, Any], repeats: int) -> dict[str, Any]:
    import mmenc
    from mmenc.batch import TokenBatch

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    official = OfficialPretrain(s)
    official.momentum.load_state_dict(official.online.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        albef_checkpoint(official, Path(tmp) / "albef.pth")
        model = mmenc.convert("albef", Path(tmp) / "albef.pth", vision_heads=s["vit_heads"],
                              text_heads=s["heads"], fusion_layer=s["text_layers"])
    model.config["queue_size"] = s["queue"]
    official.train()
    model.train()
    image = torch.randn(s["batch"], 3, s["image_size"], s["image_size"], generator=g)
    ids, mask = text_batch(s["batch"], s["length"], g)
    text, pixels = TokenBatch(ids=ids, mask=mask.bool(), pad_id=PAD), TokenBatch(values=image)
    opts = {"official": torch.optim.AdamW([p for p in official.parameters() if p.requires_grad],
                                          lr=1e-5),
            "mmenc": torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                       lr=1e-5)}
    gen = torch.Generator().manual_seed(1)

    def step_official() -> float:
        loss, itc = official(image, ids, mask)
        loss.backward()
        opts["official"].step()
        opts["official"].zero_grad(set_to_none=True)
        return float(itc)

    def step_mmenc() -> float:
        loss, logs = model.pretraining_losses(text, pixels, generator=gen)
        loss.backward()
        opts["mmenc"].step()
        opts["mmenc"].zero_grad(set_to_none=True)
        return float(logs["loss_itc"])

    first = {"official": step_official(), "mmenc": step_mmenc()}  # also the warm-up
    best = {"official": float("inf"), "mmenc": float("inf")}
    for _ in range(repeats):
        for name, fn in (("official", step_official), ("mmenc", step_mmenc)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {"seconds": {k: round(v, 4) for k, v in best.items()},
            "pairs_per_s": {k: round(s["batch"] / v, 1) for k, v in best.items()},
            "speedup": round(best["official"] / best["mmenc"], 3),
            "first_step_itc_loss": first,
            "first_step_itc_abs_diff": abs(first["official"] - first["mmenc"])}


# -- BridgeTower ----------------------------------------------------------------------------
def bench_bridgetower(s: dict[str, Any], repeats: int) -> dict[str, Any]:
    import transformers

    import mmenc
    from mmenc.batch import TokenBatch

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    text = dict(vocab_size=VOCAB, hidden_size=s["dim"], num_hidden_layers=s["layers"],
                num_attention_heads=s["heads"], intermediate_size=4 * s["dim"], pad_token_id=1)
    vision = dict(hidden_size=s["dim"], num_hidden_layers=s["layers"],
                  image_size=s["image_size"], patch_size=s["patch"])
    config = transformers.BridgeTowerConfig(text_config=text, vision_config=vision,
                                            hidden_size=s["dim"], num_attention_heads=s["heads"],
                                            num_hidden_layers=s["cross"])
    hf = transformers.BridgeTowerModel(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        model = mmenc.convert("bridgetower", tmp).eval()
    ids, mask = text_batch(s["batch"], s["length"], g)
    ids[mask == 0] = 1
    ids[:, 0] = 0
    pixels = torch.randn(s["batch"], 3, s["image_size"], s["image_size"], generator=g)
    batches = {"text": TokenBatch(ids=ids, mask=mask.bool(), pad_id=1),
               "image": TokenBatch(values=pixels)}

    @torch.inference_mode()
    def run_hf() -> Tensor:
        out = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        return torch.cat([out.text_features, out.image_features], dim=1)

    @torch.inference_mode()
    def run_mmenc() -> Tensor:
        fused = model.forward_fused(batches)
        return torch.cat([fused["text"].hidden, fused["image"].hidden], dim=1)

    outputs = {"hf": run_hf(), "mmenc": run_mmenc()}
    best = {"hf": float("inf"), "mmenc": float("inf")}
    for _ in range(repeats):
        for name, fn in (("hf", run_hf), ("mmenc", run_mmenc)):
            start = time.perf_counter()
            outputs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    real = mask.bool()
    diff_text = (outputs["hf"][:, :s["length"]] - outputs["mmenc"][:, :s["length"]])[real]
    diff_image = outputs["hf"][:, s["length"]:] - outputs["mmenc"][:, s["length"]:]
    return {"seconds": {k: round(v, 4) for k, v in best.items()},
            "pairs_per_s": {k: round(s["batch"] / v, 1) for k, v in best.items()},
            "speedup": round(best["hf"] / best["mmenc"], 3),
            "max_abs_diff": float(max(diff_text.abs().max(), diff_image.abs().max()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("albef", "bridgetower"))
    parser.add_argument("--size", choices=("small", "base"), default="small")
    parser.add_argument("--batch-size", type=int, help="default: the size's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    sizes = ALBEF_SIZES if args.what == "albef" else BRIDGETOWER_SIZES
    s = dict(sizes[args.size])
    if args.batch_size:
        s["batch"] = args.batch_size
    fn = bench_albef if args.what == "albef" else bench_bridgetower
    report = {"command": "python benchmarks/vl.py " + shlex.join(sys.argv[1:]),
              "size": args.size, "settings": s, "threads": torch.get_num_threads(),
              **fn(s, args.repeats)}
    ref = "official" if args.what == "albef" else "hf"
    secs = report["seconds"]
    print(f"{args.what} {args.size}, batch {s['batch']}, {torch.get_num_threads()} threads: "
          f"{ref} {secs[ref]:.3f} s, mmenc {secs['mmenc']:.3f} s, {report['speedup']:.2f}x"
          + (f", first-step ITC loss diff {report['first_step_itc_abs_diff']:.1e}"
             if args.what == "albef" else f", max abs diff {report['max_abs_diff']:.1e}"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
