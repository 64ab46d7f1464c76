"""The main job: one bound model for images, code, speech, music audio and MIDI.

Steps (``mmenc demo``):
  1. convert the packaged MiniLM (the hub);
  2. build the data (:mod:`mmenc.bind.datasets`): emoji image <-> name, stdlib function <->
     docstring, speech <-> transcript (real prompts, and espeak-ng speech of training texts
     labelled synthetic), folk-tune MIDI <-> text, MIDI <-> rendered audio (a direct pair),
     and the emergent query sets (held-out emoji names and docstrings spoken by a voice no
     training clip has);
  3. train every tower against the cached hub vectors (Matryoshka InfoNCE, whole-cache
     negatives), measure MIDI <-> audio as an emergent pair, then train that pair directly;
  4. evaluate trained, direct and emergent pairs at full width and at 128/64/32, next to the
     baselines of DATA.md and chance; write ``report.md`` (table, recall plot), ``report.json``
     and a mixed store ``store.db`` ready for ``mmenc search``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmenc.bind import datasets
from mmenc.bind.evaluate import Task, evaluate_bound, table

Echo = Callable[[str], None]

# baselines measured on the same held-out splits (DATA.md)
BASELINES = {
    "docstring -> function": {"BM25 (identifiers split)": {"R@1": 0.265, "MRR": 0.374},
                              "MiniLM zero-shot": {"R@1": 0.401, "MRR": 0.532},
                              "code tower from MiniLM, code-text pairing": {"MRR": 0.584}},
    "emoji image -> name": {"nearest training images -> names": {"R@1": 0.143, "MRR": 0.240},
                            "image-text pairing (before binding)": {"R@1": 0.239}},
    "speech -> transcript": {"ASR + TF-IDF (reference)": {"R@1": 0.456},
                             "audio-text pairing (before binding)": {"R@1": 0.189}},
}
TARGETS = {"emoji image -> name": ("R@1", 0.30), "docstring -> function": ("MRR", 0.60),
           "speech -> transcript": ("R@1", 0.40), "MIDI -> rendered audio": ("R@1", 0.70),
           "speech -> emoji image": ("R@1", 0.05), "speech -> code": ("R@1", 0.10)}
# the speech set: training texts of the other pairings spoken, espeak-ng clips per text, and
# held-out docstrings spoken by the held-out voice (emergent queries)
SPEECH_SIZES = {"spoken_names": 800, "spoken_docs": 300, "emergent_docs": 300, "per_text": 1}


def shorter_copy(minilm: Path, out: Path, max_length: int) -> Path:
    """A copy of the converted MiniLM whose tokenizer cuts at ``max_length`` (code tower)."""
    from mmenc.model import load

    if (out / "config.json").is_file():
        return out
    model = load(minilm)
    tok = model.tokenizers["text"]
    tok.max_length = max_length  # type: ignore[attr-defined]
    tok.tokenizer.enable_truncation(max_length)  # type: ignore[attr-defined]
    model.save_pretrained(out)
    return out


def tower_specs(minilm_code: Path, audio_seconds: float) -> dict[str, dict[str, Any]]:
    """The towers: the emoji pairing's ViT, MiniLM for code, the audio-text recipe's BEATs
    and the MIDI-text recipe's MIDI-BERT (Octuple), each without its own projection."""
    from mmenc.builtin.recipes import image_tokenizer, vision_tower

    specs: dict[str, dict[str, Any]] = {
        "image": {"recipe": "clip-tiny", "modality": "image", "overrides": {
            "towers": {"image": vision_tower(128, 4, 2, 512, 64, 8)},
            "tokenizers": {"image": image_tokenizer(64)}, "embed_dim": None}},
        "code": {"from": str(minilm_code), "modality": "text"},
    }
    try:
        from mmenc_audio.pairing import pretrain_config as audio_config

        overrides = audio_config(Path("unused"), Path("unused"), 1, max_seconds=audio_seconds,
                                 dim=96, depth=3, heads=2)["model"]["overrides"]
        specs["audio"] = {"recipe": "audio-text-tiny", "modality": "audio",
                          "overrides": {**overrides, "embed_dim": None}}
    except ImportError:
        pass
    try:
        from mmenc_midi.pairing import pretrain_config as midi_config

        overrides = midi_config(Path("unused"), Path("unused"), 1)["model"]["overrides"]
        specs["midi"] = {"recipe": "midi-text-tiny", "modality": "midi",
                         "overrides": {**overrides, "embed_dim": None}}
    except ImportError:
        pass
    return specs


