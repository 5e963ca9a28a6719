"""The *Features are fate* experiments (Tahir et al. 2025) as resumable jobs (``dlscience dynamics transfer ...``).

* :func:`run_phase_diagram` -- theory heat maps of the transferability of linear transfer and fine-tuning over
  (theta, gamma) with simulated points, slices at theta = pi/8, pi/4, 3pi/8, and the per-learner maximum
  |simulation - theory| (the acceptance number). Each learner's simulation is saved in the run state, so an
  interrupted run resumes at the next learner.
* :func:`run_ridge_sweep` -- linear-transfer risk against its ridge lambda at theta = pi/8, pi/4, 3pi/8.
* :func:`run_distances` -- two source/target pairs with identical input marginals and equal joint KL whose
  linear-transfer transferability has opposite signs.
"""

from __future__ import annotations

import time

import numpy as np

from dlscience.errors import InputValidationError
from dlscience.learning_dynamics.transfer import (
    FineTune,
    LinearTransfer,
    Scratch,
    TeacherPairs,
    ft_boundary_theta,
    gaussian_joint_distances,
    lt_boundary_gamma,
)
from dlscience.runs import RunFolder

__all__ = ["run_phase_diagram", "run_distances", "run_ridge_sweep", "sign_agreement", "SLICE_THETAS"]

DEFAULT_THETAS = tuple(float(v) * np.pi for v in (1 / 16, 1 / 8, 1 / 4, 3 / 8, 7 / 16))
SLICE_THETAS = (np.pi / 8, np.pi / 4, 3 * np.pi / 8)
PAPER = "Tahir, Ganguli & Rotskoff 2025, Features are fate (arXiv 2410.08194)"


def _learners(lam: float, steps: int, network: str = "linear", hidden: int = 128, ft_step: float = 1.0):
    kw = {"steps": steps, "network": network, "hidden": hidden}
    # a smaller fine-tuning step takes proportionally more steps (same gradient-flow time)
    ft = FineTune(lr_scale=0.9 * ft_step, **{**kw, "steps": max(1, round(steps / ft_step))})
    return {"scratch": Scratch(**kw), "lt": LinearTransfer(lam=lam, **kw), "ft": ft}


#: |T_theory| below which a grid point is too near a phase boundary for its sign to count as a clear test.
SIGN_MARGIN = 0.05


def sign_agreement(t_theory, t_simulated, margin: float = SIGN_MARGIN) -> dict:
    """How often the simulated transferability has the theory's sign.

    Parameters
    ----------
    t_theory, t_simulated : array-like of float, same shape
        T = R_scratch - R_transfer from theory and simulation.
    margin : float >= 0
        Points with |T_theory| <= margin (near a boundary) are counted separately.

    Returns
    -------
    dict
        ``{"agree", "points", "clear", "clear_points", "margin"}`` (counts).
    """
    t = np.asarray(t_theory, dtype=np.float64)
    s = np.asarray(t_simulated, dtype=np.float64)
    same = np.sign(t) == np.sign(s)
    clear = np.abs(t) > margin
    return {
        "agree": int(same.sum()),
        "points": int(same.size),
        "clear": int((same & clear).sum()),
        "clear_points": int(clear.sum()),
        "margin": margin,
    }


