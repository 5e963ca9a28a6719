"""Training the convolutional diffusion networks of the ELS paper (eps-prediction, exact resume).

Kamb & Ganguli 2024, App. C (research note els.md Sec. 4): MSE between the network's output and the noise eps,
with x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps and t uniform on {0, ..., 999} / 1000; AdamW with
weight decay 0, learning rate 1e-4 decayed by 0.999965 per step, batch 128 (``preset="paper"``: width 256
ResNet / 64-128-256 UNet, 300 epochs, meant for a GPU). ``preset="cpu"`` trains a width-32 ResNet or a
16-32-64 UNet with learning rate 1e-3 and batch 64, the documented CPU path (on 2 cores about 0.8 s and 0.4 s
per step with one thread each). At that learning rate the ResNet's last iterate is noisy: its samples, and their
agreement with the ELS machine, swing from one checkpoint to the next, so the cpu ResNet keeps an exponential
moving average of its weights (``ema_decay``; a standard practice the paper does not use) and samples that.

The steps run in the shared :func:`~dlscience.training_loop.train_loop` (the weight average is updated inside
the step) inside a :class:`~dlscience.runs.RunFolder` (command ``diffusion train``; identity: the settings
and the digest of the training images). Every ``checkpoint_every`` steps the model, optimiser, learning-rate
schedule, weight average, step and the data/noise random generator are written atomically to
``checkpoint.pt``; running the same command again continues from there and reaches exactly the state an
uninterrupted run would. Folders written before run manifests are adopted (their checkpoint checks the
settings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from dlscience.checkpoint import TrainingCheckpoint
from dlscience.data import load_images
from dlscience.diffusion.networks import ARCHITECTURES, UP_PROJECTIONS, NetworkDenoiser, build_network
from dlscience.diffusion.schedule import alpha_bar
from dlscience.errors import InputValidationError, UserError
from dlscience.results import load_torch
from dlscience.runs import RunFolder
from dlscience.training_loop import new_state, train_loop

__all__ = ["TrainConfig", "train", "training_images", "load_network", "PRESETS", "OUTPUTS"]

OUTPUTS = ("checkpoint.pt", "model.pt", "train.json")

# The cpu ResNet keeps a weight average: at lr 1e-3 its last iterate's samples swing from checkpoint to
# checkpoint (median r with the same ELS samples 0.53-0.90 at checkpoints 250-550 steps apart), its average's
# do not (0.87-0.90 once it spans 1,000 steps; results/els_vs_networks/iterates/).
PRESETS = {
    "cpu": {
        "resnet": {"width": 32, "lr": 1e-3, "batch_size": 64, "steps": 18000, "ema_decay": 0.999},
        "unet": {"width": 16, "lr": 1e-3, "batch_size": 64, "steps": 14000, "ema_decay": 0.0},
    },
    "paper": {
        "resnet": {"width": 256, "lr": 1e-4, "batch_size": 128, "steps": 140000, "ema_decay": 0.0},
        "unet": {"width": 64, "lr": 1e-4, "batch_size": 128, "steps": 140000, "ema_decay": 0.0},
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (the options of ``dlscience diffusion train``).

    Attributes
    ----------
    arch : {"resnet", "unet"}
    dataset, data_dir, download, image_size, n_train
        Training data, as for :func:`dlscience.data.load_images` (image_size default: 32 for (Fashion-)MNIST).
    conditional : bool
        Learn a class embedding (class-conditional network).
    padding : {"zeros", "circular"}
    preset : {"cpu", "paper"}
        Default width, learning rate, batch size, step count and weight average (see :data:`PRESETS`);
        ``width``, ``lr``, ``batch_size``, ``steps`` and ``ema_decay`` override them.
    width : int, optional
    lr : float, optional
    lr_decay : float
        Multiplicative learning-rate decay per step (paper 0.999965).
    batch_size : int, optional
    steps : int, optional
        Optimiser steps in total (preset ``cpu``: 18,000 ResNet steps, about 4 h on one core or 2.5 h on two,
        and 14,000 UNet steps, about 100 min on one core; ``paper``: 140,000 = 300 epochs of 60,000 images).
    up_projection : {"relu", "linear"}
        ResNet only: see :class:`~dlscience.diffusion.networks.ResNet` (models saved without this setting
        are ``"relu"``).
    ema_decay : float, optional
        Decay in [0, 1) of an exponential moving average of the weights, updated after every step and saved
        as the model's weights (0 keeps none; 0.999, the cpu ResNet's preset, averages over about 1,000
        steps; the paper keeps none). It is not part of a run's identity: switching it on when extending a
        run starts the average at that step (recorded in ``train.json``).
    checkpoint_every : int
        Steps between checkpoints.
    seed : int
        Seeds the initialisation and the data/noise stream.
    """

    arch: str = "resnet"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    n_train: int | None = None
    conditional: bool = False
    padding: str = "zeros"
    preset: str = "cpu"
    width: int | None = None
    lr: float | None = None
    lr_decay: float = 0.999965
    batch_size: int | None = None
    steps: int | None = None
    up_projection: str = "relu"
    ema_decay: float | None = None
    checkpoint_every: int = 200
    seed: int = 0

    def resolved(self) -> TrainConfig:
        """Fill width, lr and image_size from the preset and dataset; validate values."""
        if self.arch not in ARCHITECTURES:
            raise InputValidationError(f"--arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if self.preset not in PRESETS:
            raise InputValidationError(f"--preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        if self.up_projection not in UP_PROJECTIONS:
            raise InputValidationError(
                f"--up-projection must be one of {UP_PROJECTIONS}, got {self.up_projection!r}"
            )
        for name in ("width", "batch_size", "steps", "checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputValidationError(f"--{name.replace('_', '-')} must be >= 1")
        p = PRESETS[self.preset][self.arch]
        ema_decay = p["ema_decay"] if self.ema_decay is None else self.ema_decay
        if self.lr is not None and not self.lr > 0:
            raise InputValidationError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 <= ema_decay < 1.0:
            raise InputValidationError(
                f"--ema-decay must be in [0, 1) (0 = no average, 0.999 typical), got {ema_decay}"
            )
        size = self.image_size or (32 if self.dataset in ("mnist", "fashion-mnist") else None)
        return replace(
            self,
            width=p["width"] if self.width is None else self.width,
            lr=p["lr"] if self.lr is None else self.lr,
            batch_size=p["batch_size"] if self.batch_size is None else self.batch_size,
            steps=p["steps"] if self.steps is None else self.steps,
            ema_decay=ema_decay,
            image_size=size,
        )


def training_images(config: TrainConfig, data_dir: str | None = None):
    """The training set of a (resolved) :class:`TrainConfig` as an :class:`~dlscience.data.ImageDataset`
    (images (N, C, H, W) float32 in [-1, 1]); ``data_dir`` overrides the configured folder.

    Raises DatasetNotFoundError / InputValidationError as :func:`dlscience.data.load_images`.
    """
    return load_images(
        config.dataset,
        data_dir=data_dir or config.data_dir,
        download=config.download,
        size=config.image_size,
        n=config.n_train,
        seed=config.seed,
    )


def _resume_settings(config: TrainConfig) -> dict:
    """The settings a resumed run must share (a run may be extended to more steps, resumed from another data
    folder, and given a weight average from the current step on)."""
    d = asdict(config)
    for key in ("data_dir", "download", "steps", "checkpoint_every", "ema_decay"):
        d.pop(key)
    if config.arch != "resnet" or config.up_projection == "relu":
        d.pop("up_projection")  # as in checkpoints written before the option, so that they still resume
    return d


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    progress: bool = True,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict:
    """Train (or resume training) a diffusion network and write checkpoints, the model and a loss log to ``out``.

    Parameters
    ----------
    config : TrainConfig
    out : str or Path
        Output folder: ``checkpoint.pt`` (resumable state), ``model.pt`` (final weights and config; with
        ``ema_decay`` > 0 the averaged weights, the last iterate kept as ``model_raw``), ``train.json``
        (settings, loss curve, timings).
    progress : bool
        Show a progress bar with the running loss.
    device : str
        Torch device ("cpu", or "cuda" where available).
    overwrite : bool
        Replace a run of other settings in ``out`` (removing every file it wrote) instead of refusing it.

    Returns
    -------
    dict
        The content of ``train.json``.

    Raises
    ------
    UserError
        Bad settings, missing data, ``out`` holding a run with other settings (or training images), or a
        damaged checkpoint (named); nothing is written then. A folder written before run manifests is adopted
        (its checkpoint checks the settings).
    RunInterrupted
        On SIGINT/SIGTERM, after the current step is saved.
    """
    config = config.resolved()
    ds = training_images(config)
    num_classes = len(ds.class_names) if config.conditional else None
    C, H, W = ds.images.shape[1:]
    if config.arch == "unet" and (H % 4 or W % 4):
        raise InputValidationError(
            f"the UNet needs image sides divisible by 4, got {H}x{W}; set --image-size"
        )
    torch.manual_seed(config.seed)
    model = build_network(
        config.arch,
        C,
        width=config.width,
        padding=config.padding,
        num_classes=num_classes,
        up_projection=config.up_projection,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: config.lr_decay**step)
    gen = torch.Generator().manual_seed(config.seed + 1)
    averaged = None
    if config.ema_decay > 0:
        averaged = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
        )
    out = Path(out)
    ckpt = TrainingCheckpoint(
        out / "checkpoint.pt",
        _resume_settings(config),
        model=model,
        optimizer=opt,
        scheduler=sched,
        generator=gen,
        averaged=averaged,
    )
    run = RunFolder(
        out,
        "diffusion train",
        asdict(config),
        identity=_resume_settings(config),
        inputs=ds.digests(),
        overwrite=overwrite,
        outputs=OUTPUTS,
        legacy=OUTPUTS,
        adopt_legacy=True,
    )

    def restore() -> dict:
        state, _ = ckpt.restore(
            new_state(),
            other_settings=f"{ckpt.path} holds a training run with other settings; rerun with --overwrite to "
            "start afresh, or use another --out",
        )
        return state

    # Without --overwrite the checkpoint is read before the folder is opened, so that a damaged checkpoint or
    # one of other settings (also in a folder written before manifests) is refused before anything is written.
    state = None if overwrite else restore()
    with run:
        run.checkpoint_path("checkpoint.pt")
        state = restore() if state is None else state
        return _train_in(run, config, ds, ckpt, state, progress, device)


def _train_in(run, config, ds, ckpt, state, progress, device) -> dict:
    """The body of :func:`train` inside its open run folder: the steps, then the model and the log."""
    model, opt, sched, gen, averaged = (
        ckpt.model,
        ckpt.optimizer,
        ckpt.scheduler,
        ckpt.generator,
        ckpt.averaged,
    )
    num_classes = len(ds.class_names) if config.conditional else None
    C, H, W = ds.images.shape[1:]
    images = ds.images.to(device)
    labels = ds.labels.to(device)

    def step() -> float:
        idx = torch.randint(len(ds), (config.batch_size,), generator=gen)
        t = torch.randint(0, 1000, (config.batch_size,), generator=gen).double() / 1000
        eps = torch.randn((config.batch_size, C, H, W), generator=gen)
        ab = alpha_bar(t).float().view(-1, 1, 1, 1)
        x0 = images[idx]
        x_t = ab.sqrt().to(device) * x0 + (1 - ab).sqrt().to(device) * eps.to(device)
        pred = model(x_t, t.float().to(device), labels[idx] if num_classes else None)
        loss = nn.functional.mse_loss(pred, eps.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if averaged is not None:
            if averaged.n_averaged.item() == 0:
                state["ema_start_step"] = state["step"]
            averaged.update_parameters(model)
        return loss.item()

    model.train()
    train_loop(
        step,
        state,
        steps=config.steps,
        checkpoint=ckpt,
        checkpoint_every=config.checkpoint_every,
        progress=progress,
        desc=f"train {config.arch}",
    )
    saved = {"config": asdict(config), "model": model.state_dict()}
    if averaged is not None and averaged.n_averaged.item() > 0:
        saved.update(model=averaged.module.state_dict(), model_raw=model.state_dict())
    run.save_torch("model.pt", {**saved, "image_shape": [C, H, W], "num_classes": num_classes})
    summary = {
        "command": "dlscience diffusion train",
        "settings": asdict(config),
        "steps": state["step"],
        "seconds": state["seconds"],
        "loss_curve": state["losses"],
        "ema": {"decay": config.ema_decay, "start_step": state.get("ema_start_step")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"name": ds.name, "source": ds.source, "n_train": len(ds)},
    }
    run.write_json("train.json", summary)
    run.finish(steps=state["step"])
    return summary


def load_network(path: str | Path, device: str = "cpu", *, raw: bool = False) -> NetworkDenoiser:
    """Load ``model.pt`` (or a training folder) written by :func:`train` as a :class:`NetworkDenoiser`.

    ``raw=True`` loads the last iterate instead of the weight average of a model trained with ``ema_decay``
    (for other models both are the same weights).

    Raises UserError if the file does not exist or is not a dlscience model.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise UserError(f"no model at {path}; train one with `dlscience diffusion train --out FOLDER`")
    saved = load_torch(
        path, what="model", fix="train it again with `dlscience diffusion train`, or give another --model"
    )
    if not isinstance(saved, dict) or "model" not in saved or "config" not in saved:
        raise UserError(f"{path} is not a model written by `dlscience diffusion train`")
    cfg = saved["config"]
    model = build_network(
        cfg["arch"],
        saved["image_shape"][0],
        width=cfg["width"],
        padding=cfg["padding"],
        num_classes=saved["num_classes"],
        up_projection=cfg.get("up_projection", "relu"),  # models saved before the option had a ReLU
    ).to(device)
    model.load_state_dict(saved["model_raw" if raw and "model_raw" in saved else "model"])
    return NetworkDenoiser(model, tuple(saved["image_shape"]), saved["num_classes"])