def spoken_training_texts(data: dict[str, Any], sizes: dict[str, int],
                          rng: random.Random) -> list[str]:
    """The training-split texts of the other pairings that espeak-ng speaks in training voices
    for the speech set: ``sizes["spoken_names"]`` emoji names (words for the emoji) and
    ``sizes["spoken_docs"]`` docstrings of at most 80 characters, drawn by ``rng``."""
    extra: list[str] = []
    if "emoji" in data:
        names = [r["text"] for r in data["emoji"]["train"]]
        extra += rng.sample(names, min(sizes["spoken_names"], len(names)))
    if "code" in data:
        docs = [r["text"] for r in data["code"]["train"] if len(r["text"]) <= 80]
        extra += rng.sample(docs, min(sizes["spoken_docs"], len(docs)))
    return extra


def build_data(out: Path, echo: Echo, sizes: dict[str, int]) -> dict[str, Any]:
    """Every pairing that can be built here (the others are reported as skipped)."""
    data: dict[str, Any] = {"skipped": {}}
    t0 = time.perf_counter()
    builders: tuple[tuple[str, Callable[[], Any]], ...] = (
        ("emoji", lambda: datasets.emoji(out / "emoji")),
        ("code", lambda: datasets.code(out=out)),
        ("folk", lambda: datasets.folk(out)),
        ("music", lambda: datasets.music(out, sizes["music_train"], sizes["music_test"])))
    for name, build in builders:
        try:
            data[name] = build()
            echo(f"  {name}: {len(data[name]['train'])} training, {len(data[name]['test'])} "
                 f"held-out pairs ({time.perf_counter() - t0:.0f} s)")
        except datasets.Unavailable as exc:
            data["skipped"][name] = str(exc)
            echo(f"  {name}: skipped ({exc})")
    rng = random.Random(0)
    try:
        data["speech"] = datasets.speech(out, spoken_training_texts(data, sizes, rng),
                                         sizes["per_text"])
        echo(f"  speech: {len(data['speech']['train'])} training clips "
             f"({data['speech']['synthetic']} synthetic), {len(data['speech']['test'])} "
             f"held-out real prompts ({time.perf_counter() - t0:.0f} s)")
        held_names = [r for r in data.get("emoji", {}).get("test", [])]
        held_docs = [r for r in data.get("code", {}).get("test", []) if len(r["text"]) <= 120]
        held_docs = rng.sample(held_docs, min(sizes["emergent_docs"], len(held_docs)))
        data["spoken_names"] = list(zip(datasets.spoken(out, [r["text"] for r in held_names]),
                                        held_names, strict=True)) if held_names else []
        data["spoken_docs"] = list(zip(datasets.spoken(out, [r["text"] for r in held_docs]),
                                       held_docs, strict=True)) if held_docs else []
        echo(f"  emergent queries (held-out voice): {len(data['spoken_names'])} emoji names, "
             f"{len(data['spoken_docs'])} docstrings ({time.perf_counter() - t0:.0f} s)")
    except datasets.Unavailable as exc:
        data["skipped"]["speech"] = str(exc)
        echo(f"  speech: skipped ({exc})")
    return data


