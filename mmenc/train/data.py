"""Training data: paired items from a JSONL manifest or webdataset shards, read in a
deterministic order and assembled into global batches that skip broken items.

The order is a stream: epoch ``e`` is a permutation drawn from
``torch.Generator().manual_seed(seed * 1000 + e)`` (of the manifest's lines, or of the shards,
whose samples are then read in order); global step ``s`` takes the next ``B`` loadable items of
the stream and rank ``r`` the ``r``-th slice of them. Every rank decides the same batch, so a
run gives the same batches on any number of ranks, and a checkpoint only needs the stream
position.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from mmenc.batch import TokenBatch, Tokenizer
from mmenc.errors import ConfigError, InputError, MmencError

DEFAULT_EXTENSIONS = {"image": "png;jpg;jpeg;webp", "text": "txt"}
Raw = dict[str, Any]
"""One paired item before loading: modality -> what its loader reads."""


class DataError(MmencError):
    """Training data that cannot give a single batch."""


def permutation(seed: int, epoch: int, n: int) -> list[int]:
    """The order of epoch ``epoch``: a permutation of ``range(n)``."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n, generator=g).tolist()


class ManifestStream:
    """The items of a JSONL manifest, epoch after epoch, each epoch in its own order.

    Args:
        path: the manifest: one JSON object per line, keys = modality names (+ optional ``id``).
        seed: the run's seed.
    """

    def __init__(self, path: str | Path, seed: int) -> None:
        self.path, self.seed = Path(path), seed
        self.folder = self.path.parent
        self.records: list[dict[str, Any]] = []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"data.train: {self.path}: cannot read the manifest "
                              f"({exc.strerror})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{self.path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{self.path}:{number}: expected a JSON object per line")
            self.records.append(record)
        if not self.records:
            raise DataError(f"{self.path}: the manifest holds no items")
        self._orders: dict[int, list[int]] = {}

    @property
    def epoch_size(self) -> int | None:
        return len(self.records)

    def get(self, position: int) -> Raw:
        epoch, offset = divmod(position, len(self.records))
        if epoch not in self._orders:
            # two epochs at most: a batch straddles at most one boundary
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = permutation(self.seed, epoch, len(self.records))
        record = self.records[self._orders[epoch][offset]]
        return {k: self._value(v) for k, v in record.items() if k != "id"}

    def _value(self, value: Any) -> Any:
        """A relative path that exists next to the manifest is read from there; a
        ``{"path": ...}`` object is a file whose bytes go to the loader."""
        if isinstance(value, str) and value and not Path(value).is_absolute():
            try:
                here = self.folder / value
                if here.exists():
                    return str(here)
            except (OSError, ValueError):  # not a path at all (too long, NUL, ...)
                pass
        if isinstance(value, dict) and set(value) == {"path"}:
            return _FileRef(self.folder / str(value["path"]))
        return value

    def release(self, position: int) -> None:
        """Nothing to free: the manifest is in memory."""


