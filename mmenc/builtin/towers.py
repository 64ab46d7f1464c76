"""Tower encoders: one tower per modality, an optional fusion, a projection per modality.

Configuration (stored in ``config.json``)::

    {"towers": {"text": {"kind": "text", ...text transformer config...},
                "image": {"kind": "vision", ...vision transformer config...}},
     "pooling": {"text": "mean", "image": "cls"},   # cls | mean | pooler
     "embed_dim": 256,                              # null: no projection
     "tokenizers": {"text": {...}, "image": {...}},
     "fusion": {"name": "dual"}}

A tower is any module that follows :class:`mmenc.batch.Tower` (``width`` and
``forward_features(batch, *, output_hidden_states=False) -> Features``). Its ``kind`` names a
tower kind of the catalogue (``mmenc_register_towers``): the built-in ``text`` and ``vision``
transformers, a ``timm`` model, and the kinds plugins register (``midi``, ``beats``). The
``fusion`` entry names a fusion of the catalogue (``dual``: none; ``merged``: one joint trunk
over concatenated tokens). Nothing in the configuration is an import path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch, Tokenizer
from mmenc.builtin.fusion import DualFusion
from mmenc.errors import ConfigError, UnknownNameError
from mmenc.model import Encoder
from mmenc.nn import masked_mean
from mmenc.recipe_config import RecipeConfig

POOLINGS = ("cls", "mean", "pooler")


@dataclass(frozen=True, kw_only=True)
class TowersConfig(RecipeConfig):
    """The typed configuration of a tower encoder (see the module docstring).

    Each tower's section is read by the factory of its ``kind``, each tokenizer's by its
    tokenizer, and the ``fusion`` options by the fusion it names.

    Fields whose default is not obvious:
        pooling: modality -> ``cls`` (default), ``mean`` or ``pooler``.
        embed_dim: the width of the projections to the shared space; None: no projection.
        fusion: ``{"name": a registered fusion, ...its options}``; None: ``dual`` (none).
        source: where a converted model came from (``{"format", "path"}``), for the record.
    """

    towers: dict[str, dict[str, Any]]
    tokenizers: dict[str, dict[str, Any]]
    pooling: dict[str, str] = field(default_factory=dict)
    embed_dim: int | None = None
    fusion: dict[str, Any] | None = None
    source: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.towers:
            raise ConfigError("towers: a mapping of modality -> tower configuration is needed")
        for m, how in self.pooling.items():  # checked when built, not at the first encode
            if m in self.towers and how not in POOLINGS:
                raise ConfigError(f"pooling.{m} must be one of {POOLINGS}, got {how!r}")
        if self.fusion is not None and not isinstance(self.fusion.get("name"), str):
            raise ConfigError(f"config.fusion.name: a registered fusion is needed, got "
                              f"{self.fusion.get('name')!r:.40}")


CREATION_ONLY = ("pretrained_file",)
"""Tower options that act once, when a model is created (a local file of a timm model's own
weights), and are never stored: a saved model holds its weights, and a model folder never names
a file outside it."""


def tower_kinds() -> list[str]:
    """The registered tower kinds."""
    from mmenc.registry import catalogue

    return catalogue().names("tower")


def tower_spec(kind: object, where: str = "tower") -> Any:
    """The :class:`~mmenc.specs.TowerSpec` registered as ``kind``.

    Raises:
        ConfigError: naming ``where`` (the configuration key, e.g. ``towers.image.kind``) and
            the registered kinds; nothing is imported for a name that is not registered.
    """
    from mmenc.registry import catalogue

    cat = catalogue()
    if isinstance(kind, str):
        try:
            return cat.get("tower", kind)
        except UnknownNameError:
            pass
    raise ConfigError(f"{where}: {kind!r} is not a registered tower kind (registered: "
                      f"{', '.join(cat.names('tower')) or 'none'})")


def build_tower(config: dict[str, Any], tokenizer: Tokenizer | None = None,
                where: str = "tower") -> nn.Module:
    """The tower of kind ``config["kind"]``, built by the factory registered for it.

    Args:
        config: the tower's section of a model configuration (``kind`` and its options).
        tokenizer: the modality's tokenizer (kinds that size themselves by it read it).
        where: the configuration key of the section, for errors.
    """
    from mmenc.specs import resolve

    if not isinstance(config, dict):
        raise ConfigError(f"{where}: a tower configuration must be a mapping, got "
                          f"{type(config).__name__}")
    spec = tower_spec(config.get("kind"), f"{where}.kind")
    body = {k: v for k, v in config.items() if k != "kind"}
    tower = resolve(spec.factory)(body, tokenizer)
    if not callable(getattr(tower, "forward_features", None)):
        raise ConfigError(f"{where}: tower kind {spec.name!r} built a {type(tower).__name__} "
                          "without forward_features")
    return tower  # type: ignore[no-any-return]


def tower_width(tower: nn.Module, config: dict[str, Any] | None = None) -> int:
    """The width of a tower's states: its ``width``, else its configuration's ``trunk.dim``."""
    width = getattr(tower, "width", None)
    if isinstance(width, int) and not isinstance(width, bool):
        return width
    trunk = (config or {}).get("trunk")
    if isinstance(trunk, dict) and isinstance(trunk.get("dim"), int):
        return int(trunk["dim"])
    raise ConfigError(f"a {type(tower).__name__} tower states no width (give it a 'width')")


def tower_features(tower: nn.Module, kind: str | None, batch: TokenBatch,
                   output_hidden_states: bool = False) -> Features:
    """Run one tower on a batch of its modality (``kind`` is not needed: every tower follows
    the same protocol)."""
    return tower.forward_features(batch, output_hidden_states=output_hidden_states)  # type: ignore[no-any-return,operator]


def text_tower(config: dict[str, Any], tokenizer: Tokenizer | None = None) -> nn.Module:
    """Factory of the ``text`` kind: mmenc's BERT/RoBERTa-style text transformer."""
    from mmenc.keymaps.hf_text import build_text_transformer

    return build_text_transformer(config)


