"""The ``midi`` modality: reading and validating Standard MIDI Files with symusic.

A raw item is a path (``str`` / ``os.PathLike``), the file's bytes, or a ``symusic.Score``.
Before symusic sees a file, its chunk structure is checked in Python (header, track count,
division, chunk lengths), so truncated, empty and non-MIDI files, absurd headers and files with
thousands of tracks are refused with an :class:`~mmenc.errors.InputError` naming the file and
the reason instead of reaching the C++ parser. After parsing, scores without notes and scores
whose events lie absurdly far in time are refused as well.

Batch jobs use :func:`load_many`, which skips bad files and counts them by reason.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmenc.errors import InputError

MAX_BYTES = 64 * 1024 * 1024
"""Largest file accepted (64 MiB; real MIDI files are rarely above a few MiB)."""
MAX_TRACKS = 512
"""Most tracks accepted (General MIDI needs 16; type-1 files above a few hundred are broken)."""
MAX_QUARTERS = 500_000
"""Latest event accepted, in quarter notes (about 70 hours at 120 bpm)."""
MAX_NOTES = 2_000_000
"""Most notes accepted in one file."""


def _label(item: object) -> str:
    if isinstance(item, bytes | bytearray | memoryview):
        return f"<{len(item)} bytes>"
    return str(item)


def check_smf_structure(data: bytes, label: str) -> tuple[int, int, int]:
    """Check the chunk layout of a Standard MIDI File without parsing its events.

    Returns:
        ``(format, declared tracks, ticks per quarter)``.
    Raises:
        InputError: empty, not MIDI, truncated, too many tracks, bad division, ...
    """
    if not data:
        raise InputError(label, "empty file")
    if len(data) > MAX_BYTES:
        raise InputError(label, f"too large: {len(data)} bytes (at most {MAX_BYTES})")
    if data[:4] != b"MThd":
        raise InputError(label, "not a MIDI file (no MThd header)")
    if len(data) < 14:
        raise InputError(label, "truncated MIDI header")
    (length,) = struct.unpack(">I", data[4:8])
    if length < 6 or 8 + length > len(data):
        raise InputError(label, f"corrupt MIDI header (length {length})")
    fmt, ntracks, division = struct.unpack(">HHH", data[8:14])
    if fmt > 2:
        raise InputError(label, f"unknown MIDI format {fmt}")
    if ntracks == 0:
        raise InputError(label, "the header declares no tracks")
    if ntracks > MAX_TRACKS:
        raise InputError(label, f"{ntracks} tracks (at most {MAX_TRACKS})")
    if division & 0x8000:
        raise InputError(label, "SMPTE time division is not supported")
    if division == 0:
        raise InputError(label, "zero ticks per quarter note")
    pos, found = 8 + length, 0
    while pos < len(data) and found < ntracks:
        if pos + 8 > len(data):
            raise InputError(label, f"truncated chunk header at byte {pos}")
        kind = data[pos:pos + 4]
        (size,) = struct.unpack(">I", data[pos + 4:pos + 8])
        if pos + 8 + size > len(data):
            raise InputError(label, f"truncated: chunk {kind!r} at byte {pos} declares {size} "
                                    f"bytes, {len(data) - pos - 8} remain")
        if kind == b"MTrk":
            found += 1
        pos += 8 + size
    if found < ntracks:
        raise InputError(label, f"truncated: {found} of {ntracks} tracks present")
    return fmt, ntracks, division


def _check_score(score: Any, label: str) -> Any:
    tpq = int(score.ticks_per_quarter)
    if tpq <= 0:
        raise InputError(label, f"invalid ticks per quarter {tpq}")
    if len(score.tracks) > MAX_TRACKS:
        raise InputError(label, f"{len(score.tracks)} tracks (at most {MAX_TRACKS})")
    notes = score.note_num()
    if notes == 0:
        raise InputError(label, "no notes")
    if notes > MAX_NOTES:
        raise InputError(label, f"{notes} notes (at most {MAX_NOTES})")
    for track in score.tracks:
        if len(track.notes) == 0:
            continue
        arr = track.notes.numpy()
        start, duration = arr["time"], arr["duration"]
        if int(start.min()) < 0 or int(duration.min()) < 0:
            raise InputError(label, "negative note times or durations")
        latest = int(start.max()) + int(duration.max())
        if latest > MAX_QUARTERS * tpq:
            raise InputError(label, f"absurd tick values: a note ends at tick {latest} "
                                    f"({latest // tpq} quarter notes at {tpq} ticks/quarter)")
    return score


def load_midi(item: object) -> Any:
    """Read and validate one MIDI item.

    Inputs:
        item: a path, the file's bytes, or a ``symusic.Score`` (quarter / second time is
            converted to ticks).
    Returns:
        a ``symusic.Score`` in tick time with at least one note.
    Raises:
        InputError: naming the file (or ``<N bytes>``) and the reason.
    """
    from symusic import Score

    if isinstance(item, Score):
        if "Tick" not in str(item.ttype):
            item = item.to("tick")  # a score in quarter or second time
        return _check_score(item, "<symusic.Score>")
    if isinstance(item, str | os.PathLike):
        label = str(item)
        path = Path(item)
        try:
            if path.exists() and not path.is_dir() and not path.is_file():
                raise InputError(label, "not a regular file (a device, pipe or socket)")
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise InputError(label, f"too large: {size} bytes (at most {MAX_BYTES})")
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(label, "file not found") from None
        except IsADirectoryError:
            raise InputError(label, "is a directory, not a MIDI file") from None
        except OSError as exc:
            raise InputError(label, f"cannot read ({exc.strerror or exc})") from None
    elif isinstance(item, bytes | bytearray | memoryview):
        data, label = bytes(item), _label(item)
    else:
        raise InputError(repr(item)[:60], "expected a path, bytes or a symusic.Score, got "
                                          f"{type(item).__name__}")
    check_smf_structure(data, label)
    try:
        score = Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError / ValueError for malformed events
        raise InputError(label, f"unreadable MIDI events ({type(exc).__name__}: "
                                f"{str(exc)[:120]})") from None
    return _check_score(score, label)


@dataclass
class LoadReport:
    """What a batch job read: the scores by index and the items it skipped, with reasons."""

    scores: dict[int, Any] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def counts(self) -> Counter[str]:
        """Skipped items per reason (the reason without the item's name)."""
        return Counter(self.skipped.values())


def load_many(items: Iterable[object]) -> LoadReport:
    """Load items one by one; bad ones are skipped and counted instead of stopping the job."""
    report = LoadReport()
    for i, item in enumerate(items):
        try:
            report.scores[i] = load_midi(item)
        except InputError as exc:
            report.skipped[i] = exc.reason
    return report


def make_score(notes: Iterable[tuple[int, int, int, int]], tpq: int = 480, program: int = 0,
               is_drum: bool = False, tempo: float | None = 120.0,
               time_signature: tuple[int, int] | None = (4, 4)) -> Any:
    """A one-track ``symusic.Score`` from ``(start, duration, pitch, velocity)`` tuples (ticks)."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    score = Score(tpq)
    track = Track(program=program, is_drum=is_drum)
    for start, duration, pitch, velocity in notes:
        track.notes.append(Note(int(start), int(duration), int(pitch), int(velocity)))
    score.tracks.append(track)
    if tempo is not None:
        score.tempos.append(Tempo(0, qpm=float(tempo)))
    if time_signature is not None:
        score.time_signatures.append(TimeSignature(0, *time_signature))
    return score


def example_midi() -> list[bytes]:
    """A few small valid MIDI files (bytes), of different lengths."""
    scale = [(i * 240, 240, 60 + s, 80) for i, s in enumerate((0, 2, 4, 5, 7, 9, 11, 12))]
    chords = [(bar * 1920 + k * 480, 480, p, 70 + 5 * k)
              for bar in range(3) for k in range(4) for p in (48 + bar, 52 + bar, 55 + bar)]
    melody = [(i * 360, 300, 64 + (i * 5) % 12, 100) for i in range(11)]
    return [make_score(scale).dumps_midi(), make_score(chords).dumps_midi(),
            make_score(melody, tempo=96.0, time_signature=(3, 4)).dumps_midi()]
