"""The compound-token dictionaries: MIDI-BERT's CP and Adversarial-MidiBERT's Octuple.

Both ship as JSON copies of the official pickles, ``{"e2w": {field: {token: id}},
"w2e": {field: {"id": token}}}``. A :class:`CompoundVocab` fixes the column order of the model
input (which, for Octuple, is not the dictionary's key order) and the special ids per field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

CP_FIELDS: tuple[str, ...] = ("Bar", "Position", "Pitch", "Duration")
OCTUPLE_FIELDS: tuple[str, ...] = (
    "Bar", "Position", "Instrument", "Pitch", "Duration", "Velocity", "TimeSig", "Tempo",
)
SCHEMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cp": ("CP.json", CP_FIELDS),
    "octuple": ("Octuple.json", OCTUPLE_FIELDS),
}


@dataclass(frozen=True)
class CompoundVocab:
    """One dictionary in the model's column order.

    Attributes:
        scheme: ``"cp"`` or ``"octuple"``.
        fields: field names in input column order.
        e2w: per field, token text (``"Pitch 60"``) -> id.
        w2e: per field, id -> token text.
    """

    scheme: str
    fields: tuple[str, ...]
    e2w: tuple[dict[str, int], ...]
    w2e: tuple[dict[int, str], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(e) for e in self.e2w)

    def special(self, name: str) -> tuple[int, ...]:
        """The id of ``<NAME>`` (PAD, MASK, SOS, ...) in every field."""
        return tuple(e[f"{field} <{name}>"] for field, e in zip(self.fields, self.e2w, strict=True))

    @property
    def pad_ids(self) -> tuple[int, ...]:
        return self.special("PAD")

    @property
    def mask_ids(self) -> tuple[int, ...]:
        return self.special("MASK")

    def regular_counts(self) -> tuple[int, ...]:
        """How many ids of each field are ordinary tokens (ids below the first special)."""
        return tuple(min(i for t, i in e.items() if t.endswith(">")) for e in self.e2w)

    def id(self, field: str, token: str) -> int:
        return self.e2w[self.fields.index(field)][f"{field} {token}"]

    def token(self, column: int, token_id: int) -> str:
        return self.w2e[column][int(token_id)]


@cache
def load_vocab(scheme: str) -> CompoundVocab:
    """The bundled dictionary of ``scheme`` (``"cp"`` or ``"octuple"``)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown compound scheme {scheme!r}; known: {sorted(SCHEMES)}")
    filename, fields = SCHEMES[scheme]
    data = json.loads(resources.files("mmenc_midi").joinpath("data", filename).read_text())
    e2w = tuple(dict(data["e2w"][f]) for f in fields)
    w2e = tuple({int(k): v for k, v in data["w2e"][f].items()} for f in fields)
    return CompoundVocab(scheme, fields, e2w, w2e)
