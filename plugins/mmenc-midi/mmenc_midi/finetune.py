"""Dance-type classification of the folk tunes: what a pretrained MIDI-BERT start is worth.

The labels are the dance types of :mod:`mmenc_midi.data` (reel, jig, hornpipe, ...: the ABC
header's ``R:`` field, else the title), kept where a type has enough tunes on both sides of the
song-book split. A MIDI-BERT model is evaluated on the held-out books in two ways:

- **linear probe**: the encoder frozen, the mean of its token states over the real notes,
  multinomial logistic regression on standardised features (scikit-learn);
- **fine-tune**: the whole encoder and MIDI-BERT's sequence head
  (:class:`~mmenc_midi.objectives.SequenceClassifier`) trained with cross-entropy for a fixed
  number of steps (AdamW, warm-up then linear decay, seeded batches).

Each next to the majority class and a cheap baseline: logistic regression on the meter of the
MIDI time signature (one-hot) and a histogram of note durations. :func:`compare` runs all of
them for named starts (a pretrained folder, a from-scratch model of the same configuration) on
the same data and steps; ``python -m mmenc_midi.finetune`` is its command line.

Axis legend: ``b`` batch, ``n`` notes, ``f`` fields, ``d`` width, ``c`` classes.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc_midi.data import FolkData, dance_type

Echo = Callable[[str], None]
_FIELD = re.compile(r"^([A-Za-z]):\s*(.*)$")
# note durations in quarter notes, log2, from a 32nd (-3) to 4 quarters (2): bin edges
_DURATION_EDGES = np.linspace(-3.25, 2.25, 12)


# -- labels ---------------------------------------------------------------------------------
def dance_label(abc: str) -> str:
    """The dance type of one tune from its ABC text: the first ``R:`` field of the header
    (``X:`` to ``K:``), else the first ``T:`` (title); "" when neither names one of
    :data:`mmenc_midi.data.GENRES`."""
    fields: dict[str, str] = {}
    for line in abc.splitlines():
        match = _FIELD.match(line.strip())
        if not match:
            continue
        name = match.group(1).upper()
        fields.setdefault(name, match.group(2))
        if name == "K":
            break
    return dance_type(fields.get("R", "")) or dance_type(fields.get("T", ""))


@dataclass
class DanceSet:
    """MIDI files with dance labels: ``classes`` sorted, labels as indices into them."""

    classes: list[str]
    train: list[str]
    y_train: list[int]
    test: list[str]
    y_test: list[int]

    def counts(self) -> dict[str, dict[str, int]]:
        """Tunes per class on each side."""
        return {side: {self.classes[k]: n for k, n in sorted(Counter(ys).items())}
                for side, ys in (("train", self.y_train), ("test", self.y_test))}


def dance_set(data: FolkData, min_train: int = 20, min_test: int = 5) -> DanceSet:
    """The labelled tunes of the folk data: the dance types with at least ``min_train``
    training and ``min_test`` held-out tunes (fewer is too few to train or to score).

    Raises:
        ValueError: fewer than two types qualify.
    """
    n_train = Counter(p.dance for p in data.train if p.dance)
    n_test = Counter(p.dance for p in data.test if p.dance)
    classes = sorted(c for c in n_train if n_train[c] >= min_train and n_test[c] >= min_test)
    if len(classes) < 2:
        raise ValueError(f"fewer than two dance types have {min_train} training and {min_test} "
                         f"held-out tunes (training: {dict(n_train)}, held out: {dict(n_test)})")
    train = [p for p in data.train if p.dance in classes]
    test = [p for p in data.test if p.dance in classes]
    return DanceSet(classes, [p.midi for p in train], [classes.index(p.dance) for p in train],
                    [p.midi for p in test], [classes.index(p.dance) for p in test])


# -- scores and baselines -------------------------------------------------------------------
def scores(y_true: Sequence[int], y_pred: Sequence[int], classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 (every class weighs the same; a class never predicted scores 0)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(classes)),
                                       average="macro", zero_division=0))}


def logistic_probe(x_train: np.ndarray, y_train: Sequence[int], x_test: np.ndarray,
                   c: float = 1.0) -> np.ndarray:
    """Multinomial logistic regression on standardised features; the predicted classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    probe.fit(x_train, np.asarray(y_train))
    return np.asarray(probe.predict(x_test))


