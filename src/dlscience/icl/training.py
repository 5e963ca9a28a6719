"""Pretraining a transformer on in-context linear regression (Raventos et al. 2023, Sec. 2; research note
paper 2 Sec. a).

Loss (Eq. 1): the mean over the K positions of (f(S_k) - y_k)^2 against the noisy targets, with fresh x and
noise every step and tasks from the pool of M. Adam with the paper's one-cycle triangle schedule: the learning
rate rises linearly from 0 to ``lr`` over the first ``warmup_fraction`` of the steps, then falls linearly to 0.

Every ``eval_every`` steps the model is evaluated on fixed sets from both task distributions ("pretrain":
the pool; "true": N(0, I)) next to ridge and (for finite M) dMMSE: per-position errors and the Delta distances
of Eq. 4. Checkpoints (model, optimiser, schedule, data generator, log) are written atomically; the same
command continues a run and reaches exactly the state an uninterrupted run would.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from dlscience.checkpoint import TrainingCheckpoint, record_loss
from dlscience.errors import InputValidationError, UserError
from dlscience.icl.dmmse import DiscreteMMSE
from dlscience.icl.metrics import eval_batches, evaluate
from dlscience.icl.ridge import Ridge
from dlscience.icl.tasks import DISTRIBUTIONS, NoisyLinearRegression
from dlscience.icl.transformer import TransformerICL
from dlscience.results import load_torch, save_torch, write_json

__all__ = ["ICLConfig", "CONFIGS", "train", "load_transformer", "baselines", "triangle_lr"]

CONFIGS = {
    # the paper's base model (8 layers, 128 wide, 2 heads), batch 256, 500K steps: a TPU/GPU run
    "paper-base": {"n_layer": 8, "n_embd": 128, "n_head": 2, "batch_size": 256, "steps": 500_000},
    # the paper's small model (4 layers, 64 wide), batch 512 as in its learning-dynamics runs
    "paper-small": {"n_layer": 4, "n_embd": 64, "n_head": 2, "batch_size": 512, "steps": 500_000},
    # a CPU-sized run of the small model: fewer, smaller steps (the qualitative result only)
    "cpu": {"n_layer": 4, "n_embd": 64, "n_head": 2, "batch_size": 128, "steps": 6000, "eval_samples": 4096},
}


@dataclass(frozen=True)
class ICLConfig:
    """Settings of a pretraining run (the options of ``dlscience icl train``).

    Attributes
    ----------
    n_tasks : int or None
        M, the pool size; None for infinity.
    n_dims, n_points, noise_variance
        D, K, sigma^2 (paper 8, 16, 0.25).
    config : str
        Named defaults (:data:`CONFIGS`); fields set explicitly override them.
    n_layer, n_embd, n_head : int, optional
        Transformer size.
    batch_size, steps : int, optional
    lr : float
        Peak learning rate (paper 1e-3).
    warmup_fraction : float
        Share of steps in the rising half of the triangle (paper 0.5).
    eval_every : int
        Steps between evaluations.
    eval_samples : int, optional
        Sequences per evaluation set (paper 2^20; cpu 4096).
    checkpoint_every : int
    task_seed, seed : int
        The pool's seed; the initialisation's and data stream's seed.
    """

    n_tasks: int | None = None
    n_dims: int = 8
    n_points: int = 16
    noise_variance: float = 0.25
    config: str = "cpu"
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    batch_size: int | None = None
    steps: int | None = None
    lr: float = 1e-3
    warmup_fraction: float = 0.5
    eval_every: int = 500
    eval_samples: int | None = None
    checkpoint_every: int = 250
    task_seed: int = 0
    seed: int = 0

    def resolved(self) -> ICLConfig:
        """Fill unset fields from the named config and validate.

        Raises
        ------
        InputValidationError
            Unknown config or a value out of range.
        """
        if self.config not in CONFIGS:
            raise InputValidationError(f"--config must be one of {tuple(CONFIGS)}, got {self.config!r}")
        base = {"eval_samples": 1 << 16, **CONFIGS[self.config]}
        filled = replace(self, **{k: v for k, v in base.items() if getattr(self, k) is None})
        for name in (
            "n_dims",
            "n_points",
            "n_layer",
            "n_embd",
            "n_head",
            "batch_size",
            "steps",
            "eval_every",
        ):
            if getattr(filled, name) < 1:
                raise InputValidationError(f"--{name.replace('_', '-')} must be >= 1")
        if filled.n_tasks is not None and filled.n_tasks < 1:
            raise InputValidationError(f"--tasks must be >= 1 or inf, got {filled.n_tasks}")
        if not 0 < filled.warmup_fraction < 1 or filled.lr <= 0:
            raise InputValidationError("--lr must be > 0 and --warmup-fraction in (0, 1)")
        if filled.n_embd % filled.n_head:
            raise InputValidationError(
                f"--n-embd ({filled.n_embd}) must be divisible by --n-head ({filled.n_head})"
            )
        return filled

    def task(self) -> NoisyLinearRegression:
        """The data process of this run."""
        return NoisyLinearRegression(
            self.n_dims, self.n_points, self.noise_variance, self.n_tasks, task_seed=self.task_seed
        )


def triangle_lr(step: int, steps: int, lr: float, warmup_fraction: float = 0.5) -> float:
    """The one-cycle triangle: lr * step / w for step < w = warmup_fraction * steps, then linear to 0 at steps."""
    warm = max(1, int(round(warmup_fraction * steps)))
    if step < warm:
        return lr * step / warm
    return lr * max(0.0, (steps - step) / max(1, steps - warm))


def baselines(task: NoisyLinearRegression) -> dict:
    """Ridge (always) and dMMSE (finite M) for ``task``: name -> ICLEstimator."""
    out = {"ridge": Ridge(task.noise_variance, task.task_variance)}
    if task.pool is not None:
        out["dmmse"] = DiscreteMMSE(task.pool, task.noise_variance)
    return out


def _resume_settings(cfg: ICLConfig) -> dict:
    """The settings a resumed run must share (evaluation and checkpoint cadence may change)."""
    d = asdict(cfg)
    for key in ("steps", "checkpoint_every", "eval_every", "eval_samples"):
        d.pop(key)
    return d


def train(config: ICLConfig, out: str | Path, *, progress: bool = True) -> dict:
    """Pretrain (or continue pretraining) a transformer; write ``checkpoint.pt``, ``model.pt`` and ``log.json``.

    Parameters
    ----------
    config : ICLConfig
    out : path
        Output folder.
    progress : bool
        Progress bar with the running loss and the latest Delta distances.

    Returns
    -------
    dict
        ``log.json``: settings, loss curve, and per evaluation step the per-position errors and Deltas of the
        transformer, ridge and dMMSE on both task distributions.

    Raises
    ------
    UserError
        Bad settings, or ``out`` holds a run with other settings.
    """
    cfg = config.resolved()
    task = cfg.task()
    torch.manual_seed(cfg.seed)
    model = TransformerICL(cfg.n_dims, cfg.n_points, cfg.n_layer, cfg.n_embd, cfg.n_head)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: triangle_lr(s, cfg.steps, 1.0, cfg.warmup_fraction)
    )
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    out = Path(out)
    ckpt = TrainingCheckpoint(
        out / "checkpoint.pt",
        _resume_settings(cfg),
        model=model,
        optimizer=opt,
        scheduler=sched,
        generator=gen,
        extra={"steps": cfg.steps},
    )
    state, extra = ckpt.restore(
        {"step": 0, "losses": [], "evals": [], "seconds": 0.0},
        other_settings=f"{out} holds an ICL run with other settings; choose another --out",
    )
    if extra and extra["steps"] != cfg.steps:
        raise UserError(
            f"{out} was started with --steps {extra['steps']} (the learning-rate triangle depends on it); "
            "resume with the same --steps or use another --out"
        )
    out.mkdir(parents=True, exist_ok=True)

    estimators = {"transformer": model, **baselines(task)}
    eval_sets = {
        d: eval_batches(task, d, cfg.eval_samples, seed=10_000 + i) for i, d in enumerate(DISTRIBUTIONS)
    }
    caches: dict[str, dict] = {d: {} for d in DISTRIBUTIONS}

    def run_eval():
        row = {"step": state["step"]}
        for d, batches in eval_sets.items():
            ev, preds = evaluate(estimators, batches, d, caches[d])
            caches[d].update({k: v for k, v in preds.items() if k != "transformer"})
            row[d] = ev.to_json()
        return row

    from tqdm.auto import tqdm

    m = "inf" if cfg.n_tasks is None else cfg.n_tasks
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, unit="step", desc=f"icl M={m}")
    model.train()
    t0 = time.perf_counter()
    try:
        if not state["evals"]:
            state["evals"].append(run_eval())
        while state["step"] < cfg.steps:
            batch = task.sample(cfg.batch_size, gen, "pretrain")
            loss = ((model(batch.xs, batch.ys) - batch.ys) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            state["step"] += 1
            record_loss(state, loss.item(), final=state["step"] == cfg.steps)
            if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
                state["evals"].append(run_eval())
                ev = state["evals"][-1]["true"]["delta"]
                bar.set_postfix(
                    loss=f"{(state['losses'][-1][1] if state['losses'] else loss.item()):.3f}",
                    d_ridge=f"{ev['transformer|ridge']:.3f}",
                    **({"d_dmmse": f"{ev['transformer|dmmse']:.3f}"} if "transformer|dmmse" in ev else {}),
                )
            bar.update(1)
            if state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.steps:
                state["seconds"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                ckpt.save(state)
    finally:
        bar.close()
    save_torch(out / "model.pt", {"config": asdict(cfg), "model": model.state_dict()})
    log = {
        "command": "dlscience icl train",
        "settings": asdict(cfg),
        "task": repr(task),
        "steps": state["step"],
        "seconds": round(state["seconds"], 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss_curve": state["losses"],
        "evals": state["evals"],
    }
    write_json(out / "log.json", log)
    return log


def load_transformer(path: str | Path) -> tuple[TransformerICL, ICLConfig]:
    """Load ``model.pt`` (or a run folder) written by :func:`train`: the model (evaluation mode) and config.

    Raises
    ------
    UserError
        If there is no model at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise UserError(f"no ICL model at {path}; train one with `dlscience icl train --out FOLDER`")
    saved = load_torch(path)
    cfg = ICLConfig(**saved["config"])
    model = TransformerICL(cfg.n_dims, cfg.n_points, cfg.n_layer, cfg.n_embd, cfg.n_head)
    model.load_state_dict(saved["model"])
    model.eval()
    return model, cfg
