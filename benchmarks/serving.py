"""Serving speed on CPU: eager fp32 against ONNX Runtime fp32 and int8, and
sentence-transformers' ONNX backend, on real corpora, in one run.

Corpora and towers:
  * text: the first ``--items`` texts of the standard library's docstring -> function pairs
    (docstrings, then function sources: a few tokens to the 256-token truncation), with the
    packaged all-MiniLM-L6-v2 converted by ``mmenc.convert("hf-bert", ...)``;
  * image: ``--images`` emoji images (Noto Color Emoji) through a ViT-S/16 @224 image tower
    (``vit-tiny`` scaled up, seeded random weights: speed and agreement do not depend on
    training);
  * audio: ``--clips`` speech prompts from /usr/share/asterisk/sounds/en (the first by file
    name of at most 10 s, BEATs' pre-training length; decoded and resampled to 16 kHz once,
    ordered by length so that a batch pads little) through BEATs base (seeded random weights).
    Timed from the waveform: the fbank and its patches (Python, the tokenizer), then the graph
    from the patches to the embedding; the int8 graph is calibrated on the next 8 prompts.
Each tower is exported with ``mmenc export`` (fp32 and int8; the text int8 graph calibrated on
training-split texts). Contenders embed the whole corpus with ``encode`` (batches of
``--batch-size``, L2-normalised): ``eager`` (torch fp32), ``ort`` (``backend="onnx"``),
``ort int8`` (``backend="onnx-int8"``), and for text sentence-transformers with
``backend="onnx"`` on the same MiniLM folder (``st onnx``) and its
``export_dynamic_quantized_onnx_model`` int8 graph (``st onnx int8``; needs
``pip install "sentence-transformers[onnx]"``, skipped when missing).

Timings alternate between contenders (``--repeats`` rounds) on 2 threads
(``torch.set_num_threads(2)``, ONNX Runtime ``intra_op_num_threads=2``). Reported: median wall
and median process CPU seconds, items/s from the median wall, speed-ups over eager, and each
contender's agreement with eager fp32 (max abs diff, mean / min cosine). Then held-out code
search (docstring -> function on the stdlib test modules) R@10 of fp32 and int8.

    HF_HUB_OFFLINE=1 python benchmarks/serving.py           # every part: 815 CPU-seconds measured
    HF_HUB_OFFLINE=1 python benchmarks/serving.py --quick   # a smoke test of every path
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

THREADS = 2
MAX_CLIP_SECONDS = 10.0
QUICK = {"items": 48, "images": 4, "clips": 4, "repeats": 1, "search_limit": 32}


def text_corpus(n: int) -> list[str]:
    from mmenc.data.stdlib import stdlib_pairs

    pairs = list(stdlib_pairs())[: (n + 1) // 2]
    return ([p.docstring for p in pairs] + [p.code for p in pairs])[:n]


def calibration_texts(n: int) -> list[str]:
    """Training-split texts (never the held-out modules scored below)."""
    from mmenc.data.stdlib import stdlib_pairs

    train = [p for p in stdlib_pairs() if not p.test][::7][: n // 2]
    return [p.docstring for p in train] + [p.code for p in train]


def emoji_images(n: int) -> list[Any]:
    from mmenc.data.emoji import emoji_dataset

    return [image for _, image in emoji_dataset(size=64)[:n]]


def speech_clips(n: int, skip: int = 0) -> list[Any]:
    """Prompts ``skip`` to ``skip + n`` of at most ``MAX_CLIP_SECONDS`` (by file name) as 16 kHz
    waveforms, shortest first. Longer prompts (up to 73 s) would be cut to the tokenizer's 30 s
    and pad every clip of their batch to 3,000 patches."""
    import soundfile
    from mmenc_audio.audio import load_audio

    folder = Path("/usr/share/asterisk/sounds/en")
    files = [p for p in sorted(folder.glob("*.wav"))
             if soundfile.info(str(p)).duration <= MAX_CLIP_SECONDS][skip : skip + n]
    return sorted((load_audio(str(p)) for p in files), key=len)


def vit_small() -> dict[str, Any]:
    trunk = {"dim": 384, "depth": 12, "heads": 6, "ffn_dim": 1536}
    return {"towers": {"image": {"trunk": trunk, "image_size": 224, "patch_size": 16}},
            "tokenizers": {"image": {"size": 224}}, "embed_dim": 384}


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, list]]:
    times: dict[str, dict[str, list]] = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
    return times


def agreement(a: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    cos = F.cosine_similarity(a.float(), ref.float(), dim=-1)
    return {"max_abs_diff": float((a.float() - ref.float()).abs().max()),
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def st_contenders(folder: Path, texts: list[str], bs: int, work: Path
                  ) -> dict[str, Callable[[], torch.Tensor]]:
    """sentence-transformers' ONNX backend (fp32 and its dynamic int8) on a copy of the
    packaged MiniLM folder (the export writes into the folder)."""
    try:
        import optimum.onnxruntime  # noqa: F401
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    except ImportError as exc:
        print(f"sentence-transformers ONNX skipped ({exc}); "
              "pip install 'sentence-transformers[onnx]'", flush=True)
        return {}
    copy = work / "st-minilm"
    if not copy.exists():
        shutil.copytree(folder, copy)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
    fp32 = SentenceTransformer(str(copy), backend="onnx", device="cpu", model_kwargs=kwargs)
    if not (copy / "onnx" / "model.onnx").is_file():
        fp32.save_pretrained(str(copy))  # keeps onnx/model.onnx for the quantisation
    if not list((copy / "onnx").glob("model_*int8_avx2.onnx")):  # this CPU has AVX2
        export_dynamic_quantized_onnx_model(fp32, "avx2", str(copy))
    (quantised,) = (copy / "onnx").glob("model_*int8_avx2.onnx")
    int8 = SentenceTransformer(str(copy), backend="onnx", device="cpu",
                               model_kwargs={**kwargs, "file_name": f"onnx/{quantised.name}"})
    return {
        "st onnx": lambda: torch.as_tensor(fp32.encode(texts, batch_size=bs,
                                                       normalize_embeddings=True)),
        "st onnx int8": lambda: torch.as_tensor(int8.encode(texts, batch_size=bs,
                                                            normalize_embeddings=True)),
    }


def bench(name: str, model: Any, items: list[Any], modality: str, bs: int, repeats: int,
          extra: dict[str, Callable[[], torch.Tensor]] | None = None) -> dict[str, Any]:
    out: dict[str, torch.Tensor] = {}

    def run(label: str, backend: str) -> Callable[[], None]:
        return lambda: out.__setitem__(label, model.encode(items, modality, batch_size=bs,
                                                           backend=backend,
                                                           show_progress_bar=False))

    for backend in ("torch", "onnx", "onnx-int8"):  # warm-up: threads, lazy sessions
        model.encode(items[:bs], modality, backend=backend, show_progress_bar=False)
    fns: dict[str, Callable[[], None]] = {"eager": run("eager", "torch"),
                                          "ort": run("ort", "onnx"),
                                          "ort int8": run("ort int8", "onnx-int8")}
    for label, fn in (extra or {}).items():
        fns[label] = lambda label=label, fn=fn: out.__setitem__(label, fn())
    times = interleaved(fns, repeats)
    base_wall = statistics.median(times["eager"]["wall"])
    base_cpu = statistics.median(times["eager"]["cpu"])
    rows = {}
    print(f"\n{name}: {len(items)} items, batch {bs}, {repeats} interleaved repeats")
    print(f"{'':<14} {'wall s':>7} {'items/s':>8} {'vs eager':>8} {'cpu s':>7} {'vs eager':>8}"
          f"  {'max abs diff':>12} {'cos mean':>8} {'cos min':>8}")
    for label, t in times.items():
        wall, cpu = statistics.median(t["wall"]), statistics.median(t["cpu"])
        agree = agreement(out[label], out["eager"])
        rows[label] = {"wall_median": wall, "cpu_median": cpu, "items_per_s": len(items) / wall,
                       "speedup_wall": base_wall / wall, "speedup_cpu": base_cpu / cpu,
                       **agree, **t}
        print(f"{label:<14} {wall:>7.2f} {len(items) / wall:>8.1f} {base_wall / wall:>7.2f}x "
              f"{cpu:>7.2f} {base_cpu / cpu:>7.2f}x  {agree['max_abs_diff']:>12.2e} "
              f"{agree['cosine_mean']:>8.4f} {agree['cosine_min']:>8.4f}", flush=True)
    return rows


def code_search(model: Any, limit: int | None) -> dict[str, Any]:
    """Held-out docstring -> function R@10 of each backend (the code pairing's split)."""
    from mmenc_code.pairing import splits

    from mmenc.export.runtime import with_backend
    from mmenc.retrieval.evaluate import evaluate_retrieval

    _, test = splits()
    pairs = [{"docstring": p.docstring, "code": p.code} for p in test][:limit]
    out = {}
    for backend in ("onnx", "onnx-int8"):
        report = evaluate_retrieval(with_backend(model, backend, "text"), pairs, "text", "text",
                                    query_key="docstring", gallery_key="code", batch_size=32,
                                    echo=lambda _: None, show_progress_bar=False)
        out[backend] = report["metrics"]["docstring->code"]
    print(f"\nheld-out code search, docstring -> function ({len(pairs)} pairs):")
    for backend, metrics in out.items():
        print(f"  {backend:<10} R@1 {metrics['R@1']:.4f}  R@10 {metrics['R@10']:.4f}  "
              f"MRR {metrics['MRR']:.4f}")
    print(f"  R@10 change int8 - fp32: {out['onnx-int8']['R@10'] - out['onnx']['R@10']:+.4f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--search-limit", type=int, default=None,
                        help="Score only the first N held-out pairs.")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["text", "image", "audio", "search", "st"])
    parser.add_argument("--work", type=Path, default=Path("runs/serving"))
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                                          for k, v in QUICK.items()))
    args = parser.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    if min(args.items, args.images, args.clips, args.batch_size, args.repeats) < 1:
        parser.error("--items, --images, --clips, --batch-size and --repeats must be positive")
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(THREADS)
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    import onnxruntime

    import mmenc
    from mmenc.demo import packaged_minilm
    from mmenc.export.onnx import export_onnx
    from mmenc.factory import create_model

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{THREADS} threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    quiet = {"echo": lambda line: print("  " + line, flush=True)}

    if "text" not in args.skip or "search" not in args.skip:
        folder = packaged_minilm()
        minilm = work / "minilm"
        mmenc.convert("hf-bert", folder, minilm)
        manifest = export_onnx(minilm, minilm, ["text"], int8=True,
                               calibration={"text": calibration_texts(200)}, **quiet)
        results["text_export"] = manifest["graphs"]["text"]
        model = mmenc.load(minilm)
        if "text" not in args.skip:
            texts = text_corpus(args.items)
            extra = {} if "st" in args.skip else st_contenders(folder, texts, args.batch_size,
                                                               work)
            results["text"] = bench("text (MiniLM-L6, stdlib docstrings + functions)", model,
                                    texts, "text", args.batch_size, args.repeats, extra)
        if "search" not in args.skip:
            results["code_search"] = code_search(model, args.search_limit)
    if "image" not in args.skip:
        torch.manual_seed(0)
        vit = work / "vit-s16"
        create_model("vit-tiny", **vit_small()).save_pretrained(vit)
        images = emoji_images(args.images)
        export_onnx(vit, vit, int8=True, calibration={"image": images[:64]}, warn_only=True,
                    **quiet)
        results["image"] = bench("image (ViT-S/16 @224, emoji)", mmenc.load(vit), images,
                                 "image", args.batch_size, args.repeats)
    if "audio" not in args.skip:
        torch.manual_seed(0)
        beats = work / "beats-base"
        create_model("beats-base").save_pretrained(beats)
        clips = speech_clips(args.clips)
        seconds = sum(len(c) for c in clips) / 16000
        print(f"\naudio: {len(clips)} prompts, {seconds:.0f} s of speech", flush=True)
        manifest = export_onnx(beats, beats, int8=True,
                               calibration={"audio": speech_clips(8, skip=args.clips)},
                               warn_only=True, **quiet)
        results["audio_export"] = manifest["graphs"]["audio"]
        results["audio"] = bench(f"audio (BEATs base, {seconds:.0f} s of asterisk speech)",
                                 mmenc.load(beats), clips, "audio", max(1, args.batch_size // 2),
                                 args.repeats)
    results["wall_s"] = time.perf_counter() - started
    results["cpu_s"] = time.process_time()
    results["load_average_end"] = os.getloadavg()
    print(f"\ntotal {results['wall_s']:.0f} s wall, {results['cpu_s']:.0f} s process CPU; load "
          f"average at the end {os.getloadavg()[0]:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