def bind_config(data: dict[str, Any], specs: dict[str, Any], out: Path,
                steps: dict[str, int]) -> dict[str, Any]:
    modalities: dict[str, Any] = {}
    if "emoji" in data:
        modalities["image"] = {"tower": specs["image"], "train": data["emoji"]["train"],
                               "steps": steps["image"], "batch_size": 96, "lr": 1e-3,
                               "warmup": 20}
    if "code" in data:
        rows = data["code"]["train"]
        rows = random.Random(0).sample(rows, min(steps["code_items"], len(rows)))
        if steps["code_finetune"]:  # the whole tower, from MiniLM
            modalities["code"] = {"tower": specs["code"], "train": rows,
                                  "steps": steps["code"], "batch_size": 32, "lr": 3e-5,
                                  "warmup": 5, "weight_decay": 0.01, "augment": False,
                                  "projection_init": "rotation"}
        else:  # MiniLM frozen (its embeddings computed once), a linear map trained
            modalities["code"] = {"tower": specs["code"], "train": rows,
                                  "steps": steps["code"], "batch_size": 256, "lr": 1e-3,
                                  "warmup": 10, "weight_decay": 0.0, "augment": False,
                                  "freeze_encoder": True, "projection_init": "rotation"}
    # audio <-> text is speech <-> transcript (rendered music meets text only through MIDI);
    # the recorded prompts, the voices of the test, are drawn three times as often as
    # espeak-ng's clips
    audio_rows = [{"audio": r["audio"], "text": r["text"]}
                  for r in data.get("speech", {}).get("train", [])
                  for _ in range(1 if r.get("synthetic") else 3)]
    if audio_rows and "audio" in specs:
        modalities["audio"] = {"tower": specs["audio"], "train": audio_rows,
                               "steps": steps["audio"], "batch_size": 64, "lr": 1e-3,
                               "warmup": 15}
    if "folk" in data and "midi" in specs:
        tunes = random.Random(0).sample(data["folk"]["train"],
                                        min(steps["midi_items"], len(data["folk"]["train"])))
        modalities["midi"] = {"tower": specs["midi"], "train": tunes,
                              "steps": steps["midi"], "batch_size": 64, "lr": 2e-3,
                              "warmup": 15}
    pairs = []
    if "music" in data and {"audio", "midi"} <= set(modalities):
        pairs.append({"modalities": ["midi", "audio"], "batch_size": 64,
                      "train": [{"midi": r["midi"], "audio": r["audio"]}
                                for r in data["music"]["train"]]})
    return {"hub": {"name": "minilm", "path": str(out / "minilm-l6")}, "dims": [32, 64, 128],
            "loss": "infonce", "negatives": "cache", "schedule": "together",
            "modalities": modalities, "pairs": pairs, "pair_steps": steps["pair"],
            "output_dir": str(out / "bind"), "cache_dir": str(out / "hub-cache"), "seed": 0}


def tasks(data: dict[str, Any], model: Any, chroma: dict[str, float] | None) -> list[Task]:
    out: list[Task] = []
    has = set(model.modalities)
    if "emoji" in data and "image" in has:
        rows = data["emoji"]["test"]
        img, txt = [r["image"] for r in rows], [r["text"] for r in rows]
        out += [Task("emoji image -> name", "trained", img, txt, "image", "text",
                     BASELINES["emoji image -> name"]),
                Task("name -> emoji image", "trained", txt, img, "text", "image")]
    if "code" in data and "code" in has:
        rows = data["code"]["test"]
        code, doc = [r["code"] for r in rows], [r["text"] for r in rows]
        out += [Task("docstring -> function", "trained", doc, code, "text", "code",
                     BASELINES["docstring -> function"]),
                Task("function -> docstring", "trained", code, doc, "code", "text")]
    if "speech" in data and "audio" in has:
        rows = [r for r in data["speech"]["test"] if not r.get("synthetic")]
        aud, txt = [r["audio"] for r in rows], [r["text"] for r in rows]
        out += [Task("speech -> transcript", "trained", aud, txt, "audio", "text",
                     BASELINES["speech -> transcript"]),
                Task("transcript -> speech", "trained", txt, aud, "text", "audio")]
    if "folk" in data and "midi" in has:
        rows = data["folk"]["test"]
        midi, txt = [r["midi"] for r in rows], [r["text"] for r in rows]
        out += [Task("MIDI -> tune text", "trained", midi, txt, "midi", "text"),
                Task("tune text -> MIDI", "trained", txt, midi, "text", "midi")]
    if "music" in data and {"midi", "audio"} <= has:
        rows = data["music"]["test"]
        midi, aud = [r["midi"] for r in rows], [r["audio"] for r in rows]
        base = {"chroma (pitch-class histogram vs chroma)": chroma} if chroma else {}
        out += [Task("MIDI -> rendered audio", "direct", midi, aud, "midi", "audio", base),
                Task("rendered audio -> MIDI", "direct", aud, midi, "audio", "midi")]
    if data.get("spoken_names") and {"audio", "image"} <= has:
        pairs = data["spoken_names"]
        out.append(Task("speech -> emoji image", "emergent", [q["audio"] for q, _ in pairs],
                        [r["image"] for _, r in pairs], "audio", "image"))
        out.append(Task("emoji image -> speech", "emergent", [r["image"] for _, r in pairs],
                        [q["audio"] for q, _ in pairs], "image", "audio"))
    if data.get("spoken_docs") and {"audio", "code"} <= has:
        pairs = data["spoken_docs"]
        out.append(Task("speech -> code", "emergent", [q["audio"] for q, _ in pairs],
                        [r["code"] for _, r in pairs], "audio", "code"))
    return out


