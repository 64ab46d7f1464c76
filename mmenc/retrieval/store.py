"""A SQLite store of embeddings: float32 blobs keyed by item id, with content hashes.

Tables:
  ``meta(key, value)``: the model that made the embeddings (its path, recipe, the sha256 of
  its ``config.json`` and of its ``model.safetensors``), the embedding dim, a generation
  counter bumped by every write.
  ``items(id, modality, content_sha256, source, embedding, dim, updated)``: one row per item;
  ``embedding`` is ``dim`` little-endian float32 values; ``metadata``: a JSON object given
  when the item was embedded (or NULL), returned by searches. Stores made before the column
  existed get it (NULL) when they are opened.

A store belongs to one model: embedding into it with other weights is refused, since vectors
of two models do not share a space. Items whose id and content hash are already stored are
not encoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmenc.errors import MmencError
from mmenc.retrieval.search import encode_robust

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    modality TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    embedding BLOB NOT NULL,
    dim INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_modality ON items(modality);
"""
# meta keys that identify the model; the path may change (a moved folder is the same model)
_IDENTITY = ("model_config_sha256", "model_weights_sha256", "truncate_dim")


class StoreError(MmencError, ValueError):
    """A store that cannot be used as asked (another model, another dim, not a store)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_dir: str | Path) -> dict[str, str]:
    """What identifies a saved model: its recipe and the sha256 of its config and weights."""
    from mmenc.model import CONFIG, WEIGHTS, read_config

    model_dir = Path(model_dir)
    meta = read_config(model_dir)
    return {
        "model_path": str(model_dir.resolve()),
        "model_recipe": str(meta["recipe"]),
        "model_config_sha256": sha256_file(model_dir / CONFIG),
        "model_weights_sha256": sha256_file(model_dir / WEIGHTS),
    }


def to_blob(vector: Tensor | np.ndarray) -> bytes:
    return np.ascontiguousarray(np.asarray(vector, dtype="<f4")).tobytes()


def from_blobs(blobs: Sequence[bytes], dim: int) -> Tensor:
    """``[n dim]`` float32 from ``n`` blobs (one copy, no per-row tensors)."""
    flat = np.frombuffer(b"".join(blobs), dtype="<f4")
    return torch.from_numpy(flat.astype(np.float32).reshape(len(blobs), dim))


@dataclass(frozen=True)
class StoredItem:
    """One row to write: the item and its embedding ``[dim]``."""

    id: str
    modality: str
    content_sha256: str
    source: str
    embedding: Tensor
    metadata: dict[str, Any] | None = None


@dataclass
class Gallery:
    """Rows read back from a store, in storage order."""

    ids: list[str]
    modalities: list[str]
    sources: list[str]
    embeddings: Tensor  # [g e]
    metadata: list[dict[str, Any] | None] = field(default_factory=list)


class EmbeddingStore:
    """A SQLite file of embeddings made by one model.

    Args:
        path: the SQLite file; created (with its tables) unless ``create`` is false.
        create: refuse a missing file instead of creating it (for searching).
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: a folder, not a store file")
        if not self.path.parent.is_dir():
            raise StoreError(f"{self.path}: its folder {self.path.parent} does not exist")
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: the store does not exist (make one with "
                             "`mmenc embed`)")
        try:
            self.db = sqlite3.connect(str(self.path))
            self.db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not an mmenc store ({exc})") from None
        version = self.meta.get("schema_version")
        if version not in (None, SCHEMA_VERSION):
            raise StoreError(f"{self.path}: store schema {version}, this mmenc reads "
                             f"{SCHEMA_VERSION}")

    def _migrate(self) -> None:
        """Columns added since the first schema, added to an older store (as NULL)."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(items)")}
        if "metadata" not in columns:
            with self.db:
                self.db.execute("ALTER TABLE items ADD COLUMN metadata TEXT")

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    @property
    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def _set_meta(self, values: dict[str, str]) -> None:
        self.db.executemany("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                            "DO UPDATE SET value = excluded.value", list(values.items()))

    # -- the model -------------------------------------------------------------------------
    def bind_model(self, model_dir: str | Path, truncate_dim: int | None = None,
                   backend: str = "torch") -> None:
        """Record the model of an empty store, or check that ``model_dir`` is that model.

        Args:
            backend: what computes the vectors (``torch``, ``onnx``, ``onnx-int8``); the
                store records it and its precision, and refuses vectors of another precision.
        Raises:
            StoreError: the store was made by other weights, with another ``truncate_dim``
                or at another precision.
        """
        from mmenc.export import check_precision, precision_of

        found = {**model_fingerprint(model_dir),
                 "truncate_dim": "" if truncate_dim is None else str(truncate_dim)}
        made_by = {"backend": backend, "precision": precision_of(backend)}
        meta = self.meta
        if "model_weights_sha256" not in meta:
            with self.db:
                self._set_meta({**found, **made_by, "schema_version": SCHEMA_VERSION,
                                "generation": "0"})
            return
        differ = [k for k in _IDENTITY if meta.get(k, "") != found[k]]
        if differ:
            raise StoreError(
                f"{self.path} holds embeddings of {meta.get('model_recipe')} at "
                f"{meta.get('model_path')}, not of {found['model_recipe']} at "
                f"{found['model_path']} ({', '.join(differ)} differ): vectors of two models "
                "do not share a space; use another store")
        check_precision(self.path, meta, backend)
        if "precision" not in meta:  # stores from before backends were recorded: eager fp32
            with self.db:
                self._set_meta({"backend": "torch", "precision": "fp32"})
        if meta.get("model_path") != found["model_path"]:
            with self.db:  # the same weights moved: remember where they are now
                self._set_meta({"model_path": found["model_path"]})

    def model_dir(self) -> Path:
        path = self.meta.get("model_path")
        if not path:
            raise StoreError(f"{self.path}: empty store (nothing embedded yet)")
        return Path(path)

    def load_model(self, override: str | Path | None = None) -> Any:
        """The model recorded in the store (or ``override``, checked to be the same weights)."""
        import mmenc

        model_dir = Path(override) if override is not None else self.model_dir()
        if not model_dir.is_dir():
            raise StoreError(f"{self.path}: its model {model_dir} is gone; pass the folder "
                             "it moved to with --model")
        meta = self.meta
        if sha256_file(model_dir / "model.safetensors") != meta.get("model_weights_sha256"):
            raise StoreError(f"{model_dir}: not the weights that made {self.path}")
        return mmenc.load(model_dir)

    @property
    def backend(self) -> str:
        """The backend that made the store's vectors (``torch`` for stores older than that)."""
        return self.meta.get("backend", "torch")

    @property
    def truncate_dim(self) -> int | None:
        value = self.meta.get("truncate_dim", "")
        return int(value) if value else None

    # -- items -----------------------------------------------------------------------------
    def hashes(self, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """``id -> (modality, content_sha256)`` of the ids already stored."""
        out: dict[str, tuple[str, str]] = {}
        ids = list(ids)
        for start in range(0, len(ids), 500):  # SQLite caps the number of bound parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT id, modality, content_sha256 FROM items "
                                   f"WHERE id IN ({marks})", chunk)
            out.update({i: (m, h) for i, m, h in rows})
        return out

    def write(self, rows: Sequence[StoredItem]) -> None:
        """Insert or replace ``rows`` in one transaction."""
        if not rows:
            return
        dims = {int(r.embedding.numel()) for r in rows}
        stored = self.meta.get("dim")
        if len(dims) > 1 or (stored is not None and dims != {int(stored)}):
            raise StoreError(f"{self.path}: embedding dim {sorted(dims)} does not match the "
                             f"store's {stored}")
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT INTO items(id, modality, content_sha256, source, embedding, dim, updated, "
                "metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "modality=excluded.modality, content_sha256=excluded.content_sha256, "
                "source=excluded.source, embedding=excluded.embedding, dim=excluded.dim, "
                "updated=excluded.updated, metadata=excluded.metadata",
                [(r.id, r.modality, r.content_sha256, r.source, to_blob(r.embedding),
                  int(r.embedding.numel()), now,
                  None if r.metadata is None else json.dumps(r.metadata, sort_keys=True))
                 for r in rows])
            generation = int(self.meta.get("generation", "0")) + 1
            self._set_meta({"dim": str(dims.pop()), "generation": str(generation)})

    def set_metadata(self, metadata: dict[str, dict[str, Any] | None]) -> None:
        """Replace the metadata of stored items (``id -> object``) without re-encoding them."""
        with self.db:
            self.db.executemany("UPDATE items SET metadata = ? WHERE id = ?",
                                [(None if m is None else json.dumps(m, sort_keys=True), i)
                                 for i, m in metadata.items()])

    def rows(self, modality: str | None = None
             ) -> Iterator[tuple[str, str, str, bytes, str | None]]:
        sql = "SELECT id, modality, source, embedding, metadata FROM items"
        if modality is None:
            return iter(self.db.execute(sql + " ORDER BY rowid"))
        return iter(self.db.execute(sql + " WHERE modality = ? ORDER BY rowid", (modality,)))

    def gallery(self, modality: str | None = None) -> Gallery:
        """Every stored embedding (of one modality when given), in storage order."""
        ids, modalities, sources, blobs, metadata = [], [], [], [], []
        for item_id, mod, source, blob, meta in self.rows(modality):
            ids.append(item_id)
            modalities.append(mod)
            sources.append(source)
            blobs.append(blob)
            metadata.append(None if meta is None else json.loads(meta))
        dim = int(self.meta.get("dim", "0"))
        emb = from_blobs(blobs, dim) if blobs else torch.zeros(0, dim)
        return Gallery(ids, modalities, sources, emb, metadata)

    def embedding(self, item_id: str) -> tuple[str, Tensor]:
        """``(modality, embedding [dim])`` of a stored item.

        Raises:
            StoreError: no item has this id (close ids are suggested).
        """
        row = self.db.execute("SELECT modality, embedding FROM items WHERE id = ?",
                              (item_id,)).fetchone()
        if row is None:
            import difflib

            ids = [r[0] for r in self.db.execute("SELECT id FROM items")]
            close = difflib.get_close_matches(item_id, ids, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise StoreError(f"{self.path}: no item with id {item_id!r}{hint}")
        return row[0], from_blobs([row[1]], int(self.meta.get("dim", "0")))[0]

    # -- search ----------------------------------------------------------------------------
    def index(self, gallery: Gallery, kind: str = "auto", modality: str | None = None,
              **options: Any) -> Any:
        """An index over ``gallery``; an HNSW graph is cached next to the store
        (``STORE.hnsw-<modality|all>``) and rebuilt only after the store changes."""
        from mmenc.retrieval.index import HnswIndex, build_index

        if kind != "hnsw":
            return build_index(gallery.embeddings, kind, **options)
        cache = self.path.with_name(f"{self.path.name}.hnsw-{modality or 'all'}")
        key = f"hnsw_generation:{modality or 'all'}"
        meta = self.meta
        ef_search = int(options.pop("ef_search", 256))
        if cache.is_file() and meta.get(key) == meta.get("generation"):
            index = HnswIndex.load(cache, ef_search=ef_search)
            if len(index) == len(gallery.ids):
                return index
        index = HnswIndex(gallery.embeddings, ef_search=ef_search, **options)
        index.save(cache)
        with self.db:
            self._set_meta({key: meta.get("generation", "0")})
        return index

    def search(self, queries: Tensor, k: int = 10, index: str = "auto",
               modality: str | None = None) -> list[list[dict[str, Any]]]:
        """Top-``k`` stored items for each query embedding ``[q e]`` (unit rows).

        Returns:
            per query, ``{"rank", "score", "id", "modality", "source"}`` best first.
        """
        gallery = self.gallery(modality)
        if not gallery.ids:
            counts = self.counts()
            if not counts:
                raise StoreError(f"{self.path}: the store is empty (nothing embedded yet)")
            raise StoreError(f"{self.path}: no items of modality {modality!r} (it holds "
                             + ", ".join(f"{n} {m}" for m, n in counts.items()) + ")")
        if queries.shape[1] != gallery.embeddings.shape[1]:
            raise StoreError(f"query dim {queries.shape[1]} != store dim "
                             f"{gallery.embeddings.shape[1]}")
        scores, ids = self.index(gallery, index, modality).search(queries, k)
        return [[{"rank": r + 1, "score": float(s), "id": gallery.ids[i],
                  "modality": gallery.modalities[i], "source": gallery.sources[i],
                  **({"metadata": gallery.metadata[i]} if gallery.metadata[i] is not None
                     else {})}
                 for r, (s, i) in enumerate(zip(row_s, row_i, strict=True)) if i >= 0]
                for row_s, row_i in zip(scores.tolist(), ids.tolist(), strict=True)]

    def neighbours(self, item_id: str, k: int = 10, index: str = "auto",
                   modality: str | None = None) -> list[dict[str, Any]]:
        """The ``k`` stored items nearest to the stored item ``item_id``, itself excluded."""
        _, vector = self.embedding(item_id)
        hits = self.search(vector[None], k + 1, index, modality)[0]
        hits = [h for h in hits if h["id"] != item_id][:k]
        return [{**h, "rank": r + 1} for r, h in enumerate(hits)]

    def counts(self) -> dict[str, int]:
        """Stored items per modality."""
        return dict(self.db.execute("SELECT modality, COUNT(*) FROM items GROUP BY modality "
                                    "ORDER BY modality"))

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "items": self.counts(), **self.meta}


