"""Errors and distances between in-context estimators, written once for every
:class:`~dlscience.icl.estimators.ICLEstimator` (Raventos et al. 2023, Sec. 2 and Eq. 4).

* per-position error: E[(y_hat_k - w^T x_k)^2] / D against the **noiseless** target (as the reference code and
  the research note's tables; against the noisy y_k it is larger by sigma^2 / D);
* Delta_{A,B} = E[(1 / (K D)) sum_k (y_hat^A_k - y_hat^B_k)^2]   (Eq. 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import torch

from dlscience.errors import InputValidationError
from dlscience.icl.estimators import ICLEstimator
from dlscience.icl.tasks import Batch, NoisyLinearRegression

__all__ = ["per_position_error", "delta", "Evaluation", "evaluate", "eval_batches"]


def per_position_error(pred: torch.Tensor, target: torch.Tensor, n_dims: int) -> torch.Tensor:
    """Mean over sequences of (pred - target)^2 / D per position: (B, K), (B, K) -> (K,) float64."""
    return ((pred.double() - target.double()) ** 2).mean(0) / n_dims


def delta(pred_a: torch.Tensor, pred_b: torch.Tensor, n_dims: int) -> float:
    """Delta_{A,B} of Eq. 4: mean over sequences and positions of (a - b)^2, divided by D."""
    return float(((pred_a.double() - pred_b.double()) ** 2).mean() / n_dims)


@dataclass
class Evaluation:
    """Result of :func:`evaluate` on one task distribution.

    Attributes
    ----------
    distribution : str
    error : dict name -> Tensor (K,) float64
        Per-position error / D against the noiseless target.
    mean_error : dict name -> float
        Its mean over positions.
    delta : dict "A|B" -> float
        Eq. 4 for every pair of estimators.
    n_samples : int
    """

    distribution: str
    error: dict[str, torch.Tensor] = field(default_factory=dict)
    mean_error: dict[str, float] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    n_samples: int = 0

    def to_json(self) -> dict:
        """JSON-ready content."""
        return {
            "distribution": self.distribution,
            "n_samples": self.n_samples,
            "mean_error": self.mean_error,
            "error": {k: [round(float(v), 6) for v in e] for k, e in self.error.items()},
            "delta": self.delta,
        }


def eval_batches(
    task: NoisyLinearRegression, distribution: str, n_samples: int, seed: int, batch_size: int = 4096
) -> list[Batch]:
    """A fixed evaluation set: ``n_samples`` sequences from ``distribution`` in batches, seeded by ``seed``
    (independent of any training stream)."""
    if n_samples < 1 or batch_size < 1:
        raise InputValidationError(f"evaluation needs at least one sequence, got n_samples = {n_samples}")
    g = torch.Generator().manual_seed(seed)
    sizes = [min(batch_size, n_samples - a) for a in range(0, n_samples, batch_size)]
    return [task.sample(s, g, distribution) for s in sizes]


@torch.no_grad()
def evaluate(
    estimators: dict[str, ICLEstimator],
    batches: list[Batch],
    distribution: str,
    cache: dict[str, torch.Tensor] | None = None,
) -> tuple[Evaluation, dict[str, torch.Tensor]]:
    """Per-position errors of every estimator and Delta between every pair, on fixed batches.

    Parameters
    ----------
    estimators : dict name -> ICLEstimator
    batches : list of Batch
        From :func:`eval_batches`.
    distribution : str
        Label stored in the result.
    cache : dict, optional
        Predictions by name reused instead of recomputed (fixed estimators such as ridge and dMMSE need
        computing once per evaluation set); pass the returned predictions back in.

    Returns
    -------
    Evaluation
    dict name -> Tensor (n_samples, K)
        Every estimator's predictions.
    """
    cache = {} if cache is None else cache
    preds = {}
    for name, est in estimators.items():
        if name in cache:
            preds[name] = cache[name]
        else:
            preds[name] = torch.cat([est.predict(b.xs, b.ys) for b in batches])
    target = torch.cat([b.noiseless for b in batches])
    D = batches[0].xs.shape[-1]
    ev = Evaluation(distribution, n_samples=len(target))
    for name, p in preds.items():
        ev.error[name] = per_position_error(p, target, D)
        ev.mean_error[name] = float(ev.error[name].mean())
    for a, b in combinations(preds, 2):
        ev.delta[f"{a}|{b}"] = delta(preds[a], preds[b], D)
    return ev, preds
