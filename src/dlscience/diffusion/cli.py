"""CLI of the diffusion study: ``dlscience els ...`` (analytic machines)."""

from __future__ import annotations

import argparse
import math

from dlscience import cli_options as opt
from dlscience.cli_options import parse_bytes

__all__ = ["register", "parse_bytes"]

MACHINE_NAMES = ("els", "ls", "is")  # canonical lower case for `els sample/calibrate --machine`


ELS_SUMMARY = "equivariant local score machine (Kamb & Ganguli 2024)"
ELS_DESCRIPTION = (
    "Training-free equivariant local score (ELS) machines that predict the samples of convolutional diffusion "
    "models (Kamb & Ganguli, arXiv 2412.20292)."
)
NETWORKS_SUMMARY = "convolutional diffusion networks (train)"
NETWORKS_DESCRIPTION = (
    "Convolutional diffusion networks of Kamb & Ganguli 2024 (ResNet, UNet), predicting eps."
)


def _labels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--labels must be comma-separated integers, got {text!r}") from None


def _machine(choices: tuple[str, ...]):
    """``type=`` for one machine name, either case, returned in lower case."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"expected one of {', '.join(choices)} (either case), got {text!r}"
            )
        return value

    return parse


def _float_in(what: str, ok):
    """``type=`` for a finite float accepted by ``ok``, else a one-line "expected WHAT" usage error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_grid_time = _float_in("a time in (0, 1]", lambda v: 0 < v <= 1)
_ema_decay = _float_in("a decay in [0, 1)", lambda v: 0 <= v < 1)


def _add_schedule_offset(parser: argparse.ArgumentParser) -> None:
    """The ``--schedule-offset`` option shared by ``els sample`` and ``els compare``."""
    parser.add_argument(
        "--schedule-offset",
        type=int,
        default=0,
        choices=[0, 1],
        help="1 reproduces the reference code's off-by-one lookup (each step uses the size calibrated 0.05 later)",
    )


