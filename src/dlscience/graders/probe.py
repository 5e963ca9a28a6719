"""Linear probes on the grader's residual stream that predict inflated grades (issue 21, part 2; research note
helm_graders.md part C, "Reconstruction" step 3).

An essay's grade is *inflated* when the grader's expected grade exceeds the human score by at least
``threshold`` (default 1 point): d = LLM - human >= 1. Two directions per layer, fitted on training essays:

* difference of means: u = normalize(mean(h | inflated) - mean(h | not inflated));
* logistic regression (scikit-learn, L2, standardised features): u = normalize(w / scale).

Each is scored by the ROC AUC of the projection h . u on held-out essays. The layer is chosen inside the
training prompts only (leave-one-prompt-out within them) and the chosen layer's AUC is reported on the essays
of the held-out prompt, so the reported AUC is not the maximum over layers of held-out AUCs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlscience.errors import InputValidationError

__all__ = [
    "inflated",
    "difference_of_means",
    "logistic_direction",
    "auc",
    "ProbeResult",
    "fit_probe",
    "METHODS",
]

METHODS = ("mean-difference", "logistic")


def inflated(grades, human, threshold: float = 1.0) -> np.ndarray:
    """Boolean (N,): grades - human >= threshold.

    Raises
    ------
    InputValidationError
        Different lengths.
    """
    g, h = np.asarray(grades, dtype=np.float64), np.asarray(human, dtype=np.float64)
    if g.shape != h.shape:
        raise InputValidationError(f"grades {g.shape} and human scores {h.shape} differ in shape")
    return g - h >= threshold


def _check(X, y):
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=bool)
    if X.ndim != 2 or len(X) != len(y):
        raise InputValidationError(
            f"activations must be (N, H) matching N labels, got {X.shape} and {y.shape}"
        )
    if y.all() or not y.any():
        raise InputValidationError("a direction needs both inflated and other essays among the training ones")
    return X, y


def difference_of_means(X, y) -> np.ndarray:
    """Unit vector along mean(X[y]) - mean(X[~y]); X (N, H) float, y (N,) bool -> (H,) float64."""
    X, y = _check(X, y)
    u = X[y].mean(0) - X[~y].mean(0)
    n = np.linalg.norm(u)
    return u / n if n > 0 else u


def logistic_direction(X, y, *, C: float = 1.0) -> np.ndarray:
    """Unit direction of an L2 logistic regression on standardised features, mapped back to raw activations
    (w_j / scale_j): (N, H), (N,) -> (H,) float64."""
    from sklearn.linear_model import LogisticRegression

    X, y = _check(X, y)
    mu, sd = X.mean(0), X.std(0) + 1e-8
    clf = LogisticRegression(C=C, max_iter=2000).fit((X - mu) / sd, y)
    u = clf.coef_[0] / sd
    return u / np.linalg.norm(u)


def auc(scores, y) -> float:
    """ROC AUC of ``scores`` for labels ``y`` (nan when one class is missing)."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def _direction(method, X, y):
    if method not in METHODS:
        raise InputValidationError(f"probe method must be one of {METHODS}, got {method!r}")
    return difference_of_means(X, y) if method == "mean-difference" else logistic_direction(X, y)


@dataclass
class ProbeResult:
    """A probe fitted with leave-one-prompt-out folds.

    Attributes
    ----------
    method : str
    layer : int
        The layer chosen on all essays' inner folds (for the final direction).
    direction : ndarray (H,)
        Unit direction at ``layer``, fitted on every essay.
    heldout_auc : float
        Mean over outer folds of the AUC on the held-out prompt's essays at the layer chosen on the others.
    heldout_auc_per_fold : list of float
    layers_chosen : list of int
        The layer each outer fold chose.
    cv_auc_per_layer : list of float
        Leave-one-prompt-out AUC of every layer over all essays (for the figure; optimistic if maximised).
    train_auc : float
        AUC of the final direction on all essays at ``layer``.
    mean, std : float
        Projection statistics of all essays on the final direction (to standardise attack objectives).
    """

    method: str
    layer: int
    direction: np.ndarray
    heldout_auc: float
    heldout_auc_per_fold: list
    layers_chosen: list
    cv_auc_per_layer: list
    train_auc: float
    mean: float
    std: float


