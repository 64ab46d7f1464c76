"""Zero-shot retrieval evaluation over paired items, in both directions, with optional
re-ranking by a matching head, a ``report.json`` and an R@K bar chart.

Protocol: both sides are de-duplicated by content (a caption or an image that appears in
several pairs is one gallery item), and a query's relevant items are all the items it is
paired with anywhere in the manifest. Metrics come from
:func:`mmenc.retrieval.metrics.retrieval_metrics` (ties count against the query).

Axes: ``a`` unique query-side items, ``b`` unique gallery-side items, ``e`` embedding dims.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mmenc.errors import InputError
from mmenc.retrieval.metrics import chance_recall, retrieval_metrics
from mmenc.retrieval.search import encode_robust
from mmenc.retrieval.store import sha256_file

Echo = Callable[[str], None]


@runtime_checkable
class MatchingModel(Protocol):
    """A model that scores item pairs jointly (an ITM head over fused states).

    ``match_scores(a_items, b_items, a_modality=..., b_modality=...)`` receives raw items
    (what the modality loaders accept) with ``a_items[i]`` paired with ``b_items[i]``, and
    returns a ``[k]`` tensor, higher for a better match (a logit or a probability). Retrieval
    evaluation uses it to re-rank the top-k of the embedding search.
    """

    def match_scores(self, a_items: Sequence[Any], b_items: Sequence[Any], *, a_modality: str,
                     b_modality: str) -> Tensor: ...


# -- manifests ------------------------------------------------------------------------------
def resolve_value(value: Any, modality: str, base: Path) -> Any:
    """One manifest value as a raw item: text stays text; for other modalities a relative
    path is resolved against the manifest's folder when a file is there, and anything else
    goes to the modality's loader unchanged (which names what it cannot use)."""
    if not isinstance(value, str) or modality == "text":
        return value
    try:
        path = Path(value).expanduser()
        if not path.is_absolute() and (base / path).exists():
            return str(base / path)
    except (OSError, ValueError):  # not a path at all (source code, too long, NUL, ...)
        pass
    return value


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL manifest (blank lines ignored)."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read manifest ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}", f"not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}", "each line must be a JSON object")
        rows.append(row)
    return rows


def content_key(item: Any, modality: str) -> str:
    """What makes two raw items the same: the text itself, or the bytes of a file."""
    if isinstance(item, bytes | bytearray):
        return "bytes:" + hashlib.sha256(bytes(item)).hexdigest()
    if isinstance(item, str | Path):
        path = Path(item)
        try:
            is_file = modality != "text" and path.is_file()
        except (OSError, ValueError):  # a value that cannot be a path (source code, long text)
            is_file = False
        if is_file:
            return "file:" + sha256_file(path)
        return "value:" + str(item)
    return f"object:{id(item)}"  # images in memory and the like: no cheap identity


# -- evaluation -------------------------------------------------------------------------------
def _pair(pair: Any, keys: tuple[str, str]) -> tuple[Any, Any]:
    if isinstance(pair, Mapping):
        missing = [k for k in keys if k not in pair]
        if missing:
            raise InputError(json.dumps(pair)[:80], f"pair has no field {missing[0]!r}")
        return pair[keys[0]], pair[keys[1]]
    a, b = pair
    return a, b


