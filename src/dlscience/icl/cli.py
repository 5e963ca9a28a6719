"""CLI of the in-context-learning study: ``dlscience icl train | sweep | baselines``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dlscience.cli import HelpFormatter
from dlscience.errors import InputValidationError

__all__ = ["register"]


def _tasks_one(text: str):
    from dlscience.errors import InputValidationError
    from dlscience.icl.sweep import parse_tasks

    try:
        (m,) = parse_tasks(text)
    except (InputValidationError, ValueError):
        raise argparse.ArgumentTypeError(
            f"--tasks must be a positive integer, 2^k or inf, got {text!r}"
        ) from None
    return m


def _common(p: argparse.ArgumentParser) -> None:
    from dlscience.icl.training import CONFIGS

    p.add_argument(
        "--config",
        default="cpu",
        choices=tuple(CONFIGS),
        help="named sizes: paper-base (8 layers x 128, batch 256, 500K steps), paper-small (4 x 64, batch 512, "
        "500K steps), cpu (4 x 64, batch 128, 6K steps); the options below override them",
    )
    p.add_argument("--n-dims", type=int, default=8, help="D, input dimension")
    p.add_argument("--n-points", type=int, default=16, help="K, (x, y) pairs per sequence")
    p.add_argument("--noise-variance", type=float, default=0.25, help="sigma^2 of the label noise")
    p.add_argument("--n-layer", type=int, default=None, help="transformer layers (default: from --config)")
    p.add_argument("--n-embd", type=int, default=None, help="embedding width (default: from --config)")
    p.add_argument("--n-head", type=int, default=None, help="attention heads (default: from --config)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: from --config)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: from --config)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the triangle schedule")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations")
    p.add_argument(
        "--eval-samples", type=int, default=None, help="sequences per evaluation set (default: from --config)"
    )
    p.add_argument("--task-seed", type=int, default=0, help="seed of the task pool")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data stream")
    p.add_argument("--out", required=True, help="output folder (resumable)")


def _config(args, n_tasks=None):
    from dlscience.icl.training import ICLConfig

    return ICLConfig(
        n_tasks=n_tasks,
        n_dims=args.n_dims,
        n_points=args.n_points,
        noise_variance=args.noise_variance,
        config=args.config,
        n_layer=args.n_layer,
        n_embd=args.n_embd,
        n_head=args.n_head,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        eval_every=args.eval_every,
        eval_samples=args.eval_samples,
        task_seed=args.task_seed,
        seed=args.seed,
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``icl`` subcommand group to the top-level parser."""
    icl = sub.add_parser(
        "icl",
        help="in-context linear regression and task diversity (Raventos et al. 2023)",
        description="Pretrain transformers on in-context linear regression with M tasks and compare them with "
        "the Bayes estimators dMMSE (discrete prior) and ridge (Gaussian prior) (Raventos, Paul, Chen & "
        "Ganguli, NeurIPS 2023).",
    )
    cmds = icl.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = cmds.add_parser(
        "train",
        help="pretrain one transformer",
        description="Pretrain a GPT-2-style transformer on sequences whose tasks come from a fixed pool of M. "
        "Evaluates periodically on the pool and on N(0, I) tasks next to ridge and dMMSE. Writes "
        "OUT/checkpoint.pt, model.pt and log.json; repeat the command to resume.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--tasks", type=_tasks_one, default=None, help="M, pool size: an integer, 2^k, or inf (default inf)"
    )
    _common(p)
    p.set_defaults(func=_run_train)
    p = cmds.add_parser(
        "sweep",
        help="one transformer per M; figure and threshold M*",
        description="Train one transformer per M (each resumable; finished ones are reused), then write "
        "OUT/sweep.png (error vs M for the transformer, dMMSE and ridge on both task distributions, and the "
        "transformer's distance to each), sweep_training.png (the distances and M* at every evaluation, to show "
        "whether the threshold still moves when training stops), table.md and sweep.json with the estimated "
        "threshold M*.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--tasks",
        default="1,4,16,64,256,1024,4096,16384,inf",
        help="comma-separated M values (integers, 2^k, inf)",
    )
    _common(p)
    p.set_defaults(func=_run_sweep)
    p = cmds.add_parser(
        "baselines",
        help="ridge's per-position Bayes risk and dMMSE's error (no training)",
        description="Print ridge's per-position Bayes risk / D (closed form given X, averaged over X) and, per "
        "M, the mean error of dMMSE and ridge on both task distributions.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--tasks", default="4,64,1024", help="comma-separated M values")
    p.add_argument("--n-dims", type=int, default=8, help="D")
    p.add_argument("--n-points", type=int, default=16, help="K")
    p.add_argument("--noise-variance", type=float, default=0.25, help="sigma^2")
    p.add_argument("--samples", type=int, default=4096, help="sequences per estimate")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation sequences and the pool")
    p.set_defaults(func=_run_baselines)


def _run_train(args: argparse.Namespace) -> None:
    from dlscience.icl.training import train

    log = train(_config(args, args.tasks), args.out)
    final = log["evals"][-1]
    for dist in ("true", "pretrain"):
        errs = ", ".join(f"{k} {v:.4f}" for k, v in final[dist]["mean_error"].items())
        print(f"{dist:>8}: error/D {errs}")
    print(f"wrote {args.out}/model.pt, log.json")


def _run_sweep(args: argparse.Namespace) -> None:
    from dlscience.icl.sweep import parse_tasks, run_sweep

    summary = run_sweep(parse_tasks(args.tasks), _config(args), args.out)
    print(Path(args.out, "table.md").read_text())
    print(
        f"wrote {args.out}/sweep.png, sweep_training.png, table.md, sweep.json ({summary['threshold']['status']})"
    )


def _run_baselines(args: argparse.Namespace) -> None:
    from dlscience.icl.metrics import eval_batches, evaluate
    from dlscience.icl.ridge import ridge_risk
    from dlscience.icl.sweep import parse_tasks
    from dlscience.icl.tasks import NoisyLinearRegression
    from dlscience.icl.training import baselines

    tasks = parse_tasks(args.tasks)
    NoisyLinearRegression(args.n_dims, args.n_points, args.noise_variance)  # validate before printing
    if args.samples < 1:
        raise InputValidationError(f"--samples must be >= 1, got {args.samples}")
    risk = ridge_risk(args.n_dims, args.n_points, args.noise_variance, seed=args.seed)
    print("ridge Bayes risk / D per position: " + " ".join(f"{v:.3f}" for v in risk.tolist()))
    print(f"mean {risk.mean():.3f}\n")
    print(
        "mean error / D against the noiseless target; true: tasks ~ N(0, I); pretrain: tasks from the pool of M"
    )
    print(f"{'M':>8} {'dMMSE true':>11} {'dMMSE pretrain':>15} {'ridge true':>11} {'ridge pretrain':>15}")
    for m in tasks:
        task = NoisyLinearRegression(args.n_dims, args.n_points, args.noise_variance, m, task_seed=args.seed)
        est = baselines(task)
        row = {}
        for i, dist in enumerate(("true", "pretrain")):
            ev, _ = evaluate(est, eval_batches(task, dist, args.samples, seed=args.seed + 1 + i), dist)
            row[dist] = ev.mean_error
        dm = {d: (f"{row[d]['dmmse']:.3f}" if "dmmse" in row[d] else "-") for d in row}
        print(
            f"{'inf' if m is None else m:>8} {dm['true']:>11} {dm['pretrain']:>15} {row['true']['ridge']:>11.3f} "
            f"{row['pretrain']['ridge']:>15.3f}"
        )