def majority(y_train: Sequence[int], n_test: int) -> np.ndarray:
    """The most frequent training class for every test item."""
    return np.full(n_test, Counter(y_train).most_common(1)[0][0])


def note_features(path: str | Path, meters: Sequence[str]) -> np.ndarray:
    """The cheap baseline's features of one MIDI file: the meter of its first time signature
    one-hot over ``meters`` and the share of its notes in each duration bin (log2 of the
    duration in quarter notes, 32nd to whole note)."""
    from mmenc_midi.midi import load_midi

    score = load_midi(path)
    durations = [track.notes.numpy()["duration"] for track in score.tracks
                 if not track.is_drum and len(track.notes)]
    q = np.concatenate(durations).astype(float) / score.ticks_per_quarter
    hist, _ = np.histogram(np.log2(np.maximum(q, 1e-3)), bins=_DURATION_EDGES)
    hist = hist / max(hist.sum(), 1)
    meter = ""
    if len(score.time_signatures):
        ts = score.time_signatures[0]
        meter = f"{ts.numerator}/{ts.denominator}"
    return np.concatenate([[float(meter == m) for m in meters], hist])


def feature_baseline(data: DanceSet) -> np.ndarray:
    """Meter + note-duration histogram + logistic regression: the held-out predictions."""
    from mmenc_midi.midi import load_midi

    def meter(path: str) -> str:
        ts = load_midi(path).time_signatures
        return f"{ts[0].numerator}/{ts[0].denominator}" if len(ts) else ""

    meters = sorted({meter(p) for p in data.train})
    x_train = np.stack([note_features(p, meters) for p in data.train])
    x_test = np.stack([note_features(p, meters) for p in data.test])
    return logistic_probe(x_train, data.y_train, x_test)