def run_phase_diagram(
    out,
    *,
    thetas=DEFAULT_THETAS,
    gammas=(0.2, 0.4, 0.6, 0.8, 1.5),
    sigma: float = 0.0,
    lam: float = 0.1,
    d: int = 200,
    instances: int = 32,
    steps: int = 2500,
    network: str = "linear",
    hidden: int = 128,
    ft_step: float = 1 / 3,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Simulated and theoretical risks of the three learners over a (theta, gamma) grid; writes
    ``phase_diagram.json`` and ``phase_diagram.png``.

    Parameters
    ----------
    out : path
        Run folder.
    thetas, gammas : sequence of float
        Grid (radians; n / d), at least 2 values each.
    sigma : float >= 0
        Target label noise.
    lam : float >= 0
        Ridge of linear transfer.
    d, instances, steps, seed : int
        Dimension, instances per point, GD steps of scratch and fine-tuning, seed.
    network : {"linear", "relu"}
        The paper's deep linear network, or the nonlinear check (two-layer ReLU networks of width ``hidden``,
        compared with the linear theory: the signs of T are the test, not the risk values).
    ft_step : float in (0, 1]
        Fine-tuning's GD step as a fraction of 0.9 / (preconditioner bound x lambda_max), with steps / ft_step
        steps (the same gradient-flow time). Smaller steps approach gradient flow, whose interpolator the
        closed form describes: at ft_step = 1 the risk at theta >= 3pi/8 falls up to 0.033 below the formula,
        at the default 1/3 within 0.025 (d = 200, 32 instances).

    Returns
    -------
    dict
        The JSON: settings, theory and simulated risks per learner as (len(thetas), len(gammas)) lists, the
        maximum |sim - theory| per learner, transferabilities, boundaries, seconds per learner.

    Raises
    ------
    InputValidationError
        Bad settings; UserError as for every run folder.
    """
    thetas, gammas = tuple(float(t) for t in thetas), tuple(float(g) for g in gammas)
    if len(thetas) < 2 or len(gammas) < 2 or min(gammas) <= 0:
        raise InputValidationError("the grid needs >= 2 thetas and >= 2 gammas, all gammas > 0")
    if 1.0 in gammas and sigma > 0:
        raise InputValidationError("gamma = 1 has infinite scratch risk with noise; leave it out of --gammas")
    if d < 2 or instances < 1 or steps < 1 or sigma < 0 or lam < 0:
        raise InputValidationError("need d >= 2, instances >= 1, steps >= 1, sigma >= 0, lam >= 0")
    if network not in ("linear", "relu") or hidden < 1:
        raise InputValidationError(
            f"network must be linear or relu and hidden >= 1, got {network!r}, {hidden}"
        )
    settings = dict(
        thetas=thetas, gammas=gammas, sigma=sigma, lam=lam, d=d, instances=instances, steps=steps, seed=seed
    )
    if not 0 < ft_step <= 1:
        raise InputValidationError(f"ft_step must be in (0, 1], got {ft_step}")
    ft_step = round(float(ft_step), 10)  # 1/3 and 0.3333333333 are the same run (and the same fingerprint)
    if network != "linear":  # linear runs keep the settings (and fingerprint) they had before --network
        settings.update(network=network, hidden=hidden)
    if ft_step != 1.0:  # likewise for runs made before --ft-step
        settings.update(ft_step=ft_step)
    with RunFolder(out, "dynamics transfer phase-diagram", settings, overwrite=overwrite) as run:
        TH, GA = np.meshgrid(thetas, gammas, indexing="ij")
        learners = _learners(lam, steps, network, hidden, ft_step)
        done = run.state.setdefault("learners", {})
        from tqdm.auto import tqdm

        bar = tqdm(learners.items(), desc="transfer learners", disable=not progress)
        for key, learner in bar:
            bar.set_postfix_str(learner.name)
            if key in done:
                continue
            t0 = time.perf_counter()
            sim = learner.simulate(TH, GA, sigma, d=d, instances=instances, seed=seed)
            done[key] = {"simulated": sim.tolist(), "seconds": time.perf_counter() - t0}
            run.save_state()
        rows = {}
        for key, learner in learners.items():
            theory = learner.risk(TH, GA, sigma)
            sim = np.asarray(done[key]["simulated"])
            rows[key] = {
                "name": learner.name,
                "theory": theory.tolist(),
                "simulated": sim.tolist(),
                "max_abs_error": float(np.abs(sim - theory).max()),
                "seconds": done[key]["seconds"],
            }
        T = {
            k: (np.asarray(rows["scratch"][s]) - np.asarray(rows[k][s])).tolist()
            for k in ("lt", "ft")
            for s in ("theory",)
        }
        T_sim = {k: np.asarray(rows["scratch"]["simulated"]) - np.asarray(rows[k]["simulated"]) for k in T}
        summary = {
            "paper": PAPER,
            "settings": {**settings, "network": network, "hidden": hidden if network == "relu" else None},
            "risk": "excess risk |beta_t - beta_hat|^2 (E_x (f(x) - beta_t^T x)^2 for ReLU networks); "
            "transferability T = R_scratch - R_transfer; theory = the deep linear network's closed forms",
            "sign_agreement": {k: sign_agreement(T[k], T_sim[k]) for k in T},
            "learners": rows,
            "transferability_theory": T,
            "transferability_simulated": {k: v.tolist() for k, v in T_sim.items()},
            "max_abs_error": {k: r["max_abs_error"] for k, r in rows.items()},
            "seconds_total": sum(r["seconds"] for r in rows.values()),
            "boundaries": {
                "ft_theta": ft_boundary_theta(),
                "lt_gamma_at_thetas": lt_boundary_gamma(np.asarray(thetas), lam).tolist(),
            },
        }
        run.save_figure("phase_diagram.png", _phase_figure(summary))
        run.write_json("phase_diagram.json", summary)
        run.finish()
    return summary


def _phase_figure(summary: dict):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401  (headless backend)

    st = summary["settings"]
    sigma, lam = st["sigma"], st["lam"]
    learners = _learners(lam, 1)
    th = np.linspace(0.0, np.pi / 2, 181)
    ga = np.linspace(0.05, 2.0, 196)
    TH, GA = np.meshgrid(th, ga, indexing="ij")
    r_s = learners["scratch"].risk(TH, GA, sigma)
    sim_s = np.asarray(summary["learners"]["scratch"]["simulated"])
    pts_th, pts_ga = np.meshgrid(st["thetas"], st["gammas"], indexing="ij")
    relu = st.get("network", "linear") == "relu"
    net = f"ReLU h = {st['hidden']}" if relu else "deep linear"
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.6))
    for ax, key in zip(axes[:2], ("lt", "ft"), strict=True):
        T = r_s - learners[key].risk(TH, GA, sigma)
        T = np.where(np.isfinite(T), T, np.nan)
        im = ax.pcolormesh(GA, TH / np.pi, T, cmap="RdBu", vmin=-1, vmax=1, shading="auto")
        sim_T = sim_s - np.asarray(summary["learners"][key]["simulated"])
        ax.scatter(pts_ga, pts_th / np.pi, c=sim_T, cmap="RdBu", vmin=-1, vmax=1, edgecolors="k", s=70)
        ax.contour(GA, TH / np.pi, T, levels=[0.0], colors="k", linewidths=1.2)
        if key == "lt":
            ax.plot(np.cos(th) ** 2, th / np.pi, "g--", lw=1.2, label="gamma = cos^2 theta")
        else:
            ax.axhline(1 / 3, color="g", ls="--", lw=1.2, label="theta = pi/3")
        ax.legend(fontsize=8, loc="upper right")
        ax.set(
            xlabel="gamma = n / d",
            ylabel="theta / pi",
            title=f"T_{key} ({'linear ' if relu else ''}theory map; dots: {net} simulation, d = {st['d']})",
        )
        fig.colorbar(im, ax=ax, fraction=0.046, label="T = R_scratch - R_transfer (blue: helps)")
    g_line = np.linspace(0.05, 2.0, 400)
    gi = {g: i for i, g in enumerate(st["gammas"])}
    for ax, theta in zip(axes[2:], SLICE_THETAS, strict=True):
        for key, color in (("scratch", "k"), ("lt", "tab:orange"), ("ft", "tab:blue")):
            r = learners[key].risk(np.full_like(g_line, theta), g_line, sigma)
            ax.plot(g_line, np.where(np.isfinite(r), r, np.nan), color=color, label=learners[key].name)
        # simulated points at the grid theta nearest this slice
        j = int(np.argmin(np.abs(np.asarray(st["thetas"]) - theta)))
        for key, color in (("scratch", "k"), ("lt", "tab:orange"), ("ft", "tab:blue")):
            sim = np.asarray(summary["learners"][key]["simulated"])[j]
            if abs(st["thetas"][j] - theta) < 1e-9:
                ax.plot(list(gi), sim, "o", color=color, mfc="none")
        ax.set(
            xlabel="gamma = n / d",
            ylabel="excess risk",
            title=f"theta = {theta / np.pi:.3f} pi",
            ylim=(0, 1.6),
        )
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Features are fate: transferability of linear transfer (lam = {lam}) and fine-tuning, sigma = {sigma}"
        + ("; nonlinear check: lines = linear theory, dots = two-layer ReLU networks" if relu else "")
    )
    fig.tight_layout()
    return fig


def run_distances(
    out,
    *,
    sigma: float = 0.5,
    gamma: float = 0.5,
    lam: float = 0.1,
    d: int = 200,
    instances: int = 8,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Two task pairs with identical input marginals and equal joint KL, opposite linear-transfer sign.

    Pair A: beta_t = -beta_s (theta = pi, the target lies in the pretrained feature span), noise sigma on
    both tasks. Pair B: beta_t orthogonal to beta_s (theta = pi/2), noise sigma / sqrt(2) on both tasks.
    Matched: x ~ N(0, I) in every task (every phi-divergence and IPM between input marginals is 0), the y
    marginals within each pair, and the joint KL in both directions, |beta_s - beta_t|^2 / (2 sigma^2) = 2 /
    sigma^2. Reported, not matched: the joint squared Hellinger and W2 distances.

    Returns
    -------
    dict
        Per pair: the distances, the theory and simulated risks of scratch and linear transfer, T_lt.
    """
    if not (sigma > 0 and gamma > 0 and gamma != 1 and d >= 2 and instances >= 1):
        raise InputValidationError("need sigma > 0, gamma > 0 and != 1, d >= 2, instances >= 1")
    settings = dict(sigma=sigma, gamma=gamma, lam=lam, d=d, instances=instances, seed=seed)
    with RunFolder(out, "dynamics transfer distances", settings, overwrite=overwrite) as run:
        import torch

        pairs = {"A: target in feature span (theta = pi)": (np.pi, sigma)}
        pairs["B: target orthogonal (theta = pi/2)"] = (np.pi / 2, sigma / np.sqrt(2))
        rows = []
        for name, (theta, s) in pairs.items():
            tp = TeacherPairs.draw([theta], d, torch.Generator().manual_seed(seed))
            dist = gaussian_joint_distances(tp.beta_s[0].numpy(), tp.beta_t[0].numpy(), s, s)
            row = {"pair": name, "theta": theta, "sigma": s, "distances": dist}
            for key, learner in (("scratch", Scratch()), ("lt", LinearTransfer(lam=lam))):
                row[f"{key}_theory"] = float(learner.risk(theta, gamma, s))
                row[f"{key}_simulated"] = float(
                    learner.simulate(theta, gamma, s, d=d, instances=instances, seed=seed)
                )
            row["T_lt_theory"] = row["scratch_theory"] - row["lt_theory"]
            row["T_lt_simulated"] = row["scratch_simulated"] - row["lt_simulated"]
            rows.append(row)
        summary = {
            "paper": PAPER,
            "settings": settings,
            "matched": "input marginals (identical), y marginals within each pair, joint KL in both directions",
            "not_matched": "joint squared Hellinger and W2 (reported)",
            "pairs": rows,
        }
        run.write_json("distances.json", summary)
        run.finish()
    return summary