# -- embedding items into a store ---------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """A raw item to embed.

    Args:
        id: the key in the store (a path, a manifest id, or a content hash).
        raw: what the modality's loader receives (a path, text, bytes ...).
        content_sha256: the hash of the item's content; an equal hash means nothing changed.
        source: what a search result shows (a path, or the text).
    """

    id: str
    raw: Any
    content_sha256: str
    source: str
    metadata: dict[str, Any] | None = None


@dataclass
class EmbedReport:
    """What an embedding run did; ``skipped`` counts items per reason."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, full reason)

    def skip(self, source: str, reason: str) -> None:
        # details in parentheses differ per file; the counts group by the reason itself
        self.skipped[reason.split(" (")[0]] += 1
        self.failures.append((source, reason))

    def summary(self) -> str:
        n_skipped = sum(self.skipped.values())
        text = (f"{self.new} new, {self.updated} updated, {self.unchanged} unchanged, "
                f"{n_skipped} skipped")
        if n_skipped:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in self.skipped.most_common()) + ")"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"new": self.new, "updated": self.updated, "unchanged": self.unchanged,
                "skipped": dict(self.skipped),
                "failures": [{"source": s, "reason": r} for s, r in self.failures]}


def _size(raw: Any) -> int:
    return len(raw) if isinstance(raw, str | bytes) else 0


