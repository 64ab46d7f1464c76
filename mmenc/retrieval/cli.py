"""``mmenc embed``, ``mmenc search`` and ``mmenc eval retrieval``.

Registered by the built-in plugin and imported only when one of them runs.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mmenc.export import BACKENDS
from mmenc.retrieval.index import INDEX_KINDS
from mmenc.retrieval.store import EmbedReport, Item, sha256_bytes, sha256_file

# -- items from the command line --------------------------------------------------------------
_GLOB = frozenset("*?[")


def expand_paths(inputs: tuple[Path, ...], report: EmbedReport) -> Iterator[Path]:
    """Files as given, directories recursed (hidden names skipped), glob patterns expanded
    (``**`` spans folders; quote a pattern so that mmenc expands it), sorted for a stable
    order. A folder or pattern without files is a skip with its reason."""
    for path in inputs:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".")
                                       for part in p.relative_to(path).parts))
            if not files:
                report.skip(str(path), "empty folder")
            yield from files
        elif path.is_file():
            yield path
        elif _GLOB & set(str(path)):
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                           if Path(p).is_file())
            if not files:
                report.skip(str(path), "no file matches the pattern")
            yield from files
        else:
            report.skip(str(path), "file not found")


def read_metadata(value: str) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """``--metadata``: a JSON object for every item, or a JSON file mapping items (by id,
    path as given or file name) to objects. Returns ``(for_all, by_key)``."""
    from mmenc.errors import InputError

    text, where = value, "--metadata"
    if not value.lstrip().startswith(("{", "[")):
        where = value
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(value, f"--metadata: neither a JSON object nor a readable JSON "
                             f"file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(where, f"--metadata: not valid JSON ({exc.msg}, line {exc.lineno})") \
            from None
    if not isinstance(data, dict):
        raise InputError(where, "--metadata: expected a JSON object")
    if where == "--metadata":
        return data, {}
    bad = [k for k, v in data.items() if not isinstance(v, dict)]
    if bad:
        raise InputError(where, f"--metadata: the value of {bad[0]!r} is not a JSON object")
    return None, data


def with_metadata(items: list[Item], prefix: str, for_all: dict[str, Any] | None,
                  by_key: dict[str, dict[str, Any]]) -> list[Item]:
    """Items with ``prefix`` before their ids and their metadata attached."""
    import dataclasses

    out = []
    for item in items:
        meta = for_all
        if by_key:
            source = Path(item.source) if Path(item.source).is_absolute() else None
            keys = [item.id] + ([str(source), source.name] if source is not None else [])
            meta = next((by_key[k] for k in keys if k in by_key), None)
        out.append(dataclasses.replace(item, id=prefix + item.id, metadata=meta))
    return out


def embedding_width(model: Any, modality: str) -> int:
    """The width of ``model``'s embeddings of ``modality`` (one example item encoded)."""
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    example = resolve(catalogue().get("modality", modality).example)()[:1]
    return int(model.encode(example, modality, normalize=False, show_progress_bar=False)
               .shape[1])


def file_items(paths: Iterator[Path], modality: str, id_from: str,
               report: EmbedReport) -> Iterator[Item]:
    """One item per file: text files are read as UTF-8, other files go to the loader by path."""
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.skip(str(path), f"unreadable file ({exc.strerror})")
            continue
        digest = sha256_bytes(data)
        source = str(path.resolve())
        yield Item(source if id_from == "path" else digest,
                   data if modality == "text" else source, digest, source)


def text_items(texts: tuple[str, ...]) -> Iterator[Item]:
    """Inline texts, keyed by their content (they have no path)."""
    for text in texts:
        digest = sha256_bytes(text.encode("utf-8"))
        yield Item(digest, text, digest, text)


def manifest_items(manifest: Path, field: str, id_field: str, modality: str, id_from: str,
                   report: EmbedReport) -> Iterator[Item]:
    """Items from a JSONL manifest: the ``field`` of each line, keyed by its ``id_field``
    (else its resolved path, else its content hash)."""
    from mmenc.retrieval.evaluate import read_manifest, resolve_value

    base = manifest.resolve().parent
    for number, row in enumerate(read_manifest(manifest), start=1):
        if field not in row:
            report.skip(f"{manifest}#{number}", f"no field {field!r}")
            continue
        raw = resolve_value(row[field], modality, base)
        is_file = isinstance(raw, str) and modality != "text" and Path(raw).is_file()
        try:
            digest = sha256_file(raw) if is_file else sha256_bytes(
                (raw if isinstance(raw, str) else json.dumps(raw)).encode("utf-8"))
        except OSError as exc:
            report.skip(str(raw), f"unreadable file ({exc.strerror})")
            continue
        source = str(Path(raw).resolve()) if is_file else str(raw)
        key = row.get(id_field)
        if id_from == "content":
            item_id = digest
        elif key is not None:
            item_id = str(key)
        else:
            item_id = source if is_file else digest
        yield Item(item_id, raw, digest, source)


