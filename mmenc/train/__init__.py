"""Pretraining: ``mmenc pretrain CONFIG.yaml`` and its Python form :func:`pretrain`.

- :mod:`mmenc.train.config`: the YAML schema (dataclasses) and its checks.
- :mod:`mmenc.train.data`: manifests and webdataset shards, the deterministic stream, batches
  that skip broken items.
- :mod:`mmenc.train.tasks`: objectives glued to a model.
- :mod:`mmenc.train.state`: atomic checkpoints and exact resumption.
- :mod:`mmenc.train.loop`: the loop, in one process or under ``torchrun``.
- :mod:`mmenc.train.logging`: metrics files, TensorBoard and the loss plot.

See ``docs/training.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmenc.train.config import TrainConfig, load_config
    from mmenc.train.loop import TrainingDiverged, TrainResult, pretrain, pretrain_afresh

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "load_config", "pretrain",
           "pretrain_afresh"]

_HOMES = {"TrainConfig": "mmenc.train.config", "load_config": "mmenc.train.config",
          "TrainResult": "mmenc.train.loop", "TrainingDiverged": "mmenc.train.loop",
          "pretrain": "mmenc.train.loop",
          "pretrain_afresh": "mmenc.train.loop"}


def __getattr__(name: str) -> Any:
    # lazy, so that `mmenc pretrain --help` does not import torch
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'mmenc.train' has no attribute {name!r}")