def _add_data_dir(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--data-dir", default=None, help=help)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``els`` and ``diffusion`` subcommand groups to the top-level parser."""
    from dlscience.data import DATASETS
    from dlscience.diffusion.patch_schedule import PRESETS

    els = opt.add_study(sub, "els", help=ELS_SUMMARY, description=ELS_DESCRIPTION)
    p = opt.add_command(
        els,
        "sample",
        help="sample new images with an analytic machine",
        description="Sample images with an analytic machine (boundary-broken ELS by default) using the "
        "paper's deterministic 20-step DDIM sampler, and write a figure (sample | nearest training image | "
        "provenance map), samples.npz, run.json and a checkpoint to --out. An interrupted run resumes "
        "when the same command is repeated.",
        func=_run_sample,
    )
    p.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, help="training set")
    _add_data_dir(
        p,
        "folder with the dataset files (else $DLSCIENCE_DATA, the Debian package's folder, torchvision's "
        "layout); a folder named here must hold them",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download MNIST/Fashion-MNIST/CIFAR-10 with torchvision if missing",
    )
    p.add_argument(
        "--n-samples", type=opt.positive_int, default=8, help="number of samples (seeds SEED, SEED+1, ...)"
    )
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
        type=_machine(MACHINE_NAMES),
        help="els (boundary-broken for zero padding), ls (local score) or is (ideal score); either case",
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
        type=opt.positive_int,
        default=None,
        help="seeded subset of the training set (default: the full training set)",
    )
    p.add_argument(
        "--image-size",
        type=opt.positive_int,
        default=None,
        help="resize images to this side (default 32 for MNIST/Fashion-MNIST, native otherwise)",
    )
    p.add_argument("--steps", type=opt.positive_int, default=20, help="DDIM grid size (t_i = i / STEPS)")
    p.add_argument(
        "--t-start",
        type=_grid_time,
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
        type=opt.memory_size,
        default="2GB",
        help="bound on working memory (does not change results)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (compiled kernel) or cuda[:N]: the matrix-multiply path on a GPU (results agree to ~1e-6)",
    )
    p.add_argument(
        "--prune",
        default="off",
        choices=["off", "auto", "on"],
        help="exact pruning of the interior patch dictionary (CPU kernel; results agree to ~1e-12)",
    )
    opt.add_run_options(p, out="out/els-sample", seed_help="base seed (sample i uses SEED + i)")

    c = opt.add_command(
        els,
        "calibrate",
        help="calibrate the machine's patch size to a trained network",
        description="Along the network's own 20-step DDIM trajectories, pick per step the patch size whose "
        "machine score has the highest cosine similarity with the network's score; the median over samples "
        "is written to OUT/schedule.json (usable as `els sample --schedule OUT/schedule.json`).",
        func=_run_calibrate,
    )
    c.add_argument("--model", required=True, help="folder or model.pt written by `dlscience diffusion train`")
    c.add_argument(
        "--machine", default="els", type=_machine(("els", "ls")), help="machine to calibrate (either case)"
    )
    c.add_argument(
        "--candidates",
        type=opt.int_list(opt.odd_int),
        default=(3, 5, 7, 9, 11, 13, 15, 17),
        help="comma-separated odd patch sizes to try, each once (default: 3,5,7,9,11,13,15,17)",
    )
    c.add_argument("--n-samples", type=opt.positive_int, default=10, help="trajectories (median over them)")
    _add_data_dir(c, "folder with the training data (default: as trained); a folder named here must hold it")
    opt.add_run_options(c, out="out/els-calibrate", seed_help="seed of the noise and labels")

    k = opt.add_command(
        els,
        "compare",
        help="compare a trained network with the ELS, LS and IS machines seed by seed",
        description="Sample the network (20 DDIM steps from t=1) and the machines (19 evaluations from t=0.95) "
        "from identical seeds and labels; per seed Pearson r over all pixels (the paper's metric), r^2 and the "
        "coefficient of determination; medians and IQR in OUT/compare.json, a figure in OUT/compare.png.",
        func=_run_compare,
    )
    k.add_argument("--model", required=True, help="folder or model.pt written by `dlscience diffusion train`")
    k.add_argument("--schedule", required=True, help="patch-size schedule: JSON file, preset or odd integer")
    k.add_argument(
        "--ls-schedule",
        default=None,
        help="a schedule of LS's own (as the paper calibrates each machine: `els calibrate --machine ls`); "
        "default: LS uses --schedule",
    )
    _add_schedule_offset(k)
    k.add_argument(
        "--machines",
        type=opt.choice_list(("ELS", "LS", "IS"), case="upper"),
        default=("ELS", "LS", "IS"),
        help="comma-separated subset of ELS, LS, IS (either case) to sample next to the network",
    )
    k.add_argument("--n-seeds", type=opt.positive_int, default=100, help="number of seeds")
    _add_data_dir(k, "folder with the training data (default: as trained); a folder named here must hold it")
    opt.add_run_options(k, out="out/els-compare", seed_help="first seed")

    diff = opt.add_study(sub, "diffusion", help=NETWORKS_SUMMARY, description=NETWORKS_DESCRIPTION)
    t = opt.add_command(
        diff,
        "train",
        help="train a ResNet or UNet diffusion model (resumable)",
        description="Train an eps-predicting ResNet or UNet with MSE on eps, t uniform on {0..999}/1000, AdamW "
        "(paper App. C). Checkpoints are written atomically every --checkpoint-every steps; repeat the command "
        "to resume (or raise --steps to train longer).",
        func=_run_train,
    )
    t.add_argument("--arch", default="resnet", choices=["resnet", "unet"], help="network")
    t.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, help="training set")
    _add_data_dir(t, "folder with the dataset files; a folder named here must hold them")
    t.add_argument("--download", action="store_true", help="download MNIST/CIFAR-10 with torchvision")
    t.add_argument(
        "--image-size", type=opt.positive_int, default=None, help="resize (default 32 for (Fashion-)MNIST)"
    )
    t.add_argument("--n-train", type=opt.positive_int, default=None, help="seeded subset of the training set")
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
        type=_ema_decay,
        default=None,
        help="keep an exponential moving average of the weights with this decay per step and save it as the "
        "model (0 = none; 0.999 averages over about 1,000 steps; default: the preset's, 0.999 for the cpu "
        "ResNet, else 0); may be switched on when extending a run",
    )
    opt.add_preset(
        t,
        ["cpu", "paper"],
        "cpu",
        "cpu: width-32 ResNet / 16-32-64 UNet, lr 1e-3, batch 64, 18,000 / 14,000 steps (about 4 h / "
        "100 min on one core; resumable), a weight average (0.999) for the ResNet; paper: width 256 / "
        "64-128-256, lr 1e-4, batch 128, 140,000 steps, no average (GPU)",
    )
    t.add_argument("--width", type=opt.positive_int, default=None, help="override the preset's width")
    t.add_argument("--lr", type=opt.positive_float, default=None, help="override the preset's learning rate")
    t.add_argument(
        "--lr-decay", type=opt.positive_float, default=0.999965, help="learning-rate factor per step"
    )
    t.add_argument(
        "--batch-size", type=opt.positive_int, default=None, help="override the preset's batch size"
    )
    t.add_argument(
        "--steps", type=opt.positive_int, default=None, help="override the preset's number of optimiser steps"
    )
    t.add_argument("--checkpoint-every", type=opt.positive_int, default=200, help="steps between checkpoints")
    opt.add_run_options(
        t,
        out="out/diffusion-train",
        seed_help="seed of the initialisation and the data/noise stream",
        device=True,
    )


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
        device=args.device,
        prune=args.prune,
    )
    summary = run_sample_job(config, args.out, **opt.job_options(args))
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
    summary = train(config, args.out, progress=args.progress, device=args.device, overwrite=args.overwrite)
    last = summary["loss_curve"][-1][1] if summary["loss_curve"] else float("nan")
    print(
        f"wrote {args.out}/model.pt, checkpoint.pt, train.json ({summary['steps']} steps, "
        f"{summary['seconds']:.0f} s, final loss {last:.4f})"
    )


def _run_calibrate(args: argparse.Namespace) -> None:
    from dlscience.diffusion.network_jobs import run_calibrate

    options = opt.pick(args, "machine", "candidates", "n_samples", "seed", "data_dir")
    data = run_calibrate(args.model, args.out, **options, **opt.job_options(args))
    print(f"wrote {args.out}/schedule.json: {data['sizes']}")


def _run_compare(args: argparse.Namespace) -> None:
    from dlscience.diffusion.network_jobs import run_compare

    options = opt.pick(
        args, "schedule", "ls_schedule", "schedule_offset", "machines", "n_seeds", "seed", "data_dir"
    )
    summary = run_compare(args.model, args.out, **options, **opt.job_options(args))
    print(f"wrote {args.out}/compare.json, compare.png")
    print(f"{'machine':<8} {'median r':>9} {'IQR r':>15} {'median r^2':>11} {'median R^2':>11}")
    for name, row in summary["summary"].items():
        r = row["r"]
        print(
            f"{name:<8} {r['median']:>9.3f} {r['q25']:>7.3f}-{r['q75']:<7.3f} {row['r2']['median']:>11.3f} "
            f"{row['R2']['median']:>11.3f}"
        )