# -- embed -----------------------------------------------------------------------------------
@click.command("embed")
@click.argument("model_dir", metavar="MODEL",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--modality", "-m", required=True, help="Modality of every item.")
@click.option("--store", "-s", "store_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="SQLite store to write.")
@click.option("--text", "texts", multiple=True, help="An inline text item (repeatable).")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSONL manifest of items.")
@click.option("--field", help="Manifest field holding the item [default: the modality].")
@click.option("--id-field", default="id", show_default=True, help="Manifest field of the id.")
@click.option("--id-from", type=click.Choice(["path", "content"]), default="path",
              show_default=True, help="Key files by their path or their content hash.")
@click.option("--prefix", default="", help="Put this before every item's id.")
@click.option("--metadata", "metadata",
              help="A JSON object stored beside every item, or a JSON file mapping items "
                   "(id, path or file name) to objects; searches return it.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Items per batch.")
@click.option("--dim", type=click.IntRange(min=1),
              help="Matryoshka truncation (fixed for the store).")
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
              help="torch (eager), or the ONNX graphs of `mmenc export` (onnx, onnx-int8).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def embed(model_dir: Path, inputs: tuple[Path, ...], modality: str, store_path: Path,
          texts: tuple[str, ...], manifest: Path | None, field: str | None, id_field: str,
          id_from: str, prefix: str, metadata: str | None, batch_size: int, dim: int | None,
          backend: str, as_json: bool) -> None:
    """Embed INPUTS (files; directories are recursed; quoted glob patterns such as
    'photos/**/*.jpg' are expanded), --text items or a --manifest into a SQLite store with
    MODEL. Unchanged items are not encoded again; items that fail to load are skipped and
    counted. A run that stores nothing fails."""
    import mmenc
    from mmenc.export.runtime import with_backend
    from mmenc.retrieval.store import EmbeddingStore, embed_items

    if not (inputs or texts or manifest):
        raise click.UsageError("give files, --text or --manifest")
    for_all, by_key = read_metadata(metadata) if metadata is not None else (None, {})
    report = EmbedReport()
    items: list[Item] = list(file_items(expand_paths(inputs, report), modality, id_from, report))
    items += text_items(texts)
    if manifest is not None:
        items += manifest_items(manifest, field or modality, id_field, modality, id_from, report)
    items = with_metadata(items, prefix, for_all, by_key)
    if not items:
        reasons = "; ".join(f"{s}: {r}" for s, r in report.failures[:3])
        raise click.ClickException(f"nothing to embed ({reasons})")
    model = mmenc.load(model_dir)
    model.check_modality(modality)
    if dim is None and store_path.is_file():  # a store made with --dim keeps it
        with EmbeddingStore(store_path, create=False) as store:
            dim = store.truncate_dim
    if dim is not None:  # checked before the store is bound to it
        width = embedding_width(model, modality)
        if dim > width:
            raise click.BadParameter(f"{dim} is more than the {width} dimensions of "
                                     f"{model.recipe}'s embeddings", param_hint="--dim")
    with EmbeddingStore(store_path) as store:
        store.bind_model(model_dir, dim, backend)
        embed_items(with_backend(model, backend, modality), store, items, modality, batch_size,
                    report=report)
        total = len(store)
    done = report.new + report.updated + report.unchanged
    if as_json:
        click.echo(json.dumps({"store": str(store_path), "items": total, **report.as_dict()},
                              indent=2))
    if not done:
        reasons = "; ".join(f"{s}: {r}" for s, r in report.failures[:3])
        more = f"; ... {len(report.failures) - 3} more" if len(report.failures) > 3 else ""
        raise click.ClickException(f"nothing embedded, every item failed ({reasons}{more})")
    if as_json:
        return
    click.echo(f"{store_path}: {report.summary()}; {total} items stored")
    for source, reason in report.failures[:5]:
        click.echo(f"  skipped {source[:80]}: {reason}", err=True)
    if len(report.failures) > 5:
        click.echo(f"  ... and {len(report.failures) - 5} more (--json lists all)", err=True)


# -- search ----------------------------------------------------------------------------------
def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _what(hit: dict[str, Any]) -> str:
    """What a result is: a file's name in full (with its folder when it fits), else the
    stored text on one line."""
    source = hit["source"]
    path = Path(source)
    if "\n" not in source and len(source) < 4096 and path.is_absolute():
        tail = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
        return tail if len(tail) <= 60 else path.name
    return _one_line(source, 60)


def _show_id(hit: dict[str, Any]) -> str | None:
    """The id when it says more than the source (a manifest id, a prefix), else None."""
    item_id: str = hit["id"]
    source = hit["source"]
    if item_id == source or len(item_id) == 64 and all(c in "0123456789abcdef" for c in item_id):
        return None
    return item_id


@click.command("search")
@click.argument("store_path", metavar="STORE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id", "item_ids", multiple=True,
              help="The nearest neighbours of this stored item, itself left out (repeatable).")
@click.option("--query", "-q", "queries", multiple=True, help="An inline query (repeatable).")
@click.option("--query-file", "query_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file to query with (repeatable).")
@click.option("--query-modality", help="Modality of every query [default: text for --query, "
              "from the extension for --query-file: .wav/.flac/.ogg audio, .mid midi, "
              ".png/.jpg image, .py code].")
@click.option("--gallery-modality", "--modality", "gallery_modality",
              help="Search only the stored items of this modality.")
@click.option("--top-k", "-k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--index", "index_kind", type=click.Choice(INDEX_KINDS), default="auto",
              show_default=True, help="exact (torch), faiss (flat), hnsw (approximate, cached); "
              "auto: exact, FAISS above 200k rows.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Where the store's model is now, if it moved.")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="What embeds the queries [default: the backend that made the store]; "
                   "its precision must be the store's.")
