"""BEATs' iterative pre-training: ``mmenc audio iterate CONFIG`` and its Python form
:func:`iterate`.

Stages, each one ``mmenc pretrain`` run in its own folder under ``output_dir``:

- ``iter1-model``: a BEATs model trained with ``masked-acoustic-labels`` on the labels of a
  frozen random-projection tokenizer;
- for every iteration ``k > 1``: ``iter{k}-tokenizer``, an acoustic tokenizer trained with
  ``tokenizer-distillation`` to reconstruct the features of model ``k - 1``, then
  ``iter{k}-model``, a new BEATs model trained on the labels of tokenizer ``k``.

A stage writes its checkpoints as any pretraining run does, its final model to
``STAGE/model`` and, once that is in place, ``STAGE/stage.json`` (written atomically). With
``resume``, finished stages (a ``stage.json`` for the same configuration) are skipped and an
unfinished one continues from its newest checkpoint.

Configuration (YAML file or mapping)::

    output_dir: runs/beats-iter
    iterations: 2
    data: {train: clips.jsonl}            # JSONL manifest, one {"audio": PATH} per line
    seed: 0
    max_seconds: 4.0                      # clips are cut to this length (null: 30 s)
    model: {recipe: beats-tiny, overrides: {}}
    tokenizer: {recipe: beats-tokenizer-tiny, overrides: {}}
    random_projection: {num_codes: 64, code_dim: 16, seed: 0}
    ssl:     {steps: 200, batch_size: 16, optim: {lr: 5.0e-4}, objective: {mask_ratio: 0.75}}
    distill: {steps: 200, batch_size: 16, optim: {lr: 5.0e-4}, objective: {width: 32}}
    checkpoint: {every: 50, keep: 1}
    log_every: 10
    device: auto
    progress: false
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mmenc.errors import ConfigError

STAGE_FILE = "stage.json"
_TOP = {"output_dir", "iterations", "data", "seed", "max_seconds", "model", "tokenizer",
        "random_projection", "ssl", "distill", "checkpoint", "log_every", "device", "progress"}
_PHASE = {"steps", "batch_size", "optim", "objective"}
_RECIPE = {"recipe", "overrides"}
_DEFAULTS: dict[str, Any] = {
    "iterations": 2, "seed": 0, "max_seconds": None,
    "model": {"recipe": "beats-tiny", "overrides": {}},
    "tokenizer": {"recipe": "beats-tokenizer-tiny", "overrides": {}},
    "random_projection": {"num_codes": 64, "code_dim": 16, "seed": 0},
    "ssl": {"steps": 100, "batch_size": 16, "optim": {}, "objective": {}},
    "distill": {"steps": 100, "batch_size": 16, "optim": {}, "objective": {}},
    "checkpoint": {"every": 50, "keep": 1}, "log_every": 10, "device": "auto",
    "progress": False,
}


def read_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The checked configuration, defaults filled in.

    Raises:
        ConfigError: naming the file (``<config>`` for a mapping) and the key.
    """
    from mmenc.train.config import check_keys, read_mapping

    where, data = read_mapping(source)

    def check(mapping: Any, allowed: set[str], path: str) -> None:
        check_keys(mapping, sorted(allowed), f"{path}." if path else "", where)

    check(data, _TOP, "")
    for key in ("output_dir", "data"):
        if key not in data:
            raise ConfigError(f"{where}: {key}: required key is missing")
    config = {**_DEFAULTS, **data}
    for key in ("model", "tokenizer"):
        check(config[key], _RECIPE, key)
        config[key] = {**_DEFAULTS[key], **config[key]}
    for key in ("ssl", "distill"):
        check(config[key], _PHASE, key)
        config[key] = {**_DEFAULTS[key], **config[key]}
    config["random_projection"] = {**_DEFAULTS["random_projection"],
                                   **config["random_projection"]}
    iterations = config["iterations"]
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"{where}: iterations: expected an integer >= 1, got {iterations!r}")
    if not isinstance(config["output_dir"], str):
        raise ConfigError(f"{where}: output_dir: expected a string")
    return config


