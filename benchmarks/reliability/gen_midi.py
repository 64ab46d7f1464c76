"""Hostile MIDI files: abc2midi renderings of the music21 folk tunes, then mutated."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

from benchmarks.reliability import mutate

TARGETS = (("midibert-cp-tiny", "midi"), ("adv-midibert-octuple-tiny", "midi"),
           ("midi-text-tiny", "midi"))
MUTATIONS = ("valid", *mutate.GENERIC, "track_length", "header_ntracks", "header_division",
             "header_format", "header_length", "splice", "huge_delta", "long_vlq",
             "meta_length", "sysex_length", "running_status", "many_tracks", "many_notes",
             "too_many_notes", "no_notes", "tempo_extreme", "unmatched_notes", "extra_chunk",
             "empty", "garbage", "not_midi", "path_missing", "path_directory")
HEAVY = ("many_tracks", "many_notes", "too_many_notes")
"""Mutations that cost seconds per input: left out of quick runs."""


def prepare(cache: Path, count: int) -> int:
    """Convert about ``count`` folk tunes to ``cache/midi/*.mid``; returns how many exist."""
    from mmenc_midi.data import abc_books, folk_tunes

    folder = cache / "midi"
    if folder.is_dir() and len(list(folder.glob("*.mid"))) >= min(count, 1):
        return len(list(folder.glob("*.mid")))
    books = abc_books()
    per_book = max(1, -(-count // len(books)))
    data = folk_tunes(cache / "folk", books=books, max_tunes=per_book, check=False)
    folder.mkdir(parents=True, exist_ok=True)
    for i, pair in enumerate(sorted(data.pairs, key=lambda p: p.id)[:count]):
        (folder / f"{i:05d}.mid").write_bytes(Path(pair.midi).read_bytes())
    return len(list(folder.glob("*.mid")))


def load_base(cache: Path) -> list[bytes]:
    files = sorted((cache / "midi").glob("*.mid"))
    if not files:
        raise FileNotFoundError(f"no base MIDI files in {cache / 'midi'}: run prepare first")
    return [f.read_bytes() for f in files]


def vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def smf(tracks: list[bytes], fmt: int = 1, division: int = 480) -> bytes:
    """A Standard MIDI File from raw track event bytes (an end-of-track is appended)."""
    head = b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks), division)
    body = b"".join(b"MTrk" + struct.pack(">I", len(t) + 4) + t + b"\x00\xff\x2f\x00"
                    for t in tracks)
    return head + body


def notes(count: int, rng: random.Random, step: int = 120) -> bytes:
    out = bytearray()
    for _ in range(count):
        pitch = rng.randrange(21, 109)
        out += b"\x00" + bytes([0x90, pitch, 64]) + vlq(step) + bytes([0x80, pitch, 0])
    return bytes(out)


def chunks(data: bytes) -> list[int]:
    """Offsets of the chunk headers after MThd."""
    if len(data) < 14 or data[:4] != b"MThd":
        return []
    (length,) = struct.unpack(">I", data[4:8])
    pos, out = 8 + length, []
    while pos + 8 <= len(data):
        out.append(pos)
        (size,) = struct.unpack(">I", data[pos + 4:pos + 8])
        pos += 8 + size
    return out


def _insert_into_first_track(data: bytes, events: bytes) -> bytes:
    offs = chunks(data)
    if not offs:
        return data + events
    pos = offs[0]
    (size,) = struct.unpack(">I", data[pos + 4:pos + 8])
    return data[:pos + 4] + struct.pack(">I", size + len(events)) + data[pos + 8:pos + 8] \
        + events + data[pos + 8:]


def make(name: str, rng: random.Random, base: list[bytes], tmp: Path) -> tuple[str, Any]:
    data = base[rng.randrange(len(base))]
    if name == "valid":
        return name, data
    if name in mutate.GENERIC:
        return name, mutate.generic(name, data, rng)
    if name == "track_length":
        offs = chunks(data) or [14]
        return name, mutate.put_u32(data, rng.choice(offs) + 4, rng.choice(mutate.EXTREME_U32),
                                    True)
    if name == "header_ntracks":
        return name, mutate.put_u16(data, 10, rng.choice(mutate.EXTREME_U16), True)
    if name == "header_division":
        return name, mutate.put_u16(data, 12, rng.choice((0, 1, 0x7FFF, 0x8000, 0xE250, 0xFFFF)),
                                    True)
    if name == "header_format":
        return name, mutate.put_u16(data, 8, rng.choice((0, 2, 3, 0xFFFF)), True)
    if name == "header_length":
        return name, mutate.put_u32(data, 4, rng.choice(mutate.EXTREME_U32), True)
    if name == "splice":
        return name, mutate.splice(data, base[rng.randrange(len(base))], rng)
    if name == "huge_delta":
        delta = rng.choice((0x0FFFFFFF, 0x0FFFFF00, 10**7))
        return name, _insert_into_first_track(data, vlq(delta) + b"\x90\x3c\x40\x00\x80\x3c\x00")
    if name == "long_vlq":
        return name, _insert_into_first_track(data, b"\xff" * rng.choice((5, 9, 64)) + b"\x00")
    if name == "meta_length":
        return name, _insert_into_first_track(data, b"\x00\xff\x01" + b"\x8f\xff\xff\x7f" + b"x")
    if name == "sysex_length":
        return name, _insert_into_first_track(data, b"\x00\xf0" + b"\xff\xff\xff\x7f" + b"\xf7")
    if name == "running_status":
        return name, _insert_into_first_track(data, bytes(rng.randrange(128) for _ in range(64)))
    if name == "many_tracks":
        count = rng.choice((64, 512, 513, 4096, 65535))
        return name, smf([notes(1, rng)] * count)
    if name == "many_notes":
        return name, smf([notes(rng.choice((20_000, 100_000)), rng, step=1)])
    if name == "too_many_notes":
        return name, smf([notes(2_100_000, rng, step=0)])
    if name == "no_notes":
        return name, smf([b"\x00\xff\x51\x03\x07\xa1\x20"])
    if name == "tempo_extreme":
        tempo = rng.choice((b"\x00\x00\x00", b"\xff\xff\xff", b"\x00\x00\x01"))
        return name, smf([b"\x00\xff\x51\x03" + tempo + notes(8, rng)])
    if name == "unmatched_notes":
        return name, smf([b"\x00\x90\x3c\x40" * 50 + b"\x00\x80\x40\x00" * 50])
    if name == "extra_chunk":
        size = rng.choice((0, 16, 0xFFFFFFFF))
        return name, data + b"XFIH" + struct.pack(">I", size) + rng.randbytes(16)
    if name == "empty":
        return name, b""
    if name == "garbage":
        return name, mutate.garbage(rng)
    if name == "not_midi":
        return name, rng.choice((b"RIFF\x00\x00\x00\x00WAVE", b"\x89PNG\r\n\x1a\n", b"MThd"))
    if name == "path_missing":
        return name, str(tmp / "no-such-file.mid")
    if name == "path_directory":
        return name, str(tmp)
    raise AssertionError(name)
