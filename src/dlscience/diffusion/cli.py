"""CLI of the diffusion study: ``dlscience els ...`` (analytic machines)."""

from __future__ import annotations

import argparse
import re

from dlscience.cli import HelpFormatter as _HelpFormatter
from dlscience.errors import InputValidationError

__all__ = ["register", "parse_bytes"]


def parse_bytes(text: str) -> int:
    """Parse a memory size such as ``2GB``, ``512MB``, ``1.5G`` or ``1000000`` into bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if not m:
        raise InputValidationError(f"cannot read memory size {text!r}; write e.g. 2GB or 512MB")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _memory(text: str) -> int:
    try:
        return parse_bytes(text)
    except InputValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _labels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--labels must be comma-separated integers, got {text!r}") from None


def _add_schedule_offset(parser: argparse.ArgumentParser) -> None:
    """The ``--schedule-offset`` option shared by ``els sample`` and ``els compare``."""
    parser.add_argument(
        "--schedule-offset",
        type=int,
        default=0,
        choices=[0, 1],
        help="1 reproduces the reference code's off-by-one lookup (each step uses the size calibrated 0.05 later)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``els`` subcommand group to the top-level parser."""
    from dlscience.data import DATASETS
    from dlscience.diffusion.patch_schedule import PRESETS

    els = sub.add_parser(
        "els",
        help="equivariant local score machine (Kamb & Ganguli 2024)",
        description="Training-free equivariant local score (ELS) machines that predict the samples of "
        "convolutional diffusion models (Kamb & Ganguli, arXiv 2412.20292).",
    )
    els_sub = els.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = els_sub.add_parser(
        "sample",
        help="sample new images with an analytic machine",
        description="Sample images with an analytic machine (boundary-broken ELS by default) using the "
        "paper's deterministic 20-step DDIM sampler, and write a figure (sample | nearest training image | "
        "provenance map), samples.npz, run.json and a checkpoint to --out. An interrupted run resumes "
        "when the same command is repeated.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, help="training set")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset files (else $DLSCIENCE_DATA, the Debian package's folder, "
        "torchvision's layout)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download MNIST/Fashion-MNIST/CIFAR-10 with torchvision if missing",
    )
    p.add_argument("--n-samples", type=int, default=8, help="number of samples (seeds SEED, SEED+1, ...)")
    p.add_argument(
        "--labels",
        type=_labels,
        default=None,
        help="class of each sample, comma-separated (one value applies to all); "
        "default: sample i gets class i mod number-of-classes",
    )
    p.add_argument(
        "--unconditional",
        action="store_true",
        help="use the whole training set for every sample instead of the label's class",
    )
    p.add_argument(
        "--machine",
        default="els",
        choices=["els", "ls", "is"],
        help="ELS (boundary-broken for zero padding), local score (LS) or ideal score (IS)",
    )
    p.add_argument(
        "--padding",
        default="zeros",
        choices=["zeros", "circular"],
        help="padding of the modelled network: zeros gives the boundary-broken ELS",
    )
    p.add_argument(
        "--schedule",
        default=None,
        help=f"patch-size schedule: a preset ({', '.join(PRESETS)}), a JSON file, or an odd "
        "integer; default DATASET-resnet (3 for digits)",
    )
    _add_schedule_offset(p)
    p.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="seeded subset of the training set (default: the full training set)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resize images to this side (default 32 for MNIST/Fashion-MNIST, native otherwise)",
    )
    p.add_argument("--seed", type=int, default=0, help="base seed (sample i uses SEED + i)")
    p.add_argument("--steps", type=int, default=20, help="DDIM grid size (t_i = i / STEPS)")
    p.add_argument(
        "--t-start",
        type=float,
        default=0.95,
        help="first evaluation time (0.95 = the paper's 19 machine evaluations)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "float64"],
        help="logit precision; auto switches to float64 only where float32 could err by >1e-4",
    )
    p.add_argument(
        "--memory-limit",
        type=_memory,
        default="2GB",
        help="bound on working memory (does not change results)",
    )
    p.add_argument("--out", default="out/els-sample", help="output folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard a run with different settings found in --out",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_sample)

    c = els_sub.add_parser(
        "calibrate",
        help="calibrate the machine's patch size to a trained network",
        description="Along the network's own 20-step DDIM trajectories, pick per step the patch size whose "
        "machine score has the highest cosine similarity with the network's score; the median over samples "
        "is written to OUT/schedule.json (usable as `els sample --schedule OUT/schedule.json`).",
        formatter_class=_HelpFormatter,
    )
    c.add_argument("--model", required=True, help="folder or model.pt written by `dlscience diffusion train`")
    c.add_argument("--machine", default="els", choices=["els", "ls"], help="machine to calibrate")
    c.add_argument(
        "--candidates",
        type=_labels,
        default=(3, 5, 7, 9, 11, 13, 15, 17),
        help="comma-separated odd patch sizes to try (default: 3,5,7,9,11,13,15,17)",
    )
    c.add_argument("--n-samples", type=int, default=10, help="trajectories (median over them)")
    c.add_argument("--seed", type=int, default=0, help="seed of the noise and labels")
    c.add_argument("--data-dir", default=None, help="folder with the training data (default: as trained)")
    c.add_argument("--out", default="out/els-calibrate", help="output folder")
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    c.set_defaults(func=_run_calibrate)

    k = els_sub.add_parser(
        "compare",
        help="compare a trained network with the ELS, LS and IS machines seed by seed",
        description="Sample the network (20 DDIM steps from t=1) and the machines (19 evaluations from t=0.95) "
        "from identical seeds and labels; per seed Pearson r over all pixels (the paper's metric), r^2 and the "
        "coefficient of determination; medians and IQR in OUT/compare.json, a figure in OUT/compare.png.",
        formatter_class=_HelpFormatter,
    )
    k.add_argument("--model", required=True, help="folder or model.pt written by `dlscience diffusion train`")
    k.add_argument("--schedule", required=True, help="patch-size schedule: JSON file, preset or odd integer")
    _add_schedule_offset(k)
    k.add_argument(
        "--machines",
        default="ELS,LS,IS",
        help="comma-separated subset of ELS, LS, IS to sample next to the network",
    )
    k.add_argument("--n-seeds", type=int, default=100, help="number of seeds")
    k.add_argument("--seed", type=int, default=0, help="first seed")
    k.add_argument("--data-dir", default=None, help="folder with the training data (default: as trained)")
    k.add_argument("--out", default="out/els-compare", help="output folder")
    k.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    k.set_defaults(func=_run_compare)

    diff = sub.add_parser(
        "diffusion",
        help="convolutional diffusion networks (train)",
        description="Convolutional diffusion networks of Kamb & Ganguli 2024 (ResNet, UNet), predicting eps.",
    )
    diff_sub = diff.add_subparsers(dest="command", metavar="COMMAND", required=True)
    t = diff_sub.add_parser(
        "train",
        help="train a ResNet or UNet diffusion model (resumable)",
        description="Train an eps-predicting ResNet or UNet with MSE on eps, t uniform on {0..999}/1000, AdamW "
        "(paper App. C). Checkpoints are written atomically every --checkpoint-every steps; repeat the command "
        "to resume (or raise --steps to train longer).",
        formatter_class=_HelpFormatter,
    )
    t.add_argument("--arch", default="resnet", choices=["resnet", "unet"], help="network")
    t.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, help="training set")
    t.add_argument("--data-dir", default=None, help="folder with the dataset files")
    t.add_argument("--download", action="store_true", help="download MNIST/CIFAR-10 with torchvision")
    t.add_argument("--image-size", type=int, default=None, help="resize (default 32 for (Fashion-)MNIST)")
    t.add_argument("--n-train", type=int, default=None, help="seeded subset of the training set")
    t.add_argument("--conditional", action="store_true", help="class-conditional (learned class embedding)")
    t.add_argument("--padding", default="zeros", choices=["zeros", "circular"], help="convolution padding")
    t.add_argument(
        "--up-projection",
        default="relu",
        choices=["relu", "linear"],
        help="ResNet: 3x3 up-projection followed by a ReLU, or linear into the residual stream as in the "
        "reference code (lower training loss on the cpu preset, but its samples collapse to blobs that the "
        "ELS machine predicts worse: median r 0.64 at 5,400 steps against 0.83-0.84 for the ReLU form at "
        "7,200-12,600 steps, last iterates)",
    )
    t.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="keep an exponential moving average of the weights with this decay per step and save it as the "
        "model (0 = none; 0.999 averages over about 1,000 steps; default: the preset's, 0.999 for the cpu "
        "ResNet, else 0); may be switched on when extending a run",
    )
    t.add_argument(
        "--preset",
        default="cpu",
        choices=["cpu", "paper"],
        help="cpu: width-32 ResNet / 16-32-64 UNet, lr 1e-3, batch 64, 18,000 / 14,000 steps (about 4 h / "
        "100 min on one core; resumable), a weight average (0.999) for the ResNet; paper: width 256 / "
        "64-128-256, lr 1e-4, batch 128, 140,000 steps, no average (GPU)",
    )
    t.add_argument("--width", type=int, default=None, help="override the preset's width")
    t.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    t.add_argument("--lr-decay", type=float, default=0.999965, help="learning-rate factor per step")
    t.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    t.add_argument("--steps", type=int, default=None, help="override the preset's number of optimiser steps")
    t.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    t.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data/noise stream")
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    t.add_argument("--out", default="out/diffusion-train", help="output folder")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.set_defaults(func=_run_train)