def stages(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages of a checked configuration, in order: ``{"name", "iteration", "kind",
    "pretrain"}`` with ``kind`` ``"model"`` or ``"tokenizer"`` and ``pretrain`` the stage's
    ``mmenc pretrain`` configuration."""
    out = Path(config["output_dir"])
    cut = {} if config["max_seconds"] is None else {
        "tokenizers": {"audio": {"max_seconds": float(config["max_seconds"])}}}
    from mmenc.factory import merge_config

    def run(name: str, recipe: dict[str, Any], phase: dict[str, Any],
            objective: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": {"recipe": recipe["recipe"],
                      "overrides": merge_config(recipe["overrides"], cut)},
            "objectives": [objective],
            "data": {"train": config["data"]["train"], "modalities": ["audio"]},
            "batch_size": phase["batch_size"], "steps": phase["steps"],
            "optim": phase["optim"], "seed": config["seed"],
            "checkpoint": config["checkpoint"], "log_every": config["log_every"],
            "device": config["device"], "progress": config["progress"],
            "output_dir": str(out / name),
        }

    def model_width(recipe: dict[str, Any]) -> int:
        from mmenc.registry import catalogue

        base = catalogue().get("model", recipe["recipe"]).default_config()
        return int(merge_config(base, recipe["overrides"])["trunk"]["dim"])

    if not isinstance(config["data"], dict) or "train" not in config["data"]:
        raise ConfigError("data: give the training manifest as data.train")
    dim = model_width(config["model"])
    ssl_options = dict(config["ssl"]["objective"])
    result = []
    for k in range(1, config["iterations"] + 1):
        if k == 1:
            labels: dict[str, Any] = {"kind": "random-projection", **config["random_projection"]}
        else:
            teacher = out / f"iter{k - 1}-model" / "model"
            name = f"iter{k}-tokenizer"
            distill = {"name": "tokenizer-distillation", "modalities": ["audio"],
                       "config": {**config["distill"]["objective"], "teacher": str(teacher),
                                  "code_dim": _code_dim(config["tokenizer"])}}
            result.append({"name": name, "iteration": k, "kind": "tokenizer",
                           "pretrain": run(name, config["tokenizer"], config["distill"],
                                           distill)})
            labels = {"kind": "model", "model": str(out / name / "model")}
        name = f"iter{k}-model"
        ssl = {"name": "masked-acoustic-labels", "modalities": ["audio"],
               "config": {**ssl_options, "dim": dim, "labels": labels}}
        result.append({"name": name, "iteration": k, "kind": "model",
                       "pretrain": run(name, config["model"], config["ssl"], ssl)})
    return result


def _code_dim(recipe: dict[str, Any]) -> int:
    from mmenc.factory import merge_config
    from mmenc.registry import catalogue

    base = catalogue().get("model", recipe["recipe"]).default_config()
    quantizer = merge_config(base, recipe["overrides"]).get("quantizer")
    if not quantizer:
        raise ConfigError(f"tokenizer.recipe: {recipe['recipe']!r} has no quantizer (use "
                          "beats-tokenizer or beats-tokenizer-tiny)")
    return int(quantizer["code_dim"])


def _digest(pretrain_config: dict[str, Any]) -> str:
    from mmenc.train.config import load_config

    return load_config(pretrain_config).digest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def iterate(config: str | Path | dict[str, Any], resume: bool = False,
            echo: Any = None) -> dict[str, Any]:
    """Run every stage of the iterative pre-training (see the module docstring).

    Args:
        config: a YAML path or a mapping.
        resume: skip finished stages and continue an unfinished one; without it, a stage
            folder that already holds checkpoints is an error.
        echo: where one line per stage goes (None: nowhere).
    Returns:
        ``{"output_dir", "stages": [{"name", "iteration", "kind", "model_dir", "steps",
        "seconds", "metrics", "skipped"}], "seconds", "final_model"}``; also written to
        ``output_dir/report.json``.
    Raises:
        ConfigError: a bad configuration, or a finished stage written with another one.
    """
    from mmenc.train import pretrain

    say = echo or (lambda _: None)
    cfg = read_config(config)
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done: list[dict[str, Any]] = []
    for stage in stages(cfg):
        folder = out / stage["name"]
        marker = folder / STAGE_FILE
        if resume and marker.is_file():
            record = json.loads(marker.read_text(encoding="utf-8"))
            if record.get("digest") != _digest(stage["pretrain"]):
                raise ConfigError(f"{marker}: stage {stage['name']} was finished with another "
                                  "configuration; choose another output_dir")
            done.append({**record, "skipped": True})
            say(f"{stage['name']}: done before ({record['steps']} steps), skipped")
            continue
        if not resume and marker.is_file():
            raise ConfigError(f"{folder} is a finished stage; pass resume to continue this "
                              "run, or choose another output_dir")
        t0 = time.perf_counter()
        result = pretrain(stage["pretrain"], resume=resume)
        seconds = time.perf_counter() - t0
        record = {"name": stage["name"], "iteration": stage["iteration"],
                  "kind": stage["kind"], "model_dir": str(result.model_dir),
                  "steps": result.step, "seconds": round(seconds, 2),
                  "metrics": {k: v for k, v in result.metrics.items()
                              if isinstance(v, int | float)},
                  "items_skipped": dict(result.skipped),
                  "digest": _digest(stage["pretrain"])}
        _write_json(marker, record)
        done.append({**record, "skipped": False})
        loss = record["metrics"].get("loss")
        say(f"{stage['name']}: {result.step} steps in {seconds:.1f} s"
            + (f", final loss {loss:.3f}" if loss is not None else ""))
    report = {"output_dir": str(out), "stages": done,
              "seconds": round(time.perf_counter() - start, 2),
              "final_model": done[-1]["model_dir"]}
    _write_json(out / "report.json", report)
    return report
