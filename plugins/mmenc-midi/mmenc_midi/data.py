"""Folk tunes of the music21 corpus as MIDI <-> text pairs, read in place.

The ABC song books that the PyPI package ``music21`` installs (``music21/corpus``: the Essen
folk songs, O'Neill's, Aird's and Ryan's collections and a few more) are read where they lie;
nothing is copied into the repository. Each tune's ABC header gives its description::

    T: title   R: genre / rhythm   O: region / origin   M: meter   K: key

and each tune is converted to a Standard MIDI File with Debian's ``abc2midi`` (package
``abcmidi``). The converter writes next to its input, so every book is rewritten into a
temporary folder (tunes renumbered ``X:1..N``, the book's preamble kept), converted there
(guitar-chord accompaniment off: the melody only), and the files are moved into a cache
folder (``<cache>/<book>/<n>.mid``). Tunes whose conversion writes nothing, or whose MIDI
:func:`mmenc_midi.midi.load_midi` refuses, are skipped and counted by reason.

The split is mmenc's (:func:`mmenc.data.held_out`) with the song book (the ``.abc`` file,
relative to the corpus) as the group key: the tunes of a held-out book are never trained on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

FOLK_BOOKS = ("essenFolksong", "oneills1850", "airdsAirs", "ryansMammoth", "miscFolk",
              "nottingham-dataset")
"""Folders of the music21 corpus whose ``.abc`` files are read (Josquin's polyphony is not)."""

MODES = {"": "major", "maj": "major", "major": "major", "ion": "major", "m": "minor",
         "min": "minor", "minor": "minor", "aeo": "minor", "dor": "dorian", "phr": "phrygian",
         "lyd": "lydian", "mix": "mixolydian", "loc": "locrian"}
GENRES = ("slip jig", "jig", "reel", "hornpipe", "strathspey", "polka", "waltz", "march",
          "schottische", "mazurka", "set dance", "fling", "quickstep", "air")
"""Dance types matched in a tune's ``R:`` field or title (first match wins: "slip jig"
before "jig"); other genres (the Essen songs' Lied types) are kept as written."""

_KEY = re.compile(r"^\s*([A-Ga-g])([#b]?)\s*([A-Za-z]*)")
_FIELD = re.compile(r"^([A-Za-z]):\s*(.*)$")


@dataclass
class Tune:
    """One tune of an ABC song book.

    Attributes:
        book: the ``.abc`` file relative to the corpus (the split's group key).
        number: position in the book (1-based, the ``X:`` it is converted under).
        abc: the tune's ABC text (from its ``X:`` line to the next tune).
        title, genre, region, meter, key: from ``T:``, ``R:``, ``O:``, ``M:``, ``K:``
            (normalised: ``C|`` -> ``2/2``, ``Gm`` -> ``G minor``; empty when absent).
    """

    book: str
    number: int
    abc: str = field(repr=False)
    title: str = ""
    genre: str = ""
    region: str = ""
    meter: str = ""
    key: str = ""

    @property
    def id(self) -> str:
        return f"{self.book}#{self.number}"

    @property
    def dance(self) -> str:
        """The dance type (one of :data:`GENRES`) from the genre field or title, or ""."""
        return dance_type(self.genre) or dance_type(self.title)

    def text(self) -> str:
        """The description the tune is paired with."""
        parts = [self.title or "untitled"]
        if self.genre:
            parts.append(f"genre: {self.genre}")
        if self.region:
            parts.append(f"region: {self.region}")
        if self.meter:
            parts.append(f"meter: {self.meter}")
        if self.key:
            parts.append(f"key: {self.key}")
        return ". ".join(parts)


def corpus_root() -> Path:
    """The ``corpus`` folder of the installed music21 package.

    Raises:
        ImportError: music21 is not installed (``pip install music21``).
    """
    import importlib.util

    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the folk-tune data set reads the music21 corpus: pip install music21")
    root = Path(next(iter(spec.submodule_search_locations))) / "corpus"
    if not root.is_dir():
        raise ImportError(f"music21 is installed without its corpus ({root} is missing)")
    return root


def abc_books(root: Path | None = None, folders: Iterable[str] = FOLK_BOOKS) -> list[Path]:
    """The ``.abc`` files of the folk collections, sorted."""
    root = corpus_root() if root is None else root
    return sorted(p for folder in folders for p in (root / folder).glob("*.abc"))


def clean(value: str) -> str:
    """A header value without stray brackets, quotes and runs of spaces."""
    value = value.strip().strip("]").strip().strip('"').strip()
    return re.sub(r"\s+", " ", value).rstrip(".").strip()


def normalise_meter(value: str) -> str:
    """``C`` -> ``4/4``, ``C|`` -> ``2/2``; ``none`` / ``free`` -> ""; others as written."""
    value = clean(value).replace(" ", "")
    if value in ("C", "c"):
        return "4/4"
    if value in ("C|", "c|"):
        return "2/2"
    if value.lower() in ("none", "free", "frei"):
        return ""
    return value


def normalise_key(value: str) -> str:
    """``G`` -> ``G major``, ``Gm`` / ``G Minor`` -> ``G minor``, ``Ador`` -> ``A dorian``,
    ``Bb`` -> ``B flat major``; a key without a tonic (``HP``, ``none``) gives ""."""
    match = _KEY.match(clean(value))
    if not match or clean(value).lower().startswith(("none", "hp")):
        return ""
    tonic, accidental, mode = match.groups()
    mode_name = MODES.get(mode.lower()[:3] if mode.lower() not in MODES else mode.lower())
    if mode_name is None:  # "clef=bass", "exp" and the like: no mode given
        mode_name = "major"
    sign = {"#": " sharp", "b": " flat"}.get(accidental, "")
    return f"{tonic.upper()}{sign} {mode_name}"


def dance_type(text: str) -> str:
    """The first of :data:`GENRES` found in ``text`` as whole words ("" for none)."""
    low = re.sub(r"[^a-z]+", " ", text.lower().replace("slipjig", "slip jig"))
    padded = f" {low} "
    return next((g for g in GENRES if f" {g} " in padded), "")


def parse_book(path: Path, root: Path) -> tuple[str, list[Tune]]:
    """``(preamble, tunes)`` of one ``.abc`` file; the preamble is the text before the first
    ``X:`` (file-wide fields and comments), kept for the conversion."""
    text = path.read_text(encoding="latin-1")
    book = path.relative_to(root).as_posix()
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^X:\s*\d*", line)]
    preamble = "\n".join(lines[: starts[0]]) if starts else ""
    tunes = []
    for n, (a, b) in enumerate(zip(starts, [*starts[1:], len(lines)], strict=True), start=1):
        body = lines[a:b]
        fields: dict[str, str] = {}
        for line in body[1:]:
            m = _FIELD.match(line)
            if not m:
                continue
            name, value = m.group(1).upper(), m.group(2)
            if name not in fields:  # the first T: is the title, the first R: the genre
                fields[name] = value
            if name == "K":  # the header ends with the key
                break
        tunes.append(Tune(book, n, "\n".join(body), title=clean(fields.get("T", "")),
                          genre=clean(fields.get("R", "")).lower(),
                          region=clean(fields.get("O", "")),
                          meter=normalise_meter(fields.get("M", "")),
                          key=normalise_key(fields.get("K", ""))))
    return preamble, tunes


def abc2midi() -> str | None:
    """The ``abc2midi`` executable (Debian package ``abcmidi``), or None."""
    return shutil.which("abc2midi")


def convert_book(preamble: str, tunes: list[Tune], folder: Path,
                 timeout: float = 60.0) -> dict[int, Path]:
    """Convert one book's tunes with ``abc2midi`` into ``folder/<n>.mid``.

    Returns:
        tune number -> MIDI file, for the tunes the converter wrote a file for.
    Raises:
        FileNotFoundError: ``abc2midi`` is not installed (``apt-get install abcmidi``).
    """
    exe = abc2midi()
    if exe is None:
        raise FileNotFoundError("abc2midi not found: install the Debian package abcmidi")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmenc-abc-") as tmp:
        source = Path(tmp) / "t.abc"
        parts = [preamble] if preamble.strip() else []
        for t in tunes:
            lines = t.abc.splitlines()
            parts.append("\n".join([f"X:{t.number}", *lines[1:]]))
        source.write_text("\n\n".join(parts) + "\n", encoding="latin-1")
        try:
            subprocess.run([exe, source.name, "-quiet", "-silent", "-NGUI"], cwd=tmp,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            pass  # whatever was written before the timeout is kept
        done = {}
        for t in tunes:
            made = Path(tmp) / f"t{t.number}.mid"
            if made.is_file() and made.stat().st_size > 0:
                target = folder / f"{t.number}.mid"
                shutil.move(str(made), target)
                done[t.number] = target
    return done


@dataclass
class FolkPair:
    """One converted tune: its MIDI file, its description and where it belongs."""

    id: str
    book: str
    midi: str
    text: str
    test: bool
    title: str = ""
    genre: str = ""
    dance: str = ""
    region: str = ""
    meter: str = ""
    key: str = ""


@dataclass
class FolkData:
    """The converted corpus: the pairs, and the tunes skipped by reason."""

    pairs: list[FolkPair]
    skipped: dict[str, int]
    books: int

    @property
    def train(self) -> list[FolkPair]:
        return [p for p in self.pairs if not p.test]

    @property
    def test(self) -> list[FolkPair]:
        return [p for p in self.pairs if p.test]


def _slug(book: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", book.removesuffix(".abc"))


def folk_tunes(cache: Path, root: Path | None = None, books: Iterable[Path] | None = None,
               max_tunes: int | None = None, check: bool = True) -> FolkData:
    """Parse, convert (once: the MIDI files and an index are cached under ``cache``) and
    split the folk tunes.

    Args:
        cache: where the MIDI files go (``<cache>/<book>/<n>.mid``) and ``index.json``.
        root: the music21 corpus (default: the installed one).
        books: the ``.abc`` files to read (default: :func:`abc_books`).
        max_tunes: read at most this many tunes per book (quick runs and tests).
        check: open every new MIDI file with :func:`~mmenc_midi.midi.load_midi` and skip
            those it refuses.
    """
    from mmenc.data import held_out
    from mmenc.errors import InputError

    from mmenc_midi.midi import load_midi

    root = corpus_root() if root is None else root
    books = abc_books(root) if books is None else list(books)
    cache.mkdir(parents=True, exist_ok=True)
    index_path = cache / "index.json"
    key = {"books": [b.relative_to(root).as_posix() for b in books], "max_tunes": max_tunes,
           "check": check}
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("key") == key and all(Path(p["midi"]).is_file() for p in index["pairs"]):
            return FolkData([FolkPair(**p) for p in index["pairs"]], index["skipped"],
                            len(books))
    pairs: list[FolkPair] = []
    skipped: Counter[str] = Counter()

    def convert(path: Path) -> tuple[list[Tune], dict[int, Path]]:
        preamble, tunes = parse_book(path, root)
        tunes = tunes[:max_tunes] if max_tunes is not None else tunes
        if not tunes:
            return [], {}
        return tunes, convert_book(preamble, tunes, cache / _slug(tunes[0].book))

    # abc2midi runs as a subprocess per book: two at a time; results are read in book order
    with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        converted = list(pool.map(convert, books))
    for tunes, made in converted:
        if not tunes:
            continue
        test = held_out(tunes[0].book)
        for t in tunes:
            midi = made.get(t.number)
            if midi is None:
                skipped["abc2midi wrote no file"] += 1
                continue
            if check:
                try:
                    load_midi(midi)
                except InputError as exc:
                    skipped[str(exc).split(": ", 1)[-1].split(" (")[0]] += 1
                    midi.unlink()
                    continue
            pairs.append(FolkPair(t.id, t.book, str(midi), t.text(), test, t.title, t.genre,
                                  t.dance, t.region, t.meter, t.key))
    index_path.write_text(json.dumps({"key": key, "pairs": [asdict(p) for p in pairs],
                                      "skipped": dict(skipped)}) + "\n", encoding="utf-8")
    return FolkData(pairs, dict(skipped), len(books))
