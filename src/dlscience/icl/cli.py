"""CLI of the in-context-learning study: ``dlscience icl train | sweep | baselines``.

Only parsing and printing live here: every value is checked at parse time (before any model or data is
built), and the jobs are :func:`~dlscience.icl.training.train`, :func:`~dlscience.icl.sweep.run_sweep` and
:func:`~dlscience.icl.baselines.baseline_errors`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from dlscience import cli_options as opt

__all__ = ["register"]

DESCRIPTION = (
    "Pretrain transformers on in-context linear regression with M tasks and compare them with the Bayes "
    "estimators dMMSE (discrete prior) and ridge (Gaussian prior) (Raventos, Paul, Chen & Ganguli, NeurIPS 2023)."
)


def _task_list(max_tasks: int, *, one: bool = False) -> Callable[[str], object]:
    """``type=`` for ``--tasks``: comma-separated M values (integers, 2^k, inf), each once and at most
    ``max_tasks``; with ``one``, a single M (returned as int or None)."""

    def parse(text: str):
        from dlscience.errors import InputValidationError
        from dlscience.icl.sweep import parse_tasks

        try:
            tasks = parse_tasks(text, max_tasks=max_tasks)
        except InputValidationError as exc:
            message = str(exc).removeprefix("--tasks: ").removeprefix("--tasks ")
            if one and message.startswith("must list"):
                message = f"must be a positive integer, 2^k or inf, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None
        if one:
            if len(tasks) != 1:
                raise argparse.ArgumentTypeError(f"expected one M (an integer, 2^k or inf), got {text!r}")
            return tasks[0]
        return tasks

    return parse


def _training_command(cmds, name: str, *, help: str, description: str, tasks: tuple, func) -> None:
    """Add ``icl train`` or ``icl sweep``: ``--tasks`` (``tasks`` = its type, default and help) and the
    options they share."""
    from dlscience.icl.training import PRESETS

    p = cmds.add_parser(name, help=help, description=description, formatter_class=opt.HelpFormatter)
    p.set_defaults(func=func)
    p.add_argument("--tasks", type=tasks[0], default=tasks[1], help=tasks[2])
    opt.add_preset(
        p,
        tuple(PRESETS),
        "cpu",
        help="named sizes: paper-base (8 layers x 128, batch 256, 500K steps), paper-small (4 x 64, batch 512, "
        "500K steps), cpu (4 x 64, batch 128, 6K steps); the options below override them",
    )
    # the name before --preset, kept working but no longer shown
    p.add_argument(
        "--config", dest="preset", choices=tuple(PRESETS), default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    p.add_argument("--n-dims", type=opt.positive_int, default=8, help="D, input dimension")
    p.add_argument("--n-points", type=opt.positive_int, default=16, help="K, (x, y) pairs per sequence")
    p.add_argument(
        "--noise-variance", type=opt.positive_float, default=0.25, help="sigma^2 of the label noise"
    )
    for option, what in [
        ("--n-layer", "transformer layers"),
        ("--n-embd", "embedding width"),
        ("--n-head", "attention heads"),
        ("--batch-size", "sequences per step"),
        ("--steps", "optimiser steps"),
        ("--eval-samples", "sequences per evaluation set"),
    ]:
        p.add_argument(option, type=opt.positive_int, default=None, help=f"{what} (default: from --preset)")
    p.add_argument(
        "--lr", type=opt.positive_float, default=1e-3, help="peak learning rate of the triangle schedule"
    )
    p.add_argument("--eval-every", type=opt.positive_int, default=500, help="steps between evaluations")
    p.add_argument("--task-seed", type=opt.nonnegative_int, default=0, help="seed of the task pool")
    opt.add_run_options(p, out=None, seed_help="seed of the initialisation and the data stream", device=True)


def _config(args, n_tasks=None):
    from dlscience.icl.training import ICLConfig

    return ICLConfig(
        n_tasks=n_tasks,
        n_dims=args.n_dims,
        n_points=args.n_points,
        noise_variance=args.noise_variance,
        preset=args.preset,
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
    from dlscience.icl.baselines import MAX_BASELINE_TASKS
    from dlscience.icl.tasks import MAX_TASKS

    summary = "in-context linear regression and task diversity (Raventos et al. 2023)"
    cmds = opt.add_study(sub, "icl", help=summary, description=DESCRIPTION)
    _training_command(
        cmds,
        "train",
        help="pretrain one transformer",
        description="Pretrain a GPT-2-style transformer on sequences whose tasks come from a fixed pool of M. "
        "Evaluates periodically on the pool and on N(0, I) tasks next to ridge and dMMSE. Writes "
        "OUT/checkpoint.pt, model.pt, log.json and manifest.json; repeat the command to resume.",
        tasks=(
            _task_list(MAX_TASKS, one=True),
            None,
            "M, pool size: an integer up to 2^20, 2^k, or inf (default inf)",
        ),
        func=_run_train,
    )
    _training_command(
        cmds,
        "sweep",
        help="one transformer per M; figure, midpoint M_mid and (with --budget-pair) the paper's threshold",
        description="Train one transformer per M (each resumable; finished ones are reused), then write "
        "OUT/sweep.png (error vs M for the transformer, dMMSE and ridge on both task distributions, and the "
        "transformer's distance to each), sweep_training.png (the distances and M_mid at every evaluation), "
        "table.md and sweep.json with the midpoint M_mid (where the transformer is equally far from dMMSE and "
        "ridge: budget-dependent, not the paper's threshold). With --budget-pair every finite M is trained "
        "again at twice the batch or steps, and the paper's threshold is where the two budgets' "
        "Delta(PT, ridge) curves stop separating.",
        tasks=(
            _task_list(MAX_TASKS),
            "1,4,16,64,256,1024,4096,16384,inf",
            "comma-separated M values, each once (integers up to 2^20, 2^k, inf)",
        ),
        func=_run_sweep,
    )
    sweep = cmds.choices["sweep"]
    sweep.add_argument(
        "--budget-pair",
        choices=("batch", "steps"),
        default=None,
        help="also train each finite M at 2x the batch size or 2x the steps, for the paper's threshold rule",
    )
    sweep.add_argument(
        "--pair-tol",
        type=opt.nonnegative_float,
        default=0.0,
        help="gaps between the two budgets' Delta(PT, ridge) up to this count as equal (evaluation noise)",
    )
    sweep.add_argument(
        "--pair-tasks",
        type=_task_list(MAX_TASKS),
        default=None,
        help="with --budget-pair: the finite M (from --tasks) that get the doubled budget (default: all); "
        "spend the doubled runs around the threshold",
    )
    sweep.add_argument(
        "--final-eval-samples",
        type=opt.positive_int,
        default=1 << 16,
        help="fresh sequences per distribution on which every finished model is evaluated once more; the "
        "table, M_mid and the paper's threshold use this evaluation (cached in final_eval.json)",
    )
    p = cmds.add_parser(
        "baselines",
        help="ridge's per-position Bayes risk and dMMSE's error (no training)",
        description="Print ridge's per-position Bayes risk / D (closed form given X, averaged over X) and, per "
        "M, the mean error of dMMSE and ridge on both task distributions. dMMSE weighs all M pool tasks at "
        "every position of every sequence, so its time grows linearly with M: M is at most 2^16 (minutes with "
        "4096 sequences).",
        formatter_class=opt.HelpFormatter,
    )
    p.add_argument(
        "--tasks",
        type=_task_list(MAX_BASELINE_TASKS),
        default="4,64,1024",
        help="comma-separated M values, each once (integers up to 2^16, 2^k, inf)",
    )
    p.add_argument("--n-dims", type=opt.positive_int, default=8, help="D")
    p.add_argument("--n-points", type=opt.positive_int, default=16, help="K")
    p.add_argument("--noise-variance", type=opt.positive_float, default=0.25, help="sigma^2")
    p.add_argument("--samples", type=opt.positive_int, default=4096, help="sequences per estimate")
    opt.add_seed(p, help="seed of the evaluation sequences and the pool")
    p.set_defaults(func=_run_baselines)


def _run_train(args: argparse.Namespace) -> None:
    from dlscience.icl.training import train

    log = train(_config(args, args.tasks), args.out, device=args.device, **opt.job_options(args))
    final = log["evals"][-1]
    for dist in ("true", "pretrain"):
        errs = ", ".join(f"{k} {v:.4f}" for k, v in final[dist]["mean_error"].items())
        print(f"{dist:>8}: error/D {errs}")
    print(f"wrote {args.out}/model.pt, log.json")


def _run_sweep(args: argparse.Namespace) -> None:
    from dlscience.icl.sweep import run_sweep

    summary = run_sweep(
        args.tasks,
        _config(args),
        args.out,
        **opt.job_options(args),
        budget_pair=args.budget_pair,
        pair_tol=args.pair_tol,
        final_eval_samples=args.final_eval_samples,
        pair_tasks=args.pair_tasks,
        device=args.device,
    )
    print(Path(args.out, "table.md").read_text())
    mid = summary["threshold"]
    print(f"M_mid (midpoint, not the paper's threshold): {_fmt_threshold(mid)}")
    paper = summary["paper_threshold"]
    if paper is not None:
        print(f"paper's threshold (batch/steps x2, {paper['budget_pair']}): {_fmt_threshold(paper)}")
    print(f"wrote {args.out}/sweep.png, sweep_training.png, table.md, sweep.json, final_eval.json")


def _fmt_threshold(est: dict) -> str:
    return f"2^{est['log2_M_star']:.2f}" if est["M_star"] is not None else est["status"]


def _run_baselines(args: argparse.Namespace) -> None:
    from dlscience.icl.baselines import baseline_errors, format_baselines

    a = args
    print(
        format_baselines(baseline_errors(a.tasks, a.n_dims, a.n_points, a.noise_variance, a.samples, a.seed))
    )
