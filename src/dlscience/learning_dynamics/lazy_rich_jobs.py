"""The lazy/rich experiments of Kunin et al. 2024 as resumable jobs (``dlscience dynamics lazy-rich ...``).

* :func:`run_single_neuron` -- Figs. 2-4: single-neuron trajectories in the beta plane for delta in
  {0, +-1, +-2, +-4} (closed form, checked against the integrated flow), their magnitude, alignment and kernel
  distance over time, and the low-rank limit as a function of delta (Fig. 4b).
* :func:`run_phase_diagram` -- a reduced Fig. 1(b): two-layer ReLU students over a (tau, delta) grid, all runs
  batched in one float64 training loop, with test loss, kernel distance, Hamming distance and parameter
  distance at log-spaced checkpoints. The reduction from the paper (d = 100, n = 1000, 17 x 17 grid, 16 seeds,
  10^6 steps) is stated in ``phase_diagram.json`` and the README.

Every job writes into a :class:`~dlscience.runs.RunFolder` and resumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from dlscience.checkpoint import TrainingCheckpoint
from dlscience.errors import InputValidationError
from dlscience.learning_dynamics.lazy_rich import SingleNeuron, init_from_beta
from dlscience.learning_dynamics.two_layer import BatchedReLUNetwork, sphere, teacher_network
from dlscience.runs import RunFolder
from dlscience.training_loop import new_state, train_loop

__all__ = ["run_single_neuron", "PhaseDiagramConfig", "PHASE_PRESETS", "run_phase_diagram"]

FIG2_DELTAS = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)


def run_single_neuron(
    out, *, deltas=FIG2_DELTAS, time: float = 20.0, n_times: int = 401, overwrite: bool = False
) -> dict:
    """Figs. 2-4 of the paper for the single neuron; writes ``single_neuron.json`` and ``single_neuron.png``.

    Settings (paper Figs. 2-4a): whitened data, beta* = (0, 1), beta_0 = (-1, 0), unit rates; Fig. 4b:
    x = (0.5, 1), XtX = x x^T, Xty = 1.1 x, beta_0 = 0.5 (0.6 (1, -0.5) + 0.4 (0.5, 1)).

    Parameters
    ----------
    out : path
        Run folder.
    deltas : sequence of float
        Conserved quantities to draw (distinct).
    time : float > 0
        Gradient-flow time horizon T.
    n_times : int >= 2
        Samples of each trajectory.
    overwrite : bool
        Replace another run in ``out``.

    Returns
    -------
    dict
        The JSON: per delta the final beta, the maximum |closed form - ODE| over a, w, the kernel distance
        S(0, T), and the low-rank limit; the check's worst error.
    """
    deltas = tuple(float(d) for d in deltas)
    if len(set(deltas)) != len(deltas) or not deltas:
        raise InputValidationError("--deltas must be distinct numbers")
    if not time > 0 or n_times < 2:
        raise InputValidationError("--time must be > 0 and --n-times >= 2")
    settings = {"deltas": deltas, "time": time, "n_times": n_times}
    with RunFolder(out, "dynamics lazy-rich single-neuron", settings, overwrite=overwrite) as run:
        t = np.linspace(0.0, time, n_times)
        whitened = SingleNeuron.whitened([0.0, 1.0])
        x = np.array([0.5, 1.0])
        low_rank = SingleNeuron(np.outer(x, x), 1.1 * x)
        beta0_lr = 0.5 * (0.6 * np.array([1.0, -0.5]) + 0.4 * np.array([0.5, 1.0]))
        rows, trajectories = [], {}
        for delta in deltas:
            a0, w0 = init_from_beta([-1.0, 0.0], delta)
            exact = whitened.closed_form(a0, w0, t)
            flow = whitened.gradient_flow(a0, w0, t)
            err = float(max(np.abs(exact.a - flow.a).max(), np.abs(exact.w - flow.w).max()))
            a0l, w0l = init_from_beta(beta0_lr, delta)
            low = low_rank.limit(a0l, w0l)
            traj_low = low_rank.gradient_flow(a0l, w0l, t)
            trajectories[delta] = (exact, traj_low)
            rows.append(
                {
                    "delta": delta,
                    "beta_T": exact.beta[-1],
                    "closed_form_vs_ode_max_error": err,
                    "kernel_distance_T": float(exact.kernel_distance()[-1]),
                    "low_rank_limit": low,
                    "low_rank_beta_T": traj_low.beta[-1],
                }
            )
        summary = {
            "paper": "Kunin et al. 2024, Get rich quick (arXiv 2406.06158), Figs. 2-4",
            "settings": settings,
            "max_closed_form_vs_ode_error": max(r["closed_form_vs_ode_max_error"] for r in rows),
            "deltas": rows,
        }
        run.save_figure("single_neuron.png", _single_neuron_figure(trajectories, t, beta0_lr, x))
        run.write_json("single_neuron.json", summary)
        run.finish()
    return summary


def _single_neuron_figure(trajectories, t, beta0_lr, x):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401  (headless backend)

    deltas = sorted(trajectories)
    cmap = plt.get_cmap("coolwarm")
    colors = {d: cmap(0.5 + 0.5 * d / max(abs(v) for v in deltas) if any(deltas) else 0.5) for d in deltas}
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    ax = axes[0]
    for d in deltas:
        b = trajectories[d][0].beta
        ax.plot(b[:, 0], b[:, 1], color=colors[d], label=f"delta = {d:g}")
    ax.plot([-1], [0], "ko")
    ax.plot([0], [1], "k*", ms=12)
    ax.set(xlabel="beta_1", ylabel="beta_2", title="whitened data: beta(t) (Fig. 2)", aspect="equal")
    ax.legend(fontsize=7)
    ax = axes[1]
    for d in deltas:
        b = trajectories[d][0].beta
        ax.plot(t, np.linalg.norm(b, axis=1), color=colors[d], ls="-")
        ax.plot(t, b[:, 1] / np.maximum(np.linalg.norm(b, axis=1), 1e-300), color=colors[d], ls=":")
    ax.set(xlabel="t", title="|beta| (solid) and cos(beta, beta*) (dotted) (Fig. 3)", xscale="symlog")
    ax = axes[2]
    for d in deltas:
        ax.plot(t, trajectories[d][0].kernel_distance(), color=colors[d], label=f"{d:g}")
    ax.set(xlabel="t", ylabel="S(0, t)", title="kernel distance (Fig. 3)", xscale="symlog")
    ax = axes[3]
    line = np.linspace(-0.5, 2.0, 2)
    ax.plot(line, (1.1 - 0.5 * line), "k-", lw=0.8, label="interpolators x . beta = 1.1")
    for d in deltas:
        b = trajectories[d][1].beta
        ax.plot(b[:, 0], b[:, 1], color=colors[d])
    ax.plot(*beta0_lr, "ko")
    ax.set(xlabel="beta_1", ylabel="beta_2", title="low-rank data: implicit bias (Fig. 4b)", aspect="equal")
    ax.legend(fontsize=7)
    fig.suptitle(
        "Single neuron f(x) = a w^T x: upstream (delta > 0, red) lazy, balanced rich, downstream (blue)"
    )
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class PhaseDiagramConfig:
    """Settings of the (tau, delta) phase diagram of two-layer ReLU students (Fig. 1b).

    Attributes
    ----------
    taus, deltas : tuple of float
        Grid (paper: logspace(-1, 0.3, 17), linspace(-1, 1, 17)).
    n_seeds : int
        Seeds per grid point; each seed draws its own teacher, inputs and initialisation directions (paper 16).
    d, n, m, m0 : int
        Input dimension, training points, student width (even), teacher width (paper 100, 1000, 50, 3).
    steps : int
        Gradient-descent steps (paper 10^6).
    base_lr : float
        The step is base_lr / tau^2 (paper 5e-3).
    checkpoints : tuple of int
        Steps at which the metrics are measured (paper 0, 10, ..., 10^6).
    n_test : int
        Test points per seed (paper 10,000).
    n_kernel : int
        Training inputs on which the NTK and activation patterns are measured (all when >= n).
    seed : int
        Base seed.
    """

    taus: tuple = tuple(float(v) for v in np.logspace(-1, 0.3, 7))
    deltas: tuple = tuple(float(v) for v in np.linspace(-1, 1, 7))
    n_seeds: int = 2
    d: int = 20
    n: int = 200
    m: int = 50
    m0: int = 3
    steps: int = 20_000
    base_lr: float = 5e-3
    checkpoints: tuple = (0, 10, 100, 1000, 10_000, 20_000)
    n_test: int = 2000
    n_kernel: int = 200
    seed: int = 0

    def validated(self) -> PhaseDiagramConfig:
        """Check ranges; raises InputValidationError naming the bad value."""
        if len(self.taus) < 2 or len(self.deltas) < 2:
            raise InputValidationError("the phase diagram needs at least 2 values of tau and of delta")
        if min(self.taus) <= 0:
            raise InputValidationError("tau values must be > 0")
        if len(set(self.taus)) != len(self.taus) or len(set(self.deltas)) != len(self.deltas):
            raise InputValidationError("tau and delta values must be distinct")
        for name in ("n_seeds", "d", "n", "m", "m0", "steps", "n_test", "n_kernel"):
            if getattr(self, name) < 1:
                raise InputValidationError(f"{name} must be >= 1")
        if self.m % 2:
            raise InputValidationError(f"m must be even (symmetrised student), got {self.m}")
        if not self.base_lr > 0:
            raise InputValidationError("base_lr must be > 0")
        if any(c < 0 or c > self.steps for c in self.checkpoints):
            raise InputValidationError(f"checkpoints must lie in [0, steps={self.steps}]")
        return self


PHASE_PRESETS = {
    # about 2.5 minutes on 2 cores: 7 x 7 grid, 2 seeds, d = 20, n = 200, 2 x 10^4 steps
    "cpu": PhaseDiagramConfig(),
    # the paper's Fig. 1(b) grid (a GPU-sized run on CPU: days)
    "paper": PhaseDiagramConfig(
        taus=tuple(float(v) for v in np.logspace(-1, 0.3, 17)),
        deltas=tuple(float(v) for v in np.linspace(-1, 1, 17)),
        n_seeds=16,
        d=100,
        n=1000,
        steps=1_000_000,
        checkpoints=(0, 10, 100, 1000, 10_000, 100_000, 1_000_000),
        n_test=10_000,
    ),
}


def _grid_data(cfg: PhaseDiagramConfig):
    """Runs in (tau, delta, seed) order with their data: (taus (R,), deltas (R,), X (R, n, d), y (R, n),
    X_test (S, n_test, d), y_test (S, n_test), seed index (R,), network)."""
    S = cfg.n_seeds
    teachers, X_s, y_s, Xt_s, yt_s = [], [], [], [], []
    for s in range(S):
        g = torch.Generator().manual_seed(cfg.seed * 1000 + s)
        V, sign = teacher_network(cfg.d, cfg.m0, g)
        teachers.append((V, sign))
        X = sphere(cfg.n, cfg.d, g)
        X_s.append(X)
        y_s.append((X @ V.T).clamp_min(0) @ sign)
        Xt = sphere(cfg.n_test, cfg.d, g)
        Xt_s.append(Xt)
        yt_s.append((Xt @ V.T).clamp_min(0) @ sign)
    taus, deltas, seeds, gens = [], [], [], []
    for tau in cfg.taus:
        for delta in cfg.deltas:
            for s in range(S):
                taus.append(tau)
                deltas.append(delta)
                seeds.append(s)
                # the same directions for every (tau, delta) of a seed: only the scales differ
                gens.append(torch.Generator().manual_seed(cfg.seed * 1000 + s + 500))
    net = BatchedReLUNetwork.symmetric_init(taus, deltas, cfg.m, cfg.d, gens)
    seeds_t = torch.tensor(seeds)
    X = torch.stack(X_s)[seeds_t]
    y = torch.stack(y_s)[seeds_t]
    return (
        torch.tensor(taus, dtype=torch.float64),
        torch.tensor(deltas, dtype=torch.float64),
        X,
        y,
        torch.stack(Xt_s),
        torch.stack(yt_s),
        seeds_t,
        net,
    )


def run_phase_diagram(
    config: PhaseDiagramConfig, out, *, progress: bool = True, overwrite: bool = False, preset: str = "custom"
) -> dict:
    """Train every (tau, delta, seed) student of ``config`` together and write ``phase_diagram.json`` and
    ``phase_diagram.png`` (heat maps of the seed-mean metrics over (tau, delta) at each checkpoint).

    Returns
    -------
    dict
        The JSON: settings (with the reduction from the paper), and per checkpoint step the seed-mean test loss,
        kernel distance, Hamming distance and parameter distance as (len(taus), len(deltas)) lists.

    Raises
    ------
    InputValidationError
        Bad settings; UserError as for every run folder.
    """
    cfg = config.validated()
    settings = asdict(cfg)
    identity = {k: v for k, v in settings.items() if k not in ("steps", "checkpoints")}
    with RunFolder(
        out,
        "dynamics lazy-rich phase-diagram",
        {**settings, "preset": preset},
        identity=identity,
        overwrite=overwrite,
    ) as run:
        taus, deltas, X, y, X_test, y_test, seed_idx, net = _grid_data(cfg)
        lr = 1.0 * cfg.base_lr / taus**2
        n_k = min(cfg.n_kernel, cfg.n)
        opt = torch.optim.SGD(net.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        gen = torch.Generator().manual_seed(cfg.seed)
        ckpt = TrainingCheckpoint(
            run.checkpoint_path("checkpoint.pt"),
            identity,
            model=net,
            optimizer=opt,
            scheduler=sched,
            generator=gen,
        )
        state, _ = ckpt.restore(new_state(records=[]), other_settings=f"{out} holds another phase diagram")
        K0 = net.ntk_at_init(X[:, :n_k])

        def measure() -> dict:
            with torch.no_grad():
                pred = torch.einsum("rnd,rmd->rnm", X_test[seed_idx], net.W).clamp_min(0) @ net.a[:, :, None]
                test = ((pred.squeeze(-1) - y_test[seed_idx]) ** 2).mean(1)
            dist = net.distances(X[:, :n_k], K0)
            grid = (len(cfg.taus), len(cfg.deltas), cfg.n_seeds)

            def mean(v):
                return v.reshape(grid).mean(-1).tolist()

            return {
                "step": state["step"],
                "test_loss": mean(test),
                "kernel_distance": mean(dist["kernel"]),
                "hamming_distance": mean(dist["hamming"]),
                "parameter_distance": mean(dist["parameter"]),
            }

        if not state["records"] and 0 in cfg.checkpoints:
            state["records"].append(measure())

        def step() -> float:
            loss, gW, ga = net.gradients(X, y)
            net.W.grad = gW * lr[:, None, None]
            net.a.grad = ga * lr[:, None]
            opt.step()
            sched.step()
            return float(loss.mean())

        done = {r["step"] for r in state["records"]}

        def after(s):
            if s["step"] in cfg.checkpoints and s["step"] not in done:
                s["records"].append(measure())
                done.add(s["step"])
                return {"test": f"{np.mean(s['records'][-1]['test_loss']):.2e}"}
            return None

        train_loop(
            step,
            state,
            steps=cfg.steps,
            checkpoint=ckpt,
            checkpoint_every=max(1, min(2000, cfg.steps)),
            progress=progress,
            desc="lazy-rich grid",
            log_every=100,
            after_step=after,
        )
        summary = {
            "paper": "Kunin et al. 2024, Get rich quick (arXiv 2406.06158), Fig. 1(b)",
            "reduction": (
                f"{len(cfg.taus)} x {len(cfg.deltas)} grid (paper 17 x 17), {cfg.n_seeds} seeds (16), d = {cfg.d} "
                f"(100), n = {cfg.n} (1000), {cfg.steps} steps (10^6), {cfg.n_test} test points (10,000)"
            ),
            "hamming_distance": "fraction of (neuron, training input) pairs whose ReLU switched (reference: x m)",
            "settings": settings,
            "preset": preset,
            "records": sorted(state["records"], key=lambda r: r["step"]),
            "seconds": state["seconds"],
        }
        run.save_figure("phase_diagram.png", _phase_figure(summary, cfg))
        run.write_json("phase_diagram.json", summary)
        run.finish()
    return summary


def _phase_figure(summary: dict, cfg: PhaseDiagramConfig):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401

    records = [r for r in summary["records"] if r["step"] > 0][-3:] or summary["records"][-1:]
    metrics = [
        ("test_loss", "test loss", "viridis", True),
        ("kernel_distance", "kernel distance S(0, t)", "magma", False),
        ("hamming_distance", "Hamming distance (fraction)", "magma", False),
        ("parameter_distance", "parameter distance", "cividis", False),
    ]
    fig, axes = plt.subplots(
        len(records), len(metrics), figsize=(4.2 * len(metrics), 3.4 * len(records)), squeeze=False
    )
    from matplotlib.colors import LogNorm

    for i, rec in enumerate(records):
        for j, (key, title, cmap, log) in enumerate(metrics):
            ax = axes[i, j]
            v = np.asarray(rec[key], dtype=float)
            norm = LogNorm(vmin=max(v.min(), 1e-12), vmax=max(v.max(), 1e-11)) if log else None
            im = ax.imshow(v, origin="lower", aspect="auto", cmap=cmap, norm=norm)
            ax.set_xticks(range(len(cfg.deltas)), [f"{d:.2g}" for d in cfg.deltas], fontsize=7)
            ax.set_yticks(range(len(cfg.taus)), [f"{t:.2g}" for t in cfg.taus], fontsize=7)
            ax.set_xlabel("delta (> 0 upstream)")
            ax.set_ylabel("tau (overall scale)")
            ax.set_title(f"{title}, step {rec['step']}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Two-layer ReLU students over (tau, delta), seed means (reduced Fig. 1b)")
    fig.tight_layout()
    return fig
