"""Pretraining a transformer on in-context linear regression (Raventos et al. 2023, Sec. 2; research note
paper 2 Sec. a).

Loss (Eq. 1): the mean over the K positions of (f(S_k) - y_k)^2 against the noisy targets, with fresh x and
noise every step and tasks from the pool of M. Adam with the paper's one-cycle triangle schedule: the learning
rate rises linearly from 0 to ``lr`` over the first ``warmup_fraction`` of the steps, then falls linearly to 0.

Every ``eval_every`` steps the model is evaluated on fixed sets from both task distributions ("pretrain":
the pool; "true": N(0, I)) next to ridge and (for finite M) dMMSE: per-position errors and the Delta distances
of Eq. 4. The steps run in the shared :func:`~dlscience.training_loop.train_loop` on a
:class:`~dlscience.checkpoint.TrainingCheckpoint` (model, optimiser, schedule, data generator, log), inside a
:class:`~dlscience.runs.RunFolder`; the same command continues a run and reaches exactly the state an
uninterrupted run would. Folders written before run manifests are adopted: their checkpoint checks the settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from dlscience.checkpoint import TrainingCheckpoint
from dlscience.errors import InputValidationError, UserError
from dlscience.icl.baselines import bayes_estimators
from dlscience.icl.metrics import eval_batches, evaluate
from dlscience.icl.tasks import DISTRIBUTIONS, MAX_TASKS, NoisyLinearRegression
from dlscience.icl.transformer import TransformerICL
from dlscience.results import load_torch, read_json
from dlscience.runs import RunFolder
from dlscience.training_loop import new_state, train_loop

__all__ = [
    "ICLConfig",
    "PRESETS",
    "CONFIGS",
    "train",
    "load_transformer",
    "baselines",
    "triangle_lr",
    "OUTPUTS",
]

#: The files ``icl train`` writes in its folder (a folder holding some of them and no manifest is a run
#: written before run manifests, and is adopted).
OUTPUTS = ("checkpoint.pt", "model.pt", "log.json")

PRESETS = {
    # the paper's base model (8 layers, 128 wide, 2 heads), batch 256, 500K steps: a TPU/GPU run
    "paper-base": {"n_layer": 8, "n_embd": 128, "n_head": 2, "batch_size": 256, "steps": 500_000},
    # the paper's small model (4 layers, 64 wide), batch 512 as in its learning-dynamics runs
    "paper-small": {"n_layer": 4, "n_embd": 64, "n_head": 2, "batch_size": 512, "steps": 500_000},
    # a CPU-sized run of the small model: fewer, smaller steps (the qualitative result only)
    "cpu": {"n_layer": 4, "n_embd": 64, "n_head": 2, "batch_size": 128, "steps": 6000, "eval_samples": 4096},
}


CONFIGS = PRESETS  # the name before ``--preset``


@dataclass(frozen=True)
class ICLConfig:
    """Settings of a pretraining run (the options of ``dlscience icl train``).

    Attributes
    ----------
    n_tasks : int or None
        M, the pool size; None for infinity.
    n_dims, n_points, noise_variance
        D, K, sigma^2 (paper 8, 16, 0.25).
    preset : str
        Named defaults (:data:`PRESETS`); fields set explicitly override them (``config`` in files written
        before ``--preset``: :meth:`from_dict` reads both).
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
    preset: str = "cpu"
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
            Unknown preset or a value out of range.
        """
        if self.preset not in PRESETS:
            raise InputValidationError(f"--preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        base = {"eval_samples": 1 << 16, **PRESETS[self.preset]}
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
            "eval_samples",
            "checkpoint_every",
        ):
            if getattr(filled, name) < 1:
                raise InputValidationError(f"--{name.replace('_', '-')} must be >= 1")
        if filled.n_tasks is not None and not 1 <= filled.n_tasks <= MAX_TASKS:
            raise InputValidationError(
                f"--tasks must be between 1 and 2^20 = {MAX_TASKS}, or inf, got {filled.n_tasks}"
            )
        if not 0 < filled.warmup_fraction < 1 or not filled.lr > 0:
            raise InputValidationError("--lr must be > 0 and --warmup-fraction in (0, 1)")
        if not filled.noise_variance > 0:
            raise InputValidationError(
                f"--noise-variance must be > 0 (dMMSE divides by it), got {filled.noise_variance}"
            )
        if filled.n_embd % filled.n_head:
            raise InputValidationError(
                f"--n-embd ({filled.n_embd}) must be divisible by --n-head ({filled.n_head})"
            )
        return filled

    @classmethod
    def from_dict(cls, settings: dict) -> ICLConfig:
        """The config of saved settings (``asdict`` of an ICLConfig), also of files written before ``--preset``
        (key ``config``).

        Raises
        ------
        InputValidationError
            On keys that are not settings of this version.
        """
        settings = dict(settings)
        if "config" in settings and "preset" not in settings:
            settings["preset"] = settings.pop("config")
        unknown = set(settings) - {f.name for f in fields(cls)}
        if unknown:
            raise InputValidationError(f"unknown ICL settings {sorted(unknown)}")
        return cls(**settings)

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


baselines = bayes_estimators  # the name before :mod:`dlscience.icl.baselines`


def _resume_settings(cfg: ICLConfig) -> dict:
    """The settings a checkpoint must share to be continued (evaluation and checkpoint cadence may change; the
    steps are checked separately). The preset is stored under its first name, ``config``, so checkpoints written
    before ``--preset`` keep their fingerprint and are resumed."""
    d = asdict(cfg)
    for key in ("steps", "checkpoint_every", "eval_every", "eval_samples"):
        d.pop(key)
    d["config"] = d.pop("preset")
    return d


def _identity(cfg: ICLConfig) -> dict:
    """The settings a run folder must share to be resumed: all but the evaluation and checkpoint cadence."""
    d = asdict(cfg)
    for key in ("checkpoint_every", "eval_every", "eval_samples"):
        d.pop(key)
    return d


def train(
    config: ICLConfig,
    out: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    device: str = "cpu",
) -> dict:
    """Pretrain (or continue pretraining) a transformer; write ``checkpoint.pt``, ``model.pt`` and ``log.json``.

    Parameters
    ----------
    config : ICLConfig
    out : path
        The run folder (:class:`~dlscience.runs.RunFolder`, command ``icl train``). A folder of the same
        settings is resumed (a finished one is returned as it is); one written before run manifests is adopted
        when its checkpoint holds the same settings.
    progress : bool
        Progress bar with the running loss and the latest Delta distances.
    overwrite : bool
        Replace a run of other settings in ``out`` (removing every file it wrote) instead of refusing it.
    device : str
        torch device of the transformer ("cpu", "cuda", "cuda:1"). The data stream is drawn on the CPU from
        the same seeded generator whatever the device, and checkpoints load onto any device, so a run can
        move between machines; results on another device agree up to floating-point rounding.

    Returns
    -------
    dict
        ``log.json``: settings, loss curve, and per evaluation step the per-position errors and Deltas of the
        transformer, ridge and dMMSE on both task distributions.

    Raises
    ------
    UserError
        Bad settings; ``out`` is a file, holds a run of other settings (without ``overwrite``) or a damaged
        checkpoint (named); nothing is written then.
    RunInterrupted
        On SIGINT/SIGTERM: the message says whether a checkpoint was saved and where.
    """
    cfg = config.resolved()
    task = cfg.task()
    fixed = bayes_estimators(task)
    out = Path(out)
    run = RunFolder(
        out,
        "icl train",
        asdict(cfg),
        identity=_identity(cfg),
        overwrite=overwrite,
        outputs=OUTPUTS,
        legacy=OUTPUTS,
        adopt_legacy=True,
    )
    ckpt = _checkpoint(cfg, out / "checkpoint.pt", device)

    def restore() -> dict:
        state, extra = ckpt.restore(
            new_state(evals=[]),
            other_settings=f"{ckpt.path} holds a training run of other settings; rerun with --overwrite to "
            "start afresh, or use another --out",
        )
        if extra and extra["steps"] != cfg.steps:
            raise UserError(
                f"{out} was started with --steps {extra['steps']} (the learning-rate triangle depends on it); "
                "resume with the same --steps, rerun with --overwrite, or use another --out"
            )
        return state

    # Without --overwrite the checkpoint is read before the folder is opened, so that a damaged checkpoint or
    # one of other settings (also in a folder written before manifests) is refused before anything is written.
    state = None if overwrite else restore()
    with run:
        if run.finished and (out / "log.json").exists() and (out / "model.pt").exists():
            return read_json(out / "log.json", what="ICL training log", fix="rerun with --overwrite")
        run.checkpoint_path("checkpoint.pt")
        state = restore() if state is None else state
        log = _train_in(run, cfg, task, ckpt, fixed, state, progress)
    return log


def _checkpoint(cfg: ICLConfig, path: Path, device: str = "cpu") -> TrainingCheckpoint:
    """A fresh model (seeded by ``cfg.seed``, initialised on the CPU, then moved to ``device``), Adam, the
    triangle schedule and the data generator (``cfg.seed + 1``), held by the run's checkpoint."""
    torch.manual_seed(cfg.seed)
    model = TransformerICL(cfg.n_dims, cfg.n_points, cfg.n_layer, cfg.n_embd, cfg.n_head).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: triangle_lr(s, cfg.steps, 1.0, cfg.warmup_fraction)
    )
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    settings, extra = _resume_settings(cfg), {"steps": cfg.steps}
    return TrainingCheckpoint(
        path, settings, model=model, optimizer=opt, scheduler=sched, generator=gen, extra=extra
    )