class _FileRef:
    """A file named by the manifest, read when its item is loaded (so a missing file is a
    skipped item, not a failed run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> bytes:
        return self.path.read_bytes()


class ShardStream:
    """The samples of webdataset shards, epoch after epoch, the shards of each epoch in their
    own order and each shard's samples in order.

    Args:
        pattern: shard URLs, with brace ranges (``"dir/shard-{000000..000009}.tar"``).
        seed: the run's seed.
        modalities: the modalities taken from each sample.
        extensions: modality -> ``"png;jpg"``: the sample files read as that modality.
    """

    def __init__(self, pattern: str, seed: int, modalities: Sequence[str],
                 extensions: dict[str, str]) -> None:
        from mmenc.optional import require

        wds = require("webdataset", "webdataset", "webdataset shards (data.shards)")
        self.urls = wds.shardlists.expand_urls(pattern)
        if not self.urls:
            raise ConfigError(f"data.shards: {pattern!r} names no shard")
        self.seed = seed
        self.extensions = {m: [e.strip().lower() for e in
                               extensions.get(m, DEFAULT_EXTENSIONS.get(m, m)).split(";")
                               if e.strip()] for m in modalities}
        self._buffer: dict[int, Raw] = {}
        self._next, self._epoch = 0, -1
        self._iter: Iterator[Any] = iter(())
        self._epoch_size: int | None = None
        self._in_epoch = 0

    @property
    def epoch_size(self) -> int | None:
        return self._epoch_size

    def _epoch_iter(self, epoch: int) -> Any:
        import webdataset as wds

        urls = [self.urls[i] for i in permutation(self.seed, epoch, len(self.urls))]
        # every rank reads every sample: the batcher, not webdataset, splits the work
        return iter(wds.WebDataset(urls, shardshuffle=False, nodesplitter=None,
                                   workersplitter=None, empty_check=False,
                                   handler=wds.warn_and_continue))

    def _pull(self) -> Raw:
        while True:
            try:
                sample = next(self._iter)
                self._in_epoch += 1
                return self._record(sample)
            except StopIteration:
                if self._epoch >= 0:
                    if self._in_epoch == 0:
                        raise DataError(
                            f"data.shards: no sample in {len(self.urls)} shards") from None
                    self._epoch_size = self._in_epoch
                self._epoch, self._in_epoch = self._epoch + 1, 0
                self._iter = self._epoch_iter(self._epoch)

    def _record(self, sample: dict[str, Any]) -> Raw:
        files = {k.lower(): v for k, v in sample.items() if not k.startswith("__")}
        out: Raw = {}
        for m, exts in self.extensions.items():
            for key, value in files.items():
                if any(key == e or key.endswith("." + e) for e in exts):
                    out[m] = bytes(value)
                    break
        return out

    def get(self, position: int) -> Raw:
        if position < self._next and position not in self._buffer:
            raise RuntimeError(f"shard stream position {position} was already released")
        while self._next <= position:
            self._buffer[self._next] = self._pull()
            self._next += 1
        return self._buffer[position]

    def release(self, position: int) -> None:
        """Forget the samples before ``position`` (reading up to it when resuming)."""
        while self._next < position:
            self._pull()
            self._next += 1
        self._buffer = {p: r for p, r in self._buffer.items() if p >= position}


Stream = ManifestStream | ShardStream


def load_item(raw: Raw, loaders: dict[str, Callable[[Any], Any]]) -> tuple[Raw | None, str | None]:
    """``(loaded item, None)``, or ``(None, reason)`` naming the modality that failed."""
    out = {}
    for m, load in loaders.items():
        if m not in raw:
            return None, f"{m}: missing from the item"
        value = raw[m]
        try:
            if isinstance(value, _FileRef):
                value = value.read()
            out[m] = load(value)
        except InputError as exc:
            return None, f"{m}: {exc.reason}"
        except FileNotFoundError:
            return None, f"{m}: file not found"
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a skipped item
            return None, f"{m}: {type(exc).__name__}: {str(exc)[:60]}"
    return out, None


class Batcher:
    """This rank's share of each global batch, with broken items skipped and replaced.

    Each rank loads a contiguous share of the next window of the stream; the ranks exchange
    which positions failed, so all agree on the first ``batch_size`` loadable positions and
    every rank takes its slice (reloading the few items a skip shifted onto it).

    Args:
        stream: where items come from.
        loaders: modality -> the catalogue loader.
        batch_size: the global batch.
        rank, world: this process's place among the data-parallel ranks.
        num_workers: threads loading items (0: in the calling thread).
        gather: ``gather(obj) -> [obj of each rank]``.
    """

    def __init__(self, stream: Stream, loaders: dict[str, Callable[[Any], Any]], batch_size: int,
                 rank: int = 0, world: int = 1, num_workers: int = 0,
                 gather: Callable[[Any], list[Any]] | None = None) -> None:
        if batch_size % world:
            raise ConfigError(f"batch_size {batch_size} is not divisible by {world} ranks")
        self.stream, self.loaders = stream, loaders
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.gather = gather or (lambda obj: [obj])
        self.pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None
        self.position = 0
        self.skipped: Counter[str] = Counter()

    def seek(self, position: int) -> None:
        self.position = position
        self.stream.release(position)

    def _load(self, positions: Sequence[int]) -> list[tuple[Raw | None, str | None]]:
        raws = [self.stream.get(p) for p in positions]  # in order: the shard stream is sequential
        if self.pool is None:
            return [load_item(r, self.loaders) for r in raws]
        return list(self.pool.map(lambda r: load_item(r, self.loaders), raws))

    def next_batch(self) -> list[Raw]:
        """This rank's ``batch_size / world`` loaded items of the next global batch."""
        good: list[int] = []
        loaded: dict[int, Raw] = {}
        start, scanned_bad = self.position, 0
        while len(good) < self.batch_size:
            need = self.batch_size - len(good)
            share = -(-need // self.world)
            mine = list(range(start + self.rank * share, min(start + (self.rank + 1) * share,
                                                             start + need)))
            results = self._load(mine)
            reasons = {p: reason for p, (_, reason) in zip(mine, results, strict=True)}
            loaded.update({p: item for p, (item, _) in zip(mine, results, strict=True)
                           if item is not None})
            for part in self.gather(reasons):
                for p in sorted(part):
                    if part[p] is None:
                        good.append(p)
                    else:
                        self.skipped[part[p]] += 1
                        scanned_bad += 1
            good.sort()
            start += need
            if scanned_bad > max(2 * (self.stream.epoch_size or 0), 1000):
                top = ", ".join(f"{r} ({n})" for r, n in self.skipped.most_common(3))
                raise DataError(f"{scanned_bad} items failed to load while filling one batch; "
                                f"most common reasons: {top}")
        b = self.batch_size // self.world
        wanted = good[self.rank * b : (self.rank + 1) * b]
        missing = [p for p in wanted if p not in loaded]
        for p, (item, reason) in zip(missing, self._load(missing), strict=True):
            if item is None:  # loading is deterministic: another rank loaded it fine
                raise DataError(f"stream position {p} loaded on one rank but not here ({reason})")
            loaded[p] = item
        self.position = start
        self.stream.release(start)
        return [loaded[p] for p in wanted]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def collate(items: Sequence[Raw], tokenizers: dict[str, Tokenizer]) -> dict[str, TokenBatch]:
    """One :class:`TokenBatch` per modality, with the model's tokenizers."""
    return {m: tok([item[m] for item in items]) for m, tok in tokenizers.items()}


def make_stream(train: str | None, shards: str | None, seed: int, modalities: Sequence[str],
                extensions: dict[str, str]) -> Stream:
    if train is not None:
        return ManifestStream(train, seed)
    assert shards is not None
    return ShardStream(shards, seed, modalities, extensions)


# -- a toy corpus for examples and tests ------------------------------------------------------
COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
          "yellow": (230, 210, 20), "purple": (140, 40, 170), "orange": (245, 140, 20),
          "black": (10, 10, 10), "cyan": (20, 200, 210)}