def _run_sample(args: argparse.Namespace) -> None:
    from dlscience.diffusion.sample_job import SampleConfig, run_sample_job

    config = SampleConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        n_samples=args.n_samples,
        labels=args.labels,
        conditional=not args.unconditional,
        machine=args.machine,
        padding=args.padding,
        schedule=args.schedule,
        schedule_offset=args.schedule_offset,
        n_train=args.n_train,
        image_size=args.image_size,
        seed=args.seed,
        n_steps=args.steps,
        t_start=args.t_start,
        precision=args.precision,
        memory_limit=args.memory_limit,
    )
    summary = run_sample_job(config, args.out, progress=not args.no_progress, overwrite=args.overwrite)
    print(
        f"wrote {args.out}/samples.png, samples.npz, run.json "
        f"({summary['timings']['sampling_seconds_total']:.0f} s of sampling)"
    )
    for s in summary["samples"]:
        name = s["class_name"] or "unconditional"
        print(
            f"  seed {s['seed']:>3}  {name:<12} nearest training image #{s['nearest_train_index']:<6} "
            f"L2 = {s['nearest_train_distance']:.2f}"
        )


def _run_train(args: argparse.Namespace) -> None:
    from dlscience.diffusion.training import TrainConfig, train

    config = TrainConfig(
        arch=args.arch,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        image_size=args.image_size,
        n_train=args.n_train,
        conditional=args.conditional,
        padding=args.padding,
        up_projection=args.up_projection,
        ema_decay=args.ema_decay,
        preset=args.preset,
        width=args.width,
        lr=args.lr,
        lr_decay=args.lr_decay,
        batch_size=args.batch_size,
        steps=args.steps,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    summary = train(config, args.out, progress=not args.no_progress, device=args.device)
    last = summary["loss_curve"][-1][1] if summary["loss_curve"] else float("nan")
    print(
        f"wrote {args.out}/model.pt, checkpoint.pt, train.json ({summary['steps']} steps, "
        f"{summary['seconds']:.0f} s, final loss {last:.4f})"
    )


def _run_calibrate(args: argparse.Namespace) -> None:
    from dlscience.diffusion.network_jobs import run_calibrate

    data = run_calibrate(
        args.model,
        args.out,
        machine=args.machine,
        candidates=args.candidates,
        n_samples=args.n_samples,
        seed=args.seed,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    print(f"wrote {args.out}/schedule.json: {data['sizes']}")


def _run_compare(args: argparse.Namespace) -> None:
    from dlscience.diffusion.network_jobs import run_compare

    summary = run_compare(
        args.model,
        args.out,
        schedule=args.schedule,
        schedule_offset=args.schedule_offset,
        machines=tuple(m.strip() for m in args.machines.split(",") if m.strip()),
        n_seeds=args.n_seeds,
        seed=args.seed,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    print(f"wrote {args.out}/compare.json, compare.png")
    print(f"{'machine':<8} {'median r':>9} {'IQR r':>15} {'median r^2':>11} {'median R^2':>11}")
    for name, row in summary["summary"].items():
        r = row["r"]
        print(
            f"{name:<8} {r['median']:>9.3f} {r['q25']:>7.3f}-{r['q75']:<7.3f} {row['r2']['median']:>11.3f} "
            f"{row['R2']['median']:>11.3f}"
        )
