"""Text corpora available offline from Debian packages.

:func:`load_wordnet_glosses` reads the glosses (definitions, with their quoted usage examples) of every WordNet
3.0 synset from the ``wordnet-base`` package's ``data.{noun,verb,adj,adv}`` files (format: WordNet's
``wndb(5)``: fields, then ``| gloss``).
"""

from __future__ import annotations

import os
from pathlib import Path

from dlscience.errors import DatasetNotFoundError, InputValidationError
from dlscience.results import DamagedFileError

__all__ = ["WORDNET_DIRS", "wordnet_folder", "load_wordnet_glosses"]

WORDNET_DIRS = ("/usr/share/wordnet",)
_POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
_INSTALL = "install them with `sudo apt-get install wordnet-base`"


def _check_pos(pos: str) -> None:
    if (
        not isinstance(pos, str)
        or not pos
        or any(p not in _POS_FILES for p in pos)
        or len(set(pos)) != len(pos)
    ):
        raise InputValidationError(f"pos must be letters among n, v, a, r without repeats, got {pos!r}")


def wordnet_folder(wordnet_dir: str | Path | None = None, pos: str = "nvar") -> Path:
    """The folder holding WordNet's ``data.*`` files, checked; no other folder is tried when one is named.

    Parameters
    ----------
    wordnet_dir : path, optional
        The folder (e.g. ``--wordnet-dir``). Default: ``$WNSEARCHDIR`` if set, else ``/usr/share/wordnet``.
    pos : str
        Parts of speech whose files must be there (see :func:`load_wordnet_glosses`).

    Returns
    -------
    Path

    Raises
    ------
    DatasetNotFoundError
        If the folder does not exist, is not a folder, or lacks a needed ``data.*`` file; the message names the
        folder, the missing files and where the files come from.
    """
    _check_pos(pos)
    if wordnet_dir is not None and str(wordnet_dir) != "":
        folder, source = Path(wordnet_dir), "the WordNet folder"
    elif os.environ.get("WNSEARCHDIR"):
        folder, source = Path(os.environ["WNSEARCHDIR"]), "$WNSEARCHDIR"
    elif WORDNET_DIRS:
        folder, source = Path(WORDNET_DIRS[0]), "the default WordNet folder"
    else:
        raise DatasetNotFoundError(
            f"no WordNet folder given; pass the folder holding data.noun, or {_INSTALL}"
        )
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DatasetNotFoundError(
            f"{source} {folder} {what}; pass the folder holding WordNet's data.noun, data.verb, data.adj and "
            f"data.adv, or {_INSTALL}"
        )
    missing = [_POS_FILES[p] for p in pos if not (folder / _POS_FILES[p]).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{source} {folder} lacks WordNet's {', '.join(missing)}; pass the folder holding them, or "
            f"{_INSTALL}"
        )
    return folder


def load_wordnet_glosses(
    wordnet_dir: str | Path | None = None, pos: str = "nvar"
) -> tuple[list[str], list[str]]:
    """Every synset's gloss.

    Parameters
    ----------
    wordnet_dir : path, optional
        Folder with WordNet's ``data.*`` files (default: ``$WNSEARCHDIR``, else ``/usr/share/wordnet``; a folder
        that is given is the only one tried, see :func:`wordnet_folder`).
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
        If the folder or its files are missing (install them with ``apt-get install wordnet-base``).
    DamagedFileError
        If a data file is not UTF-8 text (WordNet 3.0's are ASCII), naming the file and the byte offset.
    """
    folder = wordnet_folder(wordnet_dir, pos)
    ids, glosses = [], []
    for p in pos:
        path = folder / _POS_FILES[p]
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DamagedFileError(
                f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                f"WordNet's data files are ASCII: fix the file, or {_INSTALL} and use their folder"
            ) from None
        except OSError as exc:
            raise DatasetNotFoundError(f"cannot read {path}: {exc.strerror or exc}") from None
        for line in text.split("\n"):
            if line.startswith("  ") or "|" not in line:  # licence header
                continue
            offset = line.split(" ", 1)[0]
            ids.append(f"{p}{offset}")
            glosses.append(line.split("|", 1)[1].strip())
    return ids, glosses