SHAPES = ("square", "circle", "triangle")


def toy_image(color: str, shape: str, size: int = 32, shift: int = 0) -> Any:
    """A ``size`` x ``size`` PIL image of one coloured shape on white."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    lo, hi = size // 5 + shift, size - size // 5 + shift
    if shape == "square":
        draw.rectangle((lo, lo, hi, hi), fill=COLORS[color])
    elif shape == "circle":
        draw.ellipse((lo, lo, hi, hi), fill=COLORS[color])
    else:
        draw.polygon(((lo, hi), (hi, hi), ((lo + hi) // 2, lo)), fill=COLORS[color])
    return image


def write_toy_pairs(folder: str | Path, n: int = 48, corrupt: int = 0, missing: int = 0,
                    size: int = 32) -> Path:
    """Write ``n`` (image, caption) pairs ("a red circle") as PNG files and a manifest, plus
    ``corrupt`` unreadable images and ``missing`` lines naming absent files.

    Returns:
        the manifest's path (``folder/manifest.jsonl``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [(c, s) for s in SHAPES for c in COLORS]
    lines = []
    for i in range(n):
        color, shape = names[i % len(names)]
        toy_image(color, shape, size, shift=(i // len(names)) % 3 - 1).save(folder / f"{i:05d}.png")
        lines.append({"id": i, "image": f"{i:05d}.png", "text": f"a {color} {shape}"})
    for i in range(corrupt):
        (folder / f"corrupt-{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        lines.append({"id": f"corrupt-{i}", "image": {"path": f"corrupt-{i}.png"},
                      "text": "a broken image"})
    for i in range(missing):
        lines.append({"id": f"missing-{i}", "image": f"missing-{i}.png", "text": "a lost image"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest
