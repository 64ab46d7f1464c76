"""The pretraining loop: build, resume, step, log, checkpoint; one process or DDP under torchrun.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank trains on its slice of the global batch;
the contrastive objectives gather every rank's embeddings, DDP averages the gradients, and
rank 0 writes the metrics and checkpoints. A run is a function of its config: the same seed
gives the same weights, whatever the number of ranks (up to float rounding), and a run
killed at any moment and resumed gives the same weights as one that was never stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from mmenc.errors import CheckpointError, ConfigError, MmencError
from mmenc.model import Encoder
from mmenc.train import state
from mmenc.train.config import ModelConfig, OptimConfig, TrainConfig, load_config
from mmenc.train.data import Batcher, collate, make_stream
from mmenc.train.logging import LOSS_PNG, MetricsLogger, plot_loss, progress_line
from mmenc.train.tasks import TrainModule, build_task


class TrainingDiverged(MmencError):
    """The loss (or the gradient norm) stopped being finite."""


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        output_dir: the run's folder.
        step: optimiser steps done.
        metrics: the last logged row (empty on ranks other than 0).
        skipped: items skipped, by reason (``{"image: not a readable image": 3}``).
        checkpoint: the last checkpoint written.
        model_dir: the final model (``mmenc.load(model_dir)``).
    """

    output_dir: Path
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    checkpoint: Path | None = None
    model_dir: Path | None = None


