"""``mmenc embed``, ``mmenc search`` and ``mmenc eval retrieval``.

Registered by the built-in plugin and imported only when one of them runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mmenc.retrieval.index import INDEX_KINDS
from mmenc.retrieval.store import EmbedReport, Item, sha256_bytes, sha256_file


# -- items from the command line --------------------------------------------------------------
def expand_paths(inputs: tuple[Path, ...], report: EmbedReport) -> Iterator[Path]:
    """Files as given, directories recursed (hidden names skipped), sorted for a stable order."""
    for path in inputs:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file()
                              and not any(part.startswith(".")
                                          for part in p.relative_to(path).parts))
        elif path.is_file():
            yield path
        else:
            report.skip(str(path), "file not found")


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
@click.option("--batch-size", default=32, show_default=True, help="Items per batch.")
@click.option("--dim", type=int, help="Matryoshka truncation (fixed for the store).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def embed(model_dir: Path, inputs: tuple[Path, ...], modality: str, store_path: Path,
          texts: tuple[str, ...], manifest: Path | None, field: str | None, id_field: str,
          id_from: str, batch_size: int, dim: int | None, as_json: bool) -> None:
    """Embed INPUTS (files; directories are recursed), --text items or a --manifest into a
    SQLite store with MODEL. Unchanged items are not encoded again; items that fail to load
    are skipped and counted."""
    import mmenc
    from mmenc.retrieval.store import EmbeddingStore, embed_items

    if not (inputs or texts or manifest):
        raise click.UsageError("give files, --text or --manifest")
    report = EmbedReport()
    items: list[Item] = list(file_items(expand_paths(inputs, report), modality, id_from, report))
    items += text_items(texts)
    if manifest is not None:
        items += manifest_items(manifest, field or modality, id_field, modality, id_from, report)
    with EmbeddingStore(store_path) as store:
        store.bind_model(model_dir, dim)
        model = mmenc.load(model_dir)
        model.check_modality(modality)
        embed_items(model, store, items, modality, batch_size, report=report)
        total = len(store)
    if as_json:
        click.echo(json.dumps({"store": str(store_path), "items": total, **report.as_dict()},
                              indent=2))
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


@click.command("search")
@click.argument("store_path", metavar="STORE",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--query", "-q", "queries", multiple=True, help="An inline query (repeatable).")
@click.option("--query-file", "query_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file to query with (repeatable).")
@click.option("--query-modality", default="text", show_default=True)
@click.option("--gallery-modality", help="Search only the stored items of this modality.")
@click.option("--top-k", "-k", default=10, show_default=True)
@click.option("--index", "index_kind", type=click.Choice(INDEX_KINDS), default="auto",
              show_default=True, help="exact (torch), faiss (flat), hnsw (approximate, cached); "
              "auto: exact, FAISS above 200k rows.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Where the store's model is now, if it moved.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def search(store_path: Path, queries: tuple[str, ...], query_files: tuple[Path, ...],
           query_modality: str, gallery_modality: str | None, top_k: int, index_kind: str,
           model_dir: Path | None, as_json: bool) -> None:
    """Search STORE with queries of any modality the store's model encodes."""
    from mmenc.retrieval.store import EmbeddingStore

    if not (queries or query_files):
        raise click.UsageError("give --query or --query-file")
    raws: list[Any] = list(queries)
    raws += [p.read_bytes() if query_modality == "text" else str(p) for p in query_files]
    labels = [*queries, *(str(p) for p in query_files)]
    with EmbeddingStore(store_path, create=False) as store:
        model = store.load_model(model_dir)
        emb = model.encode(raws, query_modality, dim=store.truncate_dim)
        results = store.search(emb, top_k, index_kind, gallery_modality)
    if as_json:
        click.echo(json.dumps([{"query": q, "results": r}
                               for q, r in zip(labels, results, strict=True)], indent=2))
        return
    for label, hits in zip(labels, results, strict=True):
        click.echo(f"query: {_one_line(label, 70)}")
        width = max([len(_one_line(h["id"], 40)) for h in hits] + [2])
        click.echo(f"{'rank':>4}  {'score':>7}  {'id':<{width}}  source")
        for h in hits:
            click.echo(f"{h['rank']:>4}  {h['score']:>7.4f}  {_one_line(h['id'], 40):<{width}}"
                       f"  {_one_line(h['source'], 60)}")


# -- eval ------------------------------------------------------------------------------------
@click.group("eval")
def eval_group() -> None:
    """Evaluate a model (retrieval metrics, reports and plots)."""


@eval_group.command("retrieval")
@click.argument("model_dir", metavar="MODEL", type=click.Path(path_type=Path))
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--query-modality", required=True, help="Modality A (queries).")
@click.option("--gallery-modality", required=True, help="Modality B (gallery).")
@click.option("--query-field", help="Manifest field of A [default: the modality].")
@click.option("--gallery-field", help="Manifest field of B [default: the modality].")
@click.option("--rerank", default=0, show_default=True,
              help="Re-score each query's top K with the model's matching head.")
@click.option("--rerank-itc-weight", default=None,
              help="Order the re-scored candidates by the matching log-odds plus this weight "
                   "times the embedding similarity ('auto': one over the model's temperature) "
                   "[default: the matching probability alone].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/eval-retrieval"), show_default=True,
              help="Where report.json and recall.png go.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--dim", type=int, help="Matryoshka truncation of the embeddings.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_retrieval(model_dir: Path, manifest: Path, query_modality: str, gallery_modality: str,
                   query_field: str | None, gallery_field: str | None, rerank: int,
                   rerank_itc_weight: str | None, out: Path, batch_size: int, dim: int | None,
                   as_json: bool) -> None:
    """Retrieval metrics of MODEL on a JSONL MANIFEST of pairs, A->B and B->A: R@1/5/10, MRR,
    mAP, nDCG@10, mean and median rank. MODEL is a saved model's folder, or ``bm25`` for the
    lexical baseline (identifiers split into words)."""
    from mmenc.retrieval.evaluate import evaluate_manifest

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
                                   rerank_itc_weight=rerank_itc_weight,
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
