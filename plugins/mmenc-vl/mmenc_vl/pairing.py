"""Image <-> text on emoji: ALBEF and BridgeTower pretrained from scratch, ITC then ITM re-ranking.

The data is mmenc's emoji split (:mod:`mmenc.data.emoji`: every emoji the Noto Color Emoji font
draws, rendered at 64 px, named by its Unicode name; emoji held out by hash, skin-tone variants
of one emoji on one side). Both models are small, randomly initialised, read the
``bert-base-uncased`` WordPiece vocabulary (ALBEF's own tokenizer; the converted MiniLM folder
carries it) and train with ``mmenc pretrain``'s engine on the ``vision-text-pretraining``
objective (ITC + ITM with hard negatives + MLM; ALBEF with momentum distillation and queues).

On the held-out emoji each model retrieves in both directions twice: by the ITC embeddings
alone, and with each query's top ``k`` re-scored by the ITM head (ALBEF's retrieval).

:func:`run_init` starts ALBEF from pretrained towers instead: its text and fusion layers from
the packaged MiniLM, its image tower from the bound dual encoder of :func:`bound_image_start`
(the main job's image tower, trained alone), and measures it against that dual encoder; and
BridgeTower (:func:`bridgetower_minilm`) with the whole MiniLM as its text tower, that image
tower, and optionally its ITC started as the dual encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmenc.errors import ConfigError

from mmenc_vl.recipes import albef_config, bridge, bridgetower_config, clip_vision_tower, vit_tower

Echo = Callable[[str], None]
DEFAULT_STEPS = 300
"""Pretraining steps of each model in the main job."""
RERANK = 16
"""Candidates each query re-scores with the ITM head."""
WORDPIECE = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103, "size": 30522}


def text_tokenizer(vocab: Path, max_length: int = 32) -> dict[str, Any]:
    """BERT's uncased WordPiece from ``vocab`` (an absolute ``vocab.txt``)."""
    return {"tokenizer": "text", "kind": "wordpiece", "vocab": str(Path(vocab).resolve()),
            "max_length": max_length}


def image_tokenizer(size: int) -> dict[str, Any]:
    """ALBEF's pre-training transform without the augmentations: a square resize, CLIP's
    normalisation constants."""
    from mmenc.builtin.recipes import image_tokenizer as base

    return {**base(size), "resize": "square"}


def albef_emoji(vocab: Path, dim: int = 128, image_size: int = 64, patch: int = 8,
                queue_size: int = 1024) -> dict[str, Any]:
    """A small ALBEF: ViT (4 layers), 2 text + 2 fusion BERT layers, ITC width 128."""
    config = albef_config(2, 2, dim, 4, 4 * dim, vit_tower(dim, 4, 4, 4 * dim, image_size, patch),
                          128, vocab_size=WORDPIECE["size"], max_length=32,
                          text_tok=text_tokenizer(vocab), image_tok=image_tokenizer(image_size),
                          queue_size=queue_size,
                          special_ids=(WORDPIECE["pad"], WORDPIECE["cls"], WORDPIECE["mask"]))
    config["init"] = "fan-in"
    return config


def bridgetower_emoji(vocab: Path, dim: int = 128, image_size: int = 64,
                      patch: int = 8) -> dict[str, Any]:
    """A small BridgeTower: text and CLIP-style image towers of 4 layers, 2 bridge layers over
    their top 2, poolers, ITM / MLM heads, ITC width 128."""
    from mmenc.builtin.recipes import text_tower

    text = {**text_tower(dim, 4, 4, 4 * dim, vocab_size=WORDPIECE["size"], max_length=32,
                         pad_id=WORDPIECE["pad"]),
            "padding_aware_positions": False, "max_positions": 34}
    config = bridgetower_config(text, clip_vision_tower(dim, 4, 4, 4 * dim, image_size, patch),
                                bridge(dim, 2, 4, 4 * dim), text_tokenizer(vocab),
                                image_tokenizer(image_size), 128)
    config.update(pretraining=True, itm_head=True, init="fan-in", mask_token_id=WORDPIECE["mask"],
                  special_token_ids=[WORDPIECE[k] for k in ("pad", "cls", "sep")])
    return config


MINILM = {"dim": 384, "depth": 6, "heads": 12, "ffn_dim": 1536}
"""The shapes of the packaged all-MiniLM-L6-v2, which the ALBEF text and fusion layers take."""


