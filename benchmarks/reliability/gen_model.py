"""Hostile model folders: saved tiny models whose config.json or weights are then corrupted.

``checkpoint`` cases corrupt ``model.safetensors``; ``config`` cases corrupt ``config.json``
(and the tokenizers' files). Each case is a fresh copy of a saved folder under the worker's
scratch directory.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from pathlib import Path
from typing import Any

from benchmarks.reliability import mutate

RECIPES = ("text-tiny", "vit-tiny", "clip-tiny", "beats-tiny", "code-text-tiny",
           "midibert-cp-tiny")
CHECKPOINT_MUTATIONS = ("valid", "truncate", "flip_bytes", "header_size", "header_json",
                        "header_offsets", "header_shape", "header_dtype", "shape_mismatch",
                        "missing_tensor", "extra_tensor", "nan_weights", "inf_weights",
                        "no_weights", "weights_directory", "weights_empty", "weights_garbage",
                        "weights_pickle", "weights_dev_zero")
CONFIG_MUTATIONS = ("valid", "leaf_huge", "leaf_negative", "leaf_zero", "leaf_type",
                    "leaf_float", "drop_key", "extra_key", "import_string", "recipe_unknown",
                    "recipe_other", "format", "config_not_dict", "json_invalid", "json_deep",
                    "json_large", "json_top_level", "config_directory", "config_dev_zero",
                    "config_fifo", "tokenizer_files")
CHECKPOINT_HEAVY = ("weights_dev_zero",)
CONFIG_HEAVY = ("json_deep", "json_large", "config_dev_zero", "config_fifo")
HOSTILE_STRINGS = ("os:system", "subprocess:call", "builtins:eval", "mmenc.specs:resolve",
                   "../../etc/passwd", "", "x" * 10_000)


def prepare(cache: Path) -> list[str]:
    """Save every recipe of :data:`RECIPES` under ``cache/models``."""
    import torch

    import mmenc

    done = []
    for recipe in RECIPES:
        folder = cache / "models" / recipe
        if not (folder / "config.json").is_file():
            torch.manual_seed(0)
            mmenc.create_model(recipe).save_pretrained(folder)
        done.append(recipe)
    return done


def load_base(cache: Path) -> list[Path]:
    folders = [cache / "models" / r for r in RECIPES if (cache / "models" / r).is_dir()]
    if not folders:
        raise FileNotFoundError(f"no saved models in {cache / 'models'}: run prepare first")
    return folders


def _copy(base: list[Path], rng: random.Random, tmp: Path) -> Path:
    source = base[rng.randrange(len(base))]
    folder = tmp / source.name  # the recipe's name, so that reports say which model it was
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source, folder)
    return folder


def _leaves(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, (*path, i))]
    return [(path, node)]


def _dicts(node: Any, path: tuple = ()) -> list[tuple]:
    if not isinstance(node, dict):
        return []
    return [path, *[p for k, v in node.items() for p in _dicts(v, (*path, k))]]


def _set(root: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        root = root[key]
    root[path[-1]] = value


def _pick(leaves: list[tuple[tuple, Any]], rng: random.Random, kind: type | tuple) -> tuple:
    typed = [p for p, v in leaves if isinstance(v, kind) and not isinstance(v, bool)]
    return rng.choice(typed or [p for p, _ in leaves])


def _mutate_config(name: str, meta: dict[str, Any], rng: random.Random) -> str:
    """The new text of config.json."""
    leaves = _leaves(meta["config"])
    cfg = meta["config"]
    if name == "leaf_huge":
        _set(cfg, _pick(leaves, rng, int), rng.choice((10**9, 2**31, 2**63, 10**30, 10**400)))
    elif name == "leaf_negative":
        _set(cfg, _pick(leaves, rng, int), rng.choice((-1, -(10**9))))
    elif name == "leaf_zero":
        _set(cfg, _pick(leaves, rng, (int, float)), 0)
    elif name == "leaf_type":
        _set(cfg, rng.choice(leaves)[0], rng.choice(("12", [], {}, None, True, "nan", [1, 2])))
    elif name == "leaf_float":
        _set(cfg, _pick(leaves, rng, int), rng.choice((1.5, 1e308, float("nan"), float("inf"))))
    elif name == "drop_key":
        path = rng.choice(leaves)[0]
        parent = cfg
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    elif name == "extra_key":
        path = rng.choice(_dicts(cfg))
        target = cfg
        for key in path:
            target = target[key]
        target[rng.choice(("__class__", "builder", "unexpected"))] = rng.choice(HOSTILE_STRINGS)
    elif name == "import_string":
        _set(cfg, _pick(leaves, rng, str), rng.choice(HOSTILE_STRINGS))
    elif name == "recipe_unknown":
        meta["recipe"] = rng.choice(HOSTILE_STRINGS + ("no-such-recipe", "TEXT-TINY"))
    elif name == "recipe_other":
        meta["recipe"] = rng.choice([r for r in RECIPES if r != meta["recipe"]])
    elif name == "format":
        meta["format"] = rng.choice((None, "pt", "MMENC", 1))
        if rng.random() < 0.3:
            del meta["format"]
    elif name == "config_not_dict":
        meta["config"] = rng.choice((None, [], "config", 3))
    elif name == "json_deep":
        return '{"format": "mmenc", "recipe": "text-tiny", "config": ' + "[" * 200_000 \
            + "]" * 200_000 + "}"
    elif name == "json_large":
        meta["config"]["padding"] = "x" * 20_000_000
    elif name == "json_top_level":
        return rng.choice(("[]", "null", "3", '"mmenc"'))
    return json.dumps(meta, allow_nan=True)


def _safetensors_parts(data: bytes) -> tuple[dict[str, Any], bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data[8 + size:]


def _safetensors_join(header: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _tensor_names(header: dict[str, Any]) -> list[str]:
    return sorted(k for k in header if k != "__metadata__")


def _mutate_weights(name: str, weights: Path, rng: random.Random) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    data = weights.read_bytes()
    if name == "truncate":
        weights.write_bytes(data[: rng.randrange(len(data))])
    elif name == "flip_bytes":
        weights.write_bytes(mutate.flip_bytes(data[:4096], rng, 8) + data[4096:])
    elif name == "header_size":
        value = rng.choice((0, 1, len(data), 2**32, 2**63, 2**64 - 1))
        weights.write_bytes(struct.pack("<Q", value) + data[8:])
    elif name == "header_json":
        (size,) = struct.unpack("<Q", data[:8])
        weights.write_bytes(data[:8] + mutate.flip_bytes(data[8:8 + size], rng, 4)
                            + data[8 + size:])
    elif name in ("header_offsets", "header_shape", "header_dtype"):
        header, body = _safetensors_parts(data)
        entry = header[rng.choice(_tensor_names(header))]
        if name == "header_offsets":
            entry["data_offsets"] = rng.choice(([0, 2**62], [len(body), len(body) + 4],
                                                [8, 4], [-1, 4]))
        elif name == "header_shape":
            entry["shape"] = rng.choice(([2**31, 2**31], [-1], [0], [10**12]))
        else:
            entry["dtype"] = rng.choice(("F64", "BOOL", "I8", "XYZ", "F8_E4M3"))
        weights.write_bytes(_safetensors_join(header, body))
    else:
        state = load_file(str(weights))
        key = rng.choice(sorted(state))
        if name == "shape_mismatch":
            state[key] = torch.zeros(tuple(s + 1 for s in state[key].shape) or (2,))
        elif name == "missing_tensor":
            del state[key]
        elif name == "extra_tensor":
            state["unexpected.weight"] = torch.zeros(3)
        elif name == "nan_weights":
            state[key] = torch.full_like(state[key], float("nan"))
        elif name == "inf_weights":
            state[key] = torch.full_like(state[key], float("inf"))
        save_file(state, str(weights))


def make_checkpoint(name: str, rng: random.Random, base: list[Path], tmp: Path
                    ) -> tuple[str, Any]:
    folder = _copy(base, rng, tmp)
    weights = folder / "model.safetensors"
    if name == "valid":
        pass
    elif name == "no_weights":
        weights.unlink()
    elif name == "weights_directory":
        weights.unlink()
        weights.mkdir()
    elif name == "weights_empty":
        weights.write_bytes(b"")
    elif name == "weights_garbage":
        weights.write_bytes(mutate.garbage(rng, 4096))
    elif name == "weights_pickle":
        import torch

        weights.unlink()
        torch.save({"x": torch.zeros(2)}, str(weights))
    elif name == "weights_dev_zero":
        weights.unlink()
        os.symlink("/dev/zero", weights)
    else:
        _mutate_weights(name, weights, rng)
    return name, folder


def make_config(name: str, rng: random.Random, base: list[Path], tmp: Path) -> tuple[str, Any]:
    folder = _copy(base, rng, tmp)
    config = folder / "config.json"
    meta = json.loads(config.read_text(encoding="utf-8"))
    if name == "valid":
        pass
    elif name == "json_invalid":
        text = config.read_bytes()
        config.write_bytes(rng.choice((text[: rng.randrange(len(text))], b"", b"\xff\xfe{",
                                       b"\xef\xbb\xbf" + text, mutate.flip_bytes(text, rng))))
    elif name == "config_directory":
        config.unlink()
        config.mkdir()
    elif name == "config_dev_zero":
        config.unlink()
        os.symlink("/dev/zero", config)
    elif name == "config_fifo":
        config.unlink()
        os.mkfifo(config)
    elif name == "tokenizer_files":
        others = sorted(p for p in folder.iterdir() if p.name not in ("config.json",
                                                                      "model.safetensors"))
        if others:
            victim = rng.choice(others)
            victim.write_bytes(rng.choice((b"", b"{", mutate.flip_bytes(victim.read_bytes(),
                                                                        rng))))
        else:
            meta["config"]["tokenizers"] = {"x": {"tokenizer": rng.choice(HOSTILE_STRINGS)}}
            config.write_text(json.dumps(meta))
    else:
        config.write_text(_mutate_config(name, meta, rng), encoding="utf-8")
    return name, folder
