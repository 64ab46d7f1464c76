"""Synthetic speech with Debian's ``espeak-ng``, and the speech sets built from it.

Every clip made here is synthetic; every manifest row written here says so
(``"synthetic": True``). The WAV files are espeak-ng's own (mono, 16-bit, 22,050 Hz;
:func:`mmenc_audio.audio.load_audio` resamples them to 16 kHz).

API:

- ``Voice(language="en-us", variant="m3", pitch=50, speed=175)``: a frozen speaker. ``language``
  is an espeak-ng voice (``en-us``, ``en-gb``...), ``variant`` one of ``m1``..``m7``,
  ``f1``..``f5`` (``""``: the voice's default), ``pitch`` 0..99 (``-p``), ``speed`` in words
  per minute 80..450 (``-s``). ``voice.name`` reads ``en-us+m3-p50-s175``.
- ``training_voices(n, seed=0) -> list[Voice]``: ``n`` distinct voices drawn (deterministically
  by ``seed``) from the training family: :data:`TRAIN_LANGUAGES` x :data:`TRAIN_VARIANTS` x
  pitch in :data:`TRAIN_PITCH` x speed in :data:`TRAIN_SPEED`.
- ``heldout_voice() -> Voice``: the one test speaker. Its variant, pitch and speed lie outside
  the training family, so no training voice shares any of the three.
- ``synthesize(texts, out_dir, voice=Voice(), jobs=2, timeout=30.0) -> list[Path]``: one WAV per
  text (``voice`` is one Voice for all, or a list with one Voice per text), in the order of
  ``texts``. A clip's file name is the sha256 of ``(text, voice)``: a clip that exists is not
  made again, so a second call costs nothing and does not even need espeak-ng. Texts go to
  espeak-ng on stdin (never as arguments), ``jobs`` processes at a time; each file is written
  under a temporary name and renamed, so a killed run leaves no half-written clip. espeak-ng
  output is deterministic: the same text and voice give the same bytes. Empty or over-long
  texts (more than :data:`MAX_CHARS`) and failed syntheses raise
  :class:`~mmenc.errors.InputError` naming the text; a missing espeak-ng raises
  ``FileNotFoundError``.
- ``speech_pairs(out_dir, synthetic_per_text=2, texts=(), seed=0) -> list[dict]``: the real
  asterisk prompts (:func:`mmenc_audio.data.speech_prompts`, split by prompt id) as rows
  ``{"id", "audio", "text", "split", "synthetic": False, "group"}``, plus
  ``synthetic_per_text`` espeak-ng clips of every *training* transcript and of every extra
  ``texts`` (the caller passes training-split texts only; a text that is also a held-out
  transcript is left out), each in a training voice, as rows
  ``{"id", "audio", "text", "split": "train", "synthetic": True, "voice", "group"}``.
  Held-out prompts are never synthesised.
- ``spoken_queries(texts, out_dir) -> list[dict]``: ``texts`` (held-out names, docstrings...)
  spoken in :func:`heldout_voice`, rows ``{"id", "audio", "text", "split": "test",
  "synthetic": True, "voice"}`` in the order of ``texts`` (the id is ``spoken:<index>``).
- ``write_manifest(rows, path) -> Path``: rows as JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmenc.errors import InputError

VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
MAX_CHARS = 2000
"""Longest text synthesised (about two minutes of speech)."""
TRAIN_LANGUAGES = ("en-us", "en-gb")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
TRAIN_PITCH = range(25, 66, 5)
TRAIN_SPEED = range(150, 206, 5)
_HELDOUT = ("en-us", "f5", 80, 130)
"""The held-out speaker: variant ``f5``, pitch 80 and speed 130 are outside the training family."""


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker.

    Args:
        language: an espeak-ng voice name (``en-us``, ``en-gb``...).
        variant: ``m1``..``m7``, ``f1``..``f5``, or ``""`` for the voice's default.
        pitch: 0..99 (``-p``).
        speed: words per minute, 80..450 (``-s``).
    """

    language: str = "en-us"
    variant: str = "m3"
    pitch: int = 50
    speed: int = 175

    def __post_init__(self) -> None:
        if not (self.language[:1].isalpha() and self.language.replace("-", "").isalnum()):
            raise InputError(self.language, "not an espeak-ng voice name")
        if self.variant not in VARIANTS:
            raise InputError(self.variant, "a variant is m1..m7, f1..f5 or empty")
        if not 0 <= self.pitch <= 99:
            raise InputError(self.pitch, "pitch must be in 0..99")
        if not 80 <= self.speed <= 450:
            raise InputError(self.speed, "speed must be in 80..450 words per minute")

    @property
    def name(self) -> str:
        variant = f"+{self.variant}" if self.variant else ""
        return f"{self.language}{variant}-p{self.pitch}-s{self.speed}"

    def args(self) -> list[str]:
        """espeak-ng's command-line options for this voice."""
        variant = f"+{self.variant}" if self.variant else ""
        return ["-v", f"{self.language}{variant}", "-p", str(self.pitch), "-s", str(self.speed)]


def heldout_voice() -> Voice:
    """The test speaker, whose variant, pitch and speed no training voice has."""
    return Voice(*_HELDOUT)


