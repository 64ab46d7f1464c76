"""BridgeTower: two uni-modal towers bridged layer by layer into a two-stream cross-modal encoder.

Axis legend (einops):
    b  batch
    n  tokens of one modality
    m  tokens of the other modality
    d  cross-modal width

The towers are mmenc's text transformer (RoBERTa) and vision transformer (CLIP ViT, built without
its final ``ln_post``, which the fusion owns: BridgeTower applies it to every bridged layer). The
``bridge`` fusion reads the top ``depth`` uni-modal layers of each tower:

    level k = hidden_states[-(depth - k)]                      (k = 0 .. depth-1)
    u_k     = transform(post_norm(level k)) + token_type       (one shared Linear per side)
    x_0     = entry_norm(u_0)
    x_k     = link_k(u_k + y_{k-1})                             ("add" link tower: a LayerNorm)
    y_k     = cross layer k (x_k, context = the other side's x_k)

Each cross layer is a post-norm BERT layer: self-attention, cross-attention, FFN. Both sides attend
to the *inputs* of the other side's layer. ``pooled`` is ``tanh(dense(y[:, 0]))`` per side when
the fusion has poolers (BridgeTower's ``pooler_output`` is their concatenation, text first).

With one modality (``embed``, ``forward_features``) the fusion returns the uni-modal path
``u`` of the top layer, as BridgeTower's contrastive heads read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from mmenc.batch import Features, TokenBatch
from mmenc.builtin.towers import TowerEncoder, build_tower, tower_features
from mmenc.nn import Pooler, TrunkConfig, build_trunk, init_weights
from mmenc.nn.masks import attention_mask, context_attention_mask, drop_if_all_real
from torch import Tensor, nn

from mmenc_vl.configs import BridgeTowerConfig
from mmenc_vl.heads import MLMHead
from mmenc_vl.matching import select_rows

LINK_TYPES = ("add",)


class BridgeFusion(nn.Module):
    """The ``bridge`` fusion (see the module docstring).

    Args:
        widths: modality -> tower width (exactly two modalities are fused together).
        dim, depth, heads, ffn_dim: width, number of cross-modal layers, heads and FFN width.
        eps: LayerNorm epsilon of the entry norms and link towers.
        layer_eps: LayerNorm epsilon inside the cross-modal layers (None: ``eps``).
        activation: FFN activation of the cross-modal layers.
        order: modality order for the token types (type i = i-th name); modalities not listed
            follow in the order of ``widths``.
        post_norm: modalities whose uni-modal states get a LayerNorm of the tower width before
            the transform (BridgeTower's shared CLIP ``ln_post`` for ``image``).
        post_norm_eps: epsilon of those LayerNorms.
        link: link-tower type ("add").
        pooler: build the per-side poolers.
        dropout, attn_dropout: dropout of the cross-modal layers (training only).
    """

    def __init__(self, widths: Mapping[str, int], dim: int, depth: int, heads: int,
                 ffn_dim: int, eps: float = 1e-5, activation: str = "gelu",
                 order: Sequence[str] = ("text", "image"), post_norm: Sequence[str] = (),
                 post_norm_eps: float = 1e-5, link: str = "add", pooler: bool = True,
                 dropout: float = 0.0, attn_dropout: float = 0.0,
                 layer_eps: float | None = None) -> None:
        super().__init__()
        if link not in LINK_TYPES:
            raise ValueError(f"link must be one of {LINK_TYPES}, got {link!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        names = [m for m in order if m in widths] + [m for m in widths if m not in order]
        self.names = names
        self.depth = depth
        self.type_index = {m: i for i, m in enumerate(names)}
        self.token_type = nn.Embedding(len(names), dim)
        self.post_norm = nn.ModuleDict({
            m: nn.LayerNorm(widths[m], eps=post_norm_eps) for m in names if m in post_norm
        })
        self.transform = nn.ModuleDict({m: nn.Linear(widths[m], dim) for m in names})
        self.entry_norm = nn.ModuleDict({m: nn.LayerNorm(dim, eps=eps) for m in names})
        self.link = nn.ModuleDict({
            m: nn.ModuleList(nn.LayerNorm(dim, eps=eps) for _ in range(depth - 1)) for m in names
        })
        cfg = TrunkConfig(dim=dim, depth=depth, heads=heads, ffn_dim=ffn_dim, norm="post",
                          activation=activation, eps=eps if layer_eps is None else layer_eps,
                          dropout=dropout,
                          attn_dropout=attn_dropout, final_norm=False, cross_dim=dim)
        self.layers = nn.ModuleDict({m: build_trunk(cfg).layers for m in names})
        self.pooler = nn.ModuleDict({m: Pooler(dim) for m in names}) if pooler else None
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def unimodal(self, modality: str, hidden: Tensor) -> Tensor:
        """``transform(post_norm(hidden)) + token_type`` of one modality: [b n w] -> [b n d]."""
        if modality in self.post_norm:
            hidden = self.post_norm[modality](hidden)
        return self.transform[modality](hidden) + self.token_type.weight[self.type_index[modality]]

    def _levels(self, f: Features) -> list[Tensor]:
        states = f.hidden_states
        if states is not None and len(states) >= self.depth:
            return list(states[len(states) - self.depth:])
        return [f.hidden] * self.depth  # no per-layer states: every level reads the top one

    def _layer(self, layer: nn.Module, *args: Any) -> Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def forward(self, states: dict[str, Features]) -> dict[str, Features]:
        """Inputs: ``{modality: Features}`` of one or two modalities (with ``hidden_states`` for
        a per-layer bridge). Returns the cross-modal ``Features`` (``hidden_states`` = each cross
        layer's output), or the uni-modal path when one modality is given."""
        if len(states) == 1:
            (m, f), = states.items()
            return {m: Features(self.unimodal(m, f.hidden), f.mask, None, f.hidden_states)}
        if len(states) != 2:
            raise ValueError(f"the bridge fusion joins two modalities, got {sorted(states)}")
        a, b = sorted(states, key=lambda m: self.type_index[m])
        levels = {m: self._levels(states[m]) for m in (a, b)}
        masks = {m: drop_if_all_real(states[m].mask) for m in (a, b)}
        dtype = states[a].hidden.dtype
        self_mask = {m: attention_mask(levels[m][0].shape[1], dtype, mask=masks[m],
                                       device=levels[m][0].device) for m in (a, b)}
        ctx_mask = {m: context_attention_mask(masks[m], dtype) for m in (a, b)}
        outputs: dict[str, list[Tensor]] = {a: [], b: []}
        y: dict[str, Tensor] = {}
        for k in range(self.depth):
            x = {}
            for m in (a, b):
                u = self.unimodal(m, levels[m][k])  # [b n d]
                x[m] = self.entry_norm[m](u) if k == 0 else self.link[m][k - 1](u + y[m])
            for m, other in ((a, b), (b, a)):
                y[m] = self._layer(self.layers[m][k], x[m], self_mask[m], None, False,
                                   x[other], ctx_mask[other])
                outputs[m].append(y[m])
        out = {}
        for m in (a, b):
            pooled = self.pooler[m](y[m]) if self.pooler is not None else None
            out[m] = Features(y[m], states[m].mask, pooled, tuple(outputs[m]))
        return out


def bridge_fusion(widths: Mapping[str, int], **config: Any) -> BridgeFusion:
    return BridgeFusion(widths, **config)


class BridgeTowerEncoder(TowerEncoder):
    """BridgeTower: a RoBERTa text tower and a CLIP image tower joined by the ``bridge`` fusion.

    ``embed`` gives one vector per item of a single modality (the uni-modal path, class token,
    projected); ``forward_fused`` runs the cross-modal layers over a text and an image batch.
    """

    def __init__(self, config: dict[str, Any], towers: dict[str, nn.Module],
                 tokenizers: dict[str, Any], fusion: BridgeFusion) -> None:
        super().__init__(config, towers, tokenizers, fusion)
        settings = self.settings
        dim = settings.fusion.dim
        self.pretraining = settings.pretraining
        if self.pretraining and not (settings.fusion.pooler and settings.itm_head is not False
                                     and settings.embed_dim):
            raise ValueError("BridgeTower pre-training needs the poolers, the ITM head and "
                             "embed_dim (the ITC projections)")
        # BridgeTowerForImageAndTextRetrieval's itm_score: Linear over pooler_output [b 2d]
        self.itm_head = nn.Linear(2 * dim, 2) if settings.has_itm_head else None
        # BridgeTowerForMaskedLM's mlm_score: over the cross-modal text states, untied
        self.mlm_head = MLMHead(dim, int(settings.towers["text"]["vocab_size"]),
                                settings.fusion.eps, tied=False) \
            if settings.has_mlm_head else None
        if self.pretraining:
            if self.mlm_head is None:
                raise ValueError("BridgeTower pre-training needs the MLM head")
            self.temp = nn.Parameter(torch.tensor(settings.temp))

    @property
    def settings(self) -> BridgeTowerConfig:  # type: ignore[override]
        """The typed view of ``config`` (read again on each use: a warm start changes it);
        it has the ``towers``, ``pooling`` and ``embed_dim`` a tower encoder reads."""
        return BridgeTowerConfig.read(self.config)

    def width(self, modality: str) -> int:
        return int(self.config["fusion"]["dim"])

    def forward_fused(self, batches: dict[str, TokenBatch],
                      output_hidden_states: bool = False) -> dict[str, Features]:
        """Cross-modal features of every modality; ``hidden_states`` are the cross layers'
        outputs. ``output_hidden_states`` also returns the towers' own layers under
        ``<modality>_tower`` keys, for inspection."""
        towers = {m: tower_features(self.towers[m], self.kinds[m], b, output_hidden_states=True)
                  for m, b in batches.items()}
        fused = self.fusion(towers)
        if output_hidden_states:
            fused.update({f"{m}_tower": f for m, f in towers.items()})
        return fused

    def pooler_output(self, text: TokenBatch, image: TokenBatch) -> Tensor:
        """BridgeTower's ``pooler_output``: [b 2d], the text pooler then the image pooler."""
        fused = self.forward_fused({"text": text, "image": image})
        if fused["text"].pooled is None or fused["image"].pooled is None:
            raise ValueError("this model's bridge fusion has no poolers")
        return torch.cat([fused["text"].pooled, fused["image"].pooled], dim=-1)

    def itm_logits(self, text: TokenBatch, image: TokenBatch) -> Tensor:
        """The ITM head on ``pooler_output``: [b 2] (index 1 = matched)."""
        return self.itm_from_states(self.tower_states(text, "text"),
                                    self.tower_states(image, "image"))

    def mlm_logits(self, text: TokenBatch, image: TokenBatch) -> Tensor:
        """``BridgeTowerForMaskedLM``'s logits: the MLM head on the cross-modal text states
        [b n V]."""
        if self.mlm_head is None:
            raise ValueError("this BridgeTower model has no MLM head (config mlm_head: false)")
        return self.mlm_head(self.forward_fused({"text": text, "image": image})["text"].hidden)  # type: ignore[no-any-return]

    def tower_states(self, batch: TokenBatch, modality: str) -> Features:
        """What the fusion reads of one modality, every layer (for :meth:`itm_from_states`)."""
        return tower_features(self.towers[modality], self.kinds[modality], batch, True)

    def itm_from_states(self, text: Features, image: Features) -> Tensor:
        """ITM logits [b 2] from :meth:`tower_states` of matched rows."""
        if self.itm_head is None:
            raise ValueError("this BridgeTower model has no ITM head (config itm_head: false)")
        fused = self.fusion({"text": text, "image": image})
        if fused["text"].pooled is None or fused["image"].pooled is None:
            raise ValueError("this model's bridge fusion has no poolers")
        return self.itm_head(torch.cat([fused["text"].pooled, fused["image"].pooled], dim=-1))

    def pretraining_losses(self, text: TokenBatch, image: TokenBatch, alpha: float | None = None,
                           generator: torch.Generator | None = None,
                           ) -> tuple[Tensor, dict[str, float]]:
        """One pre-training step on matched pairs ``(text[i], image[i])``: ITC between the
        uni-modal embeddings (in-batch negatives, learned temperature), ITM on the positives and
        one hard negative per side drawn from the ITC similarities (ALBEF's sampling), and MLM
        (15%, 80/10/10) from the cross-modal text states. Each tower runs once per view.
        ``alpha`` is unused (no momentum model).

        Returns:
            ``(loss_itc + loss_itm + loss_mlm, logs)``.
        """
        from mmenc.builtin.towers import pool
        from mmenc.objectives.contrastive import info_nce
        from mmenc.objectives.masked import IGNORE_INDEX, mask_tokens, masked_lm_loss
        from mmenc.objectives.matching import matching_pairs, sample_hard_negatives

        if not self.pretraining:
            raise ValueError("this BridgeTower model has no pre-training heads "
                             "(pretraining: false)")
        if text.ids is None or len(text) != len(image) or len(text) < 2:
            raise ValueError("pre-training needs >= 2 matched (text ids, image) pairs")
        cfg = self.settings
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        towers = {"text": tower_features(self.towers["text"], "text", text, True),
                  "image": tower_features(self.towers["image"], self.kinds["image"], image, True)}
        feats = {m: nn.functional.normalize(self.proj[m](pool(
            self.fusion({m: f})[m], self.pooling[m])), dim=-1) for m, f in towers.items()}
        loss_itc, _ = info_nce(feats["text"], feats["image"], 1.0 / self.temp)
        with torch.no_grad():  # the hard negatives' sampling weights
            sim = feats["text"] @ feats["image"].T / self.temp  # [b b] text -> image

        neg_image, neg_text = sample_hard_negatives(sim, generator=generator)
        t_idx, i_idx, labels = matching_pairs(neg_image, neg_text)
        itm = self.itm_from_states(select_rows(towers["text"], t_idx),
                                   select_rows(towers["image"], i_idx))
        loss_itm = nn.functional.cross_entropy(itm, labels)

        ids = text.ids
        tokenizer = self.tokenizers["text"]
        special = torch.isin(ids, torch.tensor(cfg.special_ids(tokenizer), dtype=torch.long,
                                               device=ids.device))
        if text.mask is not None:
            special |= ~text.mask.bool()
        vocab = int(cfg.towers["text"]["vocab_size"])
        masked, mlm_labels = mask_tokens(ids, mask_id=cfg.token_id("mask_token_id", tokenizer),
                                         vocab_size=vocab, mask_prob=cfg.mlm_probability,
                                         special=special, generator=generator)
        masked_text = TokenBatch(ids=masked, mask=text.mask, pad_id=text.pad_id,
                                 extras=text.extras)
        states = {"text": tower_features(self.towers["text"], "text", masked_text, True),
                  "image": towers["image"]}
        chosen = mlm_labels != IGNORE_INDEX  # [b n]; the loss reads these positions only
        logits = self.mlm_head(self.fusion(states)["text"].hidden[chosen])  # [k V]
        loss_mlm, mlm_logs = masked_lm_loss(logits, mlm_labels[chosen])
        acc = mlm_logs["acc"]
        loss = loss_itc + loss_itm + loss_mlm
        return loss, {"loss": float(loss.detach()), "loss_itc": float(loss_itc.detach()),
                      "loss_itm": float(loss_itm.detach()), "loss_mlm": float(loss_mlm.detach()),
                      "mlm_acc": acc, "temp": float(self.temp.detach())}

    def match_scores(self, a_items: Sequence[Any], b_items: Sequence[Any], *, a_modality: str,
                     b_modality: str) -> Tensor:
        """ITM matched-probability of each pair ``(a_items[i], b_items[i])``: [n]."""
        from mmenc_vl.matching import pair_match_scores

        return pair_match_scores(self, a_items, b_items, a_modality, b_modality)

    def warm_start(self, modality: str, source: Any) -> None:
        """Start the whole ``text`` or ``image`` tower from a saved model (the cross-modal
        layers stay fresh, as in the paper): see
        :func:`mmenc_vl.warm_start.warm_start_bridgetower`."""
        from mmenc_vl.warm_start import warm_start_bridgetower

        warm_start_bridgetower(self, modality, source)


def build_bridgetower(config: dict[str, Any], directory: Path | None = None) -> BridgeTowerEncoder:
    """Build a :class:`BridgeTowerEncoder` from its configuration (see ``recipes``), read into
    a :class:`~mmenc_vl.configs.BridgeTowerConfig` first."""
    from mmenc.builtin.towers import build_tokenizers

    settings = BridgeTowerConfig.read(config)
    towers = {m: build_tower(c) for m, c in settings.towers.items()}
    tokenizers = build_tokenizers(settings.tokenizers, directory)
    fusion = BridgeFusion({m: int(c["trunk"]["dim"]) for m, c in settings.towers.items()},
                          **settings.fusion.kwargs())
    model = BridgeTowerEncoder(config, towers, tokenizers, fusion)
    if directory is None:  # a new model: BERT's initialisation
        init_weights(model, std=None if settings.init == "fan-in" else 0.02)
    return model
