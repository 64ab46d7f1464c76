"""Two-tower (and N-tower) encoders: one trunk per modality, projections to a shared space.

Configuration (stored in ``config.json``)::

    {"towers": {"text": {"kind": "text", ...text transformer config...},
                "image": {"kind": "vision", ...vision transformer config...}},
     "pooling": {"text": "mean", "image": "cls"},   # cls | mean | pooler
     "embed_dim": 256,                              # null: no projection
     "tokenizers": {"text": {...}, "image": {...}},
     "fusion": {"name": "dual"}}

Each tower is ``mmenc.nn``'s text or vision transformer; the ``fusion`` entry names a fusion
from the catalogue (``dual``: none; ``merged``: one joint trunk over concatenated tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch, Tokenizer
from mmenc.builtin.fusion import DualFusion
from mmenc.model import Encoder
from mmenc.nn import masked_mean

POOLINGS = ("cls", "mean", "pooler")


def build_tower(config: dict[str, Any]) -> nn.Module:
    """A text or vision transformer from its configuration."""
    kind = config.get("kind")
    body = {k: v for k, v in config.items() if k != "kind"}
    if kind == "text":
        from mmenc.keymaps.hf_text import build_text_transformer

        return build_text_transformer(body)
    if kind == "vision":
        from mmenc.keymaps.timm_vit import build_vision_transformer

        return build_vision_transformer(body)
    raise ValueError(f"tower kind must be 'text' or 'vision', got {kind!r}")


def tower_features(tower: nn.Module, kind: str, batch: TokenBatch,
                   output_hidden_states: bool = False) -> Features:
    """Run one tower on a batch of its modality."""
    if kind == "text":
        out = tower(batch.ids, mask=batch.mask,
                    token_type_ids=batch.extras.get("token_type_ids"),
                    output_hidden_states=output_hidden_states)
        return Features(out.last_hidden_state, batch.mask, getattr(out, "pooled", None),
                        out.hidden_states)
    out = tower(batch.values, output_hidden_states=output_hidden_states)
    return Features(out.last_hidden_state, None, None, out.hidden_states)


def pool(features: Features, how: str) -> Tensor:
    """One vector per item: the first token, the masked mean, or the tower's own pooler."""
    if how == "cls":
        return features.hidden[:, 0]
    if how == "mean":
        return masked_mean(features.hidden, features.mask)
    if how == "pooler":
        if features.pooled is None:
            raise ValueError("pooling 'pooler' needs a tower with a pooler")
        return features.pooled
    raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")