def vision_tower(config: dict[str, Any], tokenizer: Tokenizer | None = None) -> nn.Module:
    """Factory of the ``vision`` kind: mmenc's ViT."""
    from mmenc.keymaps.timm_vit import build_vision_transformer

    return build_vision_transformer(config)


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
        config: see the module docstring.
        towers: modality -> a tower (:class:`mmenc.batch.Tower`), of the kind the
            configuration names for it.
        tokenizers: modality -> tokenizer.
        fusion: a fusion module (``None`` or the ``dual`` fusion for independent towers).
    """

    def __init__(self, config: dict[str, Any], towers: dict[str, nn.Module],
                 tokenizers: dict[str, Tokenizer], fusion: nn.Module | None = None) -> None:
        super().__init__(config, tokenizers)
        settings = self.settings
        self.towers = nn.ModuleDict(towers)
        self.kinds = {m: settings.towers[m]["kind"] for m in towers}
        self.pooling = {m: settings.pooling.get(m, "cls") for m in towers}
        self.fusion = fusion
        self._frozen_cache: dict[str, tuple[tuple[int, ...], dict[bytes, Tensor]]] = {}
        embed_dim = settings.embed_dim
        self.proj = nn.ModuleDict({
            m: nn.Linear(self.width(m), embed_dim, bias=False) if embed_dim else nn.Identity()
            for m in towers
        })

    @property
    def settings(self) -> TowersConfig:
        """The typed view of ``config`` (read again on each use: a warm start changes it)."""
        return TowersConfig.read(self.config)

    def width(self, modality: str) -> int:
        """The width of a modality's tower states (before the projection)."""
        return tower_width(self.towers[modality], self.config["towers"][modality])

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
        if (self.training and self._frozen(modality) and batch.ids is not None
                and batch.ids.dim() == 2):  # token sequences: compound tokens simply run
            frozen: Tensor = self.proj[modality](self._frozen_pooled(batch, modality))
            return frozen
        features = self.forward_features(batch, modality)
        emb: Tensor = self.proj[modality](pool(features, self.pooling[modality]))
        return emb

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
        ids = batch.ids
        assert ids is not None  # embed() takes this path for id batches only
        mask = batch.mask if batch.mask is not None else torch.ones(ids.shape[:2],
                                                                    dtype=torch.bool)
        keys = [row[m].cpu().numpy().tobytes() for row, m in zip(ids, mask, strict=True)]
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

    def warm_start(self, modality: str, source: Encoder, keep_pooling: bool = False) -> None:
        """Replace one tower (and its tokenizer) with the tower of another model, weights
        included: a text tower can start from a converted checkpoint. The projection is rebuilt
        for the new width; the pooling follows the source unless ``keep_pooling``.

        A tower encoder with a single modality may start a tower of another name and the same
        kind: the ``code`` tower of a code-text model can start from a converted text encoder.
        Any other model starts a tower through its kind's ``from_encoder`` (a ``midi`` tower
        from a MIDI-BERT model); a kind without one refuses it."""
        self.check_modality(modality)
        kind = self.kinds[modality]
        src = self._source_modality(modality, source)
        if src is None:
            from mmenc.specs import resolve

            spec = tower_spec(kind, f"towers.{modality}.kind")
            name = getattr(source, "recipe", type(source).__name__)
            if spec.from_encoder is None:
                raise ValueError(f"the {modality!r} tower (kind {kind!r}) starts from a model "
                                 f"with a {kind!r} tower; {name!r} has none")
            tower, body, tokenizer = resolve(spec.from_encoder)(source)
            tower_cfg, pooling = {"kind": kind, **body}, None
        else:
            assert isinstance(source, TowerEncoder)
            tower, tower_cfg = source.towers[src], source.config["towers"][src]
            tokenizer, pooling = source.tokenizers[src], source.pooling[src]
            kind = source.kinds[src]
        self.towers[modality] = tower
        self.kinds[modality] = kind
        self.tokenizers[modality] = tokenizer
        self.config["towers"][modality] = tower_cfg
        self.config["tokenizers"][modality] = tokenizer.config()
        if pooling is not None and not keep_pooling:
            self.pooling[modality] = pooling
            self.config.setdefault("pooling", {})[modality] = pooling
        embed_dim = self.settings.embed_dim
        if embed_dim:
            self.proj[modality] = nn.Linear(self.width(modality), embed_dim, bias=False)

    def _source_modality(self, modality: str, source: Encoder) -> str | None:
        """The modality of a tower encoder ``source`` whose tower starts ``modality``: the same
        name, or the only modality of a one-tower source with a tower of the same kind."""
        if not isinstance(source, TowerEncoder):
            return None
        if modality in source.towers:
            return modality
        if len(source.modalities) == 1 and source.modalities[0] in source.towers \
                and source.kinds[source.modalities[0]] == self.kinds[modality]:
            return source.modalities[0]
        return None


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
    """The builder of tower recipes: each tower by the factory of its registered kind (with
    its modality's tokenizer), the fusion the configuration names, a projection per modality.

    Tokenizer files are read from ``directory``. Options a tower takes only when the model is
    created (:data:`CREATION_ONLY`) are left out of the model's stored configuration.
    """
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    cat = catalogue()
    settings = TowersConfig.read(config)
    tower_cfgs = settings.towers
    tokenizers = build_tokenizers(settings.tokenizers, directory)
    missing = [m for m in tower_cfgs if m not in tokenizers]
    if missing:
        raise ConfigError(f"tokenizers: no tokenizer for the tower(s) {', '.join(missing)}")
    towers = {m: build_tower(c, tokenizers[m], f"towers.{m}") for m, c in tower_cfgs.items()}
    fusion_cfg = dict(settings.fusion or {"name": "dual"})
    fusion_name = fusion_cfg.pop("name")
    fusion = resolve(cat.get("fusion", fusion_name).factory)(
        widths={m: tower_width(t, tower_cfgs[m]) for m, t in towers.items()}, **fusion_cfg
    )
    if any(k in c for c in tower_cfgs.values() for k in CREATION_ONLY):
        config = {**config, "towers": {m: {k: v for k, v in c.items() if k not in CREATION_ONLY}
                                       for m, c in tower_cfgs.items()}}
    return TowerEncoder(config, towers, tokenizers, fusion)
