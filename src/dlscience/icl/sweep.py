"""Task-diversity sweep: one transformer per pool size M, next to dMMSE and ridge (Raventos et al. 2023,
Fig. 2), and an estimate of the threshold M*.

Threshold rule used here (stated in every output): on the "true" task distribution, let
r(M) = log(Delta(PT, dMMSE) / Delta(PT, ridge)). Below the threshold the pretrained transformer (PT) sits near
dMMSE (r < 0); above it, near ridge (r > 0). M* is where r crosses 0, interpolated linearly in log2 M between
the grid points around the first crossing. (The paper locates the threshold from where Delta(PT, ridge)
curves for different batch sizes or step counts cross, which needs several runs per M; with one run per M
the crossing of the two distances is the natural single-run analogue.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

from dlscience.errors import InputValidationError
from dlscience.icl.tasks import MAX_TASKS
from dlscience.icl.training import ICLConfig, train
from dlscience.results import atomic_write
from dlscience.runs import RunFolder, RunInterrupted

__all__ = ["parse_tasks", "run_sweep", "threshold", "threshold_by_step"]

#: The summary files of a sweep (beside its ``M=...`` run folders).
SUMMARY = ("sweep.json", "sweep.png", "sweep_training.png", "table.md")

#: Settings that may change between sessions of a sweep (evaluation and checkpoint cadence).
_NOT_IDENTITY = ("n_tasks", "checkpoint_every", "eval_every", "eval_samples")

#: Why the number of tasks is bounded (dMMSE's cost), in the refusal of a larger M.
TOO_MANY_TASKS = (
    "dMMSE weighs all M pool tasks at every position of every evaluation sequence, so its time and memory grow "
    "linearly with M"
)

RULE = "M* where log(Delta(PT,dMMSE)/Delta(PT,ridge)) on the true distribution crosses 0 (linear in log2 M)"


def parse_tasks(text: str, *, max_tasks: int | None = MAX_TASKS) -> list[int | None]:
    """``"1,4,16,inf"`` -> [1, 4, 16, None]; powers may be written ``2^10``.

    Parameters
    ----------
    text : str
        Comma-separated pool sizes.
    max_tasks : int or None
        The largest M accepted (default :data:`~dlscience.icl.tasks.MAX_TASKS`; None: no bound).

    Returns
    -------
    list of int or None
        In the order given (None = infinity).

    Raises
    ------
    InputValidationError
        On anything else than positive integers, ``2^k`` or ``inf``; on an M above ``max_tasks``; on an M given
        twice (``4,2^2``: the same run would be trained twice).
    """
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        try:
            if part in ("inf", "infinity", "∞"):
                out.append(None)
                continue
            if part.startswith("2^"):
                k = int(part[2:])
                if k < 0:
                    raise ValueError
                value = 2 ** min(k, 64)  # a huge exponent is refused below, without computing 2^k
            else:
                value = int(part)
            if value < 1:
                raise ValueError
        except ValueError:
            raise InputValidationError(
                f"--tasks must list positive integers, 2^k or inf (e.g. 1,4,16,2^10,inf), got {part!r}"
            ) from None
        if max_tasks is not None and value > max_tasks:
            raise InputValidationError(
                f"--tasks: M = {part} is above {_fmt_m(max_tasks)}, the largest pool accepted here "
                f"({TOO_MANY_TASKS}); use inf for a fresh task per sequence"
            )
        out.append(value)
    seen = [m for i, m in enumerate(out) if m in out[:i]]
    if seen:
        raise InputValidationError(
            f"--tasks gives M = {_fmt_m(seen[0])} more than once in {text!r}; list each M once"
        )
    return out


def threshold(
    ms: list[int], d_dmmse: list[float], d_ridge: list[float], n_sequences: int | None = None
) -> dict:
    """M* from finite M values and their Deltas on the true distribution (rule in the module docstring).

    Parameters
    ----------
    ms : list of int
        Increasing pool sizes.
    d_dmmse, d_ridge : list of float
        Delta(PT, dMMSE) and Delta(PT, ridge) on the true distribution, one per M (positive).
    n_sequences : int, optional
        Training sequences per run (steps x batch). When given and the threshold is crossed, the result also
        holds ``sequences_per_task_at_M_star`` = n_sequences / M*: the paper finds that below the threshold
        more sequences per task move the PT toward dMMSE, so thresholds from different training budgets are
        best compared in these units.

    Returns
    -------
    dict
        ``{"M_star": float or None, "log2_M_star": ..., "status": "crossed" | "above grid" | "below grid"}``.
    """
    r = [math.log(a / b) for a, b in zip(d_dmmse, d_ridge, strict=True)]
    for i in range(1, len(ms)):
        if r[i - 1] < 0 <= r[i]:
            x0, x1 = math.log2(ms[i - 1]), math.log2(ms[i])
            x = x0 + (x1 - x0) * (-r[i - 1]) / (r[i] - r[i - 1])
            est = {"M_star": 2**x, "log2_M_star": x, "status": "crossed", "rule": RULE}
            if n_sequences is not None:
                est["sequences_per_task_at_M_star"] = n_sequences / 2**x
            return est
    status = "below grid" if r and r[0] >= 0 else "above grid"
    return {"M_star": None, "log2_M_star": None, "status": status, "rule": RULE}


def run_sweep(
    tasks: list[int | None],
    base: ICLConfig,
    out: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Train one transformer per M (each resumable, finished ones reused) and write ``sweep.json``,
    ``sweep.png``, ``sweep_training.png`` (:func:`threshold_by_step`) and ``table.md`` to ``out``.

    Parameters
    ----------
    tasks : list of int or None
        Pool sizes (None = infinity), each once.
    base : ICLConfig
        Settings shared by every run (its ``n_tasks`` is replaced).
    out : path
        The sweep's run folder (:class:`~dlscience.runs.RunFolder`, command ``icl sweep``): one ``icl train``
        run folder per M (``M=16``, ``M=inf``) plus the summary files. A sweep of the same settings is resumed
        whatever its list of M (runs of other M are kept and reused when listed again); a sweep folder written
        before run manifests is adopted (each run's checkpoint checks its settings).
    progress : bool
        Progress bars.
    overwrite : bool
        Replace a sweep of other settings in ``out`` (removing every file it wrote) instead of refusing it.

    Returns
    -------
    dict
        The content of ``sweep.json``: per M the final errors and Deltas on both distributions, and M*.

    Raises
    ------
    UserError
        Bad settings, an M given twice, or an ``out`` holding other results (see :func:`train`).
    RunInterrupted
        On SIGINT/SIGTERM; the message says what was saved.
    """
    tasks = list(tasks)
    if len(set(tasks)) != len(tasks):
        raise InputValidationError(f"--tasks gives an M more than once: {tasks}; list each M once")
    resolved = base.resolved()
    for m in tasks:
        replace(resolved, n_tasks=m).resolved()  # every M is valid before anything is written
    out = Path(out)
    names = [_run_name(m) for m in tasks]
    present = sorted(p.name for p in out.glob("M=*") if p.is_dir()) if out.is_dir() else []
    identity = {k: v for k, v in asdict(resolved).items() if k not in _NOT_IDENTITY}
    settings = {**asdict(resolved), "n_tasks": [_fmt_m(m) for m in tasks]}
    run = RunFolder(
        out,
        "icl sweep",
        settings,
        identity=identity,
        overwrite=overwrite,
        outputs=SUMMARY + tuple(present) + tuple(names),
        legacy=SUMMARY + tuple(present),
        adopt_legacy=True,
    )
    rows = []
    curves = {}
    with run:
        if run.finished:  # finished for another list of M: not finished until this list is
            run.manifest["finished"] = False
            run.save_state()
        for m, name in zip(tasks, names, strict=True):
            try:
                log = train(replace(base, n_tasks=m), run.path(name), progress=progress, overwrite=overwrite)
            except RunInterrupted as exc:
                done = [f"M={_fmt_m(r['M'])}" for r in rows]
                kept = f"; the finished runs ({', '.join(done)}) are kept in {out}" if done else ""
                raise RunInterrupted(f"{exc}{kept}") from None
            curves[m] = log["evals"]
            final = log["evals"][-1]
            rows.append(
                {
                    "M": m,
                    "steps": log["steps"],
                    "seconds": log["seconds"],
                    "mean_error": {d: final[d]["mean_error"] for d in ("true", "pretrain")},
                    "delta": {d: final[d]["delta"] for d in ("true", "pretrain")},
                }
            )
        finite = [r for r in rows if r["M"] is not None]
        est = threshold(
            [r["M"] for r in finite],
            [r["delta"]["true"]["transformer|dmmse"] for r in finite],
            [r["delta"]["true"]["transformer|ridge"] for r in finite],
            n_sequences=resolved.steps * resolved.batch_size,
        )
        by_step = threshold_by_step({m: ev for m, ev in curves.items() if m is not None})
        summary = {
            "settings": {**asdict(resolved), "n_tasks": "per row"},
            "rows": rows,
            "threshold": est,
            "threshold_by_step": by_step,
        }
        run.write_json("sweep.json", summary)
        table = _table(rows, est).encode()
        atomic_write(run.path("table.md"), lambda f: f.write(table))
        run.save_figure("sweep.png", _figure(rows, est))
        run.save_figure("sweep_training.png", _training_figure(curves, by_step))
        run.finish()
    return summary


