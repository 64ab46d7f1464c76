"""The reliability campaign: hostile inputs for every modality, model folders and plugins.

    python benchmarks/reliability/run.py --seed 0 --per-modality 200 --jobs 1 --out runs/fuzz

Each input goes through mmenc's public path (``create_model(...).encode``, ``mmenc.load``, the
plugin catalogue) in a long-lived worker process, one input at a time, under a wall-clock limit
(``--timeout``) and an address-space limit (``--memory-mb`` above what the worker holds). A
worker that dies or hangs is replaced. Every input's outcome is one of:

    ok        encoded to finite, non-zero vectors (or a plugin loaded and worked)
    refused   a typed refusal: an ``mmenc.errors.MmencError`` subclass
    crash     the worker died (a signal or an exit)
    hang      no answer within the timeout
    untyped   any other exception (its type, message and innermost frame are kept)
    nan_empty encode returned non-finite values, zero vectors or an empty array
    memory    MemoryError or an allocation refused by the memory limit

Writes ``results.jsonl`` (one record per input), ``table.json`` and ``table.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("text", "image", "audio", "code", "midi", "checkpoint", "config", "plugin")
OUTCOMES = ("ok", "refused", "crash", "hang", "untyped", "nan_empty", "memory", "harness")
FAILURES = ("crash", "hang", "untyped", "nan_empty", "memory", "harness")
HEADERS = {"inputs": "inputs", "ok": "ok", "refused": "refused (typed)", "crash": "crashes",
           "hang": "hangs", "untyped": "untyped", "nan_empty": "silent NaN/empty",
           "memory": "memory", "harness": "harness", "peak_mb": "peak MB (max)",
           "delta_mb": "item MB (max)"}
READY_TIMEOUT = 300.0
PREPARE_TIMEOUT = 120.0


class WorkerProcess:
    """One worker process and the line protocol to it."""

    def __init__(self, args: argparse.Namespace, scratch: Path, log: Path,
                 command: list[str] | None = None) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env.pop("MMENC_PLUGINS", None)
        self.log = log.open("ab")
        command = command or [sys.executable, "-m", "benchmarks.reliability.worker",
                              str(args.cache), str(args.seed), str(args.memory_mb), str(scratch),
                              args.mutations]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env,
            cwd=ROOT, start_new_session=True)
        self.selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.buffer = b""
        self.closed = False  # the worker closed its end: it died (or is dying)
        message = self.read(READY_TIMEOUT)
        if message is None or message.get("phase") != "ready":
            self.kill()
            raise RuntimeError(f"worker did not start (see {log})")

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None when the worker died or said nothing in time."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self.closed = True
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def send(self, task: dict[str, Any]) -> bool:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(task) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def alive(self) -> bool:
        return not self.closed and self.proc.poll() is None

    def death(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "closed its output and did not exit"
        return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.selector.close()
        self.log.close()


def run_case(worker: WorkerProcess, kind: str, index: int, timeout: float
             ) -> tuple[dict[str, Any], bool]:
    """The case's record, and whether the worker is still usable."""
    record: dict[str, Any] = {"kind": kind, "index": index}
    if not worker.send({"kind": kind, "index": index}):
        return {**record, "outcome": "crash", "message": worker.death()}, False
    start = worker.read(PREPARE_TIMEOUT)
    if start is None or start.get("phase") != "start":
        if start is not None and "outcome" in start:  # the generator failed
            return start, True
        alive = worker.alive()
        message = "no answer while preparing the input" if alive else worker.death()
        return {**record, "outcome": "hang" if alive else "crash", "message": message}, False
    record.update(mutation=start["mutation"], input=start["input"])
    began = time.monotonic()
    result = worker.read(timeout)
    if result is not None:
        return result, True
    if worker.alive():
        return {**record, "outcome": "hang",
                "message": f"no answer after {time.monotonic() - began:.0f} s"}, False
    return {**record, "outcome": "crash", "message": worker.death()}, False