# -- the encoder ----------------------------------------------------------------------------
def tokenize(model: Any, items: Sequence[Any], batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """All items as one ``ids [N n f]`` and ``mask [N n]`` (padded to the model's window)."""
    from mmenc.batch import TokenBatch

    ids, masks = [], []
    n = int(model.tokenizers["midi"].max_len)
    for i in range(0, len(items), batch_size):
        batch: TokenBatch = model.tokenize(list(items[i:i + batch_size]), "midi")
        assert batch.ids is not None and batch.mask is not None
        pad = torch.tensor(batch.pad_id).view(1, 1, -1)  # [1 1 f]
        extra = n - batch.ids.shape[1]
        ids.append(torch.cat([batch.ids, pad.expand(len(batch.ids), extra, -1)], 1))
        masks.append(F.pad(batch.mask, (0, extra), value=False))
    return torch.cat(ids), torch.cat(masks)


@torch.no_grad()
def pooled_features(model: Any, ids: Tensor, mask: Tensor, batch_size: int = 128) -> Tensor:
    """The frozen encoder's mean token state over the real notes, ``[N d]``."""
    from mmenc.nn import masked_mean

    was_training = model.training
    model.eval()
    out = [masked_mean(model.forward_ids(ids[i:i + batch_size], mask[i:i + batch_size]).hidden,
                       mask[i:i + batch_size]) for i in range(0, len(ids), batch_size)]
    model.train(was_training)
    return torch.cat(out)


class DanceClassifier(nn.Module):
    """A MIDI-BERT encoder and MIDI-BERT's sequence head (attentive pooling, then an MLP)."""

    def __init__(self, encoder: Any, classes: int) -> None:
        from mmenc_midi.objectives import SequenceClassifier

        super().__init__()
        self.encoder = encoder
        self.head = SequenceClassifier(encoder.width, classes)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Inputs: ``ids [b n f]``, ``mask [b n]``. Returns: logits ``[b c]``."""
        return self.head(self.encoder.forward_ids(ids, mask).hidden, mask)  # type: ignore[no-any-return]


def finetune(model: Any, ids: Tensor, mask: Tensor, labels: Sequence[int], classes: int,
             steps: int = 150, batch_size: int = 32, lr: float = 5e-4, warmup: float = 0.1,
             weight_decay: float = 0.01, seed: int = 0) -> tuple[DanceClassifier, list[float]]:
    """Fine-tune ``model`` (changed in place) with a new sequence head for ``steps`` steps.

    Batches are drawn from seeded permutations of the training items; the learning rate warms
    up over the first ``warmup`` share of the steps and decays linearly to 0.

    Returns:
        the classifier and the training loss of every step.
    """
    torch.manual_seed(seed)
    clf = DanceClassifier(model, classes)
    y = torch.as_tensor(list(labels))
    decay = [p for p in clf.parameters() if p.dim() >= 2]
    rest = [p for p in clf.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr)
    ramp = max(1, int(steps * warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / ramp, max(0.0, (steps - s) / max(1, steps - ramp))))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    at, losses = 0, []
    clf.train()
    for _ in range(steps):
        if at + batch_size > len(order):
            order, at = torch.randperm(len(y), generator=g), 0
        pick = order[at:at + batch_size]
        at += batch_size
        loss = F.cross_entropy(clf(ids[pick], mask[pick]), y[pick])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tuning diverged at step {len(losses)}: loss {loss}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    clf.eval()
    return clf, losses


@torch.no_grad()
def predict(clf: DanceClassifier, ids: Tensor, mask: Tensor, batch_size: int = 128) -> np.ndarray:
    """The classifier's classes for all items."""
    clf.eval()
    out = [clf(ids[i:i + batch_size], mask[i:i + batch_size]).argmax(1)
           for i in range(0, len(ids), batch_size)]
    return torch.cat(out).numpy()


def fresh_copy(model: Any, seed: int = 0) -> Any:
    """A model of the same recipe and configuration with new random weights."""
    import mmenc

    torch.manual_seed(seed)
    return mmenc.create_model(model.recipe, **model.config)


# -- the comparison -------------------------------------------------------------------------
def compare(starts: dict[str, Callable[[], Any]], data: DanceSet, steps: int = 150,
            probe_only: Sequence[str] = (), echo: Echo = print,
            **finetune_options: Any) -> dict[str, Any]:
    """Linear probe and fine-tune of every start (a name -> a function building the model),
    next to the majority class and the meter + duration baseline, on the same data and steps.

    Args:
        starts: models to evaluate; each is built afresh for the probe and the fine-tune.
        data: the labelled tunes.
        steps: fine-tuning steps (the same for every start).
        probe_only: starts that are only probed (checkpoints of a curve).
        finetune_options: keyword arguments of :func:`finetune`.
    Returns:
        ``{"classes", "counts", "steps", "rows": {name: {accuracy, macro_f1, seconds}},
        "losses": {name: [first, last 10% mean]}}``.
    """
    k = len(data.classes)
    rows: dict[str, dict[str, float]] = {}
    losses: dict[str, list[float]] = {}
    rows["majority class"] = scores(data.y_test, majority(data.y_train, len(data.y_test)), k)
    t0 = time.perf_counter()
    rows["meter + note durations, logistic regression"] = {
        **scores(data.y_test, feature_baseline(data), k),
        "seconds": round(time.perf_counter() - t0, 1)}
    echo(f"  baselines: {rows}")
    tokens: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
    for name, build in starts.items():
        model = build()
        if tokens is None:
            tokens = (*tokenize(model, data.train), *tokenize(model, data.test))
        ids_tr, mask_tr, ids_te, mask_te = tokens
        t0 = time.perf_counter()
        x_tr = pooled_features(model, ids_tr, mask_tr).numpy()
        x_te = pooled_features(model, ids_te, mask_te).numpy()
        pred = logistic_probe(x_tr, data.y_train, x_te)
        rows[f"{name}: linear probe"] = {**scores(data.y_test, pred, k),
                                         "seconds": round(time.perf_counter() - t0, 1)}
        echo(f"  {name}: linear probe {rows[f'{name}: linear probe']}")
        if name in probe_only:
            continue
        t0 = time.perf_counter()
        clf, trace = finetune(model, ids_tr, mask_tr, data.y_train, k, steps,
                              **finetune_options)
        rows[f"{name}: fine-tune"] = {**scores(data.y_test, predict(clf, ids_te, mask_te), k),
                                      "seconds": round(time.perf_counter() - t0, 1)}
        tail = trace[-max(1, len(trace) // 10):]
        losses[name] = [round(trace[0], 4), round(float(np.mean(tail)), 4)]
        echo(f"  {name}: fine-tune {rows[f'{name}: fine-tune']} (loss {losses[name]})")
    return {"classes": data.classes, "counts": data.counts(), "steps": steps, "rows": rows,
            "losses": losses}


def print_table(report: dict[str, Any], echo: Echo = print) -> None:
    """The report's rows as a Markdown table."""
    echo("| held out | accuracy | macro-F1 |")
    echo("|---|---|---|")
    for name, row in report["rows"].items():
        echo(f"| {name} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} |")


# -- command line ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``data OUT``: convert the folk tunes and write the manifests; ``eval OUT --start
    NAME=MODEL_DIR ...``: the comparison on dance types, each start next to a from-scratch
    model of its configuration (``--scratch``)."""
    parser = argparse.ArgumentParser(prog="python -m mmenc_midi.finetune",
                                     description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_data = sub.add_parser("data", help="convert the folk tunes, write the manifests")
    p_data.add_argument("out", type=Path)
    p_eval = sub.add_parser("eval", help="probe and fine-tune on dance types")
    p_eval.add_argument("out", type=Path, help="the folder `data` wrote")
    p_eval.add_argument("--start", action="append", default=[], metavar="NAME=MODEL_DIR",
                        help="a saved MIDI-BERT model to start from (repeatable)")
    p_eval.add_argument("--probe-only", action="append", default=[], metavar="NAME",
                        help="a start that is only probed, not fine-tuned")
    p_eval.add_argument("--scratch", action="store_true",
                        help="add a from-scratch start of the first start's configuration")
    p_eval.add_argument("--steps", type=int, default=150)
    p_eval.add_argument("--lr", type=float, default=5e-4)
    p_eval.add_argument("--batch-size", type=int, default=32)
    p_eval.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)

    import mmenc

    # every option is checked before the corpus is converted or read
    starts: dict[str, Callable[[], Any]] = {}
    if args.command == "eval":
        for item in args.start:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                parser.error(f"--start takes NAME=MODEL_DIR, got {item!r}")
            starts[name] = lambda folder=folder: mmenc.load(folder)
        if args.scratch:
            if not starts:
                parser.error("--scratch copies the configuration of a --start")
            first = next(iter(starts.values()))
            starts["from scratch"] = lambda: fresh_copy(first())
        unknown = sorted(set(args.probe_only) - set(starts))
        if unknown:
            parser.error(f"--probe-only names no --start: {', '.join(unknown)}")
        if args.steps < 1 or args.batch_size < 1 or not args.lr > 0:
            parser.error("--steps, --batch-size and --lr must be positive")

    from mmenc_midi.data import folk_tunes
    from mmenc_midi.pairing import write_manifests

    data = folk_tunes(args.out / "midi")
    if args.command == "data":
        paths = write_manifests(data, args.out / "data")
        print(f"{len(data.train)} training tunes -> {paths['train']}, "
              f"{len(data.test)} held-out -> {paths['test']} (skipped: {data.skipped})")
        return 0
    labelled = dance_set(data)
    print(f"dance types {labelled.counts()}")
    report = compare(starts, labelled, args.steps, args.probe_only, lr=args.lr,
                     batch_size=args.batch_size)
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
