"""The ``midi`` modality: reading and validating Standard MIDI Files with symusic.

A raw item is a path (``str`` / ``os.PathLike``), the file's bytes, or a ``symusic.Score``.
Before symusic sees a file, its chunk structure is checked in Python (header, track count,
division, chunk lengths), so truncated, empty and non-MIDI files, absurd headers and files with
thousands of tracks are refused with an :class:`~mmenc.errors.InputError` naming the file and
the reason instead of reaching the C++ parser. After parsing, scores without notes and scores
whose events lie absurdly far in time are refused as well.

The cost caps are the fields of :class:`MidiLimits` (bytes, tracks, notes, tempo / meter
events, latest tick in quarter notes); the caps in force are :data:`LIMITS`: pass ``limits=`` to
:func:`load_midi` or replace ``mmenc_midi.midi.LIMITS`` to change them for every caller. The
tokenizers bound what they tokenize by their window (:mod:`mmenc_midi.tokenizers`).

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


@dataclass(frozen=True)
class MidiLimits:
    """What one MIDI item may cost; beyond a cap it is refused with an ``InputError``.

    Args:
        max_bytes: largest file (real MIDI files are rarely above a few MiB).
        max_tracks: most tracks (General MIDI needs 16; type-1 files above a few hundred are
            broken).
        max_quarters: latest note end, in quarter notes (500,000: about 70 hours at 120 bpm).
        max_notes: most notes in one item.
        max_meta_events: most tempo, time-signature and key-signature changes together.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_tracks: int = 512
    max_quarters: int = 500_000
    max_notes: int = 2_000_000
    max_meta_events: int = 100_000


LIMITS = MidiLimits()
"""The caps :func:`load_midi` applies when it is given none."""
MAX_BYTES = LIMITS.max_bytes
MAX_TRACKS = LIMITS.max_tracks
MAX_QUARTERS = LIMITS.max_quarters
MAX_NOTES = LIMITS.max_notes


def _label(item: object) -> str:
    if isinstance(item, bytes | bytearray | memoryview):
        return f"<{len(item)} bytes>"
    if hasattr(item, "note_num") and hasattr(item, "tracks"):
        return f"<symusic.Score of {item.note_num()} notes>"
    return str(item)


def item_label(item: object) -> str:
    """How an error names a MIDI item: its path, ``<N bytes>`` or ``<symusic.Score of N notes>``."""
    return _label(item)


def check_smf_structure(data: bytes, label: str,
                        limits: MidiLimits | None = None) -> tuple[int, int, int]:
    """Check the chunk layout of a Standard MIDI File without parsing its events.

    Returns:
        ``(format, declared tracks, ticks per quarter)``.
    Raises:
        InputError: empty, not MIDI, truncated, too many tracks, bad division, ...
    """
    limits = LIMITS if limits is None else limits
    if not data:
        raise InputError(label, "empty file")
    if len(data) > limits.max_bytes:
        raise InputError(label, f"too large: {len(data)} bytes (at most {limits.max_bytes}, "
                                "MidiLimits.max_bytes)")
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
    if ntracks > limits.max_tracks:
        raise InputError(label, f"{ntracks} tracks (at most {limits.max_tracks}, "
                                "MidiLimits.max_tracks)")
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


def _check_score(score: Any, label: str, limits: MidiLimits) -> Any:
    tpq = int(score.ticks_per_quarter)
    if tpq <= 0:
        raise InputError(label, f"invalid ticks per quarter {tpq}")
    if len(score.tracks) > limits.max_tracks:
        raise InputError(label, f"{len(score.tracks)} tracks (at most {limits.max_tracks}, "
                                "MidiLimits.max_tracks)")
    notes = score.note_num()
    if notes == 0:
        raise InputError(label, "no notes")
    if notes > limits.max_notes:
        raise InputError(label, f"{notes} notes (at most {limits.max_notes}, "
                                "MidiLimits.max_notes)")
    meta = len(score.tempos) + len(score.time_signatures) + len(score.key_signatures)
    if meta > limits.max_meta_events:
        raise InputError(label, f"{meta} tempo, meter and key changes (at most "
                                f"{limits.max_meta_events}, MidiLimits.max_meta_events)")
    for track in score.tracks:
        if len(track.notes) == 0:
            continue
        arr = track.notes.numpy()
        start, duration = arr["time"], arr["duration"]
        if int(start.min()) < 0 or int(duration.min()) < 0:
            raise InputError(label, "negative note times or durations")
        latest = int(start.max()) + int(duration.max())
        if latest > limits.max_quarters * tpq:
            raise InputError(label, f"absurd tick values: a note ends at tick {latest} "
                                    f"({latest // tpq} quarter notes at {tpq} ticks/quarter; "
                                    f"at most {limits.max_quarters}, MidiLimits.max_quarters)")
    return score


def load_midi(item: object, limits: MidiLimits | None = None) -> Any:
    """Read and validate one MIDI item.

    Inputs:
        item: a path, the file's bytes, or a ``symusic.Score`` (quarter / second time is
            converted to ticks).
        limits: the cost caps (default :data:`LIMITS`).
    Returns:
        a ``symusic.Score`` in tick time with at least one note.
    Raises:
        InputError: naming the file (or ``<N bytes>``) and the reason.
    """
    from symusic import Score

    limits = LIMITS if limits is None else limits
    if isinstance(item, Score):
        if "Tick" not in str(item.ttype):
            item = item.to("tick")  # a score in quarter or second time
        return _check_score(item, "<symusic.Score>", limits)
    if isinstance(item, str | os.PathLike):
        label = str(item)
        path = Path(item)
        try:
            if path.exists() and not path.is_dir() and not path.is_file():
                raise InputError(label, "not a regular file (a device, pipe or socket)")
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise InputError(label, f"too large: {size} bytes (at most {limits.max_bytes}, "
                                        "MidiLimits.max_bytes)")
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
    check_smf_structure(data, label, limits)
    try:
        score = Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError / ValueError for malformed events
        raise InputError(label, f"unreadable MIDI events ({type(exc).__name__}: "
                                f"{str(exc)[:120]})") from None
    return _check_score(score, label, limits)


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