def _run_name(m: int | None) -> str:
    """The sub-folder of the run of pool size ``m``: ``M=16``, ``M=inf``."""
    return f"M={'inf' if m is None else m}"


def threshold_by_step(evals: dict[int, list[dict]]) -> list[dict]:
    """M* (same rule as :func:`threshold`) at every evaluation step shared by all finite-M runs, to show
    whether the threshold is still moving when training stops.

    Parameters
    ----------
    evals : dict
        M -> the ``evals`` list of that run's training log (each entry ``{"step", "true": {"delta": ...}}``).

    Returns
    -------
    list of dict
        ``{"step", "log2_M_star" (float or None), "status"}`` in step order; empty with fewer than two M.
    """
    ms = sorted(evals)
    if len(ms) < 2:
        return []
    per_m = [{e["step"]: e["true"]["delta"] for e in evals[m]} for m in ms]
    steps = sorted(set.intersection(*(set(d) for d in per_m)))
    out = []
    for step in steps:
        d_dmmse = [d[step]["transformer|dmmse"] for d in per_m]
        d_ridge = [d[step]["transformer|ridge"] for d in per_m]
        if min(d_dmmse + d_ridge) <= 0:
            continue
        est = threshold(ms, d_dmmse, d_ridge)
        out.append({"step": step, "log2_M_star": est["log2_M_star"], "status": est["status"]})
    return out