def albef_minilm(vocab: Path, text_layers: int = 3, dim: int = 128, image_size: int = 64,
                 patch: int = 8, queue_size: int = 1024,
                 image_tower: dict[str, Any] | None = None) -> dict[str, Any]:
    """ALBEF with MiniLM's shapes on the text side: ``text_layers`` text + ``6 - text_layers``
    fusion layers (width 384, 12 heads, FFN 1536, bert-base-uncased's vocabulary), the
    :func:`albef_emoji` ViT (width ``dim``; or the tower config ``image_tower``, such as
    :func:`bound_vit`) and ITC width 128. Random weights; a ``warm_start: {text: MINILM_DIR}``
    in the model section starts the text and fusion layers from the converted MiniLM."""
    if not 1 <= text_layers < MINILM["depth"]:
        raise ValueError(f"text_layers must be 1 .. {MINILM['depth'] - 1}, got {text_layers}")
    vit = image_tower if image_tower is not None else vit_tower(dim, 4, 4, 4 * dim, image_size,
                                                                patch)
    config = albef_config(text_layers, MINILM["depth"] - text_layers, MINILM["dim"],
                          MINILM["heads"], MINILM["ffn_dim"], vit, 128,
                          vocab_size=WORDPIECE["size"], max_length=32,
                          text_tok=text_tokenizer(vocab), image_tok=image_tokenizer(image_size),
                          queue_size=queue_size,
                          special_ids=(WORDPIECE["pad"], WORDPIECE["cls"], WORDPIECE["mask"]))
    config["init"] = "fan-in"
    return config


def bridgetower_minilm(vocab: Path, image_tower: dict[str, Any] | None = None,
                       fusion_depth: int = 2, itc_start: str = "fresh") -> dict[str, Any]:
    """BridgeTower with MiniLM's shapes on the text side: a 6-layer text tower (width 384, 12
    heads, FFN 1536, bert-base-uncased's vocabulary, mean-pooled for the ITC as MiniLM is),
    the main job's image tower (:func:`bound_vit`, or the tower config ``image_tower``),
    ``fusion_depth`` cross-modal layers of width 384 bridged to the towers' top layers (no
    ``post_norm``: the ViT has its own final norm) and ITC width 384. Random weights; a
    ``warm_start: {text: MINILM_DIR, image: BOUND_DIR}`` starts the towers, and
    ``itc_start="sources"`` their ITC path too."""
    from mmenc.builtin.recipes import text_tower

    text = {**text_tower(MINILM["dim"], MINILM["depth"], MINILM["heads"], MINILM["ffn_dim"],
                         vocab_size=WORDPIECE["size"], max_length=32, pad_id=WORDPIECE["pad"],
                         eps=1e-12),
            "padding_aware_positions": False, "type_vocab_size": 2, "max_positions": 34}
    vision = image_tower if image_tower is not None else bound_vit()
    fusion = {**bridge(MINILM["dim"], fusion_depth, MINILM["heads"], MINILM["ffn_dim"]),
              "post_norm": []}
    config = bridgetower_config(text, vision, fusion, text_tokenizer(vocab),
                                image_tokenizer(int(vision["image_size"])), MINILM["dim"])
    config.update(pretraining=True, itm_head=True, init="fan-in",
                  mask_token_id=WORDPIECE["mask"], itc_start=itc_start,
                  special_token_ids=[WORDPIECE[k] for k in ("pad", "cls", "sep")],
                  pooling={"text": "mean", "image": "cls"})
    return config


