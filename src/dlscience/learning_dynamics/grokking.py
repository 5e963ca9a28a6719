"""Grokking time against the first layer's initialisation scale (Kunin et al. 2024, "Get rich quick", Sec. 5;
research note theory_dynamics.md, paper 1 Sec. 1b: the deep experiments rescale the first layer's
initialisation; their exact settings are not public, so this is a CPU-sized reconstruction).

Task: modular addition (a + b) mod p. Input: the one-hot codes of a and b, concatenated (2p); a two-layer MLP
f(x) = W2 relu(W1 x) with hidden width h (no biases, PyTorch's default initialisation), W1 multiplied by the
first-layer scale s (and, with ``compensate=True``, W2 divided by s, which keeps the product of the layers'
scales -- the overall scale tau -- fixed and changes only the relative scale delta). Full-batch gradient descent
on the cross-entropy of a fixed random training fraction of all p^2 pairs, with weight decay (the lazy/rich
theory is for gradient descent; Adam's updates do not depend on the gradient's scale, and with AdamW the grokking
time did not change with s from 0.03 to 30 in a check here).

Per neuron i, delta_i = |W2[:, i]|^2 - |W1[i]|^2: a small first layer (s < 1) is upstream (delta > 0), a large
one downstream. Measured: the step at which training accuracy reaches 99% ("fit"), the step at which test
accuracy reaches ``grok_accuracy`` ("grok"), and their difference, per scale and seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from dlscience.checkpoint import TrainingCheckpoint
from dlscience.errors import InputValidationError
from dlscience.runs import RunFolder
from dlscience.training_loop import new_state, train_loop

__all__ = ["GrokkingConfig", "modular_addition", "run_grokking"]


@dataclass(frozen=True)
class GrokkingConfig:
    """Settings of the grokking experiment.

    Attributes
    ----------
    scales : tuple of float
        First-layer initialisation scales s (> 0, distinct).
    seeds : tuple of int
        Seeds (train/test split, initialisation); each (scale, seed) is one run.
    p : int
        Modulus (>= 3).
    train_fraction : float
        Share of the p^2 pairs used for training, in (0, 1).
    hidden : int
        MLP width.
    lr, weight_decay : float
        Full-batch gradient descent step and L2 weight decay.
    steps : int
        Budget per run; a run stops early once it has grokked.
    eval_every : int
        Steps between accuracy measurements (the resolution of the reported times).
    grok_accuracy : float
        Test accuracy that counts as grokked.
    compensate : bool
        Divide the second layer by s (keep the overall scale, change only delta).
    """

    scales: tuple = (0.1, 0.3, 1.0, 3.0)
    seeds: tuple = (0, 1)
    p: int = 59
    train_fraction: float = 0.5
    hidden: int = 512
    lr: float = 1.0
    weight_decay: float = 1e-3
    steps: int = 20_000
    eval_every: int = 100
    grok_accuracy: float = 0.95
    compensate: bool = False

    def validated(self) -> GrokkingConfig:
        """Check every value; raises InputValidationError naming the bad one."""
        if not self.scales or min(self.scales) <= 0 or len(set(self.scales)) != len(self.scales):
            raise InputValidationError("--scales must be distinct positive numbers")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputValidationError("--seeds must be distinct")
        if self.p < 3 or self.hidden < 1 or self.steps < 1 or self.eval_every < 1:
            raise InputValidationError("p must be >= 3 and hidden, steps, eval_every >= 1")
        if not 0 < self.train_fraction < 1 or not 0 < self.grok_accuracy <= 1:
            raise InputValidationError("train_fraction must be in (0, 1) and grok_accuracy in (0, 1]")
        if not self.lr > 0 or self.weight_decay < 0:
            raise InputValidationError("lr must be > 0 and weight_decay >= 0")
        return self


def modular_addition(p: int, train_fraction: float, seed: int):
    """All pairs (a, b) with labels (a + b) mod p, split at random.

    Returns
    -------
    X : Tensor (p^2, 2p) float32 one-hot codes; y : Tensor (p^2,) int64; train, test : index tensors
    """
    pairs = torch.cartesian_prod(torch.arange(p), torch.arange(p))
    y = (pairs[:, 0] + pairs[:, 1]) % p
    X = torch.cat([F.one_hot(pairs[:, 0], p), F.one_hot(pairs[:, 1], p)], 1).float()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_train = int(round(train_fraction * len(y)))
    return X, y, order[:n_train], order[n_train:]


def _model(cfg: GrokkingConfig, scale: float, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(2 * cfg.p, cfg.hidden, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(cfg.hidden, cfg.p, bias=False),
    )
    with torch.no_grad():
        model[0].weight.mul_(scale)
        if cfg.compensate:
            model[2].weight.div_(scale)
    return model


def _train_one(run, cfg: GrokkingConfig, scale: float, seed: int, progress: bool) -> dict:
    X, y, train, test = modular_addition(cfg.p, cfg.train_fraction, seed)
    model = _model(cfg, scale, seed)
    with torch.no_grad():
        deltas = (model[2].weight ** 2).sum(0) - (model[0].weight ** 2).sum(1)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    gen = torch.Generator().manual_seed(seed)
    identity = {**asdict(cfg), "scale": scale, "seed": seed}
    identity.pop("steps")
    identity.pop("scales")
    identity.pop("seeds")
    ckpt = TrainingCheckpoint(
        run.path(f"runs/scale{scale:g}_seed{seed}.pt"),
        identity,
        model=model,
        optimizer=opt,
        scheduler=sched,
        generator=gen,
    )
    state, _ = ckpt.restore(
        new_state(evals=[], fit_step=None, grok_step=None), other_settings="other settings"
    )

    def step() -> float:
        loss = F.cross_entropy(model(X[train]), y[train])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.item()

    def after(s):
        if s["step"] % cfg.eval_every:
            return None
        with torch.no_grad():
            out = model(X)
            acc_train = (out[train].argmax(1) == y[train]).float().mean().item()
            acc_test = (out[test].argmax(1) == y[test]).float().mean().item()
            loss_test = F.cross_entropy(out[test], y[test]).item()
        s["evals"].append([s["step"], acc_train, acc_test, loss_test])
        if s["fit_step"] is None and acc_train >= 0.99:
            s["fit_step"] = s["step"]
        if s["grok_step"] is None and acc_test >= cfg.grok_accuracy:
            s["grok_step"] = s["step"]
        return {"train": f"{acc_train:.2f}", "test": f"{acc_test:.2f}"}

    train_loop(
        step,
        state,
        steps=cfg.steps,
        checkpoint=ckpt,
        checkpoint_every=max(cfg.eval_every, 500),
        progress=progress,
        desc=f"grok s={scale:g} seed={seed}",
        log_every=cfg.eval_every,
        after_step=after,
        stop_when=lambda s: s["grok_step"] is not None,
    )
    return {
        "scale": scale,
        "seed": seed,
        "mean_delta_at_init": float(deltas.mean()),
        "fit_step": state["fit_step"],
        "grok_step": state["grok_step"],
        "steps_run": state["step"],
        "evals": state["evals"],
        "seconds": state["seconds"],
    }


def run_grokking(config: GrokkingConfig, out, *, progress: bool = True, overwrite: bool = False) -> dict:
    """Train every (scale, seed) run of ``config`` (each resumable) and write ``grokking.json`` and
    ``grokking.png`` (test accuracy curves per scale; grokking and fitting steps against the scale).

    Returns
    -------
    dict
        The JSON: settings, per run the fit and grok steps (None if not reached within ``steps``), and per scale
        the median grok step over seeds and the Spearman correlation of grok step with the scale.
    """
    cfg = config.validated()
    settings = asdict(cfg)
    identity = {k: v for k, v in settings.items() if k not in ("scales", "seeds", "steps")}
    with RunFolder(
        out, "dynamics lazy-rich grokking", settings, identity=identity, overwrite=overwrite
    ) as run:
        runs = [_train_one(run, cfg, s, seed, progress) for s in cfg.scales for seed in cfg.seeds]
        per_scale = []
        for s in cfg.scales:
            steps = [r["grok_step"] for r in runs if r["scale"] == s]
            reached = [v for v in steps if v is not None]
            per_scale.append(
                {
                    "scale": s,
                    "grok_steps": steps,
                    "median_grok_step": float(np.median(reached)) if len(reached) == len(steps) else None,
                    "median_fit_step": _median([r["fit_step"] for r in runs if r["scale"] == s]),
                    "mean_delta_at_init": float(
                        np.mean([r["mean_delta_at_init"] for r in runs if r["scale"] == s])
                    ),
                }
            )
        from scipy.stats import spearmanr

        pts = [(r["scale"], r["grok_step"]) for r in runs if r["grok_step"] is not None]
        rho = float(spearmanr(*zip(*pts, strict=True)).statistic) if len({p[0] for p in pts}) >= 3 else None
        summary = {
            "paper": "Kunin et al. 2024, Get rich quick (arXiv 2406.06158), Sec. 5 (grokking; CPU reconstruction)",
            "settings": settings,
            "per_scale": per_scale,
            "spearman_grok_step_vs_scale": rho,
            "runs": runs,
        }
        run.save_figure("grokking.png", _figure(summary, cfg))
        run.write_json("grokking.json", summary)
        run.finish()
    return summary


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _figure(summary: dict, cfg: GrokkingConfig):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(cfg.scales):
        color = cmap(i / max(1, len(cfg.scales) - 1))
        for j, r in enumerate(x for x in summary["runs"] if x["scale"] == s):
            ev = np.asarray(r["evals"], dtype=float).reshape(-1, 4)
            ax0.plot(ev[:, 0], ev[:, 2], color=color, label=f"s = {s:g}" if j == 0 else None)
            ax0.plot(ev[:, 0], ev[:, 1], color=color, ls=":", lw=0.8)
    ax0.axhline(cfg.grok_accuracy, color="gray", lw=0.6)
    ax0.set(xlabel="step", ylabel="accuracy", title="test (solid) and train (dotted) accuracy")
    ax0.legend(fontsize=8)
    for r in summary["runs"]:
        if r["grok_step"] is not None:
            ax1.plot(r["scale"], r["grok_step"], "o", color="C0")
        if r["fit_step"] is not None:
            ax1.plot(r["scale"], r["fit_step"], "s", color="C1", ms=4)
    ax1.plot([], [], "o", color="C0", label=f"grok step (test acc >= {cfg.grok_accuracy:.2f})")
    ax1.plot([], [], "s", color="C1", label="fit step (train acc >= 0.99)")
    ax1.set(
        xscale="log",
        xlabel="first-layer initialisation scale s (< 1 upstream)",
        ylabel="step",
        title="time to grok against the first layer's scale",
    )
    ax1.legend(fontsize=8)
    comp = " (second layer / s)" if cfg.compensate else ""
    fig.suptitle(f"Modular addition mod {cfg.p}, MLP width {cfg.hidden}, full-batch GD lr {cfg.lr:g}{comp}")
    fig.tight_layout()
    return fig
