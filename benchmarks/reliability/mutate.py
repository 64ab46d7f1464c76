"""Byte-level mutations shared by every generator; all randomness comes from the caller's rng."""

from __future__ import annotations

import random
import struct


def flip_bytes(data: bytes, rng: random.Random, count: int | None = None) -> bytes:
    """``count`` random bytes replaced by random values (default: about 1 in 200)."""
    if not data:
        return data
    out = bytearray(data)
    count = count if count is not None else max(1, len(out) // 200)
    for _ in range(count):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def flip_bits(data: bytes, rng: random.Random, count: int = 8) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut at a random point, biased towards the header (where parsers trust lengths)."""
    if len(data) < 2:
        return b""
    limit = len(data) if rng.random() < 0.5 else min(len(data), 64)
    return data[: rng.randrange(limit)]


def splice(a: bytes, b: bytes, rng: random.Random) -> bytes:
    """The head of ``a`` followed by the tail of ``b``."""
    cut_a = rng.randrange(len(a) + 1)
    cut_b = rng.randrange(len(b) + 1)
    return a[:cut_a] + b[cut_b:]


def insert_garbage(data: bytes, rng: random.Random, size: int | None = None) -> bytes:
    size = size if size is not None else rng.choice([1, 4, 64, 4096])
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(size) + data[at:]


def duplicate_chunk(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 4:
        return data * 2
    a = rng.randrange(len(data) - 1)
    b = rng.randrange(a + 1, min(len(data), a + 4096) + 1)
    repeat = rng.choice([2, 16, 256])
    return data[:b] + data[a:b] * repeat + data[b:]


def garbage(rng: random.Random, size: int | None = None) -> bytes:
    return rng.randbytes(size if size is not None else rng.choice([0, 1, 7, 512, 65536]))


EXTREME_U32 = (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0x10000, 1_000_000_000)
EXTREME_U16 = (0, 1, 2, 0x7FFF, 0x8000, 0xFFFF, 255, 256, 1000)


def put_u32(data: bytes, offset: int, value: int, big_endian: bool) -> bytes:
    if offset + 4 > len(data):
        return data
    fmt = ">I" if big_endian else "<I"
    return data[:offset] + struct.pack(fmt, value & 0xFFFFFFFF) + data[offset + 4:]


def put_u16(data: bytes, offset: int, value: int, big_endian: bool) -> bytes:
    if offset + 2 > len(data):
        return data
    fmt = ">H" if big_endian else "<H"
    return data[:offset] + struct.pack(fmt, value & 0xFFFF) + data[offset + 2:]


GENERIC = ("flip_bytes", "flip_bits", "truncate", "insert_garbage", "duplicate_chunk")


def generic(name: str, data: bytes, rng: random.Random) -> bytes:
    """One of :data:`GENERIC` by name."""
    if name == "flip_bytes":
        return flip_bytes(data, rng)
    if name == "flip_bits":
        return flip_bits(data, rng)
    if name == "truncate":
        return truncate(data, rng)
    if name == "insert_garbage":
        return insert_garbage(data, rng)
    if name == "duplicate_chunk":
        return duplicate_chunk(data, rng)
    raise ValueError(name)
