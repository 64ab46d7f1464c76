"""Hub embeddings of training texts, computed once and kept on disk by content hash.

A cache is a folder: ``index.json`` (``key -> [part, row]``) and ``part-NNNNN.safetensors``
files of ``[n hub_dim]`` float32 vectors. The key of a text is the sha256 of the hub's id and
the text, so two hubs never share vectors and an edited text is a new entry. Vectors are unit
length, in the hub's own (unrotated) space.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmenc.errors import CheckpointError


def hub_id(hub: Any) -> str:
    """A stable id of a hub's weights: sha256 over its parameter and buffer names, shapes and
    bytes."""
    digest = hashlib.sha256(type(hub).__name__.encode())
    for name, tensor in [*hub.named_parameters(), *hub.named_buffers()]:
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def text_key(hub: str, text: str) -> str:
    return hashlib.sha256(f"{hub}\0{text}".encode()).hexdigest()


class HubCache:
    """Hub vectors of texts by content hash.

    Args:
        directory: the cache folder (created).
        hub: the hub's id (:func:`hub_id`).
    """

    part_size = 2048  # texts per part file

    def __init__(self, directory: str | Path, hub: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hub = hub
        self.hits = self.misses = 0
        index_path = self.directory / "index.json"
        self.index: dict[str, list[Any]] = {}
        if index_path.is_file():
            data = json.loads(index_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise CheckpointError(f"{index_path}: not a cache index")
            self.index = data
        self._parts: dict[str, Tensor] = {}

    def _part(self, name: str) -> Tensor:
        if name not in self._parts:
            from safetensors.torch import load_file

            try:
                self._parts[name] = load_file(str(self.directory / name))["vectors"]
            except (OSError, KeyError, ValueError) as exc:
                raise CheckpointError(f"{self.directory / name}: unreadable cache part "
                                      f"({exc})") from None
        return self._parts[name]

    def vectors(self, texts: Sequence[str], embed: Any, batch_size: int = 64) -> Tensor:
        """``[n hub_dim]`` unit vectors of ``texts``; the missing ones are computed with
        ``embed(list_of_texts) -> [m hub_dim]`` (once per distinct text) and written."""
        keys = [text_key(self.hub, t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self.index))
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        by_key = dict(zip(keys, texts, strict=True))
        for start in range(0, len(todo), self.part_size):  # a killed run keeps whole parts
            chunk = todo[start: start + self.part_size]
            new = torch.cat([embed([by_key[k] for k in chunk[i: i + batch_size]])
                             for i in range(0, len(chunk), batch_size)])
            self._write(chunk, torch.nn.functional.normalize(new.float(), dim=-1))
        rows = [self._part(self.index[k][0])[self.index[k][1]] for k in keys]
        return torch.stack(rows) if rows else torch.zeros(0, 0)

    def _write(self, keys: list[str], vectors: Tensor) -> None:
        from safetensors.torch import save_file

        name = f"part-{len({p for p, _ in self.index.values()}):05d}.safetensors"
        save_file({"vectors": vectors.contiguous()}, str(self.directory / name))
        self._parts[name] = vectors
        self.index.update({k: [name, i] for i, k in enumerate(keys)})
        tmp = self.directory / "index.json.tmp"
        tmp.write_text(json.dumps(self.index), encoding="utf-8")
        os.replace(tmp, self.directory / "index.json")
