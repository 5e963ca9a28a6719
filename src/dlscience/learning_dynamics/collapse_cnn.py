"""Stochastic collapse in a small CNN on Fashion-MNIST: fraction of independent neurons against the learning
rate, the batch size, label noise and the time spent at a large learning rate (Chen et al. 2023, arXiv
2306.04251, Figs. 3-4 and 6 in miniature; research note theory_dynamics.md, paper 3 Sec. b, check 7).

The paper trains VGG-16 (GELU, no batch norm) on CIFAR-10 with SGD (momentum 0.9, weight decay 5e-4, 1000-step
warm-up) for 10^5-10^6 steps and sweeps batch {32 ... 512} at lr 0.02, lr {0.01 ... 0.1} and label noise
{0 ... 0.8} (each loaded label redrawn to another class with that probability); Fig. 6 trains at lr 0.1 and drops
to 0.01 after 10k, 20k or 40k steps. Here: a four-weight-layer CNN (conv 16-32-32 with GELU and max pooling, a
hidden linear layer of 128, a linear read-out; no normalisation), the same optimiser, a short warm-up, and
2,500 steps per configuration (batch sizes also at equal samples seen), so the whole ``cpu`` grid (16 runs)
takes about 45 minutes on one CPU thread. Weight decay is 5e-3 instead of 5e-4: the paper's runs are 40-400x
longer, and what erases the random initialisation (so that only what the gradients and their noise maintain is
left) is lr x weight decay x steps, about 1 in the paper at lr 0.02 and 100k steps, 0.6 here at the base lr
0.05 and 2,500 steps. With 5e-4 nothing collapsed in a pilot (800 steps, lr 0.1, label noise 0.6: every unit
independent); with 5e-3, lr 0.1 and label noise 0.6 left 56 % of the hidden units independent after 1,200
steps, lr 0.01 without noise 100 %. The measurement is
:func:`dlscience.learning_dynamics.collapse.collapse_report` on the trained weights (paper thresholds 0.1 /
0.1); the headline number is the mean independent fraction over the four hidden layers (the read-out has no
outgoing weights and is left out).

Every configuration is one resumable training run (:func:`dlscience.training_loop.train_loop` with a
:class:`~dlscience.checkpoint.TrainingCheckpoint` under ``checkpoint_dir``); its result is kept in the run
folder's state when it finishes, so a finished configuration is never trained again. The run folder (``out``)
receives only ``collapse_cnn.json`` and ``collapse_cnn.png``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dlscience.checkpoint import TrainingCheckpoint
from dlscience.errors import InputValidationError
from dlscience.learning_dynamics.collapse import collapse_report
from dlscience.runs import RunFolder
from dlscience.training_loop import new_state, train_loop

__all__ = ["CNNConfig", "CNN_PRESETS", "TrainPoint", "grid_points", "small_cnn", "run_cnn_experiment"]


@dataclass(frozen=True)
class CNNConfig:
    """Settings of the CNN collapse experiment.

    Attributes
    ----------
    widths : (int, int, int)
        Channels of the three 3x3 convolutions.
    hidden : int
        Width of the hidden linear layer.
    steps : int
        SGD steps per configuration.
    base_lr, base_batch : float, int
        The learning rate and batch size held fixed while the others are swept.
    lrs, batches, noises : tuples
        The learning-rate, batch-size and label-noise sweeps (each at the base values of the others), at
        ``steps`` steps each (as in the paper).
    equal_samples_batches : tuple
        A second batch-size sweep at an equal number of samples seen: ``steps * base_batch / batch`` steps
        (a small batch then also takes more steps of weight decay); () for none.
    high_lr, low_lr : float
        Fig. 6: the large rate and the rate after the drop.
    drop_fractions : tuple of float in (0, 1)
        Fig. 6: when the drop comes, as a fraction of ``steps`` (0 and 1 are the constant runs at ``low_lr`` and
        ``high_lr`` of the lr sweep, included when those rates are in ``lrs``).
    momentum, weight_decay, warmup : float, float, int
        SGD momentum, L2 weight decay, linear warm-up steps.
    n_train, n_test : int or None
        Training images (None: all 60,000) and test images for accuracy.
    eval_every : int
        Steps between collapse measurements along training.
    seed : int
    """

    widths: tuple = (16, 32, 32)
    hidden: int = 128
    steps: int = 2500
    base_lr: float = 0.05
    base_batch: int = 128
    lrs: tuple = (0.01, 0.02, 0.05, 0.1)
    batches: tuple = (32, 64, 128, 256)
    equal_samples_batches: tuple = (32, 64, 128, 256)
    noises: tuple = (0.0, 0.2, 0.4, 0.6)
    high_lr: float = 0.1
    low_lr: float = 0.01
    drop_fractions: tuple = (0.25, 0.5, 0.75)
    momentum: float = 0.9
    weight_decay: float = 5e-3
    warmup: int = 100
    n_train: int | None = None
    n_test: int | None = 5000
    eval_every: int = 250
    seed: int = 0

    def validated(self) -> CNNConfig:
        """Check every value; raises InputValidationError naming the bad one."""
        if len(self.widths) != 3 or min(self.widths) < 1 or self.hidden < 1:
            raise InputValidationError("widths must be three positive channel counts and hidden >= 1")
        if self.steps < 1 or self.eval_every < 1 or self.warmup < 0:
            raise InputValidationError("steps and eval_every must be >= 1 and warmup >= 0")
        rates = (self.base_lr, self.high_lr, self.low_lr, *self.lrs)
        if min(rates) <= 0 or min(self.batches) < 1 or self.base_batch < 1:
            raise InputValidationError("learning rates must be > 0 and batch sizes >= 1")
        if not all(0 <= p < 1 for p in self.noises):
            raise InputValidationError("label noises must be in [0, 1)")
        if not all(0 < f < 1 for f in self.drop_fractions):
            raise InputValidationError("drop fractions must be in (0, 1)")
        return self


CNN_PRESETS = {
    # about 45 min on one CPU thread (OMP_NUM_THREADS=1)
    "cpu": CNNConfig(),
    # seconds: for tests and a first look
    "tiny": CNNConfig(
        widths=(4, 8, 8),
        hidden=16,
        steps=30,
        lrs=(0.01, 0.1),
        batches=(16, 32),
        equal_samples_batches=(16, 32),
        noises=(0.0, 0.5),
        drop_fractions=(0.5,),
        base_batch=32,
        n_train=512,
        n_test=256,
        eval_every=10,
        warmup=5,
    ),
}


@dataclass(frozen=True)
class TrainPoint:
    """One training configuration: constant ``lr`` until ``drop_step`` (None: never), then ``low_lr``, for
    ``steps`` steps (None: the config's ``steps``)."""

    lr: float
    batch: int
    noise: float
    drop_step: int | None = None
    low_lr: float | None = None
    steps: int | None = None

    @property
    def key(self) -> str:
        drop = "" if self.drop_step is None else f"_drop{self.drop_step}to{self.low_lr:g}"
        steps = "" if self.steps is None else f"_steps{self.steps}"
        return f"lr{self.lr:g}_b{self.batch}_noise{self.noise:g}{drop}{steps}"

    def identity(self) -> dict:
        """The fields that define the run (``steps`` only when set, so earlier checkpoints still resume)."""
        return {k: v for k, v in asdict(self).items() if not (k == "steps" and v is None)}


def grid_points(cfg: CNNConfig) -> dict[str, list[TrainPoint]]:
    """The sweeps: ``{"lr": [...], "batch": [...], "noise": [...], "drop": [...], "batch_equal_samples":
    [...]}`` (points may repeat across sweeps; each distinct point is trained once). The drop sweep lists the
    constant ``low_lr`` run (drop at 0), the drops, and the constant ``high_lr`` run (never dropped)."""
    b, lr = cfg.base_batch, cfg.base_lr

    def equal_samples(batch: int) -> int | None:
        steps = max(1, int(round(cfg.steps * b / batch)))
        return None if steps == cfg.steps else steps

    drop = [TrainPoint(cfg.low_lr, b, 0.0)]
    drop += [
        TrainPoint(cfg.high_lr, b, 0.0, int(round(f * cfg.steps)), cfg.low_lr) for f in cfg.drop_fractions
    ]
    drop += [TrainPoint(cfg.high_lr, b, 0.0)]
    return {
        "lr": [TrainPoint(v, b, 0.0) for v in cfg.lrs],
        "batch": [TrainPoint(lr, v, 0.0) for v in cfg.batches],
        "noise": [TrainPoint(lr, b, v) for v in cfg.noises],
        "drop": drop,
        **(
            {
                "batch_equal_samples": [
                    TrainPoint(lr, v, 0.0, steps=equal_samples(v)) for v in cfg.equal_samples_batches
                ]
            }
            if cfg.equal_samples_batches
            else {}
        ),
    }


def small_cnn(widths=(16, 32, 32), hidden: int = 128, n_classes: int = 10, size: int = 28) -> nn.Sequential:
    """conv3x3(1 -> c1) GELU pool, conv3x3(c1 -> c2) GELU pool, conv3x3(c2 -> c3) GELU pool, linear(c3 (s/8)^2
    -> hidden) GELU, linear(hidden -> n_classes); no normalisation (GELU(0) = 0, so vanishing units are
    invariant as in the paper's VGG). Input (B, 1, size, size)."""
    c1, c2, c3 = widths
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, padding=1),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c3 * (size // 8) ** 2, hidden),
        nn.GELU(),
        nn.Linear(hidden, n_classes),
    )


