"""The stochastic-collapse demos and the collapse report as run-folder jobs (``dlscience dynamics collapse ...``
and ``dlscience dynamics collapse-report``; Chen et al. 2023, arXiv 2306.04251).

* :func:`run_quartic` -- Fig. 1: collapse probability and finite-time exponent of the quartic well against zeta,
  with zeta_c = sqrt(2 mu).
* :func:`run_tanh` -- Fig. 2: the tanh neuron under label-noise gradient descent against the condition
  eta zeta^2 sigma'(0) / 2 > Sxy / Sxx.
* :func:`run_teacher_student` -- Sec. 4.2: surviving modes and test error of the diagonal linear student against
  the injected noise sigma, with max(s* - eta sigma^2 / 2, 0).
* :func:`run_collapse_report` -- the per-layer table of any model file and one figure per layer.

The CNN experiment is :func:`dlscience.learning_dynamics.collapse_cnn.run_cnn_experiment`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dlscience.errors import InputValidationError
from dlscience.learning_dynamics.collapse import (
    IDENTICAL_THRESHOLD,
    VANISH_THRESHOLD,
    collapse_report,
    layer_figure,
    load_model,
    report_figure,
)
from dlscience.learning_dynamics.collapse_theory import (
    DiagonalTeacherStudent,
    QuarticWell,
    TanhNeuron,
    crossing,
)
from dlscience.runs import RunFolder, digest_file

__all__ = ["run_quartic", "run_tanh", "run_teacher_student", "run_collapse_report"]

QUARTIC_ZETAS = tuple(round(1.0 + 0.1 * k, 3) for k in range(17))  # 1.0, 1.1, ..., 2.6
PAPER = "Chen, Kunin, Yamamura & Ganguli 2023, Stochastic collapse (NeurIPS 2023, arXiv 2306.04251)"


def run_quartic(
    out,
    *,
    mu: float = 1.5,
    zetas=QUARTIC_ZETAS,
    n_paths: int = 1000,
    T: float = 400.0,
    n_steps: int = 8000,
    kappa: float = 0.05,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Fig. 1: P(collapse) of d theta = -(theta^3 - mu theta) dt + zeta theta dB against zeta.

    Writes ``quartic.json`` (per zeta: the exponent-criterion probability, the note's theta_T^2 < 1e-30
    probability at T = 25, the median finite-time exponent and the theory mu - zeta^2 / 2; the 0.5 crossing and
    its relative distance to zeta_c) and ``quartic.png``.

    Raises
    ------
    InputValidationError
        mu <= 0, fewer than 2 zetas, or a bad simulation size.
    """
    zetas = tuple(float(z) for z in zetas)
    if not mu > 0 or len(zetas) < 2 or min(zetas) < 0:
        raise InputValidationError("need mu > 0 and at least two zetas >= 0")
    settings = dict(mu=mu, zetas=zetas, n_paths=n_paths, T=T, n_steps=n_steps, kappa=kappa, seed=seed)
    with RunFolder(out, "dynamics collapse quartic", settings, overwrite=overwrite) as run:
        well = QuarticWell(mu)
        u = well.simulate(zetas, n_paths=n_paths, T=T, n_steps=n_steps, seed=seed)
        exponent = u / T
        p_exp = (exponent < -kappa).mean(1)
        u25 = well.simulate(
            zetas, n_paths=n_paths, T=25.0, n_steps=80_000 // 4, seed=seed + 1, scheme="theta"
        )
        p_thr = (2 * u25 < np.log(1e-30)).mean(1)
        cross = crossing(zetas, p_exp)
        summary = {
            "paper": PAPER + ", Fig. 1",
            "settings": settings,
            "zeta_c": well.zeta_c,
            "zeta_at_p_half": cross,
            "relative_offset": None if cross is None else (cross - well.zeta_c) / well.zeta_c,
            "large_T_crossing": float(np.sqrt(2 * (mu + kappa))),  # the limit T -> inf at fixed kappa
            "zetas": zetas,
            "p_collapse_exponent": p_exp,
            "p_collapse_threshold_T25": p_thr,
            "median_exponent": np.median(exponent, 1),
            "theory_exponent": well.lyapunov(zetas),
        }
        run.save_figure("quartic.png", _quartic_figure(summary))
        run.write_json("quartic.json", summary)
        run.finish()
    return summary


