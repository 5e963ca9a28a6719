"""WordNet 3.0 synsets with their words, hypernyms and glosses, for the offline scenarios.

Reads Debian ``wordnet-base``'s ``data.<pos>`` (``wndb(5)``: offset, lexicographer file, type, word count in
hex, words with lex ids, pointer count, pointers ``symbol offset pos source/target``, then ``| gloss``) and
``index.<pos>`` (lemma, ..., ``tagsense_cnt``, the lemma's synset offsets by frequency). The folder is found and
checked by :func:`dlscience.data.text.wordnet_folder` (the same ``--wordnet-dir`` / ``$WNSEARCHDIR`` rules and
error messages as the glosses of ``dlscience semdedup``); this module adds the words and pointers that
:func:`dlscience.data.text.load_wordnet_glosses` does not keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dlscience.data.text import wordnet_folder
from dlscience.errors import DatasetNotFoundError
from dlscience.results import DamagedFileError

__all__ = ["Synset", "load_synsets", "frequent_senses"]

_DATA = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
_INDEX = {"n": "index.noun", "v": "index.verb", "a": "index.adj", "r": "index.adv"}


@dataclass(frozen=True)
class Synset:
    """One synset: ``id`` (``n02084071``), ``lexname`` (lexicographer file number: 5 noun.animal, 6
    noun.artifact, 13 noun.food, ...), ``words`` (lemmas with spaces, adjective markers removed),
    ``hypernyms`` (ids, ``@`` and instance ``@i`` pointers), ``definition`` (gloss before the first ``;``
    example) and the full ``gloss``."""

    id: str
    pos: str
    lexname: int
    words: tuple[str, ...]
    hypernyms: tuple[str, ...]
    definition: str
    gloss: str


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedFileError(
            f"{path} is not UTF-8 text (offset {exc.start}); reinstall wordnet-base"
        ) from None
    except OSError as exc:
        raise DatasetNotFoundError(f"cannot read {path}: {exc.strerror or exc}") from None


def _definition(gloss: str) -> str:
    """The gloss without its quoted examples: the parts before the first part that starts with a quote."""
    parts = [p.strip() for p in gloss.split(";")]
    kept = []
    for p in parts:
        if p.startswith('"'):
            break
        kept.append(p)
    return "; ".join(kept).strip()


@lru_cache(maxsize=8)
def load_synsets(wordnet_dir: str | None = None, pos: str = "n") -> dict[str, Synset]:
    """Every synset of the given parts of speech, by id.

    Raises
    ------
    DatasetNotFoundError, DamagedFileError
        If the folder or its files are missing or unreadable (message names the fix).
    """
    folder = wordnet_folder(wordnet_dir, pos)
    out: dict[str, Synset] = {}
    for p in pos:
        path = folder / _DATA[p]
        for n, line in enumerate(_read(path).split("\n")):
            if not line or line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            f = head.split()
            try:
                w_cnt = int(f[3], 16)
                words = tuple(f[4 + 2 * i].split("(")[0].replace("_", " ") for i in range(w_cnt))
                k = 4 + 2 * w_cnt
                p_cnt = int(f[k])
                ptrs = [f[k + 1 + 4 * i : k + 5 + 4 * i] for i in range(p_cnt)]
            except (IndexError, ValueError):
                raise DamagedFileError(
                    f"{path} line {n + 1} is not a WordNet data line; reinstall wordnet-base"
                ) from None
            hypernyms = tuple(f"{q[2]}{q[1]}" for q in ptrs if q[0] in ("@", "@i"))
            sid = f"{p}{f[0]}"
            out[sid] = Synset(sid, p, int(f[1]), words, hypernyms, _definition(gloss.strip()), gloss.strip())
    return out


@lru_cache(maxsize=8)
def frequent_senses(
    wordnet_dir: str | None = None, pos: str = "n", min_count: int = 5
) -> list[tuple[str, str, int]]:
    """``(lemma, synset id of its first sense, count)`` for single-word alphabetic lemmas whose first (most
    frequent) sense was tagged at least ``min_count`` times in the SemCor concordance (``cntlist.rev``: sense
    key, sense number, count), most frequent first. The sense's synset is the lemma's first offset in
    ``index.<pos>``."""
    folder = wordnet_folder(wordnet_dir, pos)
    ss_type = {"n": "1", "v": "2", "a": "3", "r": "4"}
    counts: dict[tuple[str, str], int] = {}
    cnt_path = folder / "cntlist.rev"
    if not cnt_path.is_file():
        raise DatasetNotFoundError(
            f"{folder} lacks WordNet's cntlist.rev; install `wordnet-base` or pass its folder"
        )
    for line in _read(cnt_path).split("\n"):
        f = line.split()
        if len(f) != 3 or f[1] != "1" or "%" not in f[0]:
            continue
        lemma, key = f[0].split("%", 1)
        for p, t in ss_type.items():
            if key.startswith(t + ":"):
                counts[(lemma, p)] = counts.get((lemma, p), 0) + int(f[2])
    out = []
    for p in pos:
        for line in _read(folder / _INDEX[p]).split("\n"):
            if not line or line.startswith("  "):
                continue
            f = line.split()
            try:
                lemma, p_cnt = f[0], int(f[3])
                first = f[6 + p_cnt]
            except (IndexError, ValueError):
                continue
            count = counts.get((lemma, p), 0)
            if lemma.isalpha() and count >= min_count:
                out.append((lemma, f"{p}{first}", count))
    out.sort(key=lambda t: (-t[2], t[0]))
    return out