def schedule(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Cases interleaved across kinds, so that any prefix of a run covers every kind."""
    tasks, i = [], 0
    while any(i < n for n in counts.values()):
        tasks += [(kind, i) for kind, n in counts.items() if i < n]
        i += 1
    return tasks


def prepare(args: argparse.Namespace, kinds: list[str]) -> None:
    """Base corpora in ``args.cache``: MIDI conversions, emoji images, saved tiny models."""
    from benchmarks.reliability import gen_image, gen_midi, gen_model

    args.cache.mkdir(parents=True, exist_ok=True)
    if "midi" in kinds:
        gen_midi.prepare(args.cache, args.base_midi)
    if "image" in kinds:
        gen_image.prepare(args.cache, args.base_images)
    if {"checkpoint", "config"} & set(kinds):
        gen_model.prepare(args.cache)


def campaign(args: argparse.Namespace, counts: dict[str, int]) -> list[dict[str, Any]]:
    tasks: queue.Queue[tuple[str, int]] = queue.Queue()
    for task in schedule(counts):
        tasks.put(task)
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    scratch = args.out / "scratch"
    total = tasks.qsize()
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    stream = (args.out / "results.jsonl").open("w", encoding="utf-8")

    def work(slot: int) -> None:
        worker: WorkerProcess | None = None
        log = args.out / f"worker-{slot}.log"
        try:
            while deadline is None or time.monotonic() < deadline:
                try:
                    kind, index = tasks.get_nowait()
                except queue.Empty:
                    return
                if worker is None:
                    worker = WorkerProcess(args, scratch, log)
                record, usable = run_case(worker, kind, index, args.timeout)
                if not usable:
                    worker.kill()
                    worker = None
                with lock:
                    records.append(record)
                    stream.write(json.dumps(record, default=str) + "\n")
                    stream.flush()
                    if args.progress and len(records) % args.progress == 0:
                        print(f"{len(records)}/{total} inputs", file=sys.stderr, flush=True)
        finally:
            if worker is not None:
                worker.kill()

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stream.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return sorted(records, key=lambda r: (KINDS.index(r["kind"]), r["index"]))


def tabulate(records: list[dict[str, Any]], kinds: list[str]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        mine = [r for r in records if r["kind"] == kind]
        counts = Counter(r["outcome"] for r in mine)
        row: dict[str, Any] = {"inputs": len(mine), **{o: counts.get(o, 0) for o in OUTCOMES}}
        row["peak_mb"] = max((r.get("peak_mb", 0.0) for r in mine), default=0.0)
        row["delta_mb"] = max((r.get("delta_mb", 0.0) for r in mine), default=0.0)
        table[kind] = row
    return table


def examples(records: list[dict[str, Any]], per_class: int = 3) -> list[dict[str, Any]]:
    """A few inputs of each (kind, outcome, error, where) failure class."""
    seen: Counter[tuple] = Counter()
    out = []
    for r in records:
        if r["outcome"] not in FAILURES:
            continue
        key = (r["kind"], r["outcome"], r.get("error"), r.get("where"))
        seen[key] += 1
        if seen[key] <= per_class:
            out.append(r)
    for r in out:
        key = (r["kind"], r["outcome"], r.get("error"), r.get("where"))
        r["class_size"] = seen[key]
    return out


def markdown(table: dict[str, dict[str, Any]]) -> str:
    cols = [c for c in HEADERS if c != "harness" or any(row["harness"] for row in table.values())]
    lines = ["| | " + " | ".join(HEADERS[c] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for kind, row in table.items():
        lines.append(f"| {kind} | " + " | ".join(
            f"{row[c]:.0f}" if c.endswith("_mb") else str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def parse_counts(args: argparse.Namespace) -> dict[str, int]:
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    counts = {k: args.per_modality for k in kinds}
    for item in args.count or []:
        kind, _, n = item.partition("=")
        if kind not in KINDS or not n.isdigit():
            raise SystemExit(f"--count wants KIND=N with KIND in {', '.join(KINDS)}, got {item!r}")
        counts[kind] = int(n)
    return {k: n for k, n in counts.items() if n > 0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-modality", type=int, default=50,
                        help="inputs per kind (text, image, audio, code, midi, checkpoint, "
                             "config, plugin)")
    parser.add_argument("--count", action="append", metavar="KIND=N",
                        help="inputs of one kind, overriding --per-modality (repeatable)")
    parser.add_argument("--mutations", choices=("all", "light", "heavy"), default="all",
                        help="light leaves out the mutations that cost seconds per input")
    parser.add_argument("--kinds", default="", help="comma-separated kinds to run (default all)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per input")
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="address space an input may add to its worker")
    parser.add_argument("--out", type=Path, default=Path("runs/reliability"))
    parser.add_argument("--cache", type=Path, default=None,
                        help="base corpora (default OUT/cache; reusable across runs)")
    parser.add_argument("--base-midi", type=int, default=300, help="folk tunes to convert")
    parser.add_argument("--base-images", type=int, default=200, help="emoji to render")
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="start no new input after this long (0: no limit); the table "
                             "then holds the inputs that finished")
    parser.add_argument("--progress", type=int, default=0, help="report every N inputs")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.cache = (args.cache or args.out / "cache").resolve()
    counts = parse_counts(args)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    prepare(args, list(counts))
    records = campaign(args, counts)
    wall = time.monotonic() - began
    table = tabulate(records, list(counts))
    with (args.out / "results.jsonl").open("w", encoding="utf-8") as f:
        for r in records:  # in case order, replacing the stream in completion order
            f.write(json.dumps(r, default=str) + "\n")
    done = {kind: row["inputs"] for kind, row in table.items()}
    summary = {"seed": args.seed, "counts": done, "planned": counts, "mutations": args.mutations,
               "jobs": args.jobs, "timeout": args.timeout, "memory_mb": args.memory_mb,
               "wall_seconds": round(wall, 1), "table": table,
               "failures": examples(records)}
    (args.out / "table.json").write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                         encoding="utf-8")
    stopped = "" if done == counts else \
        f" (stopped by --max-seconds; {sum(counts.values())} planned)"
    text = markdown(table) + f"\n{sum(done.values())} inputs{stopped}, seed {args.seed}, " \
        f"{args.mutations} mutations, {args.jobs} job(s), {wall:.0f} s\n"
    (args.out / "table.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return summary


if __name__ == "__main__":
    main()