def lr_at(optim: OptimConfig, steps: int, step: int) -> float:
    """The learning rate of step ``step`` (0-based): linear warm-up, then cosine to min_lr."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, steps - optim.warmup_steps)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * progress))


def build_model(config: ModelConfig) -> Encoder:
    """The recipe with its overrides, towers warm-started from saved models."""
    import mmenc

    model = mmenc.create_model(config.recipe, **config.overrides)
    for modality, path in config.warm_start.items():
        if not hasattr(model, "warm_start"):
            raise ConfigError(f"model.warm_start: {config.recipe} cannot warm-start a tower")
        model.warm_start(modality, mmenc.load(path))
    encoder: Encoder = model
    return encoder


def freeze(model: Encoder, prefixes: list[str]) -> None:
    """Stop training the parameters whose names start with one of ``prefixes``."""
    for prefix in prefixes:
        hits = [p for n, p in model.named_parameters() if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ConfigError(f"model.freeze: no parameter of the model starts with {prefix!r}")
        for p in hits:
            p.requires_grad_(False)


def _distributed(config: TrainConfig) -> tuple[int, int, torch.device, bool]:
    """``(rank, world, device, created)``, starting the process group torchrun asked for."""
    created = False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        created = True
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local), created
    return rank, world, torch.device("cpu"), created


def pretrain(config: str | Path | dict[str, Any] | TrainConfig,
             resume: bool = False) -> TrainResult:
    """Train a model as ``config`` says (a YAML path, a mapping or a :class:`TrainConfig`).

    Args:
        config: the run's configuration; it is checked completely before any work.
        resume: continue from the newest complete checkpoint in ``output_dir`` (a fresh start
            when there is none).
    Returns:
        a :class:`TrainResult`.
    Raises:
        ConfigError: a bad config, or checkpoints in ``output_dir`` without ``resume``.
        TrainingDiverged: a loss that is NaN or infinite (the last checkpoint is kept intact).
    """
    cfg = load_config(config)
    rank, world, device, created = _distributed(cfg)
    run = _Run(cfg, rank, world, device)
    try:
        return run.run(resume)
    finally:
        run.close()
        if created:
            dist.destroy_process_group()


class _Run:
    """One run's objects: model, tasks, optimiser, data, logger."""

    def __init__(self, cfg: TrainConfig, rank: int, world: int, device: torch.device) -> None:
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.out = Path(cfg.output_dir)
        self.main = rank == 0
        self._lock_file: Any = None

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, obj)
        return parts

    # -- setup --------------------------------------------------------------------------------
    def setup(self, resume: bool) -> None:
        cfg = self.cfg
        ckpt = state.latest(self.out) if self.out.is_dir() else None
        if ckpt is not None and not resume:
            raise ConfigError(f"{self.out} holds checkpoints ({ckpt.name}); pass --resume to "
                              "continue that run, or choose another output_dir")
        self.barrier()  # every rank has looked before rank 0 touches the folder
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock()
            state.clean_temporary(self.out)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        self.barrier()
        random.seed(cfg.seed + self.rank)
        np.random.seed(cfg.seed + self.rank)
        torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
        if ckpt is not None:
            import mmenc

            model = mmenc.load(ckpt / "model")
        else:
            model = build_model(cfg.model)
        freeze(model, cfg.model.freeze)
        model.to(self.device)
        tasks = {o.label or o.name: build_task(o, model, cfg.seed, self.rank)
                 for o in cfg.objectives}
        self.train = TrainModule(model, tasks).to(self.device)
        # sorted by name: a model rebuilt from a checkpoint may register its towers in another
        # order, and the order of the gradient-norm sum decides its last bit
        named = sorted(((n, p) for n, p in self.train.named_parameters() if p.requires_grad),
                       key=lambda item: item[0])
        self.params = [p for _, p in named]
        # no decay on biases, norms and temperatures (vectors and scalars), as is usual
        decay = [(n, p) for n, p in named if p.ndim >= 2]
        other = [(n, p) for n, p in named if p.ndim < 2]
        self.names = [n for n, _ in decay + other]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for _, p in decay], "weight_decay": o.weight_decay},
             {"params": [p for _, p in other], "weight_decay": 0.0}],
            lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps)
        self.generators = {label: t.generator for label, t in tasks.items()}
        loaders = self._loaders()
        stream = make_stream(cfg.data.train, cfg.data.shards, cfg.seed, cfg.data.modalities,
                             cfg.data.extensions)
        self.batcher = Batcher(stream, loaders, cfg.batch_size, self.rank, self.world,
                               cfg.data.num_workers, self.gather)
        self.step, self.last_ckpt = 0, ckpt
        if ckpt is not None:
            self._restore(ckpt)
        else:
            torch.manual_seed(cfg.seed + self.rank)  # dropout differs between ranks
        self.model = model
        self.ddp: torch.nn.Module = self.train
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                self.train, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=True, broadcast_buffers=False)
        self.logger = MetricsLogger(self.out, self.step if ckpt else None) if self.main else None

    def _lock(self) -> None:
        """Hold ``output_dir/.lock`` for the run: two runs writing one folder would delete
        each other's checkpoints. The lock dies with the process, however it ends."""
        import fcntl

        self._lock_file = (self.out / ".lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"{self.out} is in use by another run") from None

    def _loaders(self) -> dict[str, Any]:
        from mmenc.registry import catalogue
        from mmenc.specs import resolve

        return {m: resolve(catalogue().get("modality", m).loader) for m in self.cfg.data.modalities}

    def _restore(self, ckpt: Path) -> None:
        tensors, scalars = state.read(ckpt)
        if scalars.get("config_digest") != self.cfg.digest():
            raise CheckpointError(f"{ckpt}: written by a run with another config (model, data, "
                                  "objectives, optimiser, batch, steps or seed differ)")
        tasks = {k[len("tasks."):]: v for k, v in tensors.items() if k.startswith("tasks.")}
        expected = set(self.train.tasks.state_dict())
        missing, unexpected = sorted(expected - set(tasks)), sorted(set(tasks) - expected)
        if missing or unexpected:  # e.g. written before the objectives kept another layout
            raise CheckpointError(
                f"{ckpt}: its objectives' state does not fit this run's objectives (missing: "
                f"{', '.join(f'tasks.{k}' for k in missing[:3]) or 'none'}; not expected: "
                f"{', '.join(f'tasks.{k}' for k in unexpected[:3]) or 'none'})")
        self.train.tasks.load_state_dict(tasks, strict=True)
        state.load_optimizer(self.optimizer, self.names, tensors, scalars["optimizer"])
        self.step = int(scalars["step"])
        self.batcher.seek(int(scalars["position"]))
        self.batcher.skipped = Counter(scalars.get("skipped", {}))
        prefix = f"rng.{self.rank}."
        mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if mine and str(self.rank) in scalars.get("rng", {}):
            state.restore_rng(mine, scalars["rng"][str(self.rank)], self.generators)
        else:
            warnings.warn(f"{ckpt} has no random state for rank {self.rank} (written with "
                          f"{scalars.get('world')} ranks): resuming with fresh seeds",
                          stacklevel=2)
            torch.manual_seed(self.cfg.seed + self.rank + self.step)

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        rng = self.gather(state.capture_rng(self.generators))
        if self.main:
            tensors: dict[str, Tensor] = {f"tasks.{k}": v
                                          for k, v in self.train.tasks.state_dict().items()}
            optim_tensors, optim_meta = state.optimizer_tensors(self.optimizer, self.names)
            tensors.update(optim_tensors)
            for r, (rng_tensors, _) in enumerate(rng):
                tensors.update({f"rng.{r}.{k}": v for k, v in rng_tensors.items()})
            scalars = {
                "step": self.step, "position": self.batcher.position,
                "skipped": dict(self.batcher.skipped), "config_digest": self.cfg.digest(),
                "world": self.world, "optimizer": optim_meta,
                "scheduler": {"kind": "warmup-cosine", "step": self.step,
                              "lr": self.optimizer.param_groups[0]["lr"]},
                "rng": {str(r): meta for r, (_, meta) in enumerate(rng)},
            }
            self.last_ckpt = state.save(self.out, self.step, self.model, tensors, scalars,
                                        self.cfg.checkpoint.keep)
        self.barrier()

    # -- the loop -----------------------------------------------------------------------------
    def run(self, resume: bool) -> TrainResult:
        from tqdm.auto import tqdm

        self.setup(resume)
        cfg = self.cfg
        show = self.main and cfg.progress
        # a bar redrawn with \r makes a log file one huge line: plain lines when not a terminal
        lines = show and not sys.stderr.isatty()
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc="pretrain",
                   disable=not show or lines, dynamic_ncols=True)
        tick, items = time.perf_counter(), 0
        try:
            while self.step < cfg.steps:
                lr = lr_at(cfg.optim, cfg.steps, self.step)
                losses = self.train_step(lr)
                items += cfg.batch_size
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.4f}",
                                skipped=sum(self.batcher.skipped.values()))
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    row = {"step": self.step, **losses, "lr": lr,
                           "items_per_s": items / max(now - tick, 1e-9),
                           "skipped": sum(self.batcher.skipped.values()),
                           "skipped_reasons": dict(self.batcher.skipped)}
                    tick, items = now, 0
                    if self.logger is not None:
                        self.logger.log(row)
                    if lines:
                        print(progress_line(row, cfg.steps), file=sys.stderr, flush=True)
                if self.step % cfg.checkpoint.every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            self.batcher.close()
            if self.logger is not None:
                self.logger.close()
        return self.finish()

    def train_step(self, lr: float) -> dict[str, float]:
        """One optimiser step; returns the losses averaged over the ranks."""
        items = self.batcher.next_batch()
        tokenizers = {m: self.model.tokenizers[m] for m in self.cfg.data.modalities}
        batches = {m: b.to(self.device) for m, b in collate(items, tokenizers).items()}
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.ddp.train()
        total, parts = self.ddp(batches)
        keys = ["loss", *parts]
        values = torch.stack([total.detach().float(), *parts.values()])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        losses = dict(zip(keys, values.tolist(), strict=True))
        if not math.isfinite(losses["loss"]):
            self._diverged("loss", losses)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.optim.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
            if not math.isfinite(float(norm)):
                self._diverged("gradient norm", {**losses, "grad_norm": float(norm)})
        self.optimizer.step()
        self.train.after_step()
        self.step += 1
        return losses

    def _diverged(self, what: str, values: dict[str, float]) -> None:
        bad = values["grad_norm"] if what == "gradient norm" else values["loss"]
        parts = ", ".join(f"{k.split('/')[0]}: {v:.4g}" for k, v in values.items()
                          if k.endswith("/loss"))
        where = self.last_ckpt if self.last_ckpt is not None else "none"
        raise TrainingDiverged(f"step {self.step + 1}: {what} is {bad} ({parts}); stopped; "
                               f"last good checkpoint: {where}")

    def finish(self) -> TrainResult:
        model_dir = self.out / "model"
        rows = self.logger.rows if self.logger is not None else []
        if self.main:
            tmp = self.out / ".tmp-model"
            self.model.save_pretrained(tmp)
            if model_dir.exists():
                state.remove_dir(model_dir)
            os.replace(tmp, model_dir)
            plot_loss(rows, self.out / LOSS_PNG)
        self.barrier()
        return TrainResult(self.out, self.step, dict(rows[-1]) if rows else {},
                           dict(self.batcher.skipped), self.last_ckpt, model_dir)


def pretrain_afresh(config: dict[str, Any]) -> tuple[TrainResult, float]:
    """:func:`pretrain` from scratch in ``config["output_dir"]`` (a previous run there is
    removed first): the result and the seconds it took. For jobs that always retrain."""
    import shutil
    import time

    run_dir = Path(config["output_dir"])
    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    result = pretrain(config)
    return result, time.perf_counter() - start