@click.option("--json", "as_json", is_flag=True,
              help="Print NDJSON: one object per result, with its query.")
def search(store_path: Path, item_ids: tuple[str, ...], queries: tuple[str, ...],
           query_files: tuple[Path, ...], query_modality: str | None,
           gallery_modality: str | None, top_k: int, index_kind: str,
           model_dir: Path | None, backend: str | None, as_json: bool) -> None:
    """Search STORE with queries of any modality the store's model encodes; each result is
    labelled with its modality (a store of a bound model holds several)."""
    import torch

    from mmenc.bind.suffixes import modality_of
    from mmenc.export import check_precision
    from mmenc.retrieval.store import EmbeddingStore

    if not (queries or query_files or item_ids):
        raise click.UsageError("give --query, --query-file or --id")
    if item_ids and (queries or query_files):
        raise click.UsageError("give either --id or queries, not both")
    if item_ids:
        with EmbeddingStore(store_path, create=False) as store:
            found = [store.neighbours(i, top_k, index_kind, gallery_modality) for i in item_ids]
        _print_results([f"id:{i}" for i in item_ids], found, as_json)
        return
    kinds = [query_modality or "text"] * len(queries)
    kinds += [query_modality or modality_of(p) for p in query_files]
    raws: list[Any] = list(queries)
    raws += [p.read_bytes() if kind == "text" else str(p)
             for p, kind in zip(query_files, kinds[len(queries):], strict=True)]
    labels = [*queries, *(str(p) for p in query_files)]
    with EmbeddingStore(store_path, create=False) as store:
        backend = backend or store.backend
        check_precision(store_path, store.meta, backend)
        model = store.load_model(model_dir)
        rows: dict[int, Any] = {}
        for kind in dict.fromkeys(kinds):
            at = [i for i, k in enumerate(kinds) if k == kind]
            emb = model.encode([raws[i] for i in at], kind, dim=store.truncate_dim,
                               backend=backend)
            rows.update(zip(at, emb, strict=True))
        results = store.search(torch.stack([rows[i] for i in range(len(raws))]), top_k,
                               index_kind, gallery_modality)
    _print_results(labels, results, as_json)


def _print_results(labels: list[str], results: list[list[dict[str, Any]]],
                   as_json: bool) -> None:
    """NDJSON (one object per result) or, per query, a table: rank, score, modality, what
    the item is (a file's name in full, or its text), its id when that says more, and its
    metadata."""
    if as_json:
        for label, hits in zip(labels, results, strict=True):
            for h in hits:
                click.echo(json.dumps({"query": label, **h}))
        return
    for label, hits in zip(labels, results, strict=True):
        click.echo(f"query: {_one_line(label, 70)}")
        width = max([len(_what(h)) for h in hits] + [4])
        click.echo(f"{'rank':>4}  {'score':>7}  {'modality':<8}  {'item':<{width}}  id / metadata")
        for h in hits:
            extra = [x for x in (_show_id(h), h.get("metadata")) if x]
            shown = "  ".join(x if isinstance(x, str) else json.dumps(x) for x in extra)
            click.echo(f"{h['rank']:>4}  {h['score']:>7.4f}  {h['modality']:<8}  "
                       f"{_what(h):<{width}}  {shown}".rstrip())


