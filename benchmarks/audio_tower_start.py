"""The bound model's audio tower started from BEATs iterations, against the same tower from
scratch, at the same binding steps and data order.

Three steps (see docs/plugins/audio.md, "The bound audio tower from BEATs iterations"):

  * ``data OUT``: the speech set of the main job (``mmenc.bind.job``: the asterisk prompts split
    by prompt id, espeak-ng speech of the training transcripts and of the training texts of the
    emoji and code pairings, one training voice each) under ``OUT/data``, and
    ``OUT/iterate.jsonl``, the audio BEATs iterations may see: the training clips only (no
    held-out prompt, no held-out voice), plus ``--tunes`` rendered training-split folk tunes;
  * ``mmenc audio iterate examples/beats-iterate-speech.yaml`` (BEATs of the bound audio
    tower's shapes, two iterations on ``OUT/iterate.jsonl``);
  * ``bind OUT --name NAME [--init-from MODEL_DIR]``: the main job's speech-only binding (its
    audio tower, 160 steps of 64 clips cut to 4 s, recorded prompts drawn 3x) against the
    frozen MiniLM hub, the tower started from ``MODEL_DIR`` (``init_from``) or from scratch;
    held-out speech <-> transcript, written to ``OUT/bind/NAME/report.json``; ``--freeze``
    trains only the projection over the frozen BEATs (a probe of the start), ``--lr`` sets the
    tower's rate;
  * ``table OUT``: the runs side by side (markdown).

    OMP_NUM_THREADS=1 python benchmarks/audio_tower_start.py data runs/beats-speech
    OMP_NUM_THREADS=1 python benchmarks/audio_tower_start.py bind runs/beats-speech --name scratch
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

TASKS = ("speech -> transcript", "transcript -> speech")


def build(out: Path, tunes: int) -> dict[str, Any]:
    from mmenc.bind import datasets
    from mmenc.bind.job import SPEECH_SIZES, spoken_training_texts

    t0, c0 = time.perf_counter(), time.process_time()
    data_dir = out / "data"
    data: dict[str, Any] = {"emoji": datasets.emoji(data_dir / "emoji"),
                            "code": datasets.code(out=data_dir)}
    texts = spoken_training_texts(data, SPEECH_SIZES, random.Random(0))
    speech = datasets.speech(data_dir, texts, SPEECH_SIZES["per_text"])
    (data_dir / "speech.json").write_text(json.dumps(speech) + "\n")
    clips = [r["audio"] for r in speech["train"]]
    held = {r["audio"] for r in speech["test"]}
    if held & set(clips):
        raise RuntimeError("a held-out prompt is among the training clips")
    music = []
    if tunes:
        from mmenc_audio.musicsets import midi_audio_pairs

        rows = midi_audio_pairs(data_dir, n_train=tunes, n_test=0, seconds=6.0)
        music = [r["audio"] for r in rows if r["split"] == "train"]
    with (out / "iterate.jsonl").open("w", encoding="utf-8") as f:
        for path in clips + music:
            f.write(json.dumps({"audio": str(Path(path).resolve())}) + "\n")
    summary = {"real": sum(not r.get("synthetic") for r in speech["train"]),
               "synthetic": sum(bool(r.get("synthetic")) for r in speech["train"]),
               "tunes": len(music), "held_out_prompts": len(speech["test"]),
               "seconds": round(time.perf_counter() - t0, 1),
               "cpu_seconds": round(time.process_time() - c0, 1)}
    print(json.dumps(summary))
    return summary


def bind(out: Path, name: str, init_from: str | None, steps: int,
         freeze: bool = False, lr: float | None = None) -> dict[str, Any]:
    from mmenc_audio.pairing import minilm_model

    import mmenc
    from mmenc.bind.evaluate import evaluate_bound
    from mmenc.bind.job import bind_config, tasks, tower_specs
    from mmenc.bind.train import train_bound

    speech = json.loads((out / "data" / "speech.json").read_text())
    minilm_model(out)  # out/minilm-l6, the hub of bind_config
    spec = dict(tower_specs(Path("unused"), audio_seconds=4.0)["audio"])
    if init_from:
        spec["init_from"] = init_from
    config = bind_config({"speech": speech}, {"audio": spec}, out,
                         {"audio": steps, "pair": 0})
    config["output_dir"] = str(out / "bind" / name)
    if lr is not None:
        config["modalities"]["audio"]["lr"] = lr
    if freeze:  # a probe of the start: only the projection trains, over frozen BEATs features
        config["modalities"]["audio"]["freeze_encoder"] = True
    c0 = time.process_time()
    result = train_bound(config)
    train_cpu = time.process_time() - c0
    model = mmenc.load(result.model_dir)
    results = evaluate_bound(model, tasks({"speech": speech}, model, None), echo=print)
    report = {"name": name, "init_from": init_from, "steps": steps, "freeze_encoder": freeze,
              "lr": config["modalities"]["audio"]["lr"],
              "train_seconds": round(result.seconds, 1), "train_cpu_seconds": round(train_cpu, 1),
              "eval_cpu_seconds": round(time.process_time() - c0 - train_cpu, 1),
              "logs": result.logs, "results": results}
    (out / "bind" / name / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def table(out: Path) -> list[str]:
    reports = [json.loads(p.read_text()) for p in (out / "bind").glob("*/report.json")]
    # trained towers first, then frozen probes; from scratch first in each
    reports.sort(key=lambda r: (r.get("freeze_encoder", False), r["init_from"] is not None,
                                r["name"]))
    lines = ["| audio tower start | speech -> transcript R@1 | MRR | transcript -> speech R@1 "
             "| MRR | training CPU s |", "|---|---|---|---|---|---|"]
    for r in reports:
        cells = []
        for task in TASKS:
            m = r["results"][task]["dims"]["384"] if "384" in r["results"][task]["dims"] else \
                next(iter(r["results"][task]["dims"].values()))
            cells += [f"{m['R@1']:.3f}", f"{m['MRR']:.3f}"]
        lines.append(f"| {r['name']} | {' | '.join(cells)} | {r['train_cpu_seconds']:.0f} |")
    if reports:
        chance = [reports[0]["results"][t]["chance"] for t in TASKS]
        sizes = [reports[0]["results"][t]["gallery"] for t in TASKS]
        lines.append(f"| chance ({sizes[0]} transcripts, {sizes[1]} clips) "
                     f"| {chance[0]['R@1']:.3f} | {chance[0]['MRR']:.3f} | {chance[1]['R@1']:.3f} "
                     f"| {chance[1]['MRR']:.3f} | |")
    print("\n".join(lines))
    return lines


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data")
    p.add_argument("out", type=Path)
    p.add_argument("--tunes", type=int, default=0, help="rendered training tunes to add")
    p = sub.add_parser("bind")
    p.add_argument("out", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--init-from", default=None, help="a saved BEATs model folder")
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--freeze", action="store_true",
                   help="train only the projection over the frozen encoder (a probe)")
    p.add_argument("--lr", type=float, default=None, help="the tower's rate (default: the job's)")
    p = sub.add_parser("table")
    p.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "data":
        build(args.out, args.tunes)
    elif args.command == "bind":
        bind(args.out, args.name, args.init_from, args.steps, args.freeze, args.lr)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
