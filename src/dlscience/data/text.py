"""Text corpora available offline from Debian packages.

:func:`load_wordnet_glosses` reads the glosses (definitions, with their quoted usage examples) of every WordNet
3.0 synset from the ``wordnet-base`` package's ``data.{noun,verb,adj,adv}`` files (format: WordNet's
``wndb(5)``: fields, then ``| gloss``).
"""

from __future__ import annotations

import os
from pathlib import Path

from dlscience.errors import DatasetNotFoundError

__all__ = ["WORDNET_DIRS", "load_wordnet_glosses"]

WORDNET_DIRS = ("/usr/share/wordnet",)
_POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}


def load_wordnet_glosses(
    wordnet_dir: str | Path | None = None, pos: str = "nvar"
) -> tuple[list[str], list[str]]:
    """Every synset's gloss.

    Parameters
    ----------
    wordnet_dir : path, optional
        Folder with WordNet's ``data.*`` files (default: ``$WNSEARCHDIR``, then ``/usr/share/wordnet``).
    pos : str
        Parts of speech to read: any of ``n`` (nouns), ``v`` (verbs), ``a`` (adjectives), ``r`` (adverbs).

    Returns
    -------
    ids : list of str
        ``<pos><offset>``, e.g. ``n00217014``: unique synset ids (WordNet's own offsets).
    glosses : list of str
        The gloss text (definition; examples in quotes), stripped.

    Raises
    ------
    DatasetNotFoundError
        If the files are missing (install them with ``apt-get install wordnet-base``).
    """
    candidates = [Path(wordnet_dir)] if wordnet_dir else []
    if not wordnet_dir and os.environ.get("WNSEARCHDIR"):
        candidates.append(Path(os.environ["WNSEARCHDIR"]))
    candidates += [Path(d) for d in WORDNET_DIRS]
    folder = next((d for d in candidates if (d / "data.noun").exists()), None)
    if folder is None:
        raise DatasetNotFoundError(
            f"WordNet data files not found in {[str(c) for c in candidates]}; install them with "
            "`sudo apt-get install wordnet-base` or pass the folder holding data.noun"
        )
    ids, glosses = [], []
    for p in pos:
        with open(folder / _POS_FILES[p], encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:  # licence header
                    continue
                offset = line.split(" ", 1)[0]
                ids.append(f"{p}{offset}")
                glosses.append(line.split("|", 1)[1].strip())
    return ids, glosses
