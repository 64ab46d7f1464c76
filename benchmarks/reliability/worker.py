"""A long-lived worker: reads one case per line on stdin, answers one JSON line per case.

Started by :mod:`benchmarks.reliability.run` as ``python -m benchmarks.reliability.worker
CACHE SEED MEMORY_MB SCRATCH [all|light|heavy]``. For each case it generates the input
(deterministic from the seed, the kind and the index), announces ``{"phase": "start"}``, then
runs the input through mmenc's public path under an address-space limit of the memory it uses
now plus ``MEMORY_MB``, and answers the outcome. Anything the library prints goes to stderr;
stdout carries the protocol.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.reliability import (
    gen_audio,
    gen_code,
    gen_image,
    gen_midi,
    gen_model,
    gen_plugin,
    gen_text,
)

KINDS: dict[str, Any] = {
    "text": gen_text, "image": gen_image, "audio": gen_audio, "code": gen_code,
    "midi": gen_midi, "checkpoint": gen_model, "config": gen_model, "plugin": gen_plugin,
}
MEMORY_MARKERS = ("can't allocate memory", "bad_alloc", "DefaultCPUAllocator", "out of memory",
                  "Cannot allocate memory")


def case_rng(seed: int, kind: str, index: int) -> random.Random:
    return random.Random(f"{seed}:{kind}:{index}")


def mutations(kind: str, which: str = "all") -> tuple[str, ...]:
    """The mutations of ``kind``: ``all``, ``light`` (without the heavy ones) or ``heavy``."""
    if kind == "checkpoint":
        names, heavy = gen_model.CHECKPOINT_MUTATIONS, gen_model.CHECKPOINT_HEAVY
    elif kind == "config":
        names, heavy = gen_model.CONFIG_MUTATIONS, gen_model.CONFIG_HEAVY
    else:
        names, heavy = KINDS[kind].MUTATIONS, KINDS[kind].HEAVY
    if which == "light":
        return tuple(n for n in names if n not in heavy)
    return tuple(heavy) if which == "heavy" else tuple(names)


def make_case(kind: str, index: int, seed: int, base: Any, tmp: Path, which: str = "all"
              ) -> tuple[str, Any]:
    """Case ``index`` of ``kind``: the mutations take turns, the rng depends on the case only."""
    names = mutations(kind, which)
    maker = {"checkpoint": gen_model.make_checkpoint,
             "config": gen_model.make_config}.get(kind) or KINDS[kind].make
    return maker(names[index % len(names)], case_rng(seed, kind, index), base, tmp)


def describe(item: Any) -> str:
    """A short, printable description of an input."""
    if isinstance(item, bytes | bytearray):
        return f"<{len(item)} bytes {bytes(item[:12])!r}>"
    if isinstance(item, str):
        return repr(item[:40]) + (f"... ({len(item)} chars)" if len(item) > 40 else "")
    if hasattr(item, "shape") and hasattr(item, "dtype"):
        return f"<{type(item).__name__} {tuple(item.shape)} {item.dtype}>"
    if isinstance(item, tuple):
        return "(" + ", ".join(describe(x) for x in item) + ")"
    return f"<{type(item).__name__}> " + repr(item)[:60]


def _vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback outside this harness."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "benchmarks/reliability" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    path = f.filename
    root = str(Path(__file__).resolve().parents[2]) + "/"
    if "/scratch/" in path:  # a generated plugin's module: its name, without the case's tag
        path = re.sub(r"\d+", "N", Path(path).name)
    elif "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(root):
        path = path[len(root):]
    elif "/lib/python3" in path:  # the standard library
        path = path.split("/lib/", 1)[1]
    return f"{path}:{f.lineno} in {f.name}"


def classify(exc: BaseException) -> str:
    from mmenc.errors import MmencError

    if isinstance(exc, MmencError):
        return "refused"
    if isinstance(exc, MemoryError) or any(m in str(exc) for m in MEMORY_MARKERS):
        return "memory"
    return "untyped"


def check_output(emb: Any) -> tuple[str, str]:
    import torch

    if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != 1 \
            or emb.numel() == 0:
        return "nan_empty", f"unexpected output {describe(emb)}"
    if not torch.isfinite(emb).all():
        return "nan_empty", "non-finite embedding"
    if float(emb.norm(dim=-1).min()) == 0.0:
        return "nan_empty", "zero embedding"
    return "ok", ""


class Worker:
    def __init__(self, cache: Path, seed: int, memory_mb: int, scratch: Path,
                 which: str = "all") -> None:
        self.cache, self.seed, self.memory_mb, self.which = cache, seed, memory_mb, which
        self.bases: dict[str, Any] = {}
        self.models: dict[str, Any] = {}
        scratch.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="worker-", dir=scratch))

    def base(self, kind: str) -> Any:
        if kind not in self.bases:
            self.bases[kind] = KINDS[kind].load_base(self.cache)
        return self.bases[kind]

    def model(self, recipe: str, modality: str) -> Any:
        """A tiny model, created once and warmed up on the modality's own examples."""
        import torch

        import mmenc
        from mmenc.registry import catalogue
        from mmenc.specs import resolve

        key = f"{recipe}/{modality}"
        if key not in self.models:
            torch.manual_seed(0)
            model = self.models.get(recipe) or mmenc.create_model(recipe)
            self.models[recipe] = model
            example = resolve(catalogue().get("modality", modality).example)()
            model.encode(example[:1], modality)
            self.models[key] = model
        return self.models[key]

    def prepare(self, kind: str, index: int, tmp: Path) -> tuple[str, str, Callable[[], Any]]:
        """``(mutation, description, run)`` of one case; ``run`` does the guarded work."""
        mutation, item = make_case(kind, index, self.seed, self.base(kind), tmp, self.which)
        if kind in ("checkpoint", "config"):
            return mutation, f"{item.name} model folder", lambda: self.run_folder(item)
        if kind == "plugin":
            return mutation, item["plugin"], lambda: self.run_plugin(item)
        targets = KINDS[kind].TARGETS  # shifted every round, so each mutation meets each target
        recipe, modality = targets[(index + index // len(mutations(kind, self.which)))
                                   % len(targets)]
        model = self.model(recipe, modality)
        label = f"{describe(item)} -> {recipe}/{modality}"
        return mutation, label, lambda: model.encode([item], modality, normalize=False)

    def run_folder(self, folder: Path) -> Any:
        import mmenc
        from mmenc.registry import catalogue
        from mmenc.specs import resolve

        model = mmenc.load(folder)
        modality = model.modalities[0]
        example = resolve(catalogue().get("modality", modality).example)()
        return model.encode(example[:1], modality, normalize=False)

    def run_plugin(self, case: dict[str, str]) -> Any:
        import importlib

        import mmenc
        from mmenc.errors import PluginError
        from mmenc.registry import catalogue

        sys.path.insert(0, case["site"])
        importlib.invalidate_caches()
        try:
            cat = catalogue(refresh=True)
            builtin = cat.plugins.get("mmenc")
            if builtin is None or builtin.status != "ok" or "text-tiny" not in cat.names("model"):
                raise RuntimeError("the built-in plugin lost its registrations")
            record = cat.plugins.get(case["plugin"])
            if record is None:
                raise RuntimeError(f"plugin {case['plugin']!r} is missing from the catalogue")
            if record.status == "error":
                raise PluginError(f"reported: {record.error}")
            models = record.registered.get("model", [])
            if not models:
                return None
            model = mmenc.create_model(models[0])
            return model.encode(["a plugin's model"], "text", normalize=False)
        finally:
            sys.path.remove(case["site"])
            for name in [m for m in sys.modules if m.startswith("mmenc_fuzz_")]:
                del sys.modules[name]
            importlib.invalidate_caches()
            catalogue(refresh=True)

    def handle(self, kind: str, index: int, send: Callable[[dict[str, Any]], None]
               ) -> dict[str, Any]:
        tmp = self.scratch / f"{kind}-{index}"
        tmp.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"kind": kind, "index": index}
        try:
            mutation, label, run = self.prepare(kind, index, tmp)
            record.update(mutation=mutation, input=label)
            send({"phase": "start", "mutation": mutation, "input": label})
            rss_before = _vm_kb("VmRSS")
            _reset_peak()
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            limit = _vm_kb("VmSize") * 1024 + self.memory_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (min(limit, hard) if hard > 0 else limit,
                                                    hard))
            start = time.perf_counter()
            try:
                out = run()
                outcome, message = ("ok", "") if out is None and kind == "plugin" \
                    else check_output(out)
                record.update(outcome=outcome, message=message)
            except BaseException as exc:  # noqa: BLE001 - every escape is an outcome
                record.update(outcome=classify(exc), error=type(exc).__name__,
                              message=str(exc)[:300], where=_where(exc))
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            record["seconds"] = round(time.perf_counter() - start, 3)
            peak = _vm_kb("VmHWM")
            record["peak_mb"] = round(peak / 1024, 1)
            record["delta_mb"] = round(max(0, peak - rss_before) / 1024, 1)
        except Exception as exc:  # noqa: BLE001 - the generator itself failed
            record.update(outcome="harness", error=type(exc).__name__, message=str(exc)[:300],
                          where=_where(exc) or traceback.format_exc(limit=-1).strip())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return record


def main(argv: list[str]) -> None:
    cache, seed, memory_mb, scratch = Path(argv[0]), int(argv[1]), int(argv[2]), Path(argv[3])
    which = argv[4] if len(argv) > 4 else "all"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the library prints must not reach the protocol
    import torch

    torch.set_num_threads(1)
    worker = Worker(cache, seed, memory_mb, scratch, which)

    def send(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message, default=str) + "\n")
        proto.flush()

    send({"phase": "ready", "pid": os.getpid()})
    try:
        for line in sys.stdin:
            task = json.loads(line)
            send(worker.handle(task["kind"], int(task["index"]), send))
    finally:
        shutil.rmtree(worker.scratch, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
