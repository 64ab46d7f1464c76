"""MIDI <-> text on the music21 folk tunes: data, a dual encoder, its evaluation and baselines.

The split is :mod:`mmenc_midi.data`'s: whole song books are held out. A ``midi-text-tiny``
dual encoder (a MIDI-BERT tower on Octuple tokens, trained from scratch, and a text tower: the
converted MiniLM, frozen, when ``minilm`` is given, else a small byte-level text tower trained
with it) is pretrained with mmenc's ``contrastive`` objective by ``mmenc pretrain``'s engine,
then evaluated on the held-out books:

- MIDI -> text and text -> MIDI retrieval (R@1, R@5, MRR, ...) with
  :func:`mmenc.retrieval.evaluate.evaluate_retrieval`, next to a random scorer and a
  note-based scorer (the key estimated from the notes with Krumhansl-Schmuckler profiles and
  the meter of the MIDI time signature, matched against the ``key:`` and ``meter:`` of the
  descriptions, ties broken at random);
- dance-type classification (reel, jig, hornpipe, ...): a linear probe on the MIDI embeddings
  trained on the training books, zero-shot with the text tower ("genre: reel"), and a linear
  probe on pitch-class and meter features, against the majority class.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmenc_midi.data import FolkData, FolkPair, folk_tunes
from mmenc_midi.recipes import midi_text, midibert

Echo = Callable[[str], None]
STEPS = 300
"""Default pretraining steps of :func:`run` (a step of batch 64 took about 1 s on 2 otherwise
idle CPU cores, 2.5 s with other jobs on them)."""

# Krumhansl-Kessler key profiles (major, minor), tonic first
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_TONICS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_MODE_TO_MAJOR_MINOR = {"major": "major", "minor": "minor", "dorian": "minor",
                        "phrygian": "minor", "aeolian": "minor", "lydian": "major",
                        "mixolydian": "major", "locrian": "minor"}


# -- note features --------------------------------------------------------------------------
# the 24 key profiles, standardised: row 2*t + (0 major, 1 minor) for tonic pitch class t
_PROFILES = np.stack([np.roll(p, t) for t in range(12) for p in (_MAJOR, _MINOR)])
_PROFILES = (_PROFILES - _PROFILES.mean(1, keepdims=True)) / _PROFILES.std(1, keepdims=True)


@functools.lru_cache(maxsize=65536)
def note_features(path: str) -> dict[str, Any]:
    """Pitch-class histogram (weighted by duration), the key estimated from it
    (Krumhansl-Schmuckler: the best-correlated of the 24 major and minor profiles,
    ``"<tonic pitch class> major|minor"``) and the meter of the first MIDI time signature
    (``""`` when the file has none)."""
    from mmenc_midi.midi import load_midi

    score = load_midi(path)
    hist = np.zeros(12)
    for track in score.tracks:
        if track.is_drum or not len(track.notes):
            continue
        arr = track.notes.numpy()
        np.add.at(hist, arr["pitch"] % 12, np.maximum(arr["duration"], 1))
    hist = hist / max(hist.sum(), 1e-9)
    key = ""
    if hist.std() > 0:
        corr = _PROFILES @ ((hist - hist.mean()) / hist.std())  # [24]
        best = int(corr.argmax())
        key = f"{best // 2} {('major', 'minor')[best % 2]}"
    meter = ""
    if len(score.time_signatures):
        ts = score.time_signatures[0]
        meter = f"{ts.numerator}/{ts.denominator}"
    return {"hist": hist, "key": key, "meter": meter}


def text_key_meter(text: str) -> tuple[str, str]:
    """``("<pitch class> major|minor", meter)`` from a description's ``key:`` and
    ``meter:`` parts (modes map to major or minor on the same tonic)."""
    key = meter = ""
    m = re.search(r"key: ([A-G])( sharp| flat)? (\w+)", text)
    if m:
        pc = (_TONICS[m.group(1)] + {" sharp": 1, " flat": -1}.get(m.group(2) or "", 0)) % 12
        key = f"{pc} {_MODE_TO_MAJOR_MINOR.get(m.group(3), 'major')}"
    m = re.search(r"meter: (\d+/\d+)", text)
    if m:
        meter = m.group(1)
    return key, meter


class KeyMeterScorer:
    """A retrieval scorer without training: one point for the key estimated from the notes
    matching the description's key, one for the MIDI time signature matching its meter;
    ties broken by a seeded random fraction of a point."""

    recipe = "key + meter from the MIDI"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _side(self, items: Sequence[Any], modality: str) -> list[tuple[str, str]]:
        if modality == "text":
            return [text_key_meter(t) for t in items]
        feats = [note_features(str(p)) for p in items]
        return [(f["key"], f["meter"]) for f in feats]

    def score_items(self, queries: Sequence[Any], gallery: Sequence[Any], query_modality: str,
                    gallery_modality: str) -> torch.Tensor:
        q, g = self._side(queries, query_modality), self._side(gallery, gallery_modality)
        qk, qm = np.array([k for k, _ in q]), np.array([m for _, m in q])
        gk, gm = np.array([k for k, _ in g]), np.array([m for _, m in g])
        score = ((qk[:, None] == gk[None, :]) & (qk[:, None] != "")).astype(float) \
            + ((qm[:, None] == gm[None, :]) & (qm[:, None] != "")).astype(float)
        noise = np.random.default_rng(self.seed).random(score.shape) * 0.5
        return torch.as_tensor(score + noise)


class RandomScorer:
    """Seeded random scores: the chance level of the same protocol."""

    recipe = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score_items(self, queries: Sequence[Any], gallery: Sequence[Any], query_modality: str,
                    gallery_modality: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.rand(len(queries), len(gallery), generator=g)


# -- manifests and configuration ------------------------------------------------------------
def write_manifests(data: FolkData, out: Path) -> dict[str, Path]:
    """``train.jsonl`` and ``test.jsonl`` with ``midi`` (a path) and ``text`` per tune."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.jsonl", "test": out / "test.jsonl"}
    for split, pairs in (("train", data.train), ("test", data.test)):
        with paths[split].open("w", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps({"id": p.id, "midi": p.midi, "text": p.text}) + "\n")
    return paths


