"""The Bayes estimators of the two task distributions and their errors without any training (Raventos et al.
2023, Sec. 2-3; research note paper 2, Sec. d): the job of ``dlscience icl baselines``.

* ridge (Eq. 3), the Bayes estimator for Gaussian tasks: its per-position Bayes risk / D in closed form given X
  (:func:`~dlscience.icl.ridge.ridge_risk`);
* dMMSE (Eq. 2), the Bayes estimator for the pool of M: its mean error / D, next to ridge's, on tasks from the
  pool ("pretrain") and from N(0, I) ("true"), per M.

dMMSE weighs every one of the M pool tasks at every position of every sequence, so its time grows linearly with
M (about 3 minutes for M = 2^16 and 2 x 4096 sequences on one CPU core); :data:`MAX_BASELINE_TASKS` bounds it.
"""

from __future__ import annotations

from dlscience.errors import InputValidationError
from dlscience.icl.dmmse import DiscreteMMSE
from dlscience.icl.estimators import ICLEstimator
from dlscience.icl.metrics import eval_batches, evaluate
from dlscience.icl.ridge import Ridge, ridge_risk
from dlscience.icl.tasks import NoisyLinearRegression

__all__ = ["bayes_estimators", "baseline_errors", "format_baselines", "MAX_BASELINE_TASKS"]

#: The largest M ``icl baselines`` accepts: 2^16 (minutes with the default 4096 sequences; 2^20 takes about an
#: hour, and the time grows linearly with M and with the number of sequences).
MAX_BASELINE_TASKS = 1 << 16


def bayes_estimators(task: NoisyLinearRegression) -> dict[str, ICLEstimator]:
    """Ridge (always) and dMMSE (finite M) for ``task``.

    Parameters
    ----------
    task : NoisyLinearRegression

    Returns
    -------
    dict
        ``{"ridge": Ridge, "dmmse": DiscreteMMSE}`` (no ``"dmmse"`` when M is infinite).

    Raises
    ------
    InputValidationError
        dMMSE with a noise variance of 0.
    """
    out: dict[str, ICLEstimator] = {"ridge": Ridge(task.noise_variance, task.task_variance)}
    if task.pool is not None:
        out["dmmse"] = DiscreteMMSE(task.pool, task.noise_variance)
    return out


def baseline_errors(
    tasks: list[int | None],
    n_dims: int = 8,
    n_points: int = 16,
    noise_variance: float = 0.25,
    samples: int = 4096,
    seed: int = 0,
) -> dict:
    """Ridge's per-position Bayes risk and, per M, the mean error / D of dMMSE and ridge on both distributions.

    Parameters
    ----------
    tasks : list of int or None
        Pool sizes M (None = infinity: ridge only), each at most :data:`MAX_BASELINE_TASKS`.
    n_dims, n_points, noise_variance
        D, K and sigma^2 (> 0: dMMSE divides by it).
    samples : int
        Sequences per estimate (>= 1).
    seed : int
        Seeds the pool (``task_seed``), the evaluation sequences (``seed + 1``, ``seed + 2``) and the X of the
        ridge risk.

    Returns
    -------
    dict
        ``{"ridge_risk": [K floats], "rows": [{"M": int or None, "true": {"ridge": float, "dmmse": float},
        "pretrain": {...}}]}``, errors per position averaged, against the noiseless target, divided by D.

    Raises
    ------
    InputValidationError
        A value out of range, M above :data:`MAX_BASELINE_TASKS`, or an M given twice.
    """
    if samples < 1:
        raise InputValidationError(f"--samples must be >= 1, got {samples}")
    if noise_variance <= 0:
        raise InputValidationError(
            f"--noise-variance must be > 0 (dMMSE divides by it), got {noise_variance}"
        )
    big = [m for m in tasks if m is not None and m > MAX_BASELINE_TASKS]
    if big:
        raise InputValidationError(
            f"--tasks: M = {big[0]} is above 2^16 = {MAX_BASELINE_TASKS}, the largest pool `icl baselines` "
            "accepts (dMMSE's time grows linearly with M)"
        )
    if len(set(tasks)) != len(tasks):
        raise InputValidationError(f"--tasks gives an M more than once: {tasks}")
    NoisyLinearRegression(n_dims, n_points, noise_variance)  # validate before any work
    risk = ridge_risk(n_dims, n_points, noise_variance, seed=seed)
    rows = []
    for m in tasks:
        task = NoisyLinearRegression(n_dims, n_points, noise_variance, m, task_seed=seed)
        estimators = bayes_estimators(task)
        row: dict = {"M": m}
        for i, dist in enumerate(("true", "pretrain")):
            ev, _ = evaluate(estimators, eval_batches(task, dist, samples, seed=seed + 1 + i), dist)
            row[dist] = ev.mean_error
        rows.append(row)
    return {"ridge_risk": [float(v) for v in risk], "rows": rows}


def format_baselines(result: dict) -> str:
    """The text ``dlscience icl baselines`` prints.

    Parameters
    ----------
    result : dict
        From :func:`baseline_errors`.

    Returns
    -------
    str
        Ridge's risk per position and its mean, then one row per M: dMMSE and ridge on both distributions
        (``-`` for dMMSE at M = inf).
    """
    risk = result["ridge_risk"]
    lines = [
        "ridge Bayes risk / D per position: " + " ".join(f"{v:.3f}" for v in risk),
        f"mean {sum(risk) / len(risk):.3f}",
        "",
        "mean error / D against the noiseless target; true: tasks ~ N(0, I); pretrain: tasks from the pool of M",
        f"{'M':>8} {'dMMSE true':>11} {'dMMSE pretrain':>15} {'ridge true':>11} {'ridge pretrain':>15}",
    ]
    for row in result["rows"]:
        dm = {d: (f"{row[d]['dmmse']:.3f}" if "dmmse" in row[d] else "-") for d in ("true", "pretrain")}
        m = "inf" if row["M"] is None else row["M"]
        lines.append(
            f"{m:>8} {dm['true']:>11} {dm['pretrain']:>15} {row['true']['ridge']:>11.3f} "
            f"{row['pretrain']['ridge']:>15.3f}"
        )
    return "\n".join(lines)
