"""Similarity, semantic search and zero-shot classifiers over embeddings of any modality.

The vocabulary is sentence-transformers' (``similarity``, ``semantic_search`` with lists of
``{"corpus_id", "score"}``) and open_clip's (``build_zero_shot_classifier``), so code written
for them reads the same here. ``encode_robust`` encodes a batch in which some items may fail
to load, for the store and the evaluation.

Axes: ``q`` queries, ``g`` corpus rows, ``e`` embedding dims, ``c`` classes, ``t`` templates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmenc.errors import InputError
from mmenc.retrieval.index import topk_exact

ArrayLike = Tensor | np.ndarray | Sequence[Sequence[float]] | Sequence[float]
ScoreFunction = str | Callable[[Tensor, Tensor], Tensor]
Template = str | Callable[[str], Any]


def as_matrix(x: ArrayLike) -> Tensor:
    """A float ``[n e]`` CPU tensor from a tensor, array or nested list; a vector becomes one
    row."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.dim() == 1:
        t = t[None, :]
    if t.dim() != 2:
        raise ValueError(f"embeddings must be [n e] (or one [e] vector), got {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    return t


def cos_sim(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity ``[n m]`` of the rows of ``a [n e]`` and ``b [m e]``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def dot_score(a: Tensor, b: Tensor) -> Tensor:
    return a @ b.T


SCORE_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"cosine": cos_sim,
                                                                  "dot": dot_score}


def _score_function(score_function: ScoreFunction) -> Callable[[Tensor, Tensor], Tensor]:
    if callable(score_function):
        return score_function
    if score_function not in SCORE_FUNCTIONS:
        raise ValueError(f"score_function must be one of {', '.join(SCORE_FUNCTIONS)} "
                         f"or a callable, got {score_function!r}")
    return SCORE_FUNCTIONS[score_function]


def similarity(a: ArrayLike, b: ArrayLike, score_function: ScoreFunction = "cosine") -> Tensor:
    """The similarity matrix of two sets of embeddings.

    Inputs:
        a: ``[n e]`` embeddings (or one ``[e]`` vector).
        b: ``[m e]`` embeddings (or one ``[e]`` vector).
        score_function: ``"cosine"`` (default), ``"dot"`` or a callable ``(a, b) -> [n m]``.
    Returns:
        ``[n m]`` float scores.
    """
    a, b = as_matrix(a), as_matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} and {b.shape[1]}")
    return _score_function(score_function)(a, b)


def semantic_search(query_embeddings: ArrayLike, corpus_embeddings: ArrayLike, top_k: int = 10,
                    query_chunk_size: int = 100, corpus_chunk_size: int = 500_000,
                    score_function: ScoreFunction = "cosine",
                    corpus_modalities: Sequence[str] | None = None,
                    modality: str | None = None) -> list[list[dict[str, Any]]]:
    """The ``top_k`` best corpus entries of each query, exact.

    The corpus is scored ``corpus_chunk_size`` rows at a time and queries
    ``query_chunk_size`` at a time, so memory stays at one ``[query_chunk corpus_chunk]``
    block whatever the corpus size. Equal scores are ordered by the lower ``corpus_id``.

    Inputs:
        query_embeddings: ``[q e]`` (or one ``[e]`` vector).
        corpus_embeddings: ``[g e]``.
        top_k: results per query; fewer when the corpus is smaller.
        score_function: ``"cosine"`` (default), ``"dot"`` or a callable ``(a, b) -> [n m]``.
        corpus_modalities: the modality of each corpus row (a mixed corpus embedded by one
            bound model); each hit then carries its ``"modality"``.
        modality: search only the corpus rows of this modality (needs ``corpus_modalities``).
    Returns:
        one list per query of ``{"corpus_id": int, "score": float}`` (plus ``"modality"``),
        best first.
    """
    if corpus_modalities is not None or modality is not None:
        return _mixed_search(query_embeddings, corpus_embeddings, top_k, corpus_modalities,
                             modality, query_chunk_size=query_chunk_size,
                             corpus_chunk_size=corpus_chunk_size, score_function=score_function)
    queries, corpus = as_matrix(query_embeddings), as_matrix(corpus_embeddings)
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"embedding sizes differ: {queries.shape[1]} and {corpus.shape[1]}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    score_fn = _score_function(score_function)
    cosine = score_function == "cosine"
    if cosine:
        # normalise the queries once; corpus chunks are normalised as they are scored, so a
        # 1M-row corpus is never copied whole
        queries, score_fn = F.normalize(queries, dim=-1), dot_score
    if len(corpus) == 0:
        return [[] for _ in range(len(queries))]
    scores, ids = topk_exact(queries, corpus.to(queries.dtype), top_k, score_fn,
                             corpus_chunk=corpus_chunk_size, query_chunk=query_chunk_size,
                             normalize_gallery=cosine)
    return [[{"corpus_id": int(i), "score": float(s)} for s, i in zip(row_s, row_i, strict=True)]
            for row_s, row_i in zip(scores.tolist(), ids.tolist(), strict=True)]


def _mixed_search(query_embeddings: ArrayLike, corpus_embeddings: ArrayLike, top_k: int,
                  corpus_modalities: Sequence[str] | None, modality: str | None,
                  **options: Any) -> list[list[dict[str, Any]]]:
    """:func:`semantic_search` over the rows of one modality, hits labelled by modality."""
    corpus = as_matrix(corpus_embeddings)
    if corpus_modalities is None or len(corpus_modalities) != len(corpus):
        raise ValueError("corpus_modalities must give the modality of every corpus row")
    rows = [i for i, m in enumerate(corpus_modalities) if modality is None or m == modality]
    hits = semantic_search(query_embeddings, corpus[rows], top_k, **options) if rows else \
        [[] for _ in range(len(as_matrix(query_embeddings)))]
    return [[{**h, "corpus_id": rows[h["corpus_id"]],
              "modality": corpus_modalities[rows[h["corpus_id"]]]} for h in row] for row in hits]