def pretrain_config(train: Path, out: Path, steps: int, minilm: Path | None = None,
                    scheme: str = "octuple", dim: int = 64, depth: int = 2, heads: int = 4,
                    max_len: int = 64, text_dim: int = 64, text_length: int = 96,
                    embed_dim: int = 128, dropout: float = 0.0, batch_size: int = 64,
                    lr: float = 2e-3) -> dict[str, Any]:
    """A ``midi-text-tiny`` run: a MIDI-BERT tower from scratch (on Octuple tokens by default:
    they carry the time signature and the real bar lengths, which CP's fixed 4/4 bars lose)
    and, with ``minilm``, the converted MiniLM as a frozen text tower (else a small
    byte-level text tower, trained with it)."""
    from mmenc.builtin.recipes import text_tokenizer, text_tower

    tower = midibert(scheme, dim, depth, heads, 4 * dim, max_len=max_len, emb_dim=32,
                     dropout=dropout, pooler=False)
    text = text_tower(text_dim, 2, heads, 4 * text_dim, max_length=text_length)
    overrides = midi_text(tower, text, text_tokenizer(text_length), embed_dim)
    model: dict[str, Any] = {"recipe": "midi-text-tiny", "overrides": overrides}
    if minilm is not None:
        model.update(warm_start={"text": str(minilm)}, freeze=["towers.text"])
    return {
        "model": model,
        "objectives": [{"name": "contrastive", "modalities": ["midi", "text"]}],
        "data": {"train": str(train), "modalities": ["midi", "text"]},
        "batch_size": batch_size, "steps": steps, "log_every": 25, "seed": 0,
        "optim": {"lr": lr, "warmup_steps": max(1, steps // 20), "weight_decay": 0.05,
                  "min_lr": lr / 50},
        "checkpoint": {"every": max(1, steps), "keep": 1},
        "output_dir": str(out),
        "progress": False,
    }


# -- classification -------------------------------------------------------------------------
def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                 classes: int, steps: int = 300, weight_decay: float = 1e-3) -> torch.Tensor:
    """Multinomial logistic regression (standardised features, full-batch L-BFGS);
    returns the predicted classes of ``x_test``."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    layer = torch.nn.Linear(a.shape[1], classes)
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(a), y_train) \
            + weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return layer(b).argmax(1)


def dance_classification(model: Any, data: FolkData, min_train: int = 20,
                         min_test: int = 5) -> dict[str, Any]:
    """Dance type from the MIDI on the held-out books: linear probes on the model's MIDI
    embeddings and on note features, zero-shot with the text tower, and the majority class."""
    train = [p for p in data.train if p.dance]
    test = [p for p in data.test if p.dance]
    n_train, n_test = Counter(p.dance for p in train), Counter(p.dance for p in test)
    classes = sorted(c for c in n_train if n_train[c] >= min_train and n_test[c] >= min_test)
    train = [p for p in train if p.dance in classes]
    test = [p for p in test if p.dance in classes]
    if len(classes) < 2:
        return {"skipped": "fewer than two dance types with enough tunes"}
    y_train = torch.tensor([classes.index(p.dance) for p in train])
    y_test = torch.tensor([classes.index(p.dance) for p in test])

    def acc(pred: torch.Tensor) -> float:
        return float((pred == y_test).float().mean())

    emb_train = model.encode([p.midi for p in train], "midi", batch_size=64)
    emb_test = model.encode([p.midi for p in test], "midi", batch_size=64)
    meters = sorted({p.meter for p in train})

    def handmade(pairs: list[FolkPair]) -> torch.Tensor:
        rows = []
        for p in pairs:
            f = note_features(str(p.midi))
            onehot = [float(f["meter"] == m) for m in meters]
            rows.append([*f["hist"].tolist(), *onehot])
        return torch.tensor(rows, dtype=torch.float32)

    prompts = model.encode([f"genre: {c}" for c in classes], "text")
    majority = Counter(y_train.tolist()).most_common(1)[0][0]
    return {
        "classes": classes, "train": dict(Counter(p.dance for p in train)),
        "test": dict(Counter(p.dance for p in test)),
        "accuracy": {
            "linear probe on the MIDI embeddings": acc(linear_probe(
                emb_train, y_train, emb_test, len(classes))),
            "zero-shot (text 'genre: <dance>')": acc((emb_test @ prompts.T).argmax(1)),
            "linear probe on pitch classes + meter": acc(linear_probe(
                handmade(train), y_train, handmade(test), len(classes))),
            "majority class": acc(torch.full_like(y_test, majority)),
        },
    }


# -- the pairing ----------------------------------------------------------------------------
def run(out: Path, steps: int = STEPS, minilm: Path | None = None, echo: Echo = print,
        books: Sequence[Path] | None = None, **sizes: Any) -> dict[str, Any]:
    """The whole pairing: convert and split the folk tunes (cached under ``out/midi``), write
    the manifests, pretrain ``midi-text-tiny`` for ``steps`` steps (the text tower from
    ``minilm``, frozen, when given), and evaluate retrieval and dance classification on the
    held-out books next to the baselines. ``books``: the ``.abc`` files to read (default: all
    folk books); ``sizes``: keyword arguments of :func:`pretrain_config`. Returns the report
    (also written to ``out/report.json``)."""
    from mmenc.model import load
    from mmenc.retrieval.evaluate import evaluate_retrieval, read_manifest, write_report
    from mmenc.train import pretrain_afresh

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = folk_tunes(out / "midi", books=books)
    paths = write_manifests(data, out / "data")
    seconds_data = time.perf_counter() - start
    n_books = len({p.book for p in data.pairs}), len({p.book for p in data.test})
    echo(f"  {len(data.pairs)} tunes from {n_books[0]} song books converted "
         f"({sum(data.skipped.values())} skipped: {data.skipped or 'none'}); "
         f"{len(data.train)} training tunes, {len(data.test)} held-out from {n_books[1]} books "
         f"({seconds_data:.0f} s)")
    run_dir = out / "pretrain"
    result, seconds_train = pretrain_afresh(pretrain_config(paths["train"], run_dir, steps,
                                                            minilm, **sizes))
    echo(f"  pretrained midi-text-tiny{' (text tower: MiniLM, frozen)' if minilm else ''}: "
         f"{result.step} steps in {seconds_train:.0f} s (final loss "
         f"{result.metrics.get('loss', float('nan')):.3f})")
    model = load(result.model_dir)
    test_pairs = [{"midi": row["midi"], "text": row["text"]}
                  for row in read_manifest(paths["test"])]
    quiet = {"batch_size": 64, "echo": lambda _: None, "show_progress_bar": False}
    t0 = time.perf_counter()
    reports = {"mmenc midi-text": evaluate_retrieval(model, test_pairs, "midi", "text", **quiet),
               "key + meter from the MIDI": evaluate_retrieval(KeyMeterScorer(), test_pairs,
                                                               "midi", "text", **quiet),
               "random": evaluate_retrieval(RandomScorer(), test_pairs, "midi", "text", **quiet)}
    write_report(reports["mmenc midi-text"], out / "retrieval",
                 {name: rep["metrics"] for name, rep in reports.items()
                  if name != "mmenc midi-text"})
    rows = {f"{name}: {direction}": rep["metrics"][direction]
            for name, rep in reports.items() for direction in ("midi->text", "text->midi")}
    classification = dance_classification(model, data)
    seconds_eval = time.perf_counter() - t0
    report = {
        "task": "music21 folk tunes: MIDI <-> description (title, genre, region, meter, key), "
                "held-out song books",
        "data": {"tunes": len(data.pairs), "train": len(data.train), "test": len(data.test),
                 "books": n_books[0], "test_books": n_books[1], "skipped": data.skipped},
        "steps": result.step, "model": str(result.model_dir),
        "text_tower": "MiniLM-L6 (frozen)" if minilm else "byte-level, from scratch",
        "counts": reports["mmenc midi-text"]["counts"],
        "rows": rows, "dance_classification": classification,
        "seconds": {"data": round(seconds_data, 1), "pretrain": round(seconds_train, 1),
                    "evaluation": round(seconds_eval, 1),
                    "total": round(time.perf_counter() - start, 1)},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_report(report: dict[str, Any], echo: Echo = print) -> None:
    """The retrieval table and the classification accuracies of :func:`run`'s report."""
    from mmenc.demo import table

    echo(table(report["rows"], ("R@1", "R@5", "R@10", "MRR")))
    cls = report["dance_classification"]
    if "accuracy" in cls:
        echo(f"  dance type ({', '.join(cls['classes'])}; {sum(cls['test'].values())} "
             "held-out tunes), accuracy:")
        for name, value in cls["accuracy"].items():
            echo(f"    {name:<40} {value:.3f}")


def demo(out: Path, minilm: Path | None, steps: int | None, echo: Echo,
         with_minilm: bool = True) -> dict[str, Any]:
    """The main job's MIDI pairing (``steps`` None: :data:`STEPS`): the text tower is the
    frozen MiniLM when ``minilm`` is given and ``with_minilm`` (a forward pass over each of
    the 12,000 training descriptions, once), else a byte-level tower trained from scratch."""
    report = run(out, STEPS if steps is None else steps, minilm if with_minilm else None, echo)
    print_report(report, echo)
    return report
