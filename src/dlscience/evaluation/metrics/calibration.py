"""Calibration metrics exactly as HELM computes them (``basic_metrics.compute_calibration_metrics`` with the
``uncertainty-calibration`` 0.1.4 package; Kumar et al. 2019).

Per instance, ``max_prob`` is the model's confidence in its answer and ``correct`` its exact match (0/1).

* ``ece_10_bin`` (equal-mass bins): sort the confidences, split them into 10 near-equal groups
  (``np.array_split``), put bin upper edges at the midpoints between neighbouring groups (plus 1.0), assign each
  point to the first edge >= it, and take the plug-in ``sum_b (n_b / n) |mean conf_b - mean acc_b|`` (no
  debiasing).
* ``ece_1_bin``: ``|mean conf - accuracy|``.
* ``selective_cov_acc_area``: sort by descending confidence; the mean of the running accuracies.
  ``selective_acc@10``: the running accuracy at index ``floor(0.1 n)``.
* Platt rescaling: logistic regression (C = 1e10, lbfgs) of ``correct`` on ``logit(clip(conf, 1e-12))``;
  ``platt_coef``, ``platt_intercept`` and the ECEs of the rescaled confidences. When every answer is right or
  every answer wrong the rescaled ECEs are 0 and no coefficients are reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "equal_mass_bins",
    "ece",
    "ece_equal_mass",
    "selective_stats",
    "platt_scaling",
    "calibration_metrics",
]


def equal_mass_bins(probs: Sequence[float], num_bins: int = 10) -> list[float]:
    """Upper bin edges holding about equal numbers of points (``calibration.get_equal_bins``)."""
    sorted_probs = sorted(probs)
    num_bins = min(num_bins, len(sorted_probs))
    groups = [list(g) for g in np.array_split(sorted_probs, num_bins)]
    edges = [(groups[i][-1] + groups[i + 1][0]) / 2.0 for i in range(len(groups) - 1)] + [1.0]
    return sorted(set(edges))


def _plugin_ece(probs: np.ndarray, correct: np.ndarray, edges: list[float]) -> float:
    index = np.searchsorted(edges, probs)  # first edge >= p
    total = 0.0
    for b in np.unique(index):
        mask = index == b
        total += mask.mean() * abs(probs[mask].mean() - correct[mask].mean())
    return float(total)


def ece_equal_mass(probs: Sequence[float], correct: Sequence[int], num_bins: int = 10) -> float:
    """Plug-in ECE over equal-mass bins (``calibration.get_ece_em``, p = 1, no debiasing)."""
    p, c = np.asarray(probs, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    return _plugin_ece(p, c, equal_mass_bins(p, num_bins))


def ece(probs: Sequence[float], correct: Sequence[int], num_bins: int = 1) -> float:
    """Plug-in ECE over equal-width bins (``calibration.get_ece``); 1 bin: ``|mean conf - accuracy|``."""
    p, c = np.asarray(probs, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    return _plugin_ece(p, c, [i / num_bins for i in range(1, num_bins + 1)])


def selective_stats(probs: Sequence[float], correct: Sequence[int]) -> tuple[float, float]:
    """``(selective_cov_acc_area, selective_acc@10)``."""
    p, c = np.asarray(probs, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    order = np.argsort(-p, kind="quicksort")
    accs = np.cumsum(c[order]) / np.arange(1, len(c) + 1)
    return float(accs.mean()), float(accs[int(0.1 * len(c))])


def platt_scaling(probs: Sequence[float], correct: Sequence[int]):
    """Fit Platt rescaling; returns ``(coef, intercept, rescale)`` where ``rescale(probs)`` maps confidences."""
    from sklearn.linear_model import LogisticRegression

    eps = 1e-12

    def logit(x):
        x = np.clip(np.asarray(x, dtype=np.float64), eps, 1 - eps)
        return np.log(x / (1 - x))

    clf = LogisticRegression(C=1e10, solver="lbfgs")
    clf.fit(logit(probs)[:, None], np.asarray(correct, dtype=int))
    coef, intercept = float(clf.coef_[0][0]), float(clf.intercept_[0])

    def rescale(x):
        return 1 / (1 + np.exp(-(logit(x) * coef + intercept)))

    return coef, intercept, rescale


def calibration_metrics(probs: Sequence[float], correct: Sequence[int]) -> dict[str, float]:
    """All calibration metrics of HELM for per-instance confidences and 0/1 correctness ({} when empty)."""
    if len(probs) == 0:
        return {}
    correct = [int(c) for c in correct]
    area, acc10 = selective_stats(probs, correct)
    out = {
        "ece_10_bin": ece_equal_mass(probs, correct, 10),
        "ece_1_bin": ece(probs, correct, 1),
        "selective_cov_acc_area": area,
        "selective_acc@10": acc10,
    }
    if sum(correct) in (0, len(correct)):
        out.update({"platt_ece_10_bin": 0.0, "platt_ece_1_bin": 0.0})
    else:
        coef, intercept, rescale = platt_scaling(probs, correct)
        cal = rescale(probs)
        out.update(
            {
                "platt_coef": coef,
                "platt_intercept": intercept,
                "platt_ece_10_bin": ece_equal_mass(cal, correct, 10),
                "platt_ece_1_bin": ece(cal, correct, 1),
            }
        )
    return out
