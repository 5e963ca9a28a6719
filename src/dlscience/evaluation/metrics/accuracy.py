"""Accuracy metrics exactly as HELM defines them (``helm.benchmark.metrics.evaluate_reference_metrics``).

* ``normalize_text`` (from the QuAC scorer): lowercase, delete every ``string.punctuation`` character, remove
  the whole words a / an / the, collapse whitespace.
* ``exact_match``: stripped strings equal; ``quasi_exact_match``: normalized strings equal; the ``prefix_``
  variants test ``startswith`` instead.
* ``f1_score``: F-measure over the **sets** of normalized tokens.
* An empty prediction scores 0. An instance's score is the max over its gold references and completions.
* MC-separate: each choice scored by its mean token log probability (calibrated: log p(choice | prompt) -
  log p(choice | "Answer:")); when several choices tie for the maximum, exact match is the fraction of the tied
  choices that are correct; ``max_prob`` is the max of the softmax over the choice scores.
* Generation and MC-joint: ``max_prob = exp(logprob of the completion)``.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

import numpy as np

__all__ = [
    "normalize_text",
    "exact_match",
    "quasi_exact_match",
    "prefix_exact_match",
    "quasi_prefix_exact_match",
    "f1_score",
    "f_measure",
    "REFERENCE_METRICS",
    "score_generation",
    "score_choices",
    "continuation_logprob",
]

_PUNCT = set(string.punctuation)


def normalize_text(text: str, should_remove_articles: bool = True) -> str:
    """Lowercase, remove punctuation, articles (a/an/the as whole words) and extra whitespace (QuAC)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    if should_remove_articles:
        text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(gold: str, pred: str) -> float:
    if not pred:
        return 0.0
    return 1.0 if gold.strip() == pred.strip() else 0.0


def quasi_exact_match(gold: str, pred: str) -> float:
    if not pred:
        return 0.0
    return 1.0 if normalize_text(gold) == normalize_text(pred) else 0.0


def prefix_exact_match(gold: str, pred: str) -> float:
    if not pred:
        return 0.0
    return 1.0 if pred.strip().startswith(gold.strip()) else 0.0


def quasi_prefix_exact_match(gold: str, pred: str) -> float:
    if not pred:
        return 0.0
    return 1.0 if normalize_text(pred).startswith(normalize_text(gold)) else 0.0


def f_measure(gold: set, pred: set) -> float | None:
    """nltk's ``f_measure`` (alpha 0.5): 2PR / (P + R) over sets; None when either set is empty."""
    if not gold or not pred:
        return None
    common = len(gold & pred)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1_score(gold: str, pred: str) -> float:
    ret = f_measure(set(normalize_text(gold).split()), set(normalize_text(pred).split()))
    return 0.0 if ret is None else ret


REFERENCE_METRICS = {
    "exact_match": exact_match,
    "quasi_exact_match": quasi_exact_match,
    "prefix_exact_match": prefix_exact_match,
    "quasi_prefix_exact_match": quasi_prefix_exact_match,
    "f1_score": f1_score,
}


def score_generation(golds: Sequence[str], preds: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """Each metric in ``names``: max over gold references and predictions (HELM's ``compute_metrics_helper``)."""
    out = {}
    for name in names:
        fn = REFERENCE_METRICS[name]
        out[name] = max((fn(g, p) for g in golds for p in preds), default=0.0)
    return out


def score_choices(reference_scores: Sequence[float], correct: Sequence[int]) -> tuple[float, float, int]:
    """MC-separate: ``(exact_match, max_prob, predicted_index)`` from per-choice scores.

    ``exact_match`` is the fraction of the argmax-tied choices that are correct; ``max_prob`` is
    ``max(softmax(scores))``; the predicted index is the first of the tied choices."""
    scores = np.asarray(reference_scores, dtype=np.float64)
    z = np.exp(scores - scores.max())
    max_prob = float((z / z.sum()).max())
    tied = np.flatnonzero(scores >= scores.max())
    em = len(set(correct) & set(tied.tolist())) / len(tied)
    return em, max_prob, int(tied[0])


def continuation_logprob(tokens, continuation: str) -> tuple[float, int]:
    """Summed log probability and number of the last tokens that cover ``continuation`` (a suffix of the
    echoed prompt): tokens are taken from the end until their text is at least as long as ``continuation``."""
    total, n, length = 0.0, 0, 0
    target = len(continuation)
    for tok in reversed(tokens):
        if length >= target:
            break
        total += tok.logprob
        length += len(tok.text)
        n += 1
    return total, max(n, 1)


def bits_per_byte(logprob: float, text: str) -> float:
    """Language modelling: ``-logprob / ln 2 / bytes``."""
    return -logprob / math.log(2) / max(1, len(text.encode()))