# -- eval ------------------------------------------------------------------------------------
@click.group("eval")
def eval_group() -> None:
    """Evaluate a model (retrieval metrics, reports and plots)."""


# modalities whose items are words, which BM25 can score
LEXICAL = ("text", "code")


@eval_group.command("retrieval")
@click.argument("model_dir", metavar="MODEL", type=click.Path(path_type=Path))
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--query-modality", required=True, help="Modality A (queries).")
@click.option("--gallery-modality", required=True, help="Modality B (gallery).")
@click.option("--query-field", help="Manifest field of A [default: the modality].")
@click.option("--gallery-field", help="Manifest field of B [default: the modality].")
@click.option("--rerank", default=0, show_default=True, type=click.IntRange(min=0),
              help="Re-score each query's top K with the model's matching head.")
@click.option("--rerank-itc-weight", default=None,
              help="Order the re-scored candidates by the matching log-odds plus this weight "
                   "times the embedding similarity ('auto': one over the model's temperature) "
                   "[default: the matching probability alone].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/eval-retrieval"), show_default=True,
              help="Where report.json and recall.png go.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--dim", type=click.IntRange(min=1), help="Matryoshka truncation of the embeddings.")
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
              help="torch (eager), or the ONNX graphs of `mmenc export` (onnx, onnx-int8).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_retrieval(model_dir: Path, manifest: Path, query_modality: str, gallery_modality: str,
                   query_field: str | None, gallery_field: str | None, rerank: int,
                   rerank_itc_weight: str | None, out: Path, batch_size: int, dim: int | None,
                   backend: str, as_json: bool) -> None:
    """Retrieval metrics of MODEL on a JSONL MANIFEST of pairs, A->B and B->A: R@1/5/10, MRR,
    mAP, nDCG@10, mean and median rank. MODEL is a saved model's folder, or ``bm25`` for the
    lexical baseline (identifiers split into words)."""
    from mmenc.registry import catalogue
    from mmenc.retrieval.evaluate import evaluate_manifest

    for option, name in (("--query-modality", query_modality),
                         ("--gallery-modality", gallery_modality)):
        if name not in catalogue().names("modality"):
            from mmenc.errors import UnknownNameError

            known = catalogue().names("modality")
            raise click.BadParameter(str(UnknownNameError("modality", name, known)),
                                     param_hint=option)
    if str(model_dir) == "bm25":
        not_text = [m for m in (query_modality, gallery_modality) if m not in LEXICAL]
        if not_text:
            raise click.UsageError(f"bm25 scores words; {not_text[0]!r} is not a text "
                                   f"modality ({', '.join(LEXICAL)})")
    if str(model_dir) != "bm25" and not model_dir.is_dir():
        raise click.BadParameter(f"{model_dir}: not a model folder (nor 'bm25')",
                                 param_hint="MODEL")
    if (query_field or query_modality) == (gallery_field or gallery_modality):
        raise click.UsageError("both sides read the same field: give --query-field and "
                               "--gallery-field")
    try:
        report = evaluate_manifest(model_dir, manifest, query_modality, gallery_modality, out,
                                   query_key=query_field, gallery_key=gallery_field,
                                   batch_size=batch_size, dim=dim, rerank=rerank,
                                   rerank_itc_weight=rerank_itc_weight, backend=backend,
                                   echo=lambda m: click.echo(m, err=True))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    keys = ("R@1", "R@5", "R@10", "MRR", "mAP", "nDCG@10", "mean_rank", "median_rank")
    rows = {d: m for d, m in report["metrics"].items()}
    rows.update({f"{d} rerank": m for d, m in report.get("metrics_rerank", {}).items()})
    width = max(len(name) for name in rows)
    click.echo(f"{'':<{width}}  " + "  ".join(f"{k:>11}" for k in keys))
    for name, metrics in rows.items():
        click.echo(f"{name:<{width}}  " + "  ".join(f"{metrics[k]:>11.4f}" for k in keys))
    click.echo(f"report: {out / 'report.json'}, plot: {out / 'recall.png'}")