def training_voices(n: int, seed: int = 0) -> list[Voice]:
    """``n`` distinct voices of the training family, drawn by ``seed``."""
    family = [(lang, var, p, s) for lang in TRAIN_LANGUAGES for var in TRAIN_VARIANTS
              for p in TRAIN_PITCH for s in TRAIN_SPEED]
    if not 0 <= n <= len(family):
        raise ValueError(f"n must be in 0..{len(family)}, got {n}")
    return [Voice(*v) for v in random.Random(seed).sample(family, n)]


def espeak() -> str | None:
    """The ``espeak-ng`` executable (Debian package ``espeak-ng``), or None."""
    return shutil.which("espeak-ng")


def clip_name(text: str, voice: Voice) -> str:
    """The cache file name of ``text`` spoken by ``voice``."""
    key = json.dumps([text, voice.language, voice.variant, voice.pitch, voice.speed])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".wav"


def _speak(exe: str, text: str, voice: Voice, target: Path, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".wav.part", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([exe, *voice.args(), "--stdin", "-w", tmp], input=text.encode(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
        if done.returncode != 0 or os.path.getsize(tmp) <= 44:  # a bare WAV header
            err = done.stderr.decode(errors="replace").strip()[:200]
            raise InputError(text, f"espeak-ng ({voice.name}) made no audio "
                                   f"(exit {done.returncode}{': ' + err if err else ''})")
        os.replace(tmp, target)
    except subprocess.TimeoutExpired:
        raise InputError(text, f"espeak-ng took longer than {timeout} s") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def synthesize(texts: Sequence[str], out_dir: str | Path, voice: Voice | Sequence[Voice] = Voice(),
               jobs: int = 2, timeout: float = 30.0) -> list[Path]:
    """Speak each text into ``out_dir`` (cached by text and voice); see the module docstring.

    Returns:
        one WAV path per text, in order.
    Raises:
        InputError: an empty or over-long text, or one espeak-ng fails on.
        FileNotFoundError: a clip is missing and espeak-ng is not installed.
    """
    voices = [voice] * len(texts) if isinstance(voice, Voice) else list(voice)
    if len(voices) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(voices)} voices")
    for text in texts:
        if not text.strip():
            raise InputError(repr(text), "empty text")
        if len(text) > MAX_CHARS:
            raise InputError(text, f"{len(text)} characters (at most {MAX_CHARS})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / clip_name(t, v) for t, v in zip(texts, voices, strict=True)]
    todo = {p: (t, v) for p, t, v in zip(paths, texts, voices, strict=True) if not p.is_file()}
    if todo:
        exe = espeak()
        if exe is None:
            raise FileNotFoundError("espeak-ng not found: install the Debian package espeak-ng")
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for future in [pool.submit(_speak, exe, t, v, p, timeout)
                           for p, (t, v) in todo.items()]:
                future.result()
    return paths


def speech_pairs(out_dir: str | Path, synthetic_per_text: int = 2, texts: Iterable[str] = (),
                 seed: int = 0, jobs: int = 2) -> list[dict[str, Any]]:
    """Real asterisk prompts and espeak-ng speech of training texts; see the module docstring."""
    from mmenc_audio.data import speech_prompts

    rows: list[dict[str, Any]] = []
    for clip in speech_prompts():
        rows.append({"id": f"speech:{clip.id}", "audio": clip.path, "text": clip.text,
                     "split": "test" if clip.test else "train", "synthetic": False,
                     "group": clip.id})
    train = {r["text"]: r["group"] for r in rows if r["split"] == "train"}
    for text in texts:
        train.setdefault(" ".join(text.split()), f"text:{len(train)}")
    held = {r["text"] for r in rows if r["split"] == "test"}  # never speak a test transcript
    train = {t: g for t, g in train.items() if t and t not in held}
    if synthetic_per_text <= 0 or not train:
        return rows
    pool = training_voices(min(64, len(TRAIN_LANGUAGES) * len(TRAIN_VARIANTS)
                               * len(TRAIN_PITCH) * len(TRAIN_SPEED)), seed)
    rng = random.Random(seed)
    jobs_texts, jobs_voices, groups = [], [], []
    for text, group in train.items():
        for voice in rng.sample(pool, min(synthetic_per_text, len(pool))):
            jobs_texts.append(text)
            jobs_voices.append(voice)
            groups.append(group)
    paths = synthesize(jobs_texts, Path(out_dir), jobs_voices, jobs=jobs)
    for text, voice, group, path in zip(jobs_texts, jobs_voices, groups, paths, strict=True):
        rows.append({"id": f"espeak:{voice.name}:{path.stem}", "audio": str(path), "text": text,
                     "split": "train", "synthetic": True, "voice": voice.name, "group": group})
    return rows


def spoken_queries(texts: Sequence[str], out_dir: str | Path, jobs: int = 2
                   ) -> list[dict[str, Any]]:
    """``texts`` spoken by the held-out voice, as test rows; see the module docstring."""
    voice = heldout_voice()
    paths = synthesize(list(texts), Path(out_dir), voice, jobs=jobs)
    return [{"id": f"spoken:{i}", "audio": str(p), "text": t, "split": "test",
             "synthetic": True, "voice": voice.name}
            for i, (t, p) in enumerate(zip(texts, paths, strict=True))]


def write_manifest(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """``rows`` as JSON lines at ``path`` (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path