def run_ridge_sweep(
    out,
    *,
    thetas=SLICE_THETAS,
    lams=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
    gamma: float = 0.5,
    sigma: float = 0.0,
    d: int = 200,
    instances: int = 16,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Linear-transfer risk against its ridge lambda (the paper's LT-vs-lambda figure): theory
    R_lt = 1 - (1 + 2 lam) cos^2 theta / (1 + lam)^2 with simulated points; writes ``ridge_sweep.json`` and
    ``ridge_sweep.png``.

    Parameters
    ----------
    out : path
        Run folder.
    thetas : sequence of float
        Angles (radians), one curve each.
    lams : sequence of float >= 0
        Ridge values (lam below 1e-5 is simulated at 1e-5, as in the reference code: lam = 0 is ill-posed).
    gamma : float > 0
        Target samples per dimension.
    sigma : float >= 0
        Target label noise (the theory is the n -> infinity limit of the one-dimensional refit, exact at sigma = 0).
    d, instances, seed : int

    Returns
    -------
    dict
        Settings, and per theta the theory and simulated risks per lam, and the scratch risk at this gamma.

    Raises
    ------
    InputValidationError
        Fewer than 2 lams, a negative lam, gamma <= 0, d < 2 or instances < 1.
    """
    thetas, lams = tuple(float(t) for t in thetas), tuple(float(v) for v in lams)
    if len(lams) < 2 or min(lams) < 0 or not thetas:
        raise InputValidationError("the sweep needs >= 2 lams, all >= 0, and at least one theta")
    if not (gamma > 0 and d >= 2 and instances >= 1 and sigma >= 0):
        raise InputValidationError("need gamma > 0, d >= 2, instances >= 1, sigma >= 0")
    settings = dict(thetas=thetas, lams=lams, gamma=gamma, sigma=sigma, d=d, instances=instances, seed=seed)
    with RunFolder(out, "dynamics transfer ridge", settings, overwrite=overwrite) as run:
        th = np.asarray(thetas)
        curves = []
        for lam in lams:
            lt = LinearTransfer(lam=lam)
            curves.append(
                {
                    "lam": lam,
                    "theory": lt.risk(th, gamma, sigma).tolist(),
                    "simulated": lt.simulate(th, gamma, sigma, d=d, instances=instances, seed=seed).tolist(),
                }
            )
        scratch = float(Scratch().risk(0.0, gamma, sigma))
        err = max(abs(a - b) for c in curves for a, b in zip(c["theory"], c["simulated"], strict=True))
        summary = {
            "paper": PAPER,
            "settings": settings,
            "risk": "excess risk |beta_t - beta_hat|^2 of linear transfer; scratch = ridgeless formula",
            "curves": curves,
            "scratch_risk": scratch,
            "max_abs_error": err,
        }
        run.save_figure("ridge_sweep.png", _ridge_figure(summary))
        run.write_json("ridge_sweep.json", summary)
        run.finish()
    return summary


def _ridge_figure(summary: dict):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401  (headless backend)

    st = summary["settings"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    lam_line = np.linspace(0, max(st["lams"]), 200)
    lams = [c["lam"] for c in summary["curves"]]
    for i, theta in enumerate(st["thetas"]):
        color = f"C{i}"
        theory = [float(LinearTransfer(lam=v).risk(theta, st["gamma"], st["sigma"])) for v in lam_line]
        ax.plot(lam_line, theory, color=color, label=f"theta = {theta / np.pi:.3f} pi")
        ax.plot(lams, [c["simulated"][i] for c in summary["curves"]], "o", color=color, mfc="none")
    ax.axhline(summary["scratch_risk"], color="k", ls="--", lw=1, label=f"scratch (gamma = {st['gamma']})")
    ax.set(xlabel="ridge lambda", ylabel="excess risk of linear transfer", ylim=(0, 1.1))
    ax.set_title(f"linear transfer vs ridge (lines: theory; dots: d = {st['d']} simulation)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