def pretrain_config(recipe: str, overrides: dict[str, Any], train: Path, out: Path,
                    steps: int, batch_size: int = 64, lr: float = 3e-4,
                    warm_start: dict[str, str] | None = None,
                    alpha_ramp_steps: int | None = None) -> dict[str, Any]:
    objective: dict[str, Any] = {"name": "vision-text-pretraining",
                                 "modalities": ["text", "image"]}
    if alpha_ramp_steps is not None:
        objective["config"] = {"alpha_ramp_steps": alpha_ramp_steps}
    return {
        "model": {"recipe": recipe, "overrides": overrides, "warm_start": warm_start or {}},
        "objectives": [objective],
        "data": {"train": str(train)},
        "batch_size": batch_size, "steps": steps, "log_every": 25, "seed": 0,
        "optim": {"lr": lr, "warmup_steps": max(1, steps // 20), "weight_decay": 0.02,
                  "min_lr": lr / 20},
        "checkpoint": {"every": max(1, steps // 2), "keep": 1},
        "output_dir": str(out),
    }


class RememberedMatches:
    """``model`` whose ``match_scores`` keeps the score of every (item, item) pair it has run,
    so that the two re-rankings of the same ITC top ``k`` (ITM alone, ITC + ITM) run the
    fusion once per pair. Everything else is the model's."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.scores: dict[tuple[str, Any, str, Any], float] = {}
        self.computed = 0
        """Pairs the fusion has run on."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def match_scores(self, a_items: Any, b_items: Any, *, a_modality: str,
                     b_modality: str) -> Any:
        import torch

        keys = [(a_modality, a, b_modality, b) for a, b in zip(a_items, b_items, strict=True)]
        todo = list(dict.fromkeys(k for k in keys if k not in self.scores))
        if todo:
            new = self.model.match_scores([k[1] for k in todo], [k[3] for k in todo],
                                          a_modality=a_modality, b_modality=b_modality)
            self.scores.update(zip(todo, torch.as_tensor(new).float().flatten().tolist(),
                                   strict=True))
            self.computed += len(todo)
        return torch.tensor([self.scores[k] for k in keys])


def evaluate(model: Any, pairs: list[dict[str, str]], out: Path | None,
             rerank: int = RERANK, baselines: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both directions by ITC alone, and with each query's ITC top ``rerank`` re-scored two
    ways: by the ITM matched probability alone (ALBEF's rule), and by the sum of the ITM and
    ITC logits (ITM log-odds + similarity / temperature, BLIP's combination); each pair's ITM
    score is computed once for both. With ``out``, the reports and charts go to ``out/itm``
    and ``out/itc+itm``, with ``baselines`` (name -> direction -> metrics) drawn on them."""
    from mmenc.retrieval.evaluate import evaluate_retrieval, write_report

    remembered = RememberedMatches(model)
    itm = evaluate_retrieval(remembered, pairs, "image", "text", batch_size=64, rerank=rerank,
                             echo=lambda _: None)
    both = evaluate_retrieval(remembered, pairs, "image", "text", batch_size=64,
                              rerank=rerank, rerank_itc_weight="auto", echo=lambda _: None)
    if out is not None:
        write_report(itm, out / "itm", baselines)
        write_report(both, out / "itc+itm", baselines)
    return {"itc": itm["metrics"], "itm": itm.get("metrics_rerank"),
            "itc+itm": both.get("metrics_rerank"), "rerank": itm.get("rerank"),
            "counts": itm["counts"]}


def emoji_split(out: Path, data: str | Path | None) -> tuple[Path, list[dict[str, str]], int,
                                                                int]:
    """The emoji manifests under ``data`` (default ``out/data``; images already there are
    reused): ``(training manifest, held-out image/text pairs, training rows, emoji the font
    cannot draw)``."""
    from mmenc.data.emoji import write_emoji_manifests
    from mmenc.retrieval.evaluate import read_manifest

    folder = out / "data" if data is None else Path(data)
    train, test, missing = write_emoji_manifests(folder)
    pairs = [{"image": str(folder / row["image"]), "text": row["text"]}
             for row in read_manifest(test)]
    return train, pairs, sum(1 for _ in train.open()), missing


def run(out: Path, vocab: Path, steps: int = DEFAULT_STEPS, echo: Echo = print,
        models: tuple[str, ...] = ("albef", "bridgetower"), batch_size: int = 64,
        rerank: int = RERANK, data: Path | None = None) -> dict[str, Any]:
    """Pretrain each of ``models`` for ``steps`` on the training emoji and evaluate on the
    held-out ones; ``vocab`` is a BERT-uncased ``vocab.txt``; ``data`` the folder of the
    rendered emoji and manifests (default ``out/data``; images already there are reused)."""
    from mmenc.model import load
    from mmenc.train import pretrain_afresh

    out = Path(out)
    train, pairs, n_train, missing = emoji_split(out, data)
    echo(f"  {n_train} training and {len(pairs)} held-out emoji ({missing} the font cannot draw)")
    builders = {"albef": ("albef-tiny", albef_emoji), "bridgetower": ("bridgetower-tiny",
                                                                      bridgetower_emoji)}
    from mmenc.demo import EMOJI_BASELINES

    baselines = {name: {"image->text": m} for name, m in EMOJI_BASELINES.items()}
    results: dict[str, Any] = {"task": "emoji image <-> name (held-out emoji)",
                               "train_items": n_train, "test_items": len(pairs), "rerank": rerank}
    for name in models:
        recipe, build = builders[name]
        run_dir = out / name
        result, seconds = pretrain_afresh(pretrain_config(
            recipe, build(vocab), train, run_dir, steps, batch_size))
        metrics = result.metrics
        echo(f"  {name}: {result.step} steps in {seconds:.0f} s (loss {metrics['loss']:.3f}: "
             + ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in metrics.items()
                         if k.split("/")[-1] in ("loss_itc", "loss_itm", "loss_mlm"))
             + ")")
        if result.model_dir is None:
            raise RuntimeError(f"{run_dir}: the run saved no model")
        model = load(result.model_dir).eval()
        report = evaluate(model, pairs, run_dir / "retrieval", rerank, baselines)
        results[name] = {"steps": result.step, "seconds": round(seconds, 1),
                         "skipped": result.skipped, "model": str(result.model_dir), **report}
        for direction in ("image->text", "text->image"):
            echo(f"    {direction}: " + _cells(report, direction, rerank))
    results["baselines"] = EMOJI_BASELINES
    echo("  baselines (image -> name): " + ", ".join(
        f"{name} R@1 {m['R@1']:.3f} MRR {m['MRR']:.3f}" for name, m in EMOJI_BASELINES.items()))
    return results


def demo(out: Path, minilm: Path | None, steps: int | None, echo: Echo) -> dict[str, Any]:
    """The main job's vision-text pairing: :func:`run` with the WordPiece vocabulary of the
    packaged all-MiniLM-L6-v2 (``bert-base-uncased``'s) and ``steps`` (None:
    :data:`DEFAULT_STEPS`); ``minilm`` is not used (both models start from scratch). The
    emoji are read from the main job's ``data`` folder next to ``out``."""
    from mmenc.demo import packaged_minilm

    out = Path(out)
    return run(out, packaged_minilm() / "vocab.txt", DEFAULT_STEPS if steps is None else steps,
               echo, data=out.parent / "data")


INIT_VARIANTS: dict[str, dict[str, Any]] = {
    "scratch 3+3": {"text_layers": 3, "warm": False},
    "MiniLM 3+3": {"text_layers": 3, "warm": True},
    "MiniLM 4+2": {"text_layers": 4, "warm": True},
    "MiniLM 3+3, bound ViT from scratch": {"text_layers": 3, "warm": True, "image": "random"},
    "MiniLM 3+3 + bound image tower": {"text_layers": 3, "warm": True, "image": "warm"},
    "BridgeTower: MiniLM + bound image tower, ITC from both": {
        "model": "bridgetower", "warm": True, "image": "warm", "itc_start": "sources"},
    "BridgeTower: MiniLM + bound image tower, fresh ITC": {
        "model": "bridgetower", "warm": True, "image": "warm", "itc_start": "fresh"},
    "BridgeTower: from scratch": {"model": "bridgetower", "warm": False, "image": "random"},
}
"""ALBEF with MiniLM's shapes: from random weights, or its text and fusion layers from MiniLM
(text + fusion layers); ``model: bridgetower``, :func:`bridgetower_minilm` (the whole
MiniLM as its text tower, ``itc_start`` as given). ``image``: ``"random"``, the main job's
image tower shape
(:func:`bound_vit`) from random weights; ``"warm"``, that tower from a saved model (the
``image`` of :func:`run_init`, such as :func:`bound_image_start`'s); absent, the
:func:`albef_emoji` ViT from random weights."""


def bound_vit() -> dict[str, Any]:
    """The image tower config of the main job's bound model (:func:`mmenc.bind.job.tower_specs`:
    a ViT of width 128, 4 layers, 2 heads, FFN 512, 64 px in 8 px patches)."""
    from mmenc.bind.job import tower_specs

    return dict(tower_specs(Path("unused"), 4.0)["image"]["overrides"]["towers"]["image"])


def bound_image_start(out: Path, minilm: Path, steps: int = 220, echo: Echo = print,
                      data: Path | None = None) -> dict[str, Any]:
    """An image tower to start ALBEF from: a bound model (:mod:`mmenc.bind`) of the emoji
    images alone against the frozen MiniLM hub ``minilm`` (the converted folder), its tower,
    batch (96), rate (AdamW 1e-3, 20 warm-up steps, cosine), augmentation and loss those of
    the main job's image tower (:func:`mmenc.bind.job.bind_config`), ``steps`` steps, on the
    training emoji of :func:`emoji_split` (the split of the main job and of :func:`run_init`).
    The model goes to ``out/bound-image/model``; its held-out retrieval, both ways, is
    measured as :func:`run_init` measures ALBEF's ITC (the dual encoder to beat).

    Returns:
        ``{"model", "steps", "seconds", "cpu_seconds", "itc", "chance", "counts"}``
        (``cpu_seconds``: the process's CPU time for the training, hub included).
    """
    import time

    from mmenc.bind.job import bind_config, tower_specs
    from mmenc.bind.train import train_bound
    from mmenc.model import load
    from mmenc.retrieval.evaluate import evaluate_retrieval

    out = Path(out)
    train, pairs, n_train, _ = emoji_split(out, data)
    spec = tower_specs(Path(minilm), 4.0)["image"]
    config = bind_config({"emoji": {"train": str(train)}}, {"image": spec}, out,
                         {"image": steps, "pair": 0})
    config.update(hub={"name": "minilm", "path": str(minilm)},
                  output_dir=str(out / "bound-image"), cache_dir=str(out / "hub-cache"))
    cpu = time.process_time()
    result = train_bound(config, echo=echo)
    cpu = time.process_time() - cpu
    report = evaluate_retrieval(load(result.model_dir).eval(), pairs, "image", "text",
                                batch_size=64, echo=lambda _: None)
    for direction, m in report["metrics"].items():
        echo(f"  bound image tower, {direction}: R@1 {m['R@1']:.3f} MRR {m['MRR']:.3f}")
    return {"model": str(result.model_dir), "steps": steps, "train_items": n_train,
            "seconds": round(result.seconds, 1), "cpu_seconds": round(cpu, 1),
            "itc": report["metrics"], "chance": report["chance"], "counts": report["counts"]}


def init_config(name: str, out: Path, train: Path, minilm: Path, steps: int,
                batch_size: int, lr: float, ramp: int,
                image: Path | None = None) -> dict[str, Any]:
    """The ``mmenc pretrain`` configuration of :data:`INIT_VARIANTS` ``name`` in ``out``:
    ``steps`` of ``batch_size`` pairs of the manifest ``train`` at ``lr``, the distillation
    ramp over ``ramp`` steps; ``minilm`` the converted MiniLM, ``image`` the saved model whose
    image tower a ``"warm"`` variant takes."""
    from mmenc.demo import packaged_minilm

    if name not in INIT_VARIANTS:
        raise ConfigError(f"ALBEF init variant {name!r}: not one of {', '.join(INIT_VARIANTS)}")
    variant = INIT_VARIANTS[name]
    vit = variant.get("image")
    warm: dict[str, str] = {"text": str(minilm)} if variant["warm"] else {}
    if vit == "warm":
        if image is None:
            raise ConfigError(f"ALBEF init variant {name!r} starts its image tower from a "
                              "saved model: give image (a model folder)")
        warm["image"] = str(image)
    vocab = packaged_minilm() / "vocab.txt"  # the scratch models' WordPiece: MiniLM's own
    if variant.get("model") == "bridgetower":
        bridge_overrides = bridgetower_minilm(vocab, bound_vit(),
                                              itc_start=str(variant.get("itc_start", "fresh")))
        return pretrain_config("bridgetower-tiny", bridge_overrides, train, out, steps,
                               batch_size, lr, warm or None)
    overrides = albef_minilm(vocab, int(variant["text_layers"]),
                             image_tower=bound_vit() if vit else None)
    return pretrain_config("albef-tiny", overrides, train, out, steps, batch_size, lr,
                           warm or None, ramp)


def _cells(report: dict[str, Any], direction: str, rerank: int) -> str:
    cells = []
    for label, key in (("ITC", "itc"), (f"top-{rerank} ITM", "itm"),
                       (f"top-{rerank} ITC+ITM", "itc+itm")):
        m = (report.get(key) or {}).get(direction)
        if m:
            cells.append(f"{label} R@1 {m['R@1']:.3f} MRR {m['MRR']:.3f}")
    return " | ".join(cells)


def run_init(out: Path, minilm: Path, steps: int = 200, batch_size: int = 64,
             variants: tuple[str, ...] = tuple(INIT_VARIANTS)[:3], lr: float = 1e-4,
             rerank: int = RERANK, curve: int = 0, echo: Echo = print,
             data: Path | None = None, image: Path | None = None) -> dict[str, Any]:
    """ALBEF from scratch against ALBEF whose towers start from pretrained ones, on the
    emoji split: each of ``variants`` (keys of :data:`INIT_VARIANTS`) pretrains ``steps`` of
    ``batch_size`` pairs at ``lr`` (same data order) with ALBEF's distillation ramp over the
    first epoch, then retrieves the held-out emoji both ways by ITC, and with each query's
    ITC top ``rerank`` re-ranked by the ITM probability (ALBEF's retrieval) and by the sum
    of the ITM and ITC logits (:func:`evaluate`). ``minilm`` is the converted MiniLM folder
    (:func:`mmenc.demo.convert_minilm`), ``image`` the saved model whose image tower the
    ``"warm"`` variants take (:func:`bound_image_start`). ``curve`` > 0 also keeps that many
    evenly spaced checkpoints of each run and evaluates them the same way (a curve of
    held-out recall against steps). CPU times are the process's (``time.process_time``).
    The results also go to ``out/init.json``."""
    import json
    import time

    from mmenc.demo import EMOJI_BASELINES
    from mmenc.model import load
    from mmenc.train import pretrain_afresh

    out = Path(out)
    unknown = [v for v in variants if v not in INIT_VARIANTS]
    if unknown:
        raise ConfigError(f"ALBEF init variants {unknown}: not in {', '.join(INIT_VARIANTS)}")
    train, pairs, n_train, _ = emoji_split(out, data)
    epoch = max(1, n_train // batch_size)
    baselines = {name: {"image->text": m} for name, m in EMOJI_BASELINES.items()}
    results: dict[str, Any] = {"task": "emoji image <-> name (held-out emoji)",
                               "train_items": n_train, "test_items": len(pairs),
                               "steps": steps, "batch_size": batch_size, "lr": lr,
                               "alpha_ramp_steps": epoch, "rerank": rerank,
                               "image": None if image is None else str(image)}
    for name in variants:
        run_dir = out / name.replace(" + ", "-").replace(", ", "-").replace(" ", "-") \
            .replace("+", "p")
        config = init_config(name, run_dir, train, minilm, steps, batch_size, lr, epoch, image)
        if curve:
            config["checkpoint"] = {"every": -(-steps // curve), "keep": curve}
        cpu = time.process_time()
        result, seconds = pretrain_afresh(config)
        cpu = time.process_time() - cpu
        metrics = result.metrics
        echo(f"  {name}: {result.step} steps in {seconds:.0f} s, {cpu:.0f} CPU-s (" + ", ".join(
            f"{k.split('/')[-1]} {v:.3f}" for k, v in metrics.items()
            if k.split("/")[-1] in ("loss_itc", "loss_itm", "loss_mlm", "mlm_acc")) + ")")
        if result.model_dir is None:
            raise RuntimeError(f"{run_dir}: the run saved no model")
        eval_cpu = time.process_time()
        points: dict[int, dict[str, Any]] = {}
        if curve:
            for ckpt in sorted(run_dir.glob("ckpt-*")):
                step = int(ckpt.name.split("-")[-1])
                if step < result.step:
                    points[step] = evaluate(load(ckpt / "model").eval(), pairs, None, rerank)
        report = evaluate(load(result.model_dir).eval(), pairs, run_dir / "retrieval", rerank,
                          baselines)
        points[result.step] = report
        eval_cpu = time.process_time() - eval_cpu
        keys = ("itc", "itm", "itc+itm")
        entry: dict[str, Any] = {
            "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
            "eval_cpu_seconds": round(eval_cpu, 1), "model": str(result.model_dir),
            "train_metrics": metrics, **report,
            "curve": {step: {k: {d: {m: p[k][d][m] for m in ("R@1", "MRR")}
                                 for d in p[k]} for k in keys if p.get(k)}
                      for step, p in sorted(points.items())}}
        results[name] = entry
        for step, p in sorted(points.items()):
            for direction in ("image->text", "text->image"):
                echo(f"    step {step}, {direction}: {_cells(p, direction, rerank)}")
        (out / "init.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    results["baselines"] = EMOJI_BASELINES
    (out / "init.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results
