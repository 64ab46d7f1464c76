"""MIDI -> audio: in-process SoundFont rendering with a random instrument and time offset.

Music audio for MIDI <-> audio pairs is rendered with ``tinysoundfont`` (PyPI; installed with
``--no-deps`` because it declares ``pyaudio``, which only its live playback uses) and a General
MIDI SoundFont from Debian (``timgm6mb-soundfont``, 6 MB; ``fluid-soundfont-gm`` is used when
asked for). Rendering is deterministic: the same MIDI, program, offset and length give the same
samples.

API:

- ``find_soundfont() -> Path | None``: the first installed SoundFont of :data:`SOUNDFONTS`.
- ``Renderer(soundfont=None, sample_rate=16000)``: loads the SoundFont once (and renders one
  throw-away clip: the first one after loading can come out silent). A renderer holds one
  synthesizer: use one per thread or data-loader worker (it is not picklable).
  ``renderer.render(midi, program, offset, seconds=8.0) -> np.ndarray``: mono float32
  ``[seconds * sample_rate]``. ``midi`` is a path, bytes or ``symusic.Score`` (validated by
  :func:`mmenc_midi.midi.load_midi`); every melodic track is played with the General MIDI
  ``program`` (0..127), drum tracks with the GM drum kit. ``offset`` (seconds) moves the music
  in time: ``offset > 0`` puts that much silence before it, ``offset < 0`` cuts that much off
  its start; the clip is then the first ``seconds`` of the result. Raises
  :class:`~mmenc.errors.InputError` for a bad MIDI file or a render that comes out silent.
- ``draw_setting(key, seed=0, max_offset=2.0, programs=PITCHED_PROGRAMS) -> (program, offset)``:
  the random instrument and offset of one item, drawn from ``(seed, key)`` only (the same item
  gets the same setting in every run, whatever else is rendered). The offset's size is uniform
  in ``[0, max_offset]``, its sign (silence or cut) a coin flip; offsets are rounded to 1 ms.
- ``renderer.render_file(midi_bytes, program, offset, seconds, cache, fmt="flac") -> Path``:
  the rendered clip as a file under ``cache``, named by the sha256 of (MIDI bytes, program,
  offset, seconds, sample rate, SoundFont): an existing file is not rendered again. ``fmt`` is
  ``"flac"`` (lossless, byte-identical across runs, ~40% of WAV), ``"wav"`` (16-bit PCM) or
  ``"ogg"`` (Vorbis, smallest; the stream serial number is random, so bytes differ between
  runs while the decoded audio does not).
- ``midi_snippet(midi, seconds) -> symusic.Score``: the notes sounding in the first ``seconds``
  (cut at ``seconds``), in tick time: the MIDI side of a pair whose audio side is
  ``render(midi, program, offset, seconds)``.

The data set built on this (:func:`mmenc_audio.musicsets.midi_audio_pairs`) and the chroma
baseline (:mod:`mmenc_audio.chroma`) live in their own modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mmenc.errors import InputError

SOUNDFONTS = (Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
              Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"))
"""SoundFonts looked for, in order (Debian ``timgm6mb-soundfont``, ``fluid-soundfont-gm``)."""
PITCHED_PROGRAMS = tuple(range(112))
"""General MIDI programs drawn by default: 112..127 are percussion and sound effects, whose
pitch does not follow the notes."""
SAMPLE_RATE = 16_000
MAX_SECONDS = 120.0
"""Longest clip rendered (the cost cap of one item)."""
FORMATS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16"), "ogg": ("OGG", "VORBIS")}
_DRUM_CHANNEL = 9


def find_soundfont() -> Path | None:
    """The first installed SoundFont of :data:`SOUNDFONTS`, or None."""
    return next((p for p in SOUNDFONTS if p.is_file()), None)


def draw_setting(key: str, seed: int = 0, max_offset: float = 2.0,
                 programs: tuple[int, ...] = PITCHED_PROGRAMS) -> tuple[int, float]:
    """``(program, offset)`` for the item ``key``; see the module docstring."""
    rng = random.Random(f"{seed}:{key}")
    program = programs[rng.randrange(len(programs))]
    size = rng.uniform(0.0, max_offset)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return program, round(sign * size, 3)


def _score(midi: Any) -> Any:
    from mmenc_midi.midi import load_midi

    return load_midi(midi)


def tick_at(score: Any, seconds: float) -> int:
    """The tick that sounds ``seconds`` after the start of a tick-time ``score`` (its tempo map;
    120 bpm before the first tempo event)."""
    tpq = int(score.ticks_per_quarter)
    tick, elapsed, mspq = 0, 0.0, 500_000
    for tempo in sorted(score.tempos, key=lambda t: t.time):
        step = (int(tempo.time) - tick) * mspq / 1e6 / tpq
        if elapsed + step >= seconds:
            break
        tick, elapsed, mspq = int(tempo.time), elapsed + step, int(tempo.mspq)
    return tick + int(round((seconds - elapsed) * 1e6 / mspq * tpq))


def midi_snippet(midi: Any, seconds: float) -> Any:
    """The notes of ``midi`` that start in its first ``seconds`` (cut at ``seconds``), in tick
    time with the tempo map and meter kept."""
    score = _score(midi)
    end = tick_at(score, float(seconds))
    out = score.clip(0, end, clip_end=False)  # the notes that start before the end
    for track in out.tracks:
        for note in track.notes:
            note.duration = min(int(note.duration), end - int(note.time))
    return out


class Renderer:
    """A loaded SoundFont that renders MIDI to mono float32 audio.

    Args:
        soundfont: an ``.sf2`` file (default: :func:`find_soundfont`).
        sample_rate: output rate in Hz.
    """

    def __init__(self, soundfont: str | Path | None = None,
                 sample_rate: int = SAMPLE_RATE) -> None:
        try:
            import tinysoundfont
        except ImportError:
            raise ImportError("rendering needs tinysoundfont: pip install --no-deps "
                              "tinysoundfont") from None
        path = find_soundfont() if soundfont is None else Path(soundfont)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"no SoundFont ({path or 'none of ' + str(SOUNDFONTS)}): "
                                    "install the Debian package timgm6mb-soundfont")
        self.soundfont, self.sample_rate = path, int(sample_rate)
        self._synth = tinysoundfont.Synth(samplerate=self.sample_rate)
        self._sfid = self._synth.sfload(str(path))
        stat = path.stat()
        self._sf_key = f"{path.name}:{stat.st_size}"
        self._synth.program_select(0, self._sfid, 0, 0)
        self._synth.program_select(_DRUM_CHANNEL, self._sfid, 0, 0, is_drums=True)
        self._synth.noteon(0, 60, 100)
        self._synth.generate_simple(self.sample_rate // 10)  # the throw-away clip
        self._synth.sounds_off()
        self._synth.generate_simple(self.sample_rate // 10)

    def _events(self, score: Any, offset: float, seconds: float
                ) -> list[tuple[float, int, int, int, int]]:
        """(time, on, channel, pitch, velocity) in clip time, note-offs first at a tie."""
        events = []
        for track in score.to("second").tracks:
            channel = _DRUM_CHANNEL if track.is_drum else 0
            for note in track.notes:
                start, end = note.time + offset, note.time + note.duration + offset
                if end <= 0.0 or start >= seconds:
                    continue
                events.append((max(start, 0.0), 1, channel, int(note.pitch), int(note.velocity)))
                events.append((end, 0, channel, int(note.pitch), 0))
        events.sort(key=lambda e: (e[0], e[1], e[2], e[3]))
        return events

    def render(self, midi: Any, program: int, offset: float, seconds: float = 8.0) -> np.ndarray:
        """``midi`` played by GM ``program``, moved by ``offset`` seconds; see the module doc.

        Returns:
            mono float32 ``[round(seconds * sample_rate)]``.
        """
        if not 0 <= int(program) <= 127:
            raise InputError(program, "a General MIDI program is 0..127")
        if not 0.0 < seconds <= MAX_SECONDS:
            raise InputError(seconds, f"clip length must be in (0, {MAX_SECONDS}] seconds")
        if not abs(offset) <= MAX_SECONDS:  # NaN fails too
            raise InputError(offset, f"offset must be within {MAX_SECONDS} seconds")
        score = _score(midi)
        label = "<symusic.Score>" if not isinstance(midi, str | os.PathLike) else str(midi)
        synth, n = self._synth, int(round(seconds * self.sample_rate))
        synth.program_select(0, self._sfid, 0, int(program))
        out = np.zeros((n, 2), dtype=np.float32)
        pos = 0
        for time, on, channel, pitch, velocity in self._events(score, offset, seconds):
            at = min(n, int(round(time * self.sample_rate)))
            if at > pos:
                out[pos:at] = np.frombuffer(synth.generate_simple(at - pos),
                                            dtype=np.float32).reshape(-1, 2)
                pos = at
            if pos >= n:
                break
            if on:
                synth.noteon(channel, pitch, velocity)
            else:
                synth.noteoff(channel, pitch)
        if pos < n:
            out[pos:] = np.frombuffer(synth.generate_simple(n - pos),
                                      dtype=np.float32).reshape(-1, 2)
        synth.sounds_off()
        synth.generate_simple(self.sample_rate // 20)  # the released voices fade out in ~10 ms
        mono = out.mean(axis=1)
        if not np.isfinite(mono).all():
            raise InputError(label, "the render is not finite")
        if not np.abs(mono).max() > 0.0:
            raise InputError(label, f"silent render (program {program}, offset {offset} s, "
                                    f"{seconds} s): no notes in the clip")
        return mono

    def clip_name(self, data: bytes, program: int, offset: float, seconds: float,
                  fmt: str) -> str:
        """The cache file name of one rendered clip."""
        key = json.dumps([hashlib.sha256(data).hexdigest(), int(program), round(offset, 3),
                          float(seconds), self.sample_rate, self._sf_key])
        return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.{fmt}"

    def render_file(self, data: bytes, program: int, offset: float, seconds: float,
                    cache: str | Path, fmt: str = "flac") -> Path:
        """The clip of ``render(data, ...)`` under ``cache`` (made once); see the module doc."""
        import soundfile as sf

        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
        folder = Path(cache)
        target = folder / self.clip_name(data, program, offset, seconds, fmt)
        if target.is_file():
            return target
        folder.mkdir(parents=True, exist_ok=True)
        audio = self.render(data, program, offset, seconds)
        fd, tmp = tempfile.mkstemp(suffix=f".{fmt}", dir=folder)
        os.close(fd)
        try:
            kind, subtype = FORMATS[fmt]
            sf.write(tmp, np.clip(audio, -1.0, 1.0), self.sample_rate, format=kind,
                     subtype=subtype)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target
