"""The bound model's MIDI tower from scratch against the same tower started from a pretrained
MIDI-BERT, at the same steps and data order.

Each start trains a bound model of MIDI and rendered audio only against the frozen MiniLM hub
(the main job's :mod:`mmenc.bind.job` settings: the MIDI tower's 220 steps of 64 tunes at 2e-3
over 2,500 training tunes <-> their descriptions; the audio tower, its BEATs, 160 steps of 64
renders <-> their tune's description, since there is no speech here; then the 60 direct
MIDI <-> rendered audio steps). The MIDI tower has the shapes of the first pretrained model
(its configuration; ``--shapes-from`` names another); ``scratch`` is that tower with random
weights, every other start copies a saved MIDI-BERT into it (``init_from``); each start can
run in its own process. The seed, hence the initial weights of everything
else and the order of the batches, is the same for every start.

Measured on the held-out song books: MIDI -> tune text, MIDI -> rendered audio through text
(before the pair phase) and directly (after it), with chance and the chroma baseline of the
same split. With ``--pretrain-manifest`` the held-out tunes are first checked against the
manifest the MIDI-BERTs were pretrained on: a held-out tune in it stops the run; held-out MIDI
files byte for byte equal to a pretraining tune (the same tune in a training and a held-out
song book) are counted and reported.

    OMP_NUM_THREADS=1 python benchmarks/bind_midi_start.py --work runs/bind-midi \\
        --pretrain-manifest runs/midi-ft/data/train.jsonl --start scratch \\
        --start "MLM=runs/midibert-folk/model" \\
        --start "adversarial=runs/adv-midibert-folk/ckpt-00000160/model"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

ROWS = ("MIDI -> tune text", "MIDI -> rendered audio (through text)", "MIDI -> rendered audio")


def parse_start(text: str) -> tuple[str, Path | None]:
    if text == "scratch":
        return "scratch", None
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--start: expected 'scratch' or NAME=MODEL_DIR, got {text!r}")
    if not (Path(path) / "config.json").is_file():
        raise SystemExit(f"--start {name}: {path} is not a saved model folder")
    return name, Path(path)


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_overlap(manifest: Path, data: dict[str, Any]) -> dict[str, int]:
    """Held-out tunes (the folk test split, the tunes of the music test snippets) that are in
    the pretraining manifest, by id and by MIDI bytes."""
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    ids = {r["id"] for r in rows}
    hashes = {sha256(r["midi"]) for r in rows}
    held = data["folk"]["test"]
    tunes = {r["tune"] for r in data["music"]["test"]}
    return {"pretraining tunes": len(rows), "held-out tunes": len(held),
            "held-out ids in it": sum(r["id"] in ids for r in held),
            "held-out MIDI files in it": sum(sha256(r["midi"]) in hashes for r in held),
            "music test tunes in it": sum(sha256(t) in hashes for t in tunes)}


def specs_for(first: Path | None) -> dict[str, Any]:
    """The main job's audio tower, and its MIDI tower with the configuration of ``first``."""
    from mmenc_midi.recipes import midi_text

    import mmenc
    from mmenc.bind.job import tower_specs

    specs = tower_specs(Path("unused"), audio_seconds=4.0)
    midi = specs["midi"]
    if first is not None:
        over = midi["overrides"]
        body = midi_text(mmenc.load(first).config, over["towers"]["text"],
                         over["tokenizers"]["text"], None)
        midi = {**midi, "overrides": {**over, **body, "embed_dim": None}}
    return {"midi": midi, "audio": specs["audio"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bind-midi", help="data, hub and models")
    parser.add_argument("--start", action="append", default=[],
                        help="'scratch' or NAME=MODEL_DIR (a saved MIDI-BERT); repeatable")
    parser.add_argument("--shapes-from", default=None,
                        help="the saved MIDI-BERT whose configuration the MIDI tower takes "
                             "(default: the first NAME=MODEL_DIR start)")
    parser.add_argument("--pretrain-manifest", default=None,
                        help="the manifest the MIDI-BERTs were pretrained on")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step count")
    parser.add_argument("--json", default=None, help="default WORK/report.json")
    parser.add_argument("--audio-start", default=None,
                        help="NAME=MODEL_DIR: a saved BEATs the audio tower starts from "
                             "(init_from; such as an iteration of mmenc audio iterate), for "
                             "every start; default: the audio tower from scratch")
    parser.add_argument("--seed", type=int, default=0,
                        help="the bound model's seed: initial weights and batch order (the "
                             "models go to WORK/bind-NAME, or WORK/bind-NAME-seedN)")
    args = parser.parse_args(argv)
    starts = [parse_start(s) for s in args.start] or [("scratch", None)]
    audio_name, audio_path = parse_start(args.audio_start) if args.audio_start else ("", None)
    if args.scale <= 0:
        raise SystemExit("--scale must be positive")

    import torch

    from mmenc.bind import datasets
    from mmenc.bind.evaluate import evaluate_bound
    from mmenc.bind.job import bind_config, chroma_baseline, emergent_music, tasks
    from mmenc.bind.train import train_bound
    from mmenc.demo import convert_minilm

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    if not (work / "minilm-l6" / "config.json").is_file():
        convert_minilm(work, print)
    data = {"folk": datasets.folk(work / "data"),
            "music": datasets.music(work / "data", 1000, 500)}
    print(f"data: {len(data['folk']['train'])} training tunes, {len(data['folk']['test'])} "
          f"held-out; {len(data['music']['train'])} training renders, "
          f"{len(data['music']['test'])} held-out")
    report: dict[str, Any] = {"starts": {}, "command": " ".join(sys.argv), "seed": args.seed}
    if args.pretrain_manifest:
        overlap = check_overlap(Path(args.pretrain_manifest), data)
        report["overlap"] = overlap
        print(f"pretraining manifest against the held-out tunes: {overlap}")
        if overlap["held-out ids in it"]:
            raise SystemExit("held-out tunes are in the pretraining manifest: re-split first")
    chroma = chroma_baseline(data)
    report["chroma"] = chroma
    report["setup_cpu_s"] = round(time.process_time() - cpu0, 1)
    first = Path(args.shapes_from) if args.shapes_from else \
        next((p for _, p in starts if p is not None), None)
    specs = specs_for(first)
    steps = {k: max(1, round(v * args.scale)) for k, v in
             {"image": 220, "code": 200, "audio": 160, "midi": 220, "pair": 60}.items()}
    steps.update(midi_items=2500, code_items=0, code_finetune=0)
    out_json = Path(args.json) if args.json else work / "report.json"
    audio_spec = dict(specs["audio"], **({"init_from": str(audio_path)} if audio_path else {}))
    report["audio_init_from"] = str(audio_path) if audio_path else None
    for midi_name, path in starts:
        name = f"{midi_name}+audio-{audio_name}" if audio_path else midi_name
        cpu, wall = time.process_time(), time.perf_counter()
        spec = dict(specs["midi"], **({"init_from": str(path)} if path else {}))
        config = bind_config({"folk": data["folk"]}, {"midi": spec}, work, steps)
        config["modalities"]["audio"] = {
            "tower": audio_spec, "steps": steps["audio"], "batch_size": 64, "lr": 1e-3,
            "warmup": 15, "train": [{"audio": r["audio"], "text": r["text"]}
                                    for r in data["music"]["train"]]}
        config["pairs"] = [{"modalities": ["midi", "audio"], "batch_size": 64,
                            "train": [{"midi": r["midi"], "audio": r["audio"]}
                                      for r in data["music"]["train"]]}]
        config["seed"] = args.seed
        config["output_dir"] = str(work / (f"bind-{name}" if args.seed == 0
                                           else f"bind-{name}-seed{args.seed}"))
        before: dict[str, Any] = {}

        def through_text(model: Any, before: dict[str, Any] = before) -> None:
            before.update(evaluate_bound(model, emergent_music(data)))

        print(f"[{name}] training ({'random init' if path is None else path})")
        result = train_bound(config, echo=lambda line: print(f"  {line.strip()}"),
                             after_hub=through_text)
        import mmenc

        model = mmenc.load(result.model_dir)
        results = evaluate_bound(model, tasks(data, model, chroma))
        results.update(before)
        rows = {row: {"R@1": results[row]["dims"]["384"]["R@1"],
                      "MRR": results[row]["dims"]["384"]["MRR"],
                      "chance R@1": results[row]["chance"]["R@1"],
                      "chance MRR": results[row]["chance"]["MRR"],
                      "queries / gallery": f"{results[row]['queries']} / "
                                           f"{results[row]['gallery']}"} for row in ROWS}
        report["starts"][name] = {"init_from": str(path) if path else None, "rows": rows,
                                  "results": results, "logs": result.logs,
                                  "cpu_s": round(time.process_time() - cpu, 1),
                                  "wall_s": round(time.perf_counter() - wall, 1)}
        for row, m in rows.items():
            print(f"[{name}] {row}: R@1 {m['R@1']:.3f} MRR {m['MRR']:.3f} "
                  f"(chance {m['chance R@1']:.3f} / {m['chance MRR']:.3f})")
        print(f"[{name}] {report['starts'][name]['cpu_s']} s CPU, "
              f"{report['starts'][name]['wall_s']} s wall")
        out_json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"chroma baseline, MIDI -> rendered audio: {chroma}")
    return report


if __name__ == "__main__":
    main()