def emergent_music(data: dict[str, Any]) -> list[Task]:
    """MIDI <-> rendered audio before the pair is trained: through text alone."""
    if "music" not in data:
        return []
    rows = data["music"]["test"]
    midi, aud = [r["midi"] for r in rows], [r["audio"] for r in rows]
    return [Task("MIDI -> rendered audio (through text)", "emergent", midi, aud, "midi",
                 "audio"),
            Task("rendered audio -> MIDI (through text)", "emergent", aud, midi, "audio",
                 "midi")]


def chroma_baseline(data: dict[str, Any]) -> dict[str, float] | None:
    try:
        from mmenc_audio.audio import load_audio
        from mmenc_audio.chroma import chroma_baseline as baseline
    except ImportError:
        return None
    rows = data.get("music", {}).get("test") or []
    if not rows:
        return None
    scores: dict[str, float] = baseline([r["midi"] for r in rows],
                                        [load_audio(r["audio"]) for r in rows])
    return scores


def mixed_store(model_dir: Path, data: dict[str, Any], path: Path,
                per: int = 200) -> dict[str, Any]:
    """A store holding held-out items of every modality, for ``mmenc search``."""
    import mmenc
    from mmenc.retrieval.store import (
        EmbeddingStore,
        Item,
        embed_items,
        sha256_bytes,
        sha256_file,
    )

    model = mmenc.load(model_dir)
    groups: dict[str, list[Item]] = {}

    def files(modality: str, paths: list[str]) -> None:
        groups.setdefault(modality, []).extend(
            Item(p, p, sha256_file(p), p) for p in paths[:per])

    if "emoji" in data:
        files("image", [r["image"] for r in data["emoji"]["test"]])
    if "code" in data:
        groups["code"] = [Item(sha256_bytes(r["code"].encode()), r["code"],
                               sha256_bytes(r["code"].encode()), r["code"])
                          for r in data["code"]["test"][:per]]
    if "speech" in data:
        files("audio", [r["audio"] for r in data["speech"]["test"]])
    if "music" in data:
        files("audio", [r["audio"] for r in data["music"]["test"]])
        files("midi", [r["midi"] for r in data["music"]["test"]])
    if path.exists():
        path.unlink()
    counts = {}
    with EmbeddingStore(path) as store:
        store.bind_model(model_dir)
        for modality, items in groups.items():
            if modality in model.modalities:
                report = embed_items(model, store, items, modality, show_progress_bar=False)
                counts[modality] = report.new
    return counts


