"""ALBEF: a ViT image encoder, BERT text layers, and BERT fusion layers that cross-attend to the
image ("align before fuse").

Axis legend (einops):
    b  batch
    n  text tokens
    m  image tokens
    d  text width
    c  image width
    e  shared embedding width

Layout: the text tower holds BERT layers ``0 .. fusion_layer-1`` (ALBEF's ``mode='text'``); the
``cross-attention`` fusion holds layers ``fusion_layer ..`` with a cross-attention sub-layer
after self-attention (``mode='fusion'``), queries from the text, keys and values from the image
(all image tokens real). ``embed`` is ALBEF's ITC feature ``normalize(proj(cls))``;
``match_scores`` is the ITM head's matched-probability over ``forward_fused``.

``itm_head: true`` (default: ``pretraining``) adds the ITM head, which retrieval checkpoints
have too. With ``pretraining: true`` the model also keeps what continued pre-training needs:
the MLM head (decoder tied to the word embeddings), the temperature, frozen momentum copies of
the encoders, projections and MLM head, and the two feature queues.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmenc.batch import Features, TokenBatch
from mmenc.builtin.towers import build_tower, tower_features
from mmenc.model import Encoder
from mmenc.nn import TrunkConfig, build_trunk, init_weights, interpolate_positions
from torch import Tensor, nn

from mmenc_vl.configs import ALBEFConfig
from mmenc_vl.heads import MLMHead
from mmenc_vl.matching import select_rows


class CrossAttentionFusion(nn.Module):
    """The ``cross-attention`` fusion: layers over the ``query`` modality's tokens that
    cross-attend to the ``context`` modality; the context passes through unchanged.

    Args:
        widths: modality -> width.
        query, context: modality names (with other names, the first and second of ``widths``).
        depth, heads, ffn_dim: the fusion layers (width = the query's width).
        norm, eps, activation, dropout, attn_dropout: see :class:`mmenc.nn.TrunkConfig`.
    """

    def __init__(self, widths: Mapping[str, int], depth: int, heads: int, ffn_dim: int,
                 query: str = "text", context: str = "image", norm: str = "post",
                 eps: float = 1e-12, activation: str = "gelu", dropout: float = 0.0,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        names = list(widths)
        if query not in widths or context not in widths:
            query, context = names[0], names[1]
        self.query, self.context = query, context
        cfg = TrunkConfig(dim=widths[query], depth=depth, heads=heads, ffn_dim=ffn_dim, norm=norm,
                          activation=activation, eps=eps, dropout=dropout,
                          attn_dropout=attn_dropout, final_norm=False,
                          cross_dim=widths[context])
        self.trunk = build_trunk(cfg)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)

    def forward(self, states: dict[str, Features]) -> dict[str, Features]:
        if self.query not in states or self.context not in states:
            return dict(states)  # one modality alone: nothing to attend to
        q, c = states[self.query], states[self.context]
        out = self.trunk(q.hidden, mask=q.mask, context=c.hidden, context_mask=c.mask,
                         output_hidden_states=True)
        return {**states,
                self.query: Features(out.last_hidden_state, q.mask, None, out.hidden_states)}


def cross_attention_fusion(widths: Mapping[str, int], **config: Any) -> CrossAttentionFusion:
    return CrossAttentionFusion(widths, **config)


class ALBEFEncoder(Encoder):
    """ALBEF (see the module docstring)."""

    def __init__(self, config: dict[str, Any], towers: dict[str, nn.Module],
                 tokenizers: dict[str, Any], fusion: CrossAttentionFusion) -> None:
        super().__init__(config, tokenizers)
        settings = self.settings
        self.towers = nn.ModuleDict(towers)
        self.kinds = {m: settings.towers[m]["kind"] for m in towers}
        self.fusion = fusion
        self.proj = nn.ModuleDict({m: nn.Linear(self.width(m), settings.embed_dim)
                                   for m in towers})
        self.pretraining = settings.pretraining
        self.itm_head = nn.Linear(self.width("text"), 2) if settings.has_itm_head else None
        if self.pretraining:
            text = settings.towers["text"]
            self.mlm_head = MLMHead(self.width("text"), int(text["vocab_size"]), float(text["eps"]))
            self.temp = nn.Parameter(torch.tensor(settings.temp))
            self.momentum = nn.ModuleDict({
                "towers": copy.deepcopy(self.towers), "fusion": copy.deepcopy(self.fusion),
                "proj": copy.deepcopy(self.proj), "mlm_head": copy.deepcopy(self.mlm_head),
            })
            self.momentum.requires_grad_(False)
            queue, embed_dim = settings.queue_size, settings.embed_dim
            self.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, queue), dim=0))
            self.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, queue), dim=0))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def settings(self) -> ALBEFConfig:
        """The typed view of ``config`` (read again on each use: a warm start changes it)."""
        return ALBEFConfig.read(self.config)

    def width(self, modality: str) -> int:
        return int(self.config["towers"][modality]["trunk"]["dim"])

    def _tower(self, batch: TokenBatch, modality: str, momentum: bool = False,
               output_hidden_states: bool = False) -> Features:
        towers = self.momentum["towers"] if momentum else self.towers
        return tower_features(towers[modality], self.kinds[modality], batch, output_hidden_states)

    def forward_features(self, batch: TokenBatch, modality: str,
                         output_hidden_states: bool = False) -> Features:
        """Uni-modal features: ViT tokens after the final norm, or text layers before fusion."""
        self.check_modality(modality)
        return self._tower(batch, modality, output_hidden_states=output_hidden_states)

    def embed(self, batch: TokenBatch, modality: str) -> Tensor:
        """ALBEF's ITC feature: ``normalize(proj(first token))`` [b e]."""
        features = self.forward_features(batch, modality)
        return F.normalize(self.proj[modality](features.hidden[:, 0]), dim=-1)

    def momentum_embed(self, batch: TokenBatch, modality: str) -> Tensor:
        """The momentum encoders' ITC feature (needs ``pretraining``)."""
        features = self._tower(batch, modality, momentum=True)
        return F.normalize(self.momentum["proj"][modality](features.hidden[:, 0]), dim=-1)

    def forward_fused(self, batches: dict[str, TokenBatch]) -> dict[str, Features]:
        """Text tokens after the fusion layers (cross-attending to the image); the image
        tokens as the ViT gives them."""
        states = {m: self._tower(b, m) for m, b in batches.items()}
        return self.fusion(states)

    def itm_logits(self, text: TokenBatch, image: TokenBatch) -> Tensor:
        """ITM head on the fused first token: [b 2] (index 1 = matched)."""
        return self.itm_from_states(self.tower_states(text, "text"),
                                    self.tower_states(image, "image"))

    def tower_states(self, batch: TokenBatch, modality: str) -> Features:
        """What the fusion reads of one modality (for :meth:`itm_from_states`)."""
        return self._tower(batch, modality)

    def itm_from_states(self, text: Features, image: Features) -> Tensor:
        """ITM logits [b 2] from :meth:`tower_states` of matched rows."""
        if self.itm_head is None:
            raise ValueError("this ALBEF model has no ITM head (config itm_head: false)")
        fused = self.fusion({"text": text, "image": image})
        return self.itm_head(fused["text"].hidden[:, 0])

    def warm_start(self, modality: str, source: Encoder) -> None:
        """Start the ``text`` layers and fusion layers (split as ALBEF splits BERT) or the
        ``image`` tower from a saved model: see :mod:`mmenc_vl.warm_start`."""
        from mmenc_vl.warm_start import warm_start

        warm_start(self, modality, source)

    # -- pre-training ----------------------------------------------------------------------
    def _momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.towers, self.momentum["towers"]), (self.fusion, self.momentum["fusion"]),
                (self.proj, self.momentum["proj"]), (self.mlm_head, self.momentum["mlm_head"])]

    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> None:
        """``p_m <- m p_m + (1 - m) p`` over every momentum copy (``momentum`` in the config)."""
        from mmenc.objectives.distill import momentum_update

        m = self.settings.momentum if m is None else m
        for online, teacher in self._momentum_pairs():
            momentum_update(online, teacher, m)

    @torch.no_grad()
    def _enqueue(self, image_feat_m: Tensor, text_feat_m: Tensor) -> None:
        size = self.image_queue.shape[1]
        idx = (int(self.queue_ptr) + torch.arange(image_feat_m.shape[0],
                                                  device=image_feat_m.device)) % size
        self.image_queue[:, idx] = image_feat_m.T
        self.text_queue[:, idx] = text_feat_m.T
        self.queue_ptr[0] = (int(self.queue_ptr) + image_feat_m.shape[0]) % size

    def _mlm_logits(self, ids: Tensor, text: TokenBatch, image_hidden: Tensor,
                    momentum: bool, chosen: Tensor) -> Tensor:
        """MLM logits at the ``chosen`` positions ([b n] bool) only: [k V]. The loss reads
        nothing else, so the vocabulary projection of the other positions is skipped."""
        towers = self.momentum["towers"] if momentum else self.towers
        fusion = self.momentum["fusion"] if momentum else self.fusion
        head = self.momentum["mlm_head"] if momentum else self.mlm_head
        masked = TokenBatch(ids=ids, mask=text.mask, pad_id=text.pad_id, extras=text.extras)
        t = tower_features(towers["text"], "text", masked)
        fused = fusion({"text": t, "image": Features(image_hidden)})["text"].hidden
        return head(fused[chosen], towers["text"].embeddings.word.weight)

    def pretraining_losses(self, text: TokenBatch, image: TokenBatch, alpha: float | None = None,
                           generator: torch.Generator | None = None,
                           ) -> tuple[Tensor, dict[str, float]]:
        """ALBEF's pre-training step on matched pairs ``(text[i], image[i])``: ITC against the
        momentum features and the queues with momentum distillation, ITM on the positives and
        one hard negative per side sampled from the ITC similarities, MLM (15%, 80/10/10) with
        the momentum model's predictions as soft labels. Updates the momentum copies first and
        the queues last, as ALBEF does.

        Returns:
            ``(loss_itc + loss_itm + loss_mlm, logs)``.
        """
        from mmenc.objectives.contrastive import contrast
        from mmenc.objectives.distill import IGNORE_INDEX, distill_mlm_loss, soft_targets
        from mmenc.objectives.masked import mask_tokens
        from mmenc.objectives.matching import matching_pairs, sample_hard_negatives

        if not self.pretraining:
            raise ValueError("this ALBEF model has no pre-training state (pretraining: false)")
        if text.ids is None or len(text) != len(image) or len(text) < 2:
            raise ValueError("pre-training needs >= 2 matched (text ids, image) pairs")
        cfg = self.settings
        alpha = cfg.alpha if alpha is None else alpha
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        image_f = self._tower(image, "image")
        text_f = self._tower(text, "text")
        image_feat = F.normalize(self.proj["image"](image_f.hidden[:, 0]), dim=-1)  # [b e]
        text_feat = F.normalize(self.proj["text"](text_f.hidden[:, 0]), dim=-1)  # [b e]
        with torch.no_grad():
            self.momentum_update()
            image_m = self._tower(image, "image", momentum=True).hidden
            text_m = self._tower(text, "text", momentum=True).hidden
            image_feat_m = F.normalize(self.momentum["proj"]["image"](image_m[:, 0]), dim=-1)
            text_feat_m = F.normalize(self.momentum["proj"]["text"](text_m[:, 0]), dim=-1)
            image_keys = torch.cat([image_feat_m, self.image_queue.T])  # [b+Q e]
            text_keys = torch.cat([text_feat_m, self.text_queue.T])  # [b+Q e]
            hard = torch.zeros(len(text), image_keys.shape[0], device=image_keys.device)
            hard.fill_diagonal_(1.0)  # [b b+Q]
            i2t_targets = soft_targets(image_feat_m @ text_keys.T / self.temp, alpha, hard)
            t2i_targets = soft_targets(text_feat_m @ image_keys.T / self.temp, alpha, hard)
        labels = torch.arange(len(text), device=image_keys.device)
        loss_itc, _ = contrast(image_feat, text_feat, image_keys, text_keys, 1.0 / self.temp,
                               labels, i2t_targets, t2i_targets, normalize=False)
        with torch.no_grad():  # the hard negatives' sampling weights, [b b] per direction
            sim_i2t = image_feat @ text_feat_m.T / self.temp
            sim_t2i = text_feat @ image_feat_m.T / self.temp

        neg_image, neg_text = sample_hard_negatives(sim_t2i, generator=generator, sim_b2a=sim_i2t)
        t_idx, i_idx, labels = matching_pairs(neg_image, neg_text)  # text a, image b
        itm = self.itm_from_states(select_rows(text_f, t_idx), select_rows(image_f, i_idx))
        loss_itm = F.cross_entropy(itm, labels)

        ids = text.ids
        tokenizer = self.tokenizers["text"]
        special = ((ids == cfg.token_id("pad_token_id", tokenizer))
                   | (ids == cfg.token_id("cls_token_id", tokenizer)))
        if text.mask is not None:
            special |= ~text.mask.bool()
        vocab = int(cfg.towers["text"]["vocab_size"])
        masked_ids, mlm_labels = mask_tokens(ids, mask_id=cfg.token_id("mask_token_id", tokenizer),
                                             vocab_size=vocab, mask_prob=cfg.mlm_probability,
                                             special=special, generator=generator)
        chosen = mlm_labels != IGNORE_INDEX  # [b n]
        logits = self._mlm_logits(masked_ids, text, image_f.hidden, False, chosen)  # [k V]
        with torch.no_grad():
            logits_m = self._mlm_logits(masked_ids, text, image_m, True, chosen)
        loss_mlm, mlm_logs = distill_mlm_loss(logits, logits_m, mlm_labels[chosen], alpha)
        self._enqueue(image_feat_m, text_feat_m)
        loss = loss_itc + loss_itm + loss_mlm
        return loss, {"loss": float(loss.detach()), "loss_itc": float(loss_itc.detach()),
                      "loss_itm": float(loss_itm.detach()), "loss_mlm": float(loss_mlm.detach()),
                      "mlm_acc": mlm_logs["acc"], "temp": float(self.temp.detach())}

    def match_scores(self, a_items: Sequence[Any], b_items: Sequence[Any], *, a_modality: str,
                     b_modality: str) -> Tensor:
        """ITM matched-probability of each pair ``(a_items[i], b_items[i])``: [n] (for
        re-ranking retrieval candidates)."""
        from mmenc_vl.matching import pair_match_scores

        return pair_match_scores(self, a_items, b_items, a_modality, b_modality)