def _format(template: Template, classname: str) -> Any:
    if callable(template):
        return template(classname)
    return template.format(classname, c=classname)


def build_zero_shot_classifier(model: Any, *args: Any, **kwargs: Any) -> Tensor:
    """Class weights for zero-shot classification: one prompt per (class, template), encoded,
    normalised, averaged per class and normalised again (open_clip's recipe).

    Two call forms: mmenc's ``(model, classnames, templates=("{}",), modality="text",
    batch_size=32, dim=None, show_progress_bar=None)`` (see :func:`zero_shot_classifier`) and
    open_clip's ``(model, tokenizer, classnames, templates, num_classes_per_batch=10,
    device=None, use_tqdm=False)``, told apart by the second argument (class names are a
    sequence of strings, a tokenizer is not). mmenc models tokenize raw items themselves, so
    the tokenizer must be the model's own (``mmenc.get_tokenizer(model)``) or None.
    """
    if "tokenizer" in kwargs or (args and not _is_names(args[0])):
        return _open_clip_classifier(model, *args, **kwargs)
    return zero_shot_classifier(model, *args, **kwargs)


def _is_names(x: object) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, str) and \
        all(isinstance(c, str) for c in x)


def _open_clip_classifier(model: Any, tokenizer: Any, classnames: Sequence[str],
                          templates: Sequence[Template], num_classes_per_batch: int | None = 10,
                          device: Any = None, use_tqdm: bool = False) -> Tensor:
    own = getattr(model, "tokenizers", {})
    if tokenizer is not None and not any(_same_tokenizer(tokenizer, t) for t in own.values()):
        raise ValueError("build_zero_shot_classifier: mmenc models tokenize prompts with their "
                         "own tokenizer; pass mmenc.get_tokenizer(model) or None, not "
                         f"{type(tokenizer).__name__}")
    batch = max(1, (num_classes_per_batch or 10) * max(1, len(templates)))
    return zero_shot_classifier(model, classnames, templates, "text", batch_size=batch,
                                show_progress_bar=use_tqdm)


def _same_tokenizer(a: Any, b: Any) -> bool:
    """The same object, or one built from the same configuration (``get_tokenizer(name)``)."""
    if a is b:
        return True
    return type(a) is type(b) and callable(getattr(a, "config", None)) and \
        a.config() == b.config()


def zero_shot_classifier(model: Any, classnames: Sequence[str],
                         templates: Sequence[Template] = ("{}",), modality: str = "text",
                         batch_size: int = 32, dim: int | None = None,
                         show_progress_bar: bool | None = None) -> Tensor:
    """:func:`build_zero_shot_classifier` in mmenc's argument order.

    Classify with ``logits = normalize(encode(items, other_modality)) @ weights``.

    Args:
        model: an :class:`mmenc.Encoder` (anything with ``encode(items, modality, ...)``).
        classnames: the class names, in label order.
        templates: strings formatted with the class name (``"a photo of a {}."``, or with a
            named field ``"{c}"``), or callables ``classname -> raw item``; the result must be
            a raw item of ``modality`` (a callable can return a path for a non-text modality).
        modality: the modality the prompts are encoded as.
        batch_size: prompts per forward pass.
        dim: Matryoshka truncation of the embeddings before normalising.
        show_progress_bar: as in :meth:`mmenc.Encoder.encode`.
    Returns:
        ``[e c]`` unit-norm columns, one per class.
    """
    classnames, templates = list(classnames), list(templates)
    if not classnames or not templates:
        raise ValueError("build_zero_shot_classifier needs at least one class and one template")
    prompts = [_format(t, c) for c in classnames for t in templates]  # class-major: [c*t]
    emb = model.encode(prompts, modality, batch_size=batch_size, normalize=True, dim=dim,
                       show_progress_bar=show_progress_bar)  # [c*t e]
    per_class = emb.reshape(len(classnames), len(templates), -1).mean(dim=1)  # [c e]
    return F.normalize(per_class, dim=-1).T.contiguous()  # [e c]


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


def encode_robust(model: Any, items: Sequence[Any], modality: str, batch_size: int = 32,
                  dim: int | None = None) -> tuple[Tensor, list[int], dict[int, str]]:
    """Encode ``items``, isolating the ones that fail to load or tokenize.

    The batch is encoded at once; when that raises, each item is tried alone, so a corrupt
    file costs only itself.

    Returns:
        ``(embeddings [n_ok e], ok_positions, {position: reason})``.
    """
    model.check_modality(modality)  # a wrong modality is the caller's error, not the items'
    try:
        emb = model.encode(items, modality, batch_size=batch_size, dim=dim,
                           show_progress_bar=False)
        return emb, list(range(len(items))), {}
    except Exception:  # noqa: BLE001 - isolated below, item by item
        pass
    rows, ok, failed = [], [], {}
    for i, item in enumerate(items):
        try:
            rows.append(model.encode([item], modality, dim=dim, show_progress_bar=False))
            ok.append(i)
        except Exception as exc:  # noqa: BLE001 - a plugin's loader may raise anything
            failed[i] = failure_reason(exc)
    return (torch.cat(rows) if rows else torch.zeros(0, 0)), ok, failed