def _quartic_figure(s):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6))
    z = s["zetas"]
    a0.plot(
        z,
        s["p_collapse_exponent"],
        "o-",
        label=f"P(log|theta_T| / T < -{s['settings']['kappa']:g}), T = {s['settings']['T']:g}",
    )
    a0.plot(z, s["p_collapse_threshold_T25"], "s--", ms=4, label="P(theta_T^2 < 1e-30), T = 25 (note)")
    a0.axvline(s["zeta_c"], color="k", lw=0.8, label=f"zeta_c = sqrt(2 mu) = {s['zeta_c']:.3f}")
    a0.axhline(0.5, color="gray", lw=0.5)
    a0.set(
        xlabel="noise zeta", ylabel="collapse probability", title="quartic well: collapse iff zeta^2 > 2 mu"
    )
    a0.legend(fontsize=7)
    a1.plot(z, s["median_exponent"], "o", label="median log|theta_T| / T (simulated)")
    a1.plot(z, s["theory_exponent"], "-", label="mu - zeta^2 / 2 (theory, at the origin)")
    a1.axhline(0, color="gray", lw=0.5)
    a1.set(xlabel="noise zeta", ylabel="exponent", title="finite-time Lyapunov exponent")
    a1.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run_tanh(
    out,
    *,
    eta: float = 0.01,
    n_points: int = 8,
    n_paths: int = 200,
    n_steps: int = 20_000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Fig. 2: f = w2 tanh(w1 x) under label-noise gradient descent for zeta in (0, 2) zeta_c; writes
    ``tanh.json`` (P(|w|_T < 1e-6) per zeta, the condition's zeta_c) and ``tanh.png``."""
    settings = dict(eta=eta, n_points=n_points, n_paths=n_paths, n_steps=n_steps, seed=seed)
    with RunFolder(out, "dynamics collapse tanh", settings, overwrite=overwrite) as run:
        neuron = _tanh_problem(eta, n_points, seed)
        ratios = np.array([0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.05, 1.1, 1.2, 1.5, 2.0])
        zetas = ratios * neuron.zeta_c
        w = neuron.simulate(zetas, n_paths=n_paths, n_steps=n_steps, seed=seed)
        p = (w < 1e-6).mean(1)
        summary = {
            "paper": PAPER + ", Fig. 2",
            "settings": settings,
            "x": neuron.x,
            "y": neuron.y,
            "Sxy_over_Sxx": neuron.ratio,
            "zeta_c": neuron.zeta_c,
            "zeta_over_zeta_c": ratios,
            "zetas": zetas,
            "p_collapse": p,
            "condition": neuron.collapses(zetas),
            "zeta_at_p_half": crossing(zetas, p),
        }
        run.save_figure("tanh.png", _tanh_figure(summary))
        run.write_json("tanh.json", summary)
        run.finish()
    return summary


def _tanh_problem(eta: float, n_points: int, seed: int) -> TanhNeuron:
    """A 1-D regression set with Sxy / Sxx = 0.5 (x ~ N(0, 1), y = 0.5 x + small noise orthogonal to x)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n_points)
    e = rng.standard_normal(n_points)
    e -= x * (x @ e) / (x @ x)
    y = 0.5 * x + 0.1 * e
    return TanhNeuron(tuple(np.round(x, 6)), tuple(np.round(y, 6)), eta)


def _tanh_figure(s):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(s["zeta_over_zeta_c"], s["p_collapse"], "o-", label="P(|w|_T < 1e-6), simulated")
    ax.axvline(1.0, color="k", lw=0.8, label="eta zeta^2 / 2 = Sxy / Sxx")
    ax.set(
        xlabel="label noise zeta / zeta_c",
        ylabel="collapse probability",
        title="tanh neuron: collapse to the origin (a saddle)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run_teacher_student(
    out,
    *,
    sigmas=(0.0, 5.0, 10.0, 15.0, 20.0),
    eta: float = 3 / 1024,
    steps: int = 60_000,
    replicates: int = 16,
    average_last: int = 30_000,
    tol: float = 0.05,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Sec. 4.2: the diagonal linear teacher-student (N = 1024, n = m = 64, rank 8) for each injected sigma.

    Two runs per sigma: the note's schedule (lr x 0.1 at 5/6 of ``steps``; single-run counts and test error
    at the end, replicate mean) and a constant step with E[s] estimated by the mean over ``replicates`` and the
    last ``average_last`` steps (compared mode by mode with max(s* - eta sigma^2 / 2, 0); a mode survives when
    it exceeds ``tol``). Writes ``teacher_student.json`` and ``teacher_student.png``.
    """
    sigmas = tuple(float(s) for s in sigmas)
    settings = dict(
        sigmas=sigmas,
        eta=eta,
        steps=steps,
        replicates=replicates,
        average_last=average_last,
        tol=tol,
        seed=seed,
    )
    with RunFolder(out, "dynamics collapse teacher-student", settings, overwrite=overwrite) as run:
        ts = DiagonalTeacherStudent(seed=seed)
        const = ts.simulate(
            sigmas,
            eta=eta,
            steps=steps,
            drop_at=None,
            replicates=replicates,
            average_last=average_last,
            seed=seed,
        )
        noted = ts.simulate(sigmas, eta=eta, steps=steps, drop_at=steps * 5 // 6, replicates=4, seed=seed + 1)
        rows = []
        for i, sigma in enumerate(sigmas):
            pred = ts.predicted(eta, sigma)
            mean = const["mean"][i]
            rows.append(
                {
                    "sigma": sigma,
                    "threshold": eta * sigma**2 / 2,
                    "predicted_surviving": int(ts.surviving(pred, tol)),
                    "simulated_surviving_mean_s": int(ts.surviving(mean, tol)),
                    "max_abs_mean_s_minus_prediction": float(np.abs(mean - pred).max()),
                    "teacher_modes_above_threshold": int((np.linspace(0.5, 1, 8) > eta * sigma**2 / 2).sum()),
                    "single_run_surviving_1e-2_note_schedule": float(
                        ts.surviving(noted["final"][:, i], 0.01).mean()
                    ),
                    "test_mse_note_schedule": float(ts.test_error(noted["final"][:, i]).mean()),
                    "test_mse_mean_student": float(ts.test_error(mean)),
                    "test_mse_theory": float(ts.test_error(pred)),
                }
            )
        summary = {
            "paper": PAPER + ", Sec. 4.2 (diagonal linear teacher-student)",
            "settings": settings,
            "s_star": ts.s_star,
            "rows": rows,
            "mean_s": const["mean"],
        }
        run.save_figure("teacher_student.png", _ts_figure(summary, ts))
        run.write_json("teacher_student.json", summary)
        run.finish()
    return summary


def _ts_figure(s, ts: DiagonalTeacherStudent):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    eta = s["settings"]["eta"]
    cmap = plt.get_cmap("viridis")
    for i, row in enumerate(s["rows"]):
        c = cmap(i / max(1, len(s["rows"]) - 1))
        a0.plot(ts.s_star, np.asarray(s["mean_s"])[i], ".", color=c, ms=4, label=f"sigma = {row['sigma']:g}")
        a0.plot(ts.s_star, ts.predicted(eta, row["sigma"]), "-", color=c, lw=0.8)
    a0.set(
        xlabel="target mode s*",
        ylabel="E[s] (simulated: dots)",
        title="final modes vs max(s* - eta sigma^2/2, 0)",
    )
    a0.legend(fontsize=7)
    sig = [r["sigma"] for r in s["rows"]]
    a1.plot(
        sig, [r["test_mse_note_schedule"] for r in s["rows"]], "o-", label="single runs (note's schedule)"
    )
    a1.plot(sig, [r["test_mse_mean_student"] for r in s["rows"]], "s-", label="mean student")
    a1.plot(sig, [r["test_mse_theory"] for r in s["rows"]], "k--", label="theory modes")
    a1.set(xlabel="injected noise sigma", ylabel="test MSE |W - W*|^2 / (n m)", title="denoising by collapse")
    a1.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run_collapse_report(
    checkpoint,
    out,
    *,
    vanish_threshold: float = VANISH_THRESHOLD,
    identical_threshold: float = IDENTICAL_THRESHOLD,
    outgoing: bool = True,
    figures: bool = True,
    trust_pickle: bool = False,
    overwrite: bool = False,
) -> dict:
    """The collapse table of the model in ``checkpoint``: writes ``collapse_report.json``,
    ``collapse_report.png`` (all layers) and, with ``figures``, ``layer_<name>.png`` per layer into the run
    folder ``out``.

    Raises
    ------
    UserError
        A missing, damaged or unrecognised checkpoint (see :func:`~dlscience.learning_dynamics.collapse.load_model`).
    """
    model, kind = load_model(checkpoint, trust_pickle=trust_pickle)
    path = Path(checkpoint)
    path = path / "model.pt" if path.is_dir() else path
    settings = dict(
        checkpoint=str(checkpoint),
        vanish_threshold=vanish_threshold,
        identical_threshold=identical_threshold,
        outgoing=outgoing,
        figures=figures,
    )
    identity = {k: v for k, v in settings.items() if k != "checkpoint"}
    with RunFolder(
        out,
        "dynamics collapse-report",
        settings,
        identity=identity,
        inputs={"checkpoint": digest_file(path)},
        overwrite=overwrite,
    ) as run:
        rows, details = collapse_report(
            model,
            vanish_threshold=vanish_threshold,
            identical_threshold=identical_threshold,
            outgoing=outgoing,
            details=True,
        )
        if figures:
            for row, detail in zip(rows, details, strict=True):
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", row["layer"]) or "layer"
                fig = layer_figure(
                    row, detail, vanish_threshold=vanish_threshold, identical_threshold=identical_threshold
                )
                run.save_figure(f"layer_{name}.png", fig)
        run.save_figure("collapse_report.png", report_figure(rows, f"{Path(checkpoint)} ({kind})"))
        widths = np.array([r["width"] for r in rows])
        summary = {
            "paper": PAPER + ", Sec. 5 measurements (relative thresholds)",
            "checkpoint": str(checkpoint),
            "recognised_as": kind,
            "settings": settings,
            "layers": rows,
            "total_units": int(widths.sum()),
            "total_vanishing": int(sum(r["vanishing"] for r in rows)),
            "weighted_independent_fraction": float(sum(r["groups"] for r in rows) / widths.sum()),
        }
        run.write_json("collapse_report.json", summary)
        run.finish()
    return summary