def build_albef(config: dict[str, Any], directory: Path | None = None) -> ALBEFEncoder:
    """Build an :class:`ALBEFEncoder` from its configuration (see ``recipes``), read into an
    :class:`~mmenc_vl.configs.ALBEFConfig` first."""
    from mmenc.builtin.towers import build_tokenizers

    settings = ALBEFConfig.read(config)
    towers = {m: build_tower(c) for m, c in settings.towers.items()}
    tokenizers = build_tokenizers(settings.tokenizers, directory)
    fusion = CrossAttentionFusion({m: int(c["trunk"]["dim"]) for m, c in settings.towers.items()},
                                  **settings.fusion.kwargs())
    model = ALBEFEncoder(config, towers, tokenizers, fusion)
    if directory is None:  # a new model: BERT's initialisation, momentum copies equal to it
        init_weights(model, std=None if settings.init == "fan-in" else 0.02)
        if model.pretraining:
            model.momentum_update(0.0)
    return model


def interpolated_positions(model: ALBEFEncoder, image_size: int) -> Tensor:
    """The ViT position table resized for ``image_size`` px (bicubic, as ALBEF's fine-tuning
    scripts do): [1 1+g*g c]."""
    emb = model.towers["image"].embeddings
    grid = image_size // emb.patch_size
    return interpolate_positions(emb.position.weight, (grid, grid), emb.extra_tokens,
                                 emb.antialias)[None]