def _layer_aucs(H, y, folds, method) -> np.ndarray:
    """Pooled out-of-fold AUC per layer: H (N, L, D), folds over indices of H."""
    L = H.shape[1]
    out = np.full(L, np.nan)
    for layer in range(1, L):  # layer 0 (token embedding of the last token) is identical for every essay
        scores = np.full(len(y), np.nan)
        for tr, te in folds:
            if y[tr].all() or not y[tr].any():
                continue
            u = _direction(method, H[tr, layer], y[tr])
            scores[te] = H[te, layer] @ u
        ok = ~np.isnan(scores)
        out[layer] = auc(scores[ok], y[ok]) if ok.sum() > 1 else np.nan
    return out


def fit_probe(hidden, labels, prompt_ids, *, method: str = "mean-difference") -> ProbeResult:
    """Fit and evaluate a probe with nested leave-one-prompt-out cross-validation (module docstring).

    Parameters
    ----------
    hidden : ndarray (N, n_layers + 1, H)
        From :meth:`~dlscience.graders.grader.Grader.grade` with ``hidden=True``.
    labels : ndarray bool (N,)
        Inflated grades (:func:`inflated`).
    prompt_ids : sequence of str (N,)
    method : {"mean-difference", "logistic"}

    Returns
    -------
    ProbeResult

    Raises
    ------
    InputValidationError
        Shapes that disagree, fewer than 3 prompts, or a single class.
    """
    H = np.asarray(hidden, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pid = np.asarray(prompt_ids)
    if H.ndim != 3 or len(H) != len(y) or len(pid) != len(y):
        raise InputValidationError("hidden must be (N, layers, H) with N labels and N prompt ids")
    prompts = sorted(set(pid.tolist()))
    if len(prompts) < 3:
        raise InputValidationError("nested leave-one-prompt-out needs essays on at least 3 prompts")
    _check(H[:, 0], y)
    per_fold, chosen = [], []
    for p in prompts:
        tr, te = np.flatnonzero(pid != p), np.flatnonzero(pid == p)
        inner = [
            (np.flatnonzero((pid != p) & (pid != q)), np.flatnonzero(pid == q)) for q in prompts if q != p
        ]
        inner = [(np.searchsorted(tr, a), np.searchsorted(tr, b)) for a, b in inner]  # indices into tr
        layer = int(np.nanargmax(_layer_aucs(H[tr], y[tr], inner, method)))
        chosen.append(layer)
        if y[tr].all() or not y[tr].any():
            per_fold.append(float("nan"))
            continue
        u = _direction(method, H[tr, layer], y[tr])
        per_fold.append(auc(H[te, layer] @ u, y[te]))
    all_folds = [(np.flatnonzero(pid != p), np.flatnonzero(pid == p)) for p in prompts]
    cv = _layer_aucs(H, y, all_folds, method)
    layer = int(np.nanargmax(cv))
    u = _direction(method, H[:, layer], y)
    proj = H[:, layer] @ u
    return ProbeResult(
        method=method,
        layer=layer,
        direction=u,
        heldout_auc=float(np.nanmean(per_fold)) if not np.all(np.isnan(per_fold)) else float("nan"),
        heldout_auc_per_fold=[float(a) for a in per_fold],
        layers_chosen=chosen,
        cv_auc_per_layer=[None if np.isnan(a) else float(a) for a in cv],
        train_auc=auc(proj, y),
        mean=float(proj.mean()),
        std=float(proj.std() + 1e-12),
    )
