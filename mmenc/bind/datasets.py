"""The main job's binding data: four pairings with text, one direct pair, and the emergent
query sets, all built from installed packages (see ../shared/DATA.md and docs/data.md).

Each builder returns ``{"train": rows, "test": rows, ...}`` with rows ``{modality: item,
"text": str}`` (items are paths, strings or bytes); a builder whose plugin or package is
missing raises :class:`Unavailable` with the reason. Held-out splits are mmenc's (md5 of a
group key): emoji by base emoji, code by top-level module, speech by prompt id, tunes by
song book.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Unavailable(RuntimeError):
    """A pairing that cannot be built here (a plugin or a package is missing)."""


def at_16k(paths: list[str], out: Path) -> list[str]:
    """Copies of audio files resampled once to 16 kHz (the audio tower's rate), so that
    training does not resample espeak-ng's 22.05 kHz clips at every step; files already at
    16 kHz are returned as they are. A copy (16-bit WAV) is named by its source's name and made
    once; one resampling kernel per source rate, two files at a time."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import soundfile as sf
    import torch
    import torchaudio

    out.mkdir(parents=True, exist_ok=True)
    kernels: dict[int, Any] = {}

    def convert(path: str) -> str:
        info = sf.info(path)
        if info.samplerate == 16000:
            return path
        target = out / (Path(path).stem + ".wav")
        if not target.is_file():
            data, rate = sf.read(path, dtype="float32", always_2d=True)
            if rate not in kernels:
                kernels[rate] = torchaudio.transforms.Resample(rate, 16000)
            with torch.no_grad():
                mono = kernels[rate](torch.from_numpy(data.mean(axis=1)))
            tmp = target.with_name(f"{target.stem}.{os.getpid()}-{threading.get_ident()}.tmp.wav")
            sf.write(tmp, mono.clamp(-1, 1).numpy(), 16000, subtype="PCM_16")
            tmp.replace(target)
        return str(target)

    for path in paths[:1]:  # the kernels are made before the threads share them
        convert(path)
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(convert, paths))


def _rows(path: Path) -> list[dict[str, Any]]:
    base = path.parent
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            row["image"] = str(base / row["image"])
            out.append(row)
    return out


def emoji(out: Path) -> dict[str, Any]:
    """Emoji images (64 px, Noto Color Emoji) <-> their English names."""
    from mmenc.data.emoji import write_emoji_manifests

    try:
        train, test, missing = write_emoji_manifests(out)
    except (ImportError, FileNotFoundError, OSError) as exc:
        raise Unavailable(f"emoji: {exc}") from None
    return {"train": _rows(train), "test": _rows(test), "missing": missing}


def code(limit_text: int = 400, out: Path | None = None) -> dict[str, Any]:
    """Standard-library functions <-> the first paragraph of their docstrings; docstrings are
    cut at ``limit_text`` characters. With ``out``, the parsed pairs are kept in
    ``out/stdlib-pairs.json`` (keyed by the library's folder and Python version) and read from
    there next time."""
    import sys

    from mmenc.data.stdlib import stdlib_pairs, stdlib_root

    key = f"{stdlib_root()} {sys.version}"
    cached = out / "stdlib-pairs.json" if out is not None else None
    rows: list[dict[str, Any]] | None = None
    if cached is not None and cached.is_file():
        try:
            stored = json.loads(cached.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                rows = stored["rows"]
        except (ValueError, KeyError, TypeError):
            rows = None
    if rows is None:
        from mmenc.data import held_out

        rows = [{"code": p.code, "docstring": p.docstring, "module": p.module,
                 "test": held_out(p.module)} for p in stdlib_pairs()]
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key": key, "rows": rows}), encoding="utf-8")
            tmp.replace(cached)

    def row(p: dict[str, Any]) -> dict[str, Any]:
        return {"code": p["code"], "text": p["docstring"][:limit_text], "module": p["module"]}

    return {"train": [row(p) for p in rows if not p["test"]],
            "test": [row(p) for p in rows if p["test"]]}


def folk(out: Path) -> dict[str, Any]:
    """Folk-tune MIDI (music21's ABC song books through abc2midi) <-> title, genre, region,
    meter and key."""
    try:
        from mmenc_midi.data import abc2midi, folk_tunes
    except ImportError as exc:
        raise Unavailable(f"midi: the mmenc-midi plugin is missing ({exc})") from None
    if abc2midi() is None:
        raise Unavailable("midi: the Debian package abcmidi (abc2midi) is not installed")
    data = folk_tunes(out / "folk")
    return {"train": [{"midi": p.midi, "text": p.text, "id": p.id} for p in data.train],
            "test": [{"midi": p.midi, "text": p.text, "id": p.id} for p in data.test],
            "skipped": data.skipped}


def music(out: Path, n_train: int, n_test: int, seconds: float = 6.0) -> dict[str, Any]:
    """MIDI snippets of ``seconds`` <-> their renders (random GM instrument, random 0-2 s
    offset), with the tune's text."""
    try:
        from mmenc_audio.musicsets import midi_audio_pairs
        from mmenc_audio.render import find_soundfont
    except ImportError as exc:
        raise Unavailable(f"music: the mmenc-audio / mmenc-midi plugins are missing ({exc})") \
            from None
    if find_soundfont() is None:
        raise Unavailable("music: no General MIDI SoundFont installed (timgm6mb-soundfont)")
    rows = midi_audio_pairs(out, n_train=n_train, n_test=n_test, seconds=seconds)
    return {"train": [r for r in rows if r["split"] == "train"],
            "test": [r for r in rows if r["split"] == "test"], "skipped": rows.skipped}


def speech(out: Path, extra_texts: list[str], per_text: int = 2) -> dict[str, Any]:
    """The recorded asterisk prompts <-> transcripts, plus espeak-ng speech (labelled
    synthetic) of every training transcript and of ``extra_texts`` (training-split texts of
    the other pairings) in training voices."""
    try:
        from mmenc_audio.data import available
        from mmenc_audio.synth import espeak, speech_pairs
    except ImportError as exc:
        raise Unavailable(f"speech: the mmenc-audio plugin is missing ({exc})") from None
    if not available()["speech"]:
        raise Unavailable("speech: the Debian packages asterisk-core-sounds-en(-wav) are "
                          "not installed")
    if espeak() is None:
        per_text, extra_texts = 0, []
    rows = speech_pairs(out / "speech", synthetic_per_text=per_text, texts=extra_texts)
    synthetic = [r for r in rows if r.get("synthetic")]
    for row, path in zip(synthetic, at_16k([r["audio"] for r in synthetic], out / "speech16k"),
                         strict=True):
        row["audio"] = path
    return {"train": [r for r in rows if r["split"] == "train"],
            "test": [r for r in rows if r["split"] == "test"],
            "synthetic": sum(bool(r.get("synthetic")) for r in rows)}


def spoken(out: Path, texts: list[str]) -> list[dict[str, Any]]:
    """``texts`` spoken by the held-out espeak-ng voice (an emergent query set); empty without
    espeak-ng."""
    from mmenc_audio.synth import espeak, spoken_queries

    if espeak() is None or not texts:
        return []
    rows: list[dict[str, Any]] = spoken_queries(texts, out / "spoken")
    for row, path in zip(rows, at_16k([r["audio"] for r in rows], out / "spoken16k"),
                         strict=True):
        row["audio"] = path
    return rows