def embed_items(model: Any, store: EmbeddingStore, items: Iterable[Item], modality: str,
                batch_size: int = 32, show_progress_bar: bool | None = None,
                report: EmbedReport | None = None) -> EmbedReport:
    """Embed the new and changed ``items`` into ``store`` (bound to ``model`` beforehand with
    :meth:`EmbeddingStore.bind_model`), one transaction per batch.

    Args:
        model: the :class:`mmenc.Encoder` the store is bound to.
        store: the target store.
        items: raw items with ids and content hashes; a repeated id keeps its first item.
        modality: the modality of every item.
        batch_size: items per forward pass and per transaction.
        show_progress_bar: a tqdm bar; by default for more than 4 batches on a terminal.
        report: a report to add to (holding items skipped while collecting them).
    Returns:
        the counts of new, updated, unchanged and skipped items.
    """
    report = report or EmbedReport()
    unique: dict[str, Item] = {}
    for item in items:
        if item.id in unique:
            report.skip(item.source, "duplicate id")
        else:
            unique[item.id] = item
    stored = store.hashes(unique)
    todo = []
    for item in unique.values():
        if stored.get(item.id) == (modality, item.content_sha256):
            report.unchanged += 1
        else:
            todo.append(item)
    # metadata given again is kept up to date without encoding an unchanged item again
    todo_ids = {it.id for it in todo}
    store.set_metadata({it.id: it.metadata for it in unique.values()
                        if it.metadata is not None and it.id not in todo_ids})
    # similar lengths in a batch waste less compute on padding (text, code)
    todo.sort(key=lambda it: -_size(it.raw))
    starts: Iterable[int] = range(0, len(todo), batch_size)
    if show_progress_bar is None:
        show_progress_bar = len(todo) > 4 * batch_size and os.isatty(2)
    if show_progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"embed {modality}", unit="batch")
    for start in starts:
        batch = todo[start : start + batch_size]
        emb, ok, failed = encode_robust(model, [it.raw for it in batch], modality,
                                        batch_size, store.truncate_dim)
        for pos, reason in failed.items():
            report.skip(batch[pos].source, reason)
        store.write([StoredItem(batch[pos].id, modality, batch[pos].content_sha256,
                                batch[pos].source, row, batch[pos].metadata)
                     for pos, row in zip(ok, emb, strict=True)])
        for pos in ok:
            if batch[pos].id in stored:
                report.updated += 1
            else:
                report.new += 1
    return report
