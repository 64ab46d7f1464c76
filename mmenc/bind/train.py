"""Training a bound model against a frozen hub: ``mmenc bind train CONFIG.yaml``.

Every training text goes through the hub once (:class:`~mmenc.bind.cache.HubCache`), so a step
runs only the towers being trained. Configuration (YAML, read with ``yaml.safe_load``)::

    hub: minilm                  # or open-clip:ARCH, a model folder, or {name: ..., ...}
    dims: [32, 64, 128]          # Matryoshka widths (the full width is always added)
    loss: infonce                # or sigmoid
    negatives: cache             # every cached text of the modality, or: batch
    schedule: together           # or sequential (one modality after the other)
    output_dir: runs/bind        # the model goes to output_dir/model
    cache_dir: null              # default output_dir/cache
    seed: 0
    modalities:
      image:
        tower: {recipe: clip-tiny, modality: image, overrides: {...}}   # or {from: DIR}
        train: data/emoji/train.jsonl   # JSONL rows with the item (field: the modality)
        text_field: text                # and its text
        steps: 200
        batch_size: 128
        lr: 1.0e-3
        augment: true
    pairs:                       # optional direct losses between two towers
      - {modalities: [midi, audio], train: pairs.jsonl, weight: 1.0, batch_size: 32}
    pair_steps: 0                # 0: pairs train beside the hub losses at every step; N > 0:
                                 # in N more steps after them (the two towers' hub losses
                                 # continue), so the pair can be measured before as emergent

The Python API is :func:`train_bound` (a mapping like the YAML, or rows given as lists instead
of manifest paths) and :func:`add_modality`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmenc.bind.augment import augmenter
from mmenc.bind.losses import LOSSES, HubLoss, pair_loss
from mmenc.errors import ConfigError, InputError

Echo = Callable[[str], None]


@dataclass
class ModalityConfig:
    tower: dict[str, Any]
    train: Any  # a manifest path or a list of rows
    field: str | None = None
    text_field: str = "text"
    steps: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 10
    augment: bool = True
    freeze_encoder: bool = False  # train only the projection, over the encoder's embeddings
                                  # computed once (no augmentation then)
    projection_init: str = "random"  # or "rotation": start in the hub's own (rotated) space


@dataclass
class PairConfig:
    modalities: tuple[str, str]
    train: Any
    weight: float = 1.0
    batch_size: int = 32


@dataclass
class BindConfig:
    modalities: dict[str, ModalityConfig]
    hub: Any = "minilm"
    dims: list[int] = field(default_factory=lambda: [32, 64, 128])
    loss: str = "infonce"
    negatives: str = "cache"
    schedule: str = "together"
    pairs: list[PairConfig] = field(default_factory=list)
    pair_steps: int = 0
    output_dir: str = "runs/bind"
    cache_dir: str | None = None
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BindConfig:
        if not isinstance(data, dict):
            raise ConfigError("bind config: expected a mapping")
        data = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"bind config: unknown keys {sorted(unknown)}")
        try:
            data["modalities"] = {m: c if isinstance(c, ModalityConfig) else ModalityConfig(**c)
                                  for m, c in (data.get("modalities") or {}).items()}
            data["pairs"] = [p if isinstance(p, PairConfig) else
                             PairConfig(**{**p, "modalities": tuple(p["modalities"])})
                             for p in data.get("pairs") or []]
            config = cls(**data)
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"bind config: {exc}") from None
        if config.loss not in LOSSES:
            raise ConfigError(f"bind config: loss must be one of {LOSSES}, got {config.loss!r}")
        if config.negatives not in ("cache", "batch"):
            raise ConfigError("bind config: negatives must be 'cache' or 'batch'")
        if config.schedule not in ("together", "sequential"):
            raise ConfigError("bind config: schedule must be 'together' or 'sequential'")
        for m, c in config.modalities.items():
            if c.projection_init not in ("random", "rotation"):
                raise ConfigError(f"bind config: {m}.projection_init must be 'random' or "
                                  f"'rotation', got {c.projection_init!r}")
        for p in config.pairs:
            if len(p.modalities) != 2:
                raise ConfigError(f"bind config: a pair names two modalities, got {p.modalities}")
        return config


@dataclass
class BindResult:
    model_dir: Path
    seconds: float
    logs: dict[str, dict[str, float]]
    cache: dict[str, int]


def read_rows(train: Any) -> list[dict[str, Any]]:
    """Rows of a manifest path (values resolved against its folder), or rows as given."""
    if isinstance(train, str | Path):
        from mmenc.retrieval.evaluate import read_manifest, resolve_value

        base = Path(train).resolve().parent
        return [{k: resolve_value(v, k, base) for k, v in row.items()}
                for row in read_manifest(train)]
    return list(train)


def load_items(modality: str, raws: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """Loaded items (each validated by the modality's loader) and the positions kept; items
    the loader refuses are skipped."""
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    load = resolve(catalogue().get("modality", modality).loader)
    items, kept = [], []
    for i, raw in enumerate(raws):
        try:
            items.append(load(raw))
            kept.append(i)
        except InputError:
            continue
    return items, kept


class _Stream:
    """Shuffled batches of indices, epoch after epoch."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.gen = n, min(batch_size, n), generator
        self.order: list[int] = []

    def next(self) -> Tensor:
        if len(self.order) < self.batch_size:
            self.order += torch.randperm(self.n, generator=self.gen).tolist()
        out, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return torch.tensor(out)


def _lr(base: float, warmup: int, steps: int, step: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def principal_rotation(vectors: Tensor) -> Tensor:
    """An orthogonal ``[e e]`` matrix whose columns are the principal axes of ``vectors``
    (largest variance first): the rotated space keeps its similarities and puts the most
    information in its first dimensions."""
    centred = vectors.double() - vectors.double().mean(0)
    cov = centred.T @ centred
    _, vecs = torch.linalg.eigh(cov)
    rotation: Tensor = vecs.flip(1).float()
    return rotation


def frozen_embeddings(tower: Any, items: list[Any], cache_dir: Path | None = None,
                      batch_size: int = 64) -> Tensor:
    """The pooled embeddings (unit length) of a frozen tower encoder for every item, before
    the projection, computed once in batches of similar length. Text items (code) are kept in
    a :class:`~mmenc.bind.cache.HubCache` under ``cache_dir`` keyed by the encoder's weights,
    configuration and the text, so the next run reads them."""
    import json

    from mmenc.bind.cache import HubCache, hub_id

    def embed(batch: list[Any]) -> Tensor:
        was = tower.encoder.training
        tower.encoder.eval()
        with torch.no_grad():
            out = tower.encoder.embed(tower.tokenizer(batch), tower.inner).float()
        tower.encoder.train(was)
        return torch.nn.functional.normalize(out, dim=-1)

    def size(item: Any) -> int:
        return len(item) if hasattr(item, "__len__") else 0

    order = sorted(range(len(items)), key=lambda i: size(items[i]))
    if cache_dir is not None and all(isinstance(x, str) for x in items):
        config = json.dumps(tower.encoder.config, sort_keys=True, default=str)
        key = f"tower {tower.inner} {hub_id(tower.encoder)} {config}"
        cache = HubCache(cache_dir, hashlib.sha256(key.encode()).hexdigest())
        vectors = cache.vectors([items[i] for i in order], embed, batch_size)
        out = torch.empty_like(vectors)
        out[order] = vectors
        return out
    parts = [embed([items[i] for i in order[s:s + batch_size]])
             for s in range(0, len(order), batch_size)]
    out = torch.empty(len(items), parts[0].shape[-1])
    out[order] = torch.cat(parts)
    return out


class _ModalityState:
    def __init__(self, name: str, cfg: ModalityConfig, tower: Any, items: list[Any],
                 text_rows: Tensor, candidates: Tensor, loss: HubLoss,
                 gen: torch.Generator, cache_dir: Path | None = None) -> None:
        self.name, self.cfg, self.tower, self.items = name, cfg, tower, items
        self.text_rows, self.candidates, self.loss = text_rows, candidates, loss
        self.stream = _Stream(len(items), cfg.batch_size, gen)
        self.augment = augmenter(name) if cfg.augment and not cfg.freeze_encoder else None
        self.features: Tensor | None = None
        if cfg.freeze_encoder:
            for p in tower.encoder.parameters():
                p.requires_grad_(False)
            self.features = frozen_embeddings(tower, items, cache_dir)
        params = [p for p in tower.parameters() if p.requires_grad] + list(loss.parameters())
        self.optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = gen
        self.step = 0
        self.logs: dict[str, float] = {}

    def batch(self, index: Tensor) -> Any:
        items = [self.items[i] for i in index.tolist()]
        if self.augment is not None:
            items = [self.augment(x, self.gen) for x in items]
        return self.tower.tokenizer(items)

    def loss_of(self, negatives: str) -> Tensor:
        index = self.stream.next()
        if self.features is not None:
            emb = self.tower.proj(self.features[index])
        else:
            emb = self.tower(self.batch(index))  # [b e]
        labels = self.text_rows[index]
        if negatives == "batch":
            rows, labels = labels.unique(return_inverse=True)
            loss: Tensor
            loss, logs = self.loss(emb, self.candidates[rows], labels)
        else:
            loss, logs = self.loss(emb, self.candidates, labels)
        self.logs = logs
        return loss

    def set_lr(self, extra: int = 0) -> None:
        """The schedule of the hub phase, or (``extra`` > 0) a cosine from half the rate over
        ``extra`` more steps."""
        if extra:
            lr = _lr(self.cfg.lr / 2, 0, extra, self.step - self.cfg.steps)
        else:
            lr = _lr(self.cfg.lr, self.cfg.warmup, self.cfg.steps, self.step)
        for group in self.optim.param_groups:
            group["lr"] = lr


def train_bound(config: BindConfig | dict[str, Any], echo: Echo = print,
                base: Any | None = None, model_dir: str | Path | None = None,
                after_hub: Callable[[Any], None] | None = None) -> BindResult:
    """Train the towers of ``config`` against the frozen hub and save the bound model in
    ``output_dir/model``.

    Args:
        config: a :class:`BindConfig` or its mapping.
        echo: where progress lines go.
        base: a trained :class:`~mmenc.bind.model.BoundEncoder` to add the configured
            modalities to (its hub, rotation and towers are kept; only the new towers train).
        model_dir: where the model is written (default ``output_dir/model``); with ``base``
            only the new towers and the top files are written there.
        after_hub: called with the model (in eval mode) after the hub phases, before the
            ``pair_steps`` phase.
    """
    from mmenc.bind.cache import HubCache, hub_id
    from mmenc.bind.model import BoundEncoder, build_bound
    from mmenc.bind.towers import build_tower

    cfg = config if isinstance(config, BindConfig) else BindConfig.from_dict(config)
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if base is None:
        model: BoundEncoder = build_bound({"hub": cfg.hub, "dims": cfg.dims, "tower_specs": {
            m: c.tower for m, c in cfg.modalities.items()}})
    else:
        model = base
        for m, c in cfg.modalities.items():
            model.add_tower(build_tower(m, c.tower, model.hub_dim))
    for p in model.parameters():
        p.requires_grad_(False)
    for m in cfg.modalities:
        for p in model.towers[m].parameters():
            p.requires_grad_(True)
    out = Path(cfg.output_dir)
    cache = HubCache(Path(cfg.cache_dir) if cfg.cache_dir else out / "cache", hub_id(model.hub))
    anchor = model.config.get("anchor", "text")

    def embed_texts(texts: list[str]) -> Tensor:
        vectors: Tensor = model.hub.encode(texts, anchor, batch_size=64, normalize=True,
                                           show_progress_bar=False)
        return vectors

    # data: loaded items, and the row of each item's text among the modality's distinct texts
    loaded: dict[str, tuple[list[Any], list[str]]] = {}
    for m, c in cfg.modalities.items():
        rows = read_rows(c.train)
        fieldname = c.field or m
        rows = [r for r in rows if fieldname in r and isinstance(r.get(c.text_field), str)]
        items, kept = load_items(m, [r[fieldname] for r in rows])
        if not items:
            raise ConfigError(f"bind config: no usable training items of {m!r}")
        loaded[m] = (items, [rows[i][c.text_field] for i in kept])
        echo(f"  {m}: {len(items)} training items ({len(rows) - len(items)} refused), "
             f"{len(set(loaded[m][1]))} distinct texts")
    all_texts = list(dict.fromkeys(t for _, texts in loaded.values() for t in texts))
    t_hub = time.perf_counter()
    vectors = cache.vectors(all_texts, embed_texts) if all_texts else torch.zeros(0)
    echo(f"  hub cache: {cache.misses} texts embedded, {cache.hits} found in the cache "
         f"({time.perf_counter() - t_hub:.0f} s)")
    if base is None and len(all_texts) > model.hub_dim:
        model.rotation.copy_(principal_rotation(vectors))
    row_of = {t: i for i, t in enumerate(all_texts)}
    states: dict[str, _ModalityState] = {}
    for m, c in cfg.modalities.items():
        items, texts = loaded[m]
        distinct = list(dict.fromkeys(texts))
        local = {t: i for i, t in enumerate(distinct)}
        candidates = vectors[[row_of[t] for t in distinct]] @ model.rotation
        if c.projection_init == "rotation":
            weight = model.towers[m].get_parameter("proj.weight")
            if tuple(weight.shape) != (model.hub_dim, model.hub_dim):
                raise ConfigError(f"bind config: {m}.projection_init 'rotation' needs a tower "
                                  f"as wide as the hub ({model.hub_dim}), got "
                                  f"{weight.shape[1]}")
            with torch.no_grad():
                weight.copy_(model.rotation.T)
        t_feat = time.perf_counter()
        states[m] = _ModalityState(m, c, model.towers[m], items,
                                   torch.tensor([local[t] for t in texts]), candidates,
                                   HubLoss(cfg.loss, model.dims), gen, cache.directory)
        if c.freeze_encoder:
            echo(f"  {m}: encoder frozen, {len(items)} embeddings computed once "
                 f"({time.perf_counter() - t_feat:.0f} s)")
    pairs = []
    for pc in cfg.pairs:
        missing = [m for m in pc.modalities if m not in model.towers]
        if missing:
            raise ConfigError(f"bind config: pair {pc.modalities} names modalities without a "
                              f"tower: {missing}")
        rows = read_rows(pc.train)
        a, b = pc.modalities
        ia, ka = load_items(a, [r[a] for r in rows])
        ib, kb = load_items(b, [r[b] for r in rows])
        keep = sorted(set(ka) & set(kb))
        pa, pb = dict(zip(ka, ia, strict=True)), dict(zip(kb, ib, strict=True))
        scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for s in pc.modalities:
            if s in states:
                states[s].optim.add_param_group({"params": [scale], "lr": states[s].cfg.lr,
                                                 "weight_decay": 0.0})
                break
        pairs.append((pc, [pa[i] for i in keep], [pb[i] for i in keep], scale,
                      _Stream(len(keep), pc.batch_size, gen)))
        echo(f"  direct pair {a} <-> {b}: {len(keep)} training pairs")

    model.train()
    logs: dict[str, dict[str, float]] = {}
    phases: list[tuple[list[str], int]] = [(list(states), 0)] if cfg.schedule == "together" \
        else [([m], 0) for m in states]
    if cfg.pairs and cfg.pair_steps > 0:
        phases.append((list(dict.fromkeys(m for p in cfg.pairs for m in p.modalities
                                          if m in states)), cfg.pair_steps))
    for phase, extra in phases:
        if extra and after_hub is not None:
            after_hub(model.eval())
            model.train()
        total = extra or max(states[m].cfg.steps for m in phase)
        t0 = time.perf_counter()
        for step in range(total):
            active = phase if extra else [m for m in phase
                                          if states[m].step < states[m].cfg.steps]
            loss = torch.zeros(())
            for m in active:
                states[m].set_lr(extra)
                loss = loss + states[m].loss_of(cfg.negatives)
            for pc, items_a, items_b, scale, stream in pairs:
                if not set(pc.modalities) & set(active) or (cfg.pair_steps > 0 and not extra):
                    continue
                index = stream.next().tolist()
                a, b = pc.modalities
                ea = model.towers[a](model.towers[a].tokenizer(  # type: ignore[operator]
                    [items_a[i] for i in index]))
                eb = model.towers[b](model.towers[b].tokenizer(  # type: ignore[operator]
                    [items_b[i] for i in index]))
                loss = loss + pc.weight * pair_loss(ea, eb, scale, model.dims)
            for m in states:
                states[m].optim.zero_grad(set_to_none=True)
            loss.backward()
            for m in active:
                states[m].optim.step()
                states[m].step += 1
            if step % 25 == 0 or step == total - 1:
                line = ", ".join(f"{m} loss {states[m].logs['loss']:.3f} acc "
                                 f"{states[m].logs['acc']:.2f}" for m in active)
                echo(f"  step {step + 1}/{total}: {line} "
                     f"({time.perf_counter() - t0:.0f} s)")
        for m in phase:
            logs[m] = dict(states[m].logs, steps=states[m].step)
    if after_hub is not None and not (cfg.pairs and cfg.pair_steps > 0):
        after_hub(model.eval())
    model.eval()
    target = Path(model_dir) if model_dir is not None else out / "model"
    model.save_pretrained(target, parts=None if base is None else list(cfg.modalities))
    return BindResult(target, time.perf_counter() - start, logs,
                      {"hits": cache.hits, "misses": cache.misses})


def add_modality(model_dir: str | Path, modality: str, spec: ModalityConfig | dict[str, Any],
                 echo: Echo = print, **settings: Any) -> BindResult:
    """Train one new tower for a saved bound model and write it into ``model_dir``: only
    ``towers/<modality>/`` and the two top files are written, the other parts' files are left
    byte for byte as they were.

    ``settings``: other :class:`BindConfig` entries (``loss``, ``negatives``, ``cache_dir``,
    ``seed``, ``pairs``); the Matryoshka dims are the model's.
    """
    from mmenc.bind.model import BoundEncoder
    from mmenc.model import load

    model_dir = Path(model_dir)
    model = load(model_dir)
    if not isinstance(model, BoundEncoder):
        raise ConfigError(f"{model_dir}: not a bound model (recipe {model.recipe!r})")
    settings.setdefault("cache_dir", str(model_dir.parent / "cache"))
    settings.setdefault("output_dir", str(model_dir.parent))
    cfg = BindConfig.from_dict({"modalities": {modality: spec}, "dims": model.dims,
                                **settings})
    return train_bound(cfg, echo, base=model, model_dir=model_dir)
