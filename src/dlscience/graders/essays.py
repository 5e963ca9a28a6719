"""The project's labelled essay set (issue 21): 40 short essays on 4 prompts with holistic 1-6 human-style
scores, written for dlscience (``essays.json``; rubric in ``rubric.md``). ASAP, PERSUADE and ELLIPSE cannot be
reached offline and limit redistribution (research note helm_graders.md, part C), so this small set stands in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from dlscience.errors import InputValidationError, UserError

__all__ = ["Essay", "load_essays", "rubric_text", "prompt_folds", "SCALE"]

#: The score scale of the bundled set (inclusive).
SCALE = (1, 6)


@dataclass(frozen=True)
class Essay:
    """One essay with its human-style score.

    Attributes
    ----------
    id : str
        ``"<prompt_id>-<index>"``.
    prompt_id : str
    prompt : str
        The writing prompt the essay answers.
    text : str
    score : int
        Holistic score on :data:`SCALE`.
    """

    id: str
    prompt_id: str
    prompt: str
    text: str
    score: int


def load_essays(path: str | Path | None = None) -> list[Essay]:
    """The essays of ``path`` (default: the bundled ``essays.json``), in file order.

    Parameters
    ----------
    path : path, optional
        A JSON file ``{"prompts": {id: text}, "essays": [{"id", "prompt_id", "essay", "score"}], "scale": [lo, hi]}``.

    Returns
    -------
    list of Essay

    Raises
    ------
    UserError
        Missing or damaged file, an unknown prompt id, or a score outside the file's scale (named).
    """
    if path is None:
        text = resources.files("dlscience.graders").joinpath("essays.json").read_text(encoding="utf-8")
        where = "the bundled essays.json"
    else:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"no essay file at {path}; give a JSON file like dlscience/graders/essays.json")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
        lo, hi = data.get("scale", SCALE)
        out = [
            Essay(e["id"], e["prompt_id"], data["prompts"][e["prompt_id"]], e["essay"], int(e["score"]))
            for e in data["essays"]
        ]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where} is not an essay set ({type(exc).__name__}: {exc})") from None
    bad = [e.id for e in out if not lo <= e.score <= hi]
    if bad:
        raise UserError(f"{where}: scores outside {lo}-{hi} for {', '.join(bad[:5])}")
    return out


def rubric_text() -> str:
    """The bundled rubric (markdown)."""
    return resources.files("dlscience.graders").joinpath("rubric.md").read_text(encoding="utf-8")


def prompt_folds(essays: list[Essay]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-prompt-out folds: for each prompt, (train indices, held-out indices), so that a probe is always
    judged on essays about a prompt it never saw.

    Raises
    ------
    InputValidationError
        Fewer than two prompts.
    """
    ids = sorted({e.prompt_id for e in essays})
    if len(ids) < 2:
        raise InputValidationError("leave-one-prompt-out needs essays on at least two prompts")
    pid = np.array([e.prompt_id for e in essays])
    return [(np.flatnonzero(pid != p), np.flatnonzero(pid == p)) for p in ids]