def _train_in(run, cfg, task, ckpt, fixed, state, progress) -> dict:
    """The body of :func:`train` inside its open run folder: evaluate, train, write the model and the log."""
    model, opt, sched, gen = ckpt.model, ckpt.optimizer, ckpt.scheduler, ckpt.generator
    estimators = {"transformer": model, **fixed}
    eval_sets = {
        d: eval_batches(task, d, cfg.eval_samples, seed=10_000 + i) for i, d in enumerate(DISTRIBUTIONS)
    }
    caches: dict[str, dict] = {d: {} for d in DISTRIBUTIONS}

    def run_eval() -> dict:
        row = {"step": state["step"]}
        for d, batches in eval_sets.items():
            ev, preds = evaluate(estimators, batches, d, caches[d])
            caches[d].update({k: v for k, v in preds.items() if k != "transformer"})
            row[d] = ev.to_json()
        return row

    device = model.wpe.weight.device

    def step() -> float:
        batch = task.sample(cfg.batch_size, gen, "pretrain")
        xs, ys = batch.xs.to(device), batch.ys.to(device)
        loss = ((model(xs, ys) - ys) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.item()

    def after_step(state: dict) -> dict | None:
        if state["step"] % cfg.eval_every and state["step"] != cfg.steps:
            return None
        state["evals"].append(run_eval())
        ev = state["evals"][-1]["true"]["delta"]
        shown = {"d_ridge": f"{ev['transformer|ridge']:.3f}"}
        if "transformer|dmmse" in ev:
            shown["d_dmmse"] = f"{ev['transformer|dmmse']:.3f}"
        return shown

    if not state["evals"]:
        state["evals"].append(run_eval())
    model.train()
    m = "inf" if cfg.n_tasks is None else cfg.n_tasks
    train_loop(
        step,
        state,
        steps=cfg.steps,
        checkpoint=ckpt,
        checkpoint_every=cfg.checkpoint_every,
        progress=progress,
        desc=f"icl M={m}",
        after_step=after_step,
    )
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    run.save_torch("model.pt", {"config": asdict(cfg), "model": weights})
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
    run.write_json("log.json", log)
    run.finish(steps=state["step"])
    return log


def load_transformer(path: str | Path) -> tuple[TransformerICL, ICLConfig]:
    """Load ``model.pt`` (or a run folder) written by :func:`train`: the model (evaluation mode) and config.
    Models saved before ``--preset`` (settings key ``config``) load too.

    Parameters
    ----------
    path : path
        ``model.pt`` or the run folder holding it.

    Returns
    -------
    TransformerICL
        In evaluation mode.
    ICLConfig
        Its settings.

    Raises
    ------
    UserError
        If there is no model at ``path``, or the file is damaged or not a model of ``dlscience icl train``
        (one line naming the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise UserError(f"no ICL model at {path}; train one with `dlscience icl train --out FOLDER`")
    fix = "train it again with `dlscience icl train`"
    saved = load_torch(path, what="model of `dlscience icl train`", fix=fix)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or "model" not in saved:
        raise UserError(f"{path} is not a model of `dlscience icl train` (no settings and weights); {fix}")
    try:
        cfg = ICLConfig.from_dict(saved["config"])
        model = TransformerICL(cfg.n_dims, cfg.n_points, cfg.n_layer, cfg.n_embd, cfg.n_head)
        model.load_state_dict(saved["model"])
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"{path} does not hold a model of `dlscience icl train` ({reason[:120]}); {fix}"
        ) from None
    model.eval()
    return model, cfg