def _training_figure(curves, by_step):
    """Three panels over training steps: r(M) = log(Delta(PT,dMMSE) / Delta(PT,ridge)) on true tasks, one line
    per M; log2 M* at each evaluation; Delta(PT, dMMSE) on the pretraining pool (how far memorisation got)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    finite = sorted(m for m in curves if m is not None)
    colors = plt.cm.viridis([i / max(len(finite) - 1, 1) for i in range(len(finite))])
    for m, c in zip(finite, colors, strict=True):
        ev = [e for e in curves[m] if e["true"]["delta"]["transformer|ridge"] > 0]
        steps = [e["step"] for e in ev]
        r = [
            math.log(
                max(e["true"]["delta"]["transformer|dmmse"], 1e-12) / e["true"]["delta"]["transformer|ridge"]
            )
            for e in ev
        ]
        axes[0].plot(steps, r, "-", color=c, label=f"M = {_fmt_m(m)}")
        axes[2].semilogy(
            steps, [max(e["pretrain"]["delta"]["transformer|dmmse"], 1e-6) for e in ev], "-", color=c
        )
    axes[0].axhline(0, color="gray", lw=1)
    axes[0].set_title("log(Delta(PT,dMMSE) / Delta(PT,ridge)), true tasks\n< 0: nearer dMMSE", fontsize=9)
    axes[0].legend(fontsize=7)
    pts = [(b["step"], b["log2_M_star"]) for b in by_step if b["log2_M_star"] is not None]
    if pts:
        axes[1].plot(*zip(*pts, strict=True), "o-", color="C3")
    axes[1].set_title("estimated log2 M* at each evaluation", fontsize=9)
    axes[1].set_ylabel("log2 M*")
    axes[2].set_title(
        "Delta(PT, dMMSE) on the pretraining pool\n(falls as the pool is memorised)", fontsize=9
    )
    for a in axes:
        a.set_xlabel("training step")
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _fmt_m(m):
    return "inf" if m is None else (f"2^{int(math.log2(m))}" if m & (m - 1) == 0 and m > 1 else str(m))


def _table(rows, est) -> str:
    lines = [
        "| M | PT true | dMMSE true | ridge true | PT pretrain | dMMSE pretrain | ridge pretrain | "
        "Delta(PT,dMMSE) true | Delta(PT,ridge) true |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        e, d = r["mean_error"], r["delta"]["true"]
        dm = {
            dist: (f"{e[dist]['dmmse']:.3f}" if "dmmse" in e[dist] else "-") for dist in ("true", "pretrain")
        }
        lines.append(
            f"| {_fmt_m(r['M'])} | {e['true']['transformer']:.3f} | {dm['true']} | {e['true']['ridge']:.3f} | "
            f"{e['pretrain']['transformer']:.3f} | {dm['pretrain']} | {e['pretrain']['ridge']:.3f} | "
            f"{(format(d['transformer|dmmse'], '.4f') if 'transformer|dmmse' in d else '-')} | "
            f"{d['transformer|ridge']:.4f} |"
        )
    star = "not crossed (" + est["status"] + ")" if est["M_star"] is None else f"2^{est['log2_M_star']:.2f}"
    lines += [
        "",
        f"Errors are per-position means / D against the noiseless target. M* = {star}; rule: {RULE}.",
    ]
    if "sequences_per_task_at_M_star" in est:
        lines += [
            "",
            f"Training sequences per task at M* (steps x batch / M*): {est['sequences_per_task_at_M_star']:,.0f}.",
        ]
    inf = [r for r in rows if r["M"] is None]
    if inf:
        pt, ridge = inf[0]["mean_error"]["true"]["transformer"], inf[0]["mean_error"]["true"]["ridge"]
        if pt > 1.5 * ridge:
            lines += [
                "",
                f"Warning: at M = inf the transformer's error ({pt:.3f}) is far above ridge's ({ridge:.3f}): the "
                "models are undertrained, so M* says little; train longer (--steps).",
            ]
    return "\n".join(lines) + "\n"


def _figure(rows, est):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [r for r in rows if r["M"] is not None]
    xs = [math.log2(r["M"]) for r in finite]
    x_inf = (max(xs) + 2) if xs else 0
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, dist in zip(axes[:2], ("true", "pretrain"), strict=True):
        pt = [r["mean_error"][dist]["transformer"] for r in finite]
        ax.plot(xs, pt, "o-", color="C0", label="transformer")
        ax.plot(xs, [r["mean_error"][dist]["dmmse"] for r in finite], "s--", color="C1", label="dMMSE")
        ax.plot(xs, [r["mean_error"][dist]["ridge"] for r in finite], ":", color="C2", label="ridge")
        for r in rows:
            if r["M"] is None:
                ax.plot([x_inf], [r["mean_error"][dist]["transformer"]], "o", color="C0", mfc="none")
                ax.plot([x_inf], [r["mean_error"][dist]["ridge"]], "_", color="C2", ms=14)
        ax.set_title(
            f"tasks from the {'Gaussian (true)' if dist == 'true' else 'pretraining pool'}", fontsize=9
        )
        ax.set_ylabel("error / D (mean over positions)")
    ax = axes[2]
    for other, style, color in (("dmmse", "s-", "C1"), ("ridge", "o-", "C2")):
        label = f"Delta(PT, {'dMMSE' if other == 'dmmse' else other})"
        ax.semilogy(
            xs, [r["delta"]["true"][f"transformer|{other}"] for r in finite], style, color=color, label=label
        )
    for r in rows:
        if r["M"] is None:
            ax.semilogy([x_inf], [r["delta"]["true"]["transformer|ridge"]], "o", color="C2", mfc="none")
    if est["log2_M_star"] is not None:
        for a in axes:
            a.axvline(est["log2_M_star"], color="gray", ls=":", lw=1)
    ax.set_title("distance of the transformer to each estimator (true tasks)", fontsize=9)
    has_inf = any(r["M"] is None for r in rows)
    ticks = xs + ([x_inf] if has_inf else [])
    labels = [_fmt_m(r["M"]) for r in finite] + (["inf"] if has_inf else [])
    for a in axes:
        a.set_xticks(ticks, labels, fontsize=7)
        a.set_xlabel("number of pretraining tasks M")
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig
