"""The *Features are fate* experiments (Tahir et al. 2025) as resumable jobs (``dlscience dynamics transfer ...``).

* :func:`run_phase_diagram` -- theory heat maps of the transferability of linear transfer and fine-tuning over
  (theta, gamma) with simulated points, slices at theta = pi/8, pi/4, 3pi/8, and the per-learner maximum
  |simulation - theory| (the acceptance number). Each learner's simulation is saved in the run state, so an
  interrupted run resumes at the next learner.
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

__all__ = ["run_phase_diagram", "run_distances", "SLICE_THETAS"]

DEFAULT_THETAS = tuple(float(v) * np.pi for v in (1 / 16, 1 / 8, 1 / 4, 3 / 8, 7 / 16))
SLICE_THETAS = (np.pi / 8, np.pi / 4, 3 * np.pi / 8)
PAPER = "Tahir, Ganguli & Rotskoff 2025, Features are fate (arXiv 2410.08194)"


def _learners(lam: float, steps: int):
    return {"scratch": Scratch(steps=steps), "lt": LinearTransfer(lam=lam), "ft": FineTune(steps=steps)}


def run_phase_diagram(
    out,
    *,
    thetas=DEFAULT_THETAS,
    gammas=(0.2, 0.4, 0.6, 0.8, 1.5),
    sigma: float = 0.0,
    lam: float = 0.1,
    d: int = 200,
    instances: int = 8,
    steps: int = 2500,
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
    settings = dict(
        thetas=thetas, gammas=gammas, sigma=sigma, lam=lam, d=d, instances=instances, steps=steps, seed=seed
    )
    with RunFolder(out, "dynamics transfer phase-diagram", settings, overwrite=overwrite) as run:
        TH, GA = np.meshgrid(thetas, gammas, indexing="ij")
        learners = _learners(lam, steps)
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
        summary = {
            "paper": PAPER,
            "settings": settings,
            "risk": "excess risk |beta_t - beta_hat|^2; transferability T = R_scratch - R_transfer",
            "learners": rows,
            "transferability_theory": T,
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
            title=f"T_{key} (theory map; dots: simulation, d = {st['d']})",
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