def _hidden_summary(model: nn.Module) -> dict:
    rows = collapse_report(model)
    hidden = [r for r in rows if r["consumer"] is not None]
    return {
        "mean_independent_fraction": float(np.mean([r["independent_fraction"] for r in hidden])),
        "vanishing": int(sum(r["vanishing"] for r in hidden)),
        "units": int(sum(r["width"] for r in hidden)),
        "layers": rows,
    }


def _train_point(cfg: CNNConfig, point: TrainPoint, data, ckpt_path: Path, progress: bool) -> dict:
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(cfg.seed)
    model = small_cnn(cfg.widths, cfg.hidden, size=x_train.shape[-1])
    opt = torch.optim.SGD(
        model.parameters(), lr=point.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
        if point.drop_step is not None and step >= point.drop_step:
            return warm * point.low_lr / point.lr
        return warm

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    sweeps = ("lrs", "batches", "noises", "drop_fractions", "equal_samples_batches")
    identity = {**{k: v for k, v in asdict(cfg).items() if k not in sweeps}, **point.identity()}
    total = point.steps or cfg.steps
    ckpt = TrainingCheckpoint(ckpt_path, identity, model=model, optimizer=opt, scheduler=sched, generator=gen)
    state, _ = ckpt.restore(
        new_state(trace=[]),
        other_settings=f"{ckpt.path} holds a run of other settings; delete it or use another --checkpoint-dir",
    )
    n, k = len(y_train), 10

    def step() -> float:
        idx = torch.randint(0, n, (point.batch,), generator=gen)
        y = y_train[idx]
        if point.noise > 0:  # each loaded label redrawn to another class with probability `noise`
            flip = torch.rand(point.batch, generator=gen) < point.noise
            other = (y + torch.randint(1, k, (point.batch,), generator=gen)) % k
            y = torch.where(flip, other, y)
        loss = F.cross_entropy(model(x_train[idx]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.item()

    def after(s):
        if s["step"] % cfg.eval_every and s["step"] != total:
            return None
        summ = _hidden_summary(model)
        s["trace"].append([s["step"], summ["mean_independent_fraction"]])
        return {"indep": f"{summ['mean_independent_fraction']:.3f}"}

    train_loop(
        step,
        state,
        steps=total,
        checkpoint=ckpt,
        checkpoint_every=max(cfg.eval_every, 250),
        progress=progress,
        desc=point.key,
        log_every=min(50, total),
        after_step=after,
    )
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(xb) for xb in x_test.split(1000)])
        test_acc = float((logits.argmax(1) == y_test).float().mean())
        test_loss = float(F.cross_entropy(logits, y_test))
    summ = _hidden_summary(model)
    return {
        **asdict(point),
        "key": point.key,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "final_train_loss": state["losses"][-1][1] if state["losses"] else None,
        "mean_independent_fraction": summ["mean_independent_fraction"],
        "vanishing": summ["vanishing"],
        "hidden_units": summ["units"],
        "layers": summ["layers"],
        "trace": state["trace"],
        "seconds": state["seconds"],
    }


def _load_data(cfg: CNNConfig, data_dir):
    from dlscience.data import load_images

    train = load_images("fashion-mnist", split="train", data_dir=data_dir, n=cfg.n_train, seed=cfg.seed)
    test = load_images("fashion-mnist", split="test", data_dir=data_dir, n=cfg.n_test, seed=cfg.seed)
    return train.images, train.labels, test.images, test.labels


def run_cnn_experiment(
    config: CNNConfig,
    out,
    *,
    checkpoint_dir=None,
    data_dir=None,
    progress: bool = True,
    overwrite: bool = False,
    preset: str = "custom",
) -> dict:
    """Train every configuration of ``config`` (each resumable) and write ``collapse_cnn.json`` and
    ``collapse_cnn.png`` into the run folder ``out``.

    Parameters
    ----------
    config : CNNConfig
    out : path
        Run folder (JSON and figure only).
    checkpoint_dir : path, optional
        Where the per-configuration training checkpoints go (default ``out/checkpoints``, removed by
        ``overwrite`` with the rest of the run); keep them out of a results folder that is committed. A
        checkpoint there of other settings is refused, naming the setting that differs.
    data_dir : path, optional
        Folder holding Fashion-MNIST (see :func:`dlscience.data.load_images`).
    progress, overwrite : bool
    preset : str
        Recorded name of the configuration.

    Returns
    -------
    dict
        The JSON: settings, per configuration the test accuracy, final training loss, mean independent
        fraction over the hidden layers (with its trace over training), vanishing units and the per-layer table;
        per sweep the rows in sweep order and the Spearman correlation of the independent fraction with the
        swept value.

    Raises
    ------
    InputValidationError
        A bad setting. DatasetNotFoundError: Fashion-MNIST is not found.
    """
    cfg = config.validated()
    settings = {**asdict(cfg), "preset": preset}
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else Path(out) / "checkpoints"
    with RunFolder(
        out,
        "dynamics collapse cnn",
        {**settings, "checkpoint_dir": str(ckpt_dir)},
        identity=settings,
        overwrite=overwrite,
    ) as run:
        sweeps = grid_points(cfg)
        done = run.state.setdefault("done", {})
        points = {p.key: p for ps in sweeps.values() for p in ps}
        data = None
        for key, point in points.items():
            if key in done:
                continue
            if data is None:
                data = _load_data(cfg, data_dir)
            path = (
                run.checkpoint_path(f"checkpoints/{key}.pt")
                if checkpoint_dir is None
                else ckpt_dir / f"{key}.pt"
            )
            done[key] = _train_point(cfg, point, data, path, progress)
            run.save_state()
        summary = _summarise(cfg, sweeps, done, preset)
        run.save_figure("collapse_cnn.png", _figure(summary))
        run.write_json("collapse_cnn.json", summary)
        run.finish()
    return summary


def _summarise(cfg: CNNConfig, sweeps, done, preset) -> dict:
    from scipy.stats import spearmanr

    out = {}
    for name, points in sweeps.items():
        rows = [done[p.key] for p in points]
        if name == "drop":
            xs = [0.0] + [p.drop_step / cfg.steps for p in points[1:-1]] + [1.0]
            label = "fraction of steps at the high lr"
        elif name == "batch_equal_samples":
            xs = [p.batch for p in points]
            label = "batch size (equal samples seen)"
        else:
            xs = [getattr(p, name) for p in points]
            label = name
        ys = [r["mean_independent_fraction"] for r in rows]
        rho = float(spearmanr(xs, ys).statistic) if len(set(xs)) >= 3 and len(set(ys)) > 1 else None
        out[name] = {
            "x": xs,
            "x_label": label,
            "independent_fraction": ys,
            "test_accuracy": [r["test_accuracy"] for r in rows],
            "final_train_loss": [r["final_train_loss"] for r in rows],
            "vanishing": [r["vanishing"] for r in rows],
            "keys": [p.key for p in points],
            "spearman": rho,
        }
    return {
        "paper": "Chen, Kunin, Yamamura & Ganguli 2023, Stochastic collapse (arXiv 2306.04251), Figs. 3-4 and 6 "
        "in miniature (small CNN on Fashion-MNIST)",
        "settings": {**asdict(cfg), "preset": preset},
        "claim": "fewer independent neurons at larger lr, smaller batch, more label noise, longer time at high lr",
        "sweeps": out,
        "runs": dict(done),
    }


def _figure(summary: dict):
    import matplotlib.pyplot as plt

    from dlscience import plotting  # noqa: F401

    sweeps = summary["sweeps"]
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.6))
    titles = {
        "lr": ("learning rate", True),
        "batch": ("batch size", True),
        "noise": ("label noise probability", False),
        "drop": ("fraction of steps at high lr before the drop", False),
    }
    for ax, (name, (label, logx)) in zip(axes, titles.items(), strict=False):
        s = sweeps[name]
        ax.plot(s["x"], s["independent_fraction"], "o-", color="C0", label="independent fraction")
        ax.set(xlabel=label, ylabel="independent fraction (hidden layers)")
        if logx:
            ax.set_xscale("log", base=2 if name == "batch" else 10)
        ax2 = ax.twinx()
        ax2.plot(s["x"], s["test_accuracy"], "s--", color="C1", ms=4, label="test accuracy")
        ax2.set_ylabel("test accuracy", color="C1")
        rho = s["spearman"]
        title = f"vs {name} (Spearman {'n/a' if rho is None else f'{rho:+.2f}'})"
        if name == "batch" and "batch_equal_samples" in sweeps:
            e = sweeps["batch_equal_samples"]
            ax.plot(e["x"], e["independent_fraction"], "o:", color="C2", label="equal samples seen")
            ax2.plot(e["x"], e["test_accuracy"], "s:", color="C3", ms=4)
            ax.legend(fontsize=7, title="C0: equal steps", title_fontsize=7)
            rho_e = e["spearman"]
            title += f"; equal samples {'n/a' if rho_e is None else f'{rho_e:+.2f}'}"
        ax.set_title(title, fontsize=9)
    ax = axes[4]
    runs = summary["runs"]
    cmap = plt.get_cmap("viridis")
    keys = sweeps["drop"]["keys"]
    for i, key in enumerate(keys):
        tr = np.asarray(runs[key]["trace"], dtype=float).reshape(-1, 2)
        ax.plot(
            tr[:, 0], tr[:, 1], color=cmap(i / max(1, len(keys) - 1)), label=f"{sweeps['drop']['x'][i]:.2f}"
        )
    ax.set(
        xlabel="step", ylabel="independent fraction", title="Fig. 6: along training (legend: time at high lr)"
    )
    ax.legend(fontsize=7)
    st = summary["settings"]
    fig.suptitle(
        f"Small CNN on Fashion-MNIST, SGD momentum {st['momentum']}, wd {st['weight_decay']}, {st['steps']} steps "
        f"per run (base lr {st['base_lr']}, batch {st['base_batch']})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def preset_config(name: str, **overrides) -> CNNConfig:
    """A preset with some fields replaced (None values are ignored)."""
    return replace(CNN_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
