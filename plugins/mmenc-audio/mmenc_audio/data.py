"""Real audio from installed Debian packages, read in place (nothing is copied).

- speech: ``asterisk-core-sounds-en-wav`` (the recordings, 8 kHz WAV) and
  ``asterisk-core-sounds-en`` (their transcripts, ``core-sounds-en.txt.gz``): one clip per
  prompt id (``digits/7``, ``vm-goodbye``...) with its transcript. Entries whose transcript is
  a bracketed description (``[ascending tones]``) are not speech and are left out.
- sounds: ``sonic-pi-samples``: named CC0 samples (``drum_snare_hard``, ``ambi_choir``...); the
  text is the name, words split and abbreviations spelt out (``bass drum boom``).

The test split is mmenc's (:func:`mmenc.data.held_out`): md5 of the group key (prompt id, sample
name) modulo 5 == 0.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from mmenc.data import held_out

SPEECH_DIR = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SOUNDS_DIR = Path("/usr/share/sonic-pi/samples")
MIN_SECONDS = 0.1
"""Shorter clips (a few sonic-pi blips) are left out."""

_WORDS = {"bd": "bass drum", "sn": "snare", "ambi": "ambient", "guit": "guitar",
          "elec": "electronic", "perc": "percussion", "misc": "miscellaneous", "hat": "hi-hat",
          "vinyl": "vinyl", "bass": "bass", "lo": "low", "hi": "high", "fx": "effect"}


@dataclass(frozen=True)
class Clip:
    """One clip and its text.

    Attributes:
        id: prompt id or sample name.
        path: the audio file (in the installed package).
        text: transcript or spelt-out name.
        source: ``"speech"`` or ``"sounds"``.
        test: held out (md5 of ``id`` modulo 5 == 0).
    """

    id: str
    path: str
    text: str
    source: str
    test: bool


def _duration_ok(path: Path) -> bool:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError):
        return False
    return info.frames / info.samplerate >= MIN_SECONDS


def speech_prompts(root: Path = SPEECH_DIR, transcripts: Path = TRANSCRIPTS) -> list[Clip]:
    """The recorded prompts that have a transcript and a WAV file, sorted by id.

    Raises:
        FileNotFoundError: the packages are not installed.
    """
    if not transcripts.is_file() or not root.is_dir():
        raise FileNotFoundError("speech prompts need the Debian packages asterisk-core-sounds-en "
                                f"and asterisk-core-sounds-en-wav ({transcripts}, {root})")
    clips = {}
    with gzip.open(transcripts, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            key, text = line.split(":", 1)
            key, text = key.strip(), " ".join(text.split())
            if not key or not text or text.startswith("["):
                continue
            wav = root / f"{key}.wav"
            if wav.is_file() and _duration_ok(wav):
                clips[key] = Clip(key, str(wav), text, "speech", held_out(key))
    return [clips[k] for k in sorted(clips)]


def spell_name(name: str) -> str:
    """``"bd_fat"`` -> ``"bass drum fat"``: the words of a sample name, abbreviations spelt."""
    return " ".join(_WORDS.get(w, w) for w in name.lower().split("_") if w)


def sound_samples(root: Path = SOUNDS_DIR) -> list[Clip]:
    """The sonic-pi samples, sorted by name.

    Raises:
        FileNotFoundError: the package is not installed.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"sound samples need the Debian package sonic-pi-samples ({root})")
    return [Clip(p.stem, str(p), spell_name(p.stem), "sounds", held_out(p.stem))
            for p in sorted(root.glob("*.flac")) if _duration_ok(p)]


def available() -> dict[str, bool]:
    """Which sources are installed."""
    return {"speech": TRANSCRIPTS.is_file() and SPEECH_DIR.is_dir(),
            "sounds": SOUNDS_DIR.is_dir()}


def load_clips(sources: tuple[str, ...] = ("speech", "sounds")) -> list[Clip]:
    """The clips of ``sources`` (``"speech"``, ``"sounds"``)."""
    readers = {"speech": speech_prompts, "sounds": sound_samples}
    unknown = [s for s in sources if s not in readers]
    if unknown:
        raise ValueError(f"unknown sources {unknown} (known: {', '.join(readers)})")
    return [c for s in sources for c in readers[s]()]


def write_manifests(out: Path, sources: tuple[str, ...] = ("speech", "sounds"),
                    text: bool = True) -> dict[str, Path]:
    """``train.jsonl`` and ``test.jsonl`` under ``out``: one ``{"id", "audio": PATH[, "text"]}``
    per clip (absolute paths into the installed packages).

    Returns:
        ``{"train": path, "test": path}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.jsonl", "test": out / "test.jsonl"}
    clips = load_clips(sources)
    for split, path in paths.items():
        with path.open("w", encoding="utf-8") as f:
            for c in clips:
                if c.test == (split == "test"):
                    row = {"id": f"{c.source}:{c.id}", "audio": c.path}
                    if text:
                        row["text"] = c.text
                    f.write(json.dumps(row) + "\n")
    return paths
