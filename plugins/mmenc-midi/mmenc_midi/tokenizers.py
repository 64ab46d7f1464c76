"""MIDI tokenizers: MIDI-BERT's CP (:mod:`mmenc_midi.cp`), Adversarial-MidiBERT's Octuple
(:mod:`mmenc_midi.octuple`), and REMI through MidiTok (:mod:`mmenc_midi.remi`), on the compound
base of :mod:`mmenc_midi.compound`; here their factories, the batch job :func:`tokenize_many`,
and every public name of those modules.

Cost caps: loading is capped by :class:`mmenc_midi.midi.MidiLimits`; each tokenizer's module says
how it bounds the work on one score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mmenc.errors import InputError

from mmenc_midi.compound import MODALITY, CompoundTokenizer, as_score
from mmenc_midi.cp import (
    CP_BAR,
    CP_DURATION_BINS,
    CP_GRID,
    CP_PITCH_RANGE,
    CP_TPQ,
    VELOCITY_LABEL_BINS,
    CPTokenizer,
)
from mmenc_midi.octuple import (
    OCT_DECODE_TPQ,
    OCT_DRUM,
    OCT_DUR_DEC,
    OCT_DUR_ENC,
    OCT_MAX_BAR,
    OCT_MAX_TEMPO,
    OCT_MIN_TEMPO,
    OCT_RES,
    OCT_TEMPO_STEPS,
    OCT_TIME_SIGS,
    OCT_TS_ID,
    OCT_VELOCITY_STEP,
    OctupleTokenizer,
    reduce_time_signature,
)
from mmenc_midi.remi import RemiTokenizer


@dataclass
class TokenizeReport:
    """A batch job's result: token rows by item index, skipped items with their reasons."""

    rows: dict[int, np.ndarray] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def counts(self) -> Counter[str]:
        """Skipped items per reason."""
        return Counter(self.skipped.values())


def tokenize_many(items: Iterable[object], tokenizer: Any) -> TokenizeReport:
    """Load and tokenize items one by one; unreadable items and items without tokens are
    skipped and counted instead of stopping the job."""
    report = TokenizeReport()
    for i, item in enumerate(items):
        try:
            report.rows[i] = tokenizer.encode(item)
        except InputError as exc:
            report.skipped[i] = exc.reason
    return report


_CLASSES: dict[str, type] = {
    CPTokenizer.name: CPTokenizer,
    OctupleTokenizer.name: OctupleTokenizer,
    RemiTokenizer.name: RemiTokenizer,
}


def _build(name: str, config: dict[str, Any] | None) -> Any:
    options = dict(config or {})
    given = options.pop("tokenizer", name)
    if given != name:
        raise ValueError(f"tokenizer config is for {given!r}, not {name!r}")
    return _CLASSES[name](**options)


def cp_tokenizer(config: dict[str, Any] | None = None,
                 directory: Path | None = None) -> CPTokenizer:
    """Factory of ``midi-cp`` (``directory`` holds no files of it)."""
    return _build(CPTokenizer.name, config)


def octuple_tokenizer(config: dict[str, Any] | None = None,
                      directory: Path | None = None) -> OctupleTokenizer:
    """Factory of ``midi-octuple``."""
    return _build(OctupleTokenizer.name, config)


def remi_tokenizer(config: dict[str, Any] | None = None,
                   directory: Path | None = None) -> RemiTokenizer:
    """Factory of ``midi-remi``."""
    return _build(RemiTokenizer.name, config)


def tokenizer_for(config: dict[str, Any]) -> Any:
    """Build whichever tokenizer ``config["tokenizer"]`` names."""
    name = config.get("tokenizer")
    if name not in _CLASSES:
        raise ValueError(f"unknown MIDI tokenizer {name!r}; known: {sorted(_CLASSES)}")
    return _build(name, config)


__all__ = ["CPTokenizer", "OctupleTokenizer", "RemiTokenizer", "CompoundTokenizer",
           "cp_tokenizer", "octuple_tokenizer", "remi_tokenizer", "tokenizer_for",
           "reduce_time_signature", "tokenize_many", "TokenizeReport", "as_score", "MODALITY",
           "CP_BAR", "CP_DURATION_BINS", "CP_GRID", "CP_PITCH_RANGE", "CP_TPQ",
           "VELOCITY_LABEL_BINS", "OCT_DECODE_TPQ", "OCT_DRUM", "OCT_DUR_DEC", "OCT_DUR_ENC",
           "OCT_MAX_BAR", "OCT_MAX_TEMPO", "OCT_MIN_TEMPO", "OCT_RES", "OCT_TEMPO_STEPS",
           "OCT_TIME_SIGS", "OCT_TS_ID", "OCT_VELOCITY_STEP"]