class TowerEncoder(Encoder):
    """One tower per modality, an optional fusion, and a projection per modality.

    Args:
        recipe: catalogue name.
        config: see the module docstring.
        towers: modality -> text or vision transformer.
        tokenizers: modality -> tokenizer.
        fusion: a fusion module (``None`` or the ``dual`` fusion for independent towers).
    """

    def __init__(self, recipe: str, config: dict[str, Any], towers: dict[str, nn.Module],
                 tokenizers: dict[str, Tokenizer], fusion: nn.Module | None = None) -> None:
        super().__init__(recipe, config, tokenizers)
        self.towers = nn.ModuleDict(towers)
        self.kinds = {m: config["towers"][m]["kind"] for m in towers}
        self.pooling = {m: config.get("pooling", {}).get(m, "cls") for m in towers}
        for m, how in self.pooling.items():  # checked when built, not at the first encode
            if not isinstance(how, str) or how not in POOLINGS:
                raise ValueError(f"pooling.{m} must be one of {POOLINGS}, got {how!r}")
        self.fusion = fusion
        self._frozen_cache: dict[str, tuple[tuple[int, ...], dict[bytes, Tensor]]] = {}
        embed_dim = config.get("embed_dim")
        self.proj = nn.ModuleDict({
            m: nn.Linear(self.width(m), embed_dim, bias=False) if embed_dim else nn.Identity()
            for m in towers
        })

    def width(self, modality: str) -> int:
        return int(self.config["towers"][modality]["trunk"]["dim"])

    def forward_features(self, batch: TokenBatch, modality: str,
                         output_hidden_states: bool = False) -> Features:
        self.check_modality(modality)
        features = tower_features(self.towers[modality], self.kinds[modality], batch,
                                  output_hidden_states)
        if self.fusion is not None:
            features = self.fusion({modality: features})[modality]
        return features

    def forward_fused(self, batches: dict[str, TokenBatch]) -> dict[str, Features]:
        """Every modality's features after the fusion sees all of them together."""
        states = {m: tower_features(self.towers[m], self.kinds[m], b) for m, b in batches.items()}
        return self.fusion(states) if self.fusion is not None else states

    def embed(self, batch: TokenBatch, modality: str) -> Tensor:
        if self.training and self._frozen(modality) and batch.ids is not None:
            return self.proj[modality](self._frozen_pooled(batch, modality))
        features = self.forward_features(batch, modality)
        return self.proj[modality](pool(features, self.pooling[modality]))

    def _frozen(self, modality: str) -> bool:
        """A tower with no trainable parameter, feeding no fusion that could change it."""
        if self.fusion is not None and not isinstance(self.fusion, DualFusion):
            return False
        return not any(p.requires_grad for p in self.towers[modality].parameters())

    @torch.no_grad()
    def _frozen_pooled(self, batch: TokenBatch, modality: str) -> Tensor:
        """Pooled states of a frozen tower, in eval mode (no dropout), computed once per
        distinct token sequence: a frozen text tower then costs one pass over the captions
        instead of one per epoch."""
        tower = self.towers[modality]
        # in-place changes of the weights (a load, an unfreeze and a step) bump _version
        version = tuple(p._version for p in tower.parameters())
        cached_version, cache = self._frozen_cache.get(modality, (None, {}))
        if cached_version != version:
            cache = {}
            self._frozen_cache[modality] = (version, cache)
        mask = batch.mask if batch.mask is not None else torch.ones(batch.ids.shape[:2],
                                                                    dtype=torch.bool)
        keys = [row[m].cpu().numpy().tobytes() for row, m in zip(batch.ids, mask, strict=True)]
        todo = list({k: i for i, k in reversed(list(enumerate(keys))) if k not in cache}.values())
        if todo:
            tower.eval()
            sub = batch.select(torch.tensor(todo))
            pooled = pool(tower_features(tower, self.kinds[modality], sub),
                          self.pooling[modality])
            tower.train(self.training)
            for i, row in zip(todo, pooled, strict=True):
                cache[keys[i]] = row
        return torch.stack([cache[k] for k in keys])

    def warm_start(self, modality: str, source: TowerEncoder, keep_pooling: bool = False) -> None:
        """Replace one tower (and its tokenizer) with the tower of another model, weights
        included: a text tower can start from a converted checkpoint. The projection is rebuilt
        when the width changes; the pooling follows the source unless ``keep_pooling``.

        A source with a single modality may start a tower of another name: the ``code`` tower
        of a code-text model can start from a converted text encoder."""
        self.check_modality(modality)
        src = modality
        if modality not in source.modalities and len(source.modalities) == 1:
            src = source.modalities[0]
        source.check_modality(src)
        width = source.width(src)
        self.towers[modality] = source.towers[src]
        self.kinds[modality] = source.kinds[src]
        self.tokenizers[modality] = source.tokenizers[src]
        self.config["towers"][modality] = source.config["towers"][src]
        self.config["tokenizers"][modality] = source.tokenizers[src].config()
        if not keep_pooling:
            self.pooling[modality] = source.pooling[src]
            self.config.setdefault("pooling", {})[modality] = source.pooling[src]
        embed_dim = self.config.get("embed_dim")
        if embed_dim:
            self.proj[modality] = nn.Linear(width, embed_dim, bias=False)


def build_tokenizers(configs: dict[str, dict[str, Any]],
                     directory: Path | None = None) -> dict[str, Tokenizer]:
    """modality -> tokenizer, each built by the catalogue tokenizer its configuration names
    (default: the modality's name); files are read from ``directory``."""
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    cat = catalogue()
    return {m: resolve(cat.get("tokenizer", c.get("tokenizer", m)).factory)(c, directory)
            for m, c in configs.items()}


def build_tower_encoder(config: dict[str, Any], directory: Path | None = None) -> TowerEncoder:
    """Build a :class:`TowerEncoder` (tokenizer files are read from ``directory``)."""
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    cat = catalogue()
    towers = {m: build_tower(c) for m, c in config["towers"].items()}
    tokenizers = build_tokenizers(config["tokenizers"], directory)
    fusion_cfg = dict(config.get("fusion") or {"name": "dual"})
    fusion_name = fusion_cfg.pop("name")
    fusion = resolve(cat.get("fusion", fusion_name).factory)(
        widths={m: int(c["trunk"]["dim"]) for m, c in config["towers"].items()}, **fusion_cfg
    )
    return TowerEncoder("towers", config, towers, tokenizers, fusion)