def plot_recall(results: dict[str, Any], dim: int, path: Path) -> None:
    from mmenc.optional import require

    matplotlib = require("matplotlib", "plot", "the recall chart")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(names) + 1.5))
    for i, k in enumerate(("R@1", "R@5", "R@10")):
        ax.barh([j + 0.27 * i for j in range(len(names))],
                [results[n]["dims"][str(dim)][k] for n in names], height=0.27, label=k)
    ax.scatter([results[n]["chance"]["R@1"] for n in names], range(len(names)), marker="|",
               color="k", s=200, label="chance R@1", zorder=3)
    ax.set_yticks([j + 0.27 for j in range(len(names))], names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"recall at full width ({dim})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_bind_job(out: Path, minilm_dir: Path, echo: Echo = print, scale: float = 1.0,
                 steps: dict[str, int] | None = None) -> dict[str, Any]:
    """Steps 2-4 of the module docstring; ``minilm_dir`` is the converted MiniLM."""
    start = time.perf_counter()
    steps = {"image": 220, "code": 200, "audio": 160, "midi": 220, "pair": 60,
             **(steps or {})}
    steps = {k: max(1, round(v * scale)) for k, v in steps.items()}
    # training items: their texts go through the hub once; more with a larger scale
    steps["midi_items"] = min(12000, round(2500 * max(1.0, scale)))
    steps["code_items"] = min(5000, round(2000 * max(1.0, scale)))
    steps["code_finetune"] = int(scale >= 4)
    sizes = {"music_train": min(3000, round(1000 * max(1.0, scale))), "music_test": 500,
             **SPEECH_SIZES}
    echo("[2/4] data")
    data = build_data(out / "data", echo, sizes)
    specs = tower_specs(shorter_copy(minilm_dir, out / "minilm-code", 128), audio_seconds=4.0)
    config = bind_config(data, specs, out, steps)
    chroma = chroma_baseline(data)
    echo(f"[3/4] train {', '.join(config['modalities'])} against the frozen MiniLM hub"
         + (" (+ MIDI <-> audio directly)" if config["pairs"] else ""))
    from mmenc.bind.train import train_bound

    before: dict[str, Any] = {}

    def measure_emergent(model: Any) -> None:
        before.update(evaluate_bound(model, emergent_music(data), echo=echo))

    result = train_bound(config, echo=echo, after_hub=measure_emergent)
    echo(f"  trained in {result.seconds:.0f} s; hub cache: {result.cache}")
    echo("[4/4] evaluate (held-out items)")
    import mmenc

    model = mmenc.load(result.model_dir)
    results = evaluate_bound(model, tasks(data, model, chroma), echo=echo)
    results.update(before)
    dims = sorted(model.dims, reverse=True)
    lines = table(results, dims)
    store_counts = mixed_store(result.model_dir, data, out / "store.db")
    try:
        plot_recall(results, dims[0], out / "recall.png")
    except ImportError as exc:  # the run is complete without its chart
        echo(f"  no recall chart: {exc}")
    verdicts = []
    for name, (key, target) in TARGETS.items():
        if name in results:
            got = results[name]["dims"][str(dims[0])][key]
            verdicts.append(f"- {name}: {key} {got:.3f} (target {target}) "
                            f"{'met' if got >= target else 'NOT met'}")
        else:
            verdicts.append(f"- {name}: not measured (data missing)")
    # per trained modality: its pairs with text (and the direct pair), where full-width R@10
    # is above twice chance (a ratio of chance-level recalls says nothing)
    kept = {name: r["dims"]["64"]["R@10"] / r["dims"][str(dims[0])]["R@10"]
            for name, r in results.items() if r["kind"] in ("trained", "direct")
            and r["dims"][str(dims[0])]["R@10"] > 2 * r["chance"]["R@10"]}
    keep64 = min(kept.values()) if kept else float("nan")
    verdicts.append(f"- Matryoshka: R@10 at 64 dims keeps at least {keep64:.0%} of full width "
                    f"(target 90%) {'met' if keep64 >= 0.9 else 'NOT met'} over "
                    f"{len(kept)} trained or direct pairs above twice chance"
                    + (f" (lowest: {min(kept, key=kept.__getitem__)})" if kept else ""))
    seconds = round(time.perf_counter() - start, 1)
    report = {"results": results, "skipped": data["skipped"], "train": {
        "seconds": round(result.seconds, 1), "logs": result.logs, "cache": result.cache,
        "steps": steps}, "model": str(result.model_dir), "store": str(out / "store.db"),
        "store_items": store_counts, "seconds": seconds}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = ["# mmenc main job: one bound space", "",
          f"Bound model: `{result.model_dir}` (hub: the packaged MiniLM, frozen; towers: "
          f"{', '.join(model.towers)}). Trained in {result.seconds:.0f} s; "
          f"the job took {seconds:.0f} s.", "",
          "Held-out items only. *trained*: the modality was trained against the text hub; "
          "*direct*: a pair loss between two towers; *emergent*: never trained together.", "",
          *lines, "", "Targets:", *verdicts, "", "![recall](recall.png)", "",
          f"Mixed store `{out / 'store.db'}`: {store_counts}. Try "
          f"`mmenc search {out / 'store.db'} --query \"a smiling cat\"`.", ""]
    (out / "report.md").write_text("\n".join(md))
    echo("\n".join(lines))
    echo("\n".join(verdicts))
    return report