def _encode(model: Any, items: list[Any], modality: str, batch_size: int, dim: int | None,
            show_progress_bar: bool) -> tuple[Tensor, dict[int, str]]:
    """``[n e]`` embeddings (NaN rows where an item failed) and the failures."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i])
                   if isinstance(items[i], str) else 0)
    starts: Any = range(0, len(order), batch_size)
    if show_progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"encode {modality}", unit="batch")
    out: Tensor | None = None
    failed: dict[int, str] = {}
    for start in starts:
        chunk = order[start : start + batch_size]
        emb, ok, bad = encode_robust(model, [items[i] for i in chunk], modality, batch_size, dim)
        if out is None and len(ok):
            out = torch.full((len(items), emb.shape[1]), float("nan"))
        if out is not None and len(ok):
            out[torch.tensor([chunk[p] for p in ok])] = emb
        failed.update({chunk[p]: reason for p, reason in bad.items()})
    return (out if out is not None else torch.zeros(len(items), 0)), failed


def rerank_scores(model: MatchingModel, scores: Tensor, query_items: list[Any],
                  gallery_items: list[Any], k: int, a_modality: str, b_modality: str,
                  query_is_a: bool, batch_size: int = 32,
                  itc_weight: float | None = None) -> Tensor:
    """``scores [q g]`` with each query's top ``k`` re-scored by ``model.match_scores``; they
    stay above the rest, whose order is kept.

    ``itc_weight`` None: the matched probability alone (ALBEF's retrieval); a number ``w``: the
    matching log-odds ``log(p / (1 - p))`` plus ``w`` times the embedding similarity (BLIP adds
    the two; with ``w = 1 / temperature`` it is the sum of the ITC and ITM logits)."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # [q k]
    pairs = [(qi, int(gi)) for qi in range(len(scores)) for gi in top[qi]]
    matched = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        qs, gs = [query_items[q] for q, _ in chunk], [gallery_items[g] for _, g in chunk]
        a, b = (qs, gs) if query_is_a else (gs, qs)
        matched.append(torch.as_tensor(model.match_scores(
            a, b, a_modality=a_modality, b_modality=b_modality)).float().flatten().cpu())
    match = torch.cat(matched).double().reshape(len(scores), k)  # [q k]
    if itc_weight is not None:
        p = match.clamp(1e-12, 1 - 1e-12)
        match = torch.log(p) - torch.log1p(-p) + itc_weight * scores.gather(1, top).double()
    out = scores.double() - scores.max() + match.min() - 1.0  # everything below the top k
    return out.scatter(1, top, match)


@dataclass
class Scored:
    """Both directions' similarity of the de-duplicated items that loaded: ``scores [a' b']``
    and ``scores_back [b' a']``, ``relevant [a' b']``, the items behind rows and columns and the
    reasons items were skipped, counted."""

    scores: Tensor
    scores_back: Tensor
    relevant: Tensor
    items_a: list[Any]
    items_b: list[Any]
    skipped: Counter[str]


def _unique_pairs(pairs: Sequence[Any], keys: tuple[str, str],
                  modalities: tuple[str, str]) -> tuple[tuple[list[Any], list[Any]],
                                                       tuple[dict[str, int], dict[str, int]],
                                                       Tensor]:
    """Each side de-duplicated by content: the unique items, their content keys, and which
    query-side item is paired with which gallery-side item, ``[a b]``."""
    uniques: tuple[list[Any], list[Any]] = ([], [])
    index: tuple[dict[str, int], dict[str, int]] = ({}, {})
    links: set[tuple[int, int]] = set()
    for pair in pairs:
        ends = []
        for side, item in enumerate(_pair(pair, keys)):
            key = content_key(item, modalities[side])
            if key not in index[side]:
                index[side][key] = len(uniques[side])
                uniques[side].append(item)
            ends.append(index[side][key])
        links.add((ends[0], ends[1]))
    if not links:
        raise ValueError("evaluate_retrieval got no pairs")
    relevant = torch.zeros(len(uniques[0]), len(uniques[1]), dtype=torch.bool)  # [a b]
    relevant[tuple(torch.tensor(sorted(links)).T)] = True
    return uniques, index, relevant


def score_pairs(model: Any, pairs: Sequence[Any], modalities: tuple[str, str],
                keys: tuple[str, str], *, batch_size: int = 32, dim: int | None = None,
                progress: bool = False, exclude_identical: bool = False) -> Scored:
    """Score every unique query-side item against every unique gallery-side item: by the
    cosine of ``model``'s embeddings, or by ``model.score_items`` for a scorer without
    embeddings (BM25). Items that fail to load are left out and counted; with
    ``exclude_identical`` a query never scores an identical gallery item."""
    uniques, index, relevant = _unique_pairs(pairs, keys, modalities)
    full = back = None
    bad_a: dict[int, str]
    bad_b: dict[int, str]
    if callable(getattr(model, "score_items", None)):  # a scorer without embeddings (BM25)
        full = torch.as_tensor(model.score_items(uniques[0], uniques[1], *modalities)).float()
        back = torch.as_tensor(model.score_items(uniques[1], uniques[0],
                                                 *modalities[::-1])).float()  # [b a]
        bad_a, bad_b = {}, {}
    else:
        emb_a, bad_a = _encode(model, uniques[0], modalities[0], batch_size, dim, progress)
        emb_b, bad_b = _encode(model, uniques[1], modalities[1], batch_size, dim, progress)
    skipped = Counter(r.split(" (")[0] for r in [*bad_a.values(), *bad_b.values()])
    keep_a = torch.tensor([i not in bad_a for i in range(len(uniques[0]))])
    keep_b = torch.tensor([i not in bad_b for i in range(len(uniques[1]))])
    relevant = relevant & keep_a[:, None] & keep_b[None, :]
    rows = relevant.any(dim=1)  # queries with at least one usable partner
    cols = relevant.any(dim=0)
    if not bool(rows.any()):
        raise ValueError("no pair is left once the items that failed to load are skipped")
    if full is not None and back is not None:
        scores, scores_back = full[rows][:, cols], back[cols][:, rows]  # [a' b'], [b' a']
    else:
        scores = emb_a[rows] @ emb_b[cols].T  # [a' b']
        scores_back = scores.T
    if exclude_identical:
        keys_b = {k: j for j, k in enumerate(
            k for k, keep in zip(index[1], cols.tolist(), strict=True) if keep)}
        same = torch.zeros_like(scores, dtype=torch.bool)
        kept_a = [k for k, keep in zip(index[0], rows.tolist(), strict=True) if keep]
        for i, key in enumerate(kept_a):
            if key in keys_b:
                same[i, keys_b[key]] = True
        scores = scores.masked_fill(same, float("-inf"))
        scores_back = scores_back.masked_fill(same.T, float("-inf"))
    return Scored(scores, scores_back, relevant[rows][:, cols],
                  [x for x, keep in zip(uniques[0], rows.tolist(), strict=True) if keep],
                  [x for x, keep in zip(uniques[1], cols.tolist(), strict=True) if keep],
                  skipped)


def _itc_weight(model: Any, weight: float | str | None) -> float | None:
    """``"auto"``: one over the model's contrastive temperature (1 without one)."""
    if weight == "auto":
        temp = getattr(model, "temp", None)
        return 1.0 / float(torch.as_tensor(temp).detach()) if temp is not None else 1.0
    return None if weight is None else float(weight)


def rerank_report(model: Any, scored: Scored, modalities: tuple[str, str],
                  directions: tuple[str, str], k: int, batch_size: int,
                  itc_weight: float | None, echo: Echo) -> dict[str, Any]:
    """The metrics of both directions with each query's top ``k`` re-scored by the model's
    matching head, or the reason there are none."""
    if not isinstance(model, MatchingModel):
        recipe = getattr(model, "recipe", type(model).__name__)
        message = (f"--rerank {k} skipped: model {recipe!r} has no matching head (no "
                   "match_scores method; see MatchingModel)")
        echo(message)
        return {"rerank": {"k": k, "status": "skipped", "reason": message}}
    forward = rerank_scores(model, scored.scores, scored.items_a, scored.items_b, k,
                            *modalities, True, batch_size, itc_weight)
    backward = rerank_scores(model, scored.scores.T, scored.items_b, scored.items_a, k,
                             *modalities, False, batch_size, itc_weight)
    return {"metrics_rerank": {directions[0]: retrieval_metrics(forward, scored.relevant),
                               directions[1]: retrieval_metrics(backward, scored.relevant.T)},
            "rerank": {"k": k, "status": "done", "itc_weight": itc_weight}}


def evaluate_retrieval(model: Any, pairs: Sequence[Any], query_modality: str,
                       gallery_modality: str, *, query_key: str | None = None,
                       gallery_key: str | None = None, batch_size: int = 32,
                       dim: int | None = None, rerank: int = 0, echo: Echo | None = None,
                       show_progress_bar: bool | None = None,
                       exclude_identical: bool = False,
                       rerank_itc_weight: float | str | None = None) -> dict[str, Any]:
    """Retrieval metrics of ``model`` over paired raw items, in both directions.

    Args:
        model: an :class:`mmenc.Encoder` that encodes both modalities.
        pairs: ``{key: raw item}`` mappings, or ``(query item, gallery item)`` tuples.
        query_modality: modality of the query side (``A``).
        gallery_modality: modality of the gallery side (``B``).
        query_key: the mapping key of the query side (default: ``query_modality``).
        gallery_key: the mapping key of the gallery side (default: ``gallery_modality``).
        batch_size: items per forward pass (and pairs per ``match_scores`` call).
        dim: Matryoshka truncation of the embeddings.
        rerank: re-score each query's top ``rerank`` with the model's matching head
            (:class:`MatchingModel`); skipped with a message when it has none.
        rerank_itc_weight: None: the re-scored candidates are ordered by the matching
            probability alone; ``w``: by the matching log-odds plus ``w`` times the embedding
            similarity (see :func:`rerank_scores`); ``"auto"``: ``w`` is one over the model's
            contrastive temperature ``temp`` (ALBEF, BridgeTower; 1 without one).
        echo: where messages go (``print`` by default).
        show_progress_bar: tqdm bars while encoding.
        exclude_identical: a query never retrieves an identical gallery item (same-modality
            search, where each query is also in the gallery).
    Returns:
        ``{"metrics": {"A->B": {...}, "B->A": {...}}, "metrics_rerank": ..., "counts": ...,
        "rerank": ..., "settings": ...}``.
    """
    echo = echo or print
    start_time = time.perf_counter()
    keys = (query_key or query_modality, gallery_key or gallery_modality)
    if keys[0] == keys[1] and any(isinstance(p, Mapping) for p in pairs):
        raise ValueError(f"both sides read the field {keys[0]!r}: give query_key and "
                         "gallery_key")
    modalities = (query_modality, gallery_modality)
    progress = (len(pairs) > 4 * batch_size and os.isatty(2)) if show_progress_bar is None \
        else show_progress_bar
    scored = score_pairs(model, pairs, modalities, keys, batch_size=batch_size, dim=dim,
                         progress=progress, exclude_identical=exclude_identical)
    rel = scored.relevant
    labels = keys if keys[0] != keys[1] else ("query", "gallery")
    forward, backward = f"{labels[0]}->{labels[1]}", f"{labels[1]}->{labels[0]}"
    report: dict[str, Any] = {
        "model": {"recipe": getattr(model, "recipe", type(model).__name__)},
        "query_modality": query_modality,
        "gallery_modality": gallery_modality,
        "metrics": {forward: retrieval_metrics(scored.scores, rel),
                    backward: retrieval_metrics(scored.scores_back, rel.T)},
        "chance": {forward: chance_recall(rel), backward: chance_recall(rel.T)},
        "counts": {"pairs": len(pairs), "links": int(rel.sum()),
                   f"{labels[0]}_items": len(scored.items_a),
                   f"{labels[1]}_items": len(scored.items_b),
                   "skipped_items": dict(scored.skipped)},
        "settings": {"batch_size": batch_size, "dim": dim, "rerank": rerank,
                     "exclude_identical": exclude_identical,
                     "query_key": keys[0], "gallery_key": keys[1]},
    }
    if scored.skipped:
        echo(f"skipped {sum(scored.skipped.values())} item(s) that failed to load: "
             + ", ".join(f"{r}: {n}" for r, n in scored.skipped.items()))
    if rerank > 0:
        report.update(rerank_report(model, scored, modalities, (forward, backward), rerank,
                                    batch_size, _itc_weight(model, rerank_itc_weight), echo))
    report["seconds"] = round(time.perf_counter() - start_time, 2)
    return report


# -- report and plot --------------------------------------------------------------------------
Baselines = Mapping[str, Mapping[str, Mapping[str, float]]]


def recall_figure(report: dict[str, Any], ks: tuple[int, ...] = (1, 5, 10),
                  baselines: Baselines | None = None) -> Any:
    """The R@K chart of a report as a matplotlib ``Figure`` (Agg, no pyplot state).

    One group per K, one bar per direction (and per re-ranked direction); each baseline
    (``report["baselines"]`` and ``baselines``: name -> direction -> metrics) as hatched bars
    beside them; chance (``report["chance"]``) as a dashed line across each bar.
    """
    from mmenc.optional import require

    require("matplotlib", "plot", "R@K charts")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directions = list(report["metrics"])
    # (label, metrics, hatch, direction)
    series: list[tuple[str, Mapping[str, float], str | None, str]] = [
        (d, m, None, d) for d, m in report["metrics"].items()]
    series += [(f"{d} (rerank)", m, None, d)
               for d, m in report.get("metrics_rerank", {}).items()]
    every = {**report.get("baselines", {}), **(baselines or {})}
    for name, by_direction in every.items():
        if any(isinstance(v, int | float) for v in by_direction.values()):  # no direction given
            series.append((name, by_direction, "//", ""))
            continue
        series += [(f"{name}: {d}" if len(directions) > 1 else name, m, "//", d)
                   for d, m in by_direction.items()]
    fig = Figure(figsize=(7.2, 4.2))
    FigureCanvasAgg(fig)  # Agg without touching pyplot's global backend
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    offsets = [(i - (len(series) - 1) / 2) * width for i in range(len(series))]
    for i, ((name, metrics, hatch, _), off) in enumerate(zip(series, offsets, strict=True)):
        xs = [j + off for j in range(len(ks))]
        values = [metrics.get(f"R@{k}", float("nan")) for k in ks]
        colour = f"C{i % 10}"
        bars = ax.bar(xs, values, width, label=name, hatch=hatch, fill=hatch is None,
                      color=colour if hatch is None else None, edgecolor=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    chance = report.get("chance", {})
    labelled = False
    for (_, _, _, direction), off in zip(series, offsets, strict=True):
        if direction not in chance:
            continue
        for j, k in enumerate(ks):
            ax.hlines(chance[direction][f"R@{k}"], j + off - width / 2, j + off + width / 2,
                      colors="black", linestyles="--", linewidth=1.2,
                      label="_chance" if labelled else "chance (random ranking)")
            labelled = True
    ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("recall")
    ax.set_title(f"{report['model'].get('recipe', '')}: "
                 f"{report['query_modality']} <-> {report['gallery_modality']}")
    # below the axes: bars near 1.0 leave no free corner inside them
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    return fig


def plot_recall(report: dict[str, Any], path: str | Path, ks: tuple[int, ...] = (1, 5, 10),
                baselines: Baselines | None = None) -> Path:
    """Save :func:`recall_figure` to ``path``."""
    path = Path(path)
    recall_figure(report, ks, baselines).savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_report(report: dict[str, Any], out: str | Path,
                 baselines: Baselines | None = None) -> dict[str, Path]:
    """``report.json`` and ``recall.png`` in ``out`` (the plot is left out, with a note in
    the report, when matplotlib is missing).

    Args:
        report: an :func:`evaluate_retrieval` report.
        out: the folder.
        baselines: name -> direction -> metrics of other scorers on the same split; kept in
            the report (``"baselines"``) and drawn on the chart next to chance.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if baselines:
        report["baselines"] = {**report.get("baselines", {}),
                               **{n: {d: dict(m) for d, m in b.items()}
                                  for n, b in baselines.items()}}
    paths = {}
    try:
        paths["plot"] = plot_recall(report, out / "recall.png")
    except ImportError:
        report["plot"] = "not drawn: matplotlib is not installed"
    paths["report"] = out / "report.json"
    paths["report"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return paths


def evaluate_manifest(model_dir: str | Path, manifest: str | Path, query_modality: str,
                      gallery_modality: str, out: str | Path | None = None,
                      query_key: str | None = None, gallery_key: str | None = None,
                      backend: str = "torch", **options: Any) -> dict[str, Any]:
    """:func:`evaluate_retrieval` on a saved model and a JSONL manifest of pairs; writes the
    report and plot into ``out`` when given. ``options`` go to ``evaluate_retrieval``;
    ``backend`` is what embeds the items (``torch``, ``onnx``, ``onnx-int8``).

    Manifest values are raw items: text stays as it is; for other modalities a relative path
    is resolved against the manifest's folder (see :func:`resolve_value`).
    """
    import mmenc

    manifest = Path(manifest)
    keys = (query_key or query_modality, gallery_key or gallery_modality)
    if keys[0] == keys[1]:
        raise ValueError(f"both sides read the field {keys[0]!r}: name the fields "
                         "(--query-field / --gallery-field)")
    base = manifest.resolve().parent
    pairs = []
    for row in read_manifest(manifest):
        a, b = _pair(row, keys)
        pairs.append({keys[0]: resolve_value(a, query_modality, base),
                      keys[1]: resolve_value(b, gallery_modality, base)})
    if str(model_dir) == "bm25":
        from mmenc.retrieval.lexical import Bm25Scorer

        model: Any = Bm25Scorer()
    else:
        from mmenc.export.runtime import with_backend

        model = with_backend(mmenc.load(model_dir), backend, query_modality, gallery_modality)
    report = evaluate_retrieval(model, pairs, query_modality, gallery_modality,
                                query_key=keys[0], gallery_key=keys[1], **options)
    if str(model_dir) != "bm25":
        report["model"]["path"] = str(Path(model_dir).resolve())
        report["model"]["backend"] = backend
    report["manifest"] = str(manifest.resolve())
    if out is not None:
        write_report(report, out)
    return report
