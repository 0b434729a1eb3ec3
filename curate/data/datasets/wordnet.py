"""WordNet 3.0 glosses from the Debian package ``wordnet-base``, labelled by lexicographer file.

Each synset line of ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv`` reads
(``wndb(5WN)``)::

    offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [pointers] [frames] | gloss

This module keeps, per synset: the gloss (the text after ``" | "``), an id ``<pos><offset>``
(``n00001740``, the ImageNet "wnid" convention; pos is the file's letter n/v/a/r), the lemmas,
and the lexicographer file number ``lex_filenum`` (0..44) as a topic label whose name comes from
``lexnames(5WN)`` (``noun.animal``, ``verb.motion``...). Labels keep their global numbers even
when a ``pos`` filter is applied, so label ``i`` is always ``LEXNAMES[i]``.

The files are found through ``dpkg -L wordnet-base`` or the ``WORDNET_DIR`` environment variable.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# lexnames(5WN): lexicographer file number -> name. Debian's wordnet-base ships the table only in
# its man page, so it is written out here; a ``lexnames`` file in WORDNET_DIR takes precedence.
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
POS_FILES = {
    "noun": ("data.noun", "n"),
    "verb": ("data.verb", "v"),
    "adj": ("data.adj", "a"),
    "adv": ("data.adv", "r"),
}
_INSTALL_HINT = "install it with `apt-get install -y wordnet-base` or set WORDNET_DIR to a WordNet dict folder"
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


@dataclass
class WordNetGlosses:
    """Parsed synsets, all lists/arrays of the same length ``n``.

    Attributes:
        texts: the gloss of each synset (optionally prefixed by its lemmas).
        ids: ``<pos letter><8-digit offset>`` ids, e.g. ``n00001740``.
        labels: ``(n,) int64`` lexicographer file numbers, 0..44.
        lemmas: the synset's words (underscores turned into spaces).
        label_names: the 45 lexicographer file names; ``labels[i]`` names ``label_names[labels[i]]``.
    """

    texts: list[str]
    ids: list[str]
    labels: np.ndarray
    lemmas: list[list[str]]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.texts)


@lru_cache(maxsize=1)
def wordnet_dir() -> Path:
    """The folder holding ``data.noun`` etc.: ``$WORDNET_DIR`` or the ``wordnet-base`` package's."""
    if os.environ.get("WORDNET_DIR"):
        folder = Path(os.environ["WORDNET_DIR"])
        if not (folder / "data.noun").exists():
            raise FileNotFoundError(f"WORDNET_DIR={folder} holds no data.noun")
        return folder
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "wordnet-base"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as err:
        raise FileNotFoundError(f"Debian package wordnet-base is not installed: {_INSTALL_HINT}") from err
    for line in listing:
        if line.endswith("/data.noun"):
            return Path(line).parent
    raise FileNotFoundError(f"wordnet-base lists no data.noun: {_INSTALL_HINT}")


def lexnames(folder: Path | None = None) -> list[str]:
    """The 45 lexicographer file names, from ``<folder>/lexnames`` when present, else built in."""
    path = (folder or wordnet_dir()) / "lexnames"
    if not path.exists():
        return list(LEXNAMES)
    names: dict[int, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2:
            names[int(fields[0])] = fields[1]
    return [names[i] for i in range(len(names))]


def parse_data_line(line: str) -> tuple[str, int, list[str], str] | None:
    """Parse one ``data.*`` line into ``(offset, lex_filenum, lemmas, gloss)``.

    Returns None for the licence header lines (they start with two spaces).

    Raises:
        ValueError: a malformed synset line.
    """
    if line.startswith("  ") or not line.strip():
        return None
    head, sep, gloss = line.partition(" | ")
    fields = head.split()
    if len(fields) < 6 or not fields[0].isdigit():
        raise ValueError(f"not a WordNet synset line: {line[:80]!r}")
    lex = int(fields[1])
    w_cnt = int(fields[3], 16)
    words = fields[4 : 4 + 2 * w_cnt : 2]
    lemmas = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in words]
    return fields[0], lex, lemmas, gloss.strip() if sep else ""


def load_wordnet(pos: Sequence[str] | str | None = None, with_lemmas: bool = False) -> WordNetGlosses:
    """Load every synset gloss of the selected parts of speech.

    Args:
        pos: ``"noun"``, ``"verb"``, ``"adj"``, ``"adv"``, a list of them, or None for all four
            (in that order).
        with_lemmas: prefix each gloss with its lemmas (``"dog, domestic dog: a member of ..."``).

    Returns:
        :class:`WordNetGlosses` (117,659 synsets for all four in WordNet 3.0).
    """
    if pos is None or (not isinstance(pos, str) and len(pos) == 0):
        pos = list(POS_FILES)
    elif isinstance(pos, str):
        pos = [pos]
    unknown = [p for p in pos if p not in POS_FILES]
    if unknown:
        raise ValueError(f"unknown part of speech {unknown}: choose from {list(POS_FILES)}")
    folder = wordnet_dir()
    names = lexnames(folder)
    texts, ids, labels, lemma_lists = [], [], [], []
    for p in pos:
        file, letter = POS_FILES[p]
        path = folder / file
        if not path.exists():
            raise FileNotFoundError(f"WordNet file missing: {path} ({_INSTALL_HINT})")
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):  # parsing the input file, one line per synset
                try:
                    parsed = parse_data_line(line)
                except ValueError as err:
                    raise ValueError(f"{path}:{number}: {err}") from err
                if parsed is None:
                    continue
                offset, lex, lemmas, gloss = parsed
                if not 0 <= lex < len(names):
                    raise ValueError(f"{path}:{number}: lexicographer file {lex} is not in 0..{len(names) - 1}")
                texts.append(f"{', '.join(lemmas)}: {gloss}" if with_lemmas else gloss)
                ids.append(f"{letter}{offset}")
                labels.append(lex)
                lemma_lists.append(lemmas)
    return WordNetGlosses(texts, ids, np.asarray(labels, dtype=np.int64), lemma_lists, names)
