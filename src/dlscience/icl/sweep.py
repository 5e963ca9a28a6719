"""Task-diversity sweep: one transformer per pool size M, next to dMMSE and ridge (Raventos et al. 2023,
Fig. 2), the midpoint M_mid and, with two training budgets per M, the paper's threshold.

Two quantities, named apart because they measure different things:

* **The paper's threshold** (:func:`paper_threshold`; Raventos et al. 2023, Sec. 4 and Fig. 4): train every M
  at two budgets (batch B and 2B, or T and 2T steps). Below the threshold the larger budget pulls the
  pretrained transformer (PT) toward dMMSE, so its Delta^True(PT, ridge) is larger; above it the two curves
  coincide. The threshold is where the gap Delta_2x - Delta_1x falls to zero, interpolated linearly in
  log2 M. ``icl sweep --budget-pair batch|steps`` measures it.
* **The midpoint M_mid** (:func:`threshold`, the key ``"threshold"`` in ``sweep.json``): with one run per M,
  the M where the PT is equally far from dMMSE and ridge on true tasks, r(M) = log(Delta(PT, dMMSE) /
  Delta(PT, ridge)) = 0 (linear in log2 M). It depends on the training budget and is NOT the paper's
  threshold; the two are not comparable through "sequences per task" (the paper's Fig. 4 finds the same
  threshold with 4x the sequences).
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

from dlscience.errors import InputValidationError
from dlscience.icl.baselines import bayes_estimators
from dlscience.icl.metrics import eval_batches, evaluate
from dlscience.icl.tasks import DISTRIBUTIONS, MAX_TASKS
from dlscience.icl.training import ICLConfig, load_transformer, train
from dlscience.results import atomic_write, read_json
from dlscience.runs import RunFolder, RunInterrupted

__all__ = ["parse_tasks", "run_sweep", "threshold", "paper_threshold", "threshold_by_step", "BUDGET_PAIRS"]

#: How the second run of each M doubles the budget (``--budget-pair``).
BUDGET_PAIRS = ("batch", "steps")

#: The summary files of a sweep (beside its ``M=...`` run folders).
SUMMARY = ("sweep.json", "sweep.png", "sweep_training.png", "table.md", "final_eval.json")

#: Sequences in the final evaluation of every trained model (the paper evaluates on 2^16 or more).
FINAL_EVAL_SAMPLES = 1 << 16

#: Settings that may change between sessions of a sweep (evaluation and checkpoint cadence).
_NOT_IDENTITY = ("n_tasks", "checkpoint_every", "eval_every", "eval_samples")

#: Why the number of tasks is bounded (dMMSE's cost), in the refusal of a larger M.
TOO_MANY_TASKS = (
    "dMMSE weighs all M pool tasks at every position of every evaluation sequence, so its time and memory grow "
    "linearly with M"
)

RULE = (
    "M_mid (midpoint, not the paper's threshold): where log(Delta(PT,dMMSE)/Delta(PT,ridge)) on the true "
    "distribution crosses 0 (linear in log2 M)"
)
PAPER_RULE = (
    "paper's threshold: the M where Delta^True(PT, ridge) of the doubled budget stops exceeding that of the base "
    "budget by more than tol (gap crosses 0, linear in log2 M)"
)


def paper_threshold(
    ms: list[int], d_ridge: list[float], d_ridge_double: list[float], *, tol: float = 0.0
) -> dict:
    """The paper's task-diversity threshold from two training budgets (Raventos et al. 2023, Sec. 4, Fig. 4).

    Parameters
    ----------
    ms : list of int
        Increasing finite pool sizes M.
    d_ridge, d_ridge_double : list of float
        Delta^True(PT, ridge) per M for the base budget and the doubled one (batch 2B or 2T steps).
    tol : float >= 0
        Gaps up to ``tol`` count as "the curves coincide" (evaluation noise).

    Returns
    -------
    dict
        ``{"M_star", "log2_M_star", "status", "gaps", "rule"}``; ``status`` is ``"crossed"``, ``"above grid"``
        (still separated at the largest M) or ``"below grid"`` (never separated, or already together at the
        smallest M).

    Raises
    ------
    InputValidationError
        Lists of different lengths, M not increasing, or tol < 0.
    """
    if not len(ms) == len(d_ridge) == len(d_ridge_double) or any(
        b <= a for a, b in zip(ms, ms[1:], strict=False)
    ):
        raise InputValidationError("ms must increase and match the two Delta lists in length")
    if tol < 0:
        raise InputValidationError(f"tol must be >= 0, got {tol}")
    gaps = [b - a - tol for a, b in zip(d_ridge, d_ridge_double, strict=True)]
    result = {"M_star": None, "log2_M_star": None, "gaps": gaps, "rule": PAPER_RULE, "tol": tol}
    if not gaps or gaps[0] <= 0:
        return {**result, "status": "below grid"}
    for i in range(1, len(ms)):
        if gaps[i - 1] > 0 >= gaps[i]:
            x0, x1 = math.log2(ms[i - 1]), math.log2(ms[i])
            x = x0 + (x1 - x0) * gaps[i - 1] / (gaps[i - 1] - gaps[i])
            return {**result, "M_star": 2**x, "log2_M_star": x, "status": "crossed"}
    return {**result, "status": "above grid"}


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


def threshold(ms: list[int], d_dmmse: list[float], d_ridge: list[float]) -> dict:
    """The midpoint M_mid from finite M values and their Deltas on the true distribution (module docstring):
    budget-dependent, and not the paper's threshold (:func:`paper_threshold`).

    Parameters
    ----------
    ms : list of int
        Increasing pool sizes.
    d_dmmse, d_ridge : list of float
        Delta(PT, dMMSE) and Delta(PT, ridge) on the true distribution, one per M (positive).

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
            return {"M_star": 2**x, "log2_M_star": x, "status": "crossed", "rule": RULE}
    status = "below grid" if r and r[0] >= 0 else "above grid"
    return {"M_star": None, "log2_M_star": None, "status": status, "rule": RULE}


def run_sweep(
    tasks: list[int | None],
    base: ICLConfig,
    out: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    budget_pair: str | None = None,
    pair_tol: float = 0.0,
    final_eval_samples: int = FINAL_EVAL_SAMPLES,
    pair_tasks: list[int] | None = None,
    device: str = "cpu",
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
    budget_pair : {"batch", "steps"}, optional
        Also train every finite M at twice the batch size or twice the steps (folders ``M=16,2x-batch``) and
        estimate the paper's threshold from the two budgets (:func:`paper_threshold`).
    pair_tol : float
        Gap tolerance of the paper's rule (evaluation noise).
    final_eval_samples : int >= 1
        Every finished model is evaluated once more on this many fresh sequences per distribution (seeds
        independent of training and of the in-training evaluations); the rows, M_mid and the paper's threshold
        use this evaluation. Cached per run in ``final_eval.json``, so a resumed sweep does not repeat it.
    device : str
        torch device of the transformers (see :func:`~dlscience.icl.training.train`); the final evaluation
        runs there too.
    pair_tasks : list of int, optional
        The finite M that get the doubled budget (default: every finite M in ``tasks``); the paper's rule is
        applied over these. Spend the doubled runs around the threshold, where the rule needs them.

    Returns
    -------
    dict
        The content of ``sweep.json``: per M the final errors and Deltas on both distributions (from the final
        evaluation; ``"training_eval"`` keeps the last in-training evaluation), the midpoint
        M_mid (key ``"threshold"``) and, with ``budget_pair``, the paper's threshold (``"paper_threshold"``).

    Raises
    ------
    UserError
        Bad settings, an M given twice, or an ``out`` holding other results (see :func:`train`).
    RunInterrupted
        On SIGINT/SIGTERM; the message says what was saved.
    """
    tasks = list(tasks)
    if budget_pair not in (None, *BUDGET_PAIRS):
        raise InputValidationError(f"budget_pair must be one of {BUDGET_PAIRS} or None, got {budget_pair!r}")
    if len(set(tasks)) != len(tasks):
        raise InputValidationError(f"--tasks gives an M more than once: {tasks}; list each M once")
    tasks = sorted(m for m in tasks if m is not None) + [
        m for m in tasks if m is None
    ]  # increasing, inf last
    finite_tasks = [m for m in tasks if m is not None]
    if pair_tasks is not None:
        if budget_pair is None:
            raise InputValidationError("pair_tasks needs budget_pair (--budget-pair batch|steps)")
        stray = [m for m in pair_tasks if m not in finite_tasks]
        if stray or len(set(pair_tasks)) != len(pair_tasks) or len(pair_tasks) < 2:
            raise InputValidationError(
                f"--pair-tasks must list at least two distinct finite M, each from --tasks, got {pair_tasks}"
            )
    paired = finite_tasks if pair_tasks is None else [m for m in finite_tasks if m in pair_tasks]
    if not isinstance(final_eval_samples, int) or final_eval_samples < 1:
        raise InputValidationError(
            f"final_eval_samples must be a positive integer, got {final_eval_samples!r}"
        )
    resolved = base.resolved()
    for m in tasks:
        replace(resolved, n_tasks=m).resolved()  # every M is valid before anything is written
    out = Path(out)
    names = [_run_name(m) for m in tasks]
    if budget_pair is not None:
        names += [_run_name(m, budget_pair) for m in paired]
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
        finals = _FinalEvals(run, final_eval_samples, device)
        for m, name in zip(tasks, names[: len(tasks)], strict=True):
            try:
                log = train(
                    replace(base, n_tasks=m),
                    run.path(name),
                    progress=progress,
                    overwrite=overwrite,
                    device=device,
                )
            except RunInterrupted as exc:
                done = [f"M={_fmt_m(r['M'])}" for r in rows]
                kept = f"; the finished runs ({', '.join(done)}) are kept in {out}" if done else ""
                raise RunInterrupted(f"{exc}{kept}") from None
            curves[m] = log["evals"]
            last = log["evals"][-1]
            final = finals.get(name)
            rows.append(
                {
                    "M": m,
                    "steps": log["steps"],
                    "seconds": log["seconds"],
                    "eval_samples": final["n_samples"],
                    "mean_error": {d: final[d]["mean_error"] for d in DISTRIBUTIONS},
                    "delta": {d: final[d]["delta"] for d in DISTRIBUTIONS},
                    "training_eval": {
                        "step": last["step"],
                        "delta": {d: last[d]["delta"] for d in DISTRIBUTIONS},
                    },
                }
            )
        paper = None
        if budget_pair is not None:
            doubled = {
                "batch": {"batch_size": 2 * resolved.batch_size},
                "steps": {"steps": 2 * resolved.steps},
            }
            for r in [r for r in rows if r["M"] in paired]:
                name = _run_name(r["M"], budget_pair)
                try:
                    log = train(
                        replace(resolved, n_tasks=r["M"], **doubled[budget_pair]),
                        run.path(name),
                        progress=progress,
                        overwrite=overwrite,
                        device=device,
                    )
                except RunInterrupted as exc:
                    raise RunInterrupted(f"{exc}; the finished runs are kept in {out}") from None
                final = finals.get(name)
                r["mean_error_double_budget"] = {d: final[d]["mean_error"] for d in DISTRIBUTIONS}
                r["delta_double_budget"] = {d: final[d]["delta"] for d in DISTRIBUTIONS}
                r["seconds_double_budget"] = log["seconds"]
            finite = [r for r in rows if r["M"] in paired]
            paper = paper_threshold(
                [r["M"] for r in finite],
                [r["delta"]["true"]["transformer|ridge"] for r in finite],
                [r["delta_double_budget"]["true"]["transformer|ridge"] for r in finite],
                tol=pair_tol,
            )
            paper["budget_pair"] = budget_pair
        finite = [r for r in rows if r["M"] is not None]
        est = threshold(
            [r["M"] for r in finite],
            [r["delta"]["true"]["transformer|dmmse"] for r in finite],
            [r["delta"]["true"]["transformer|ridge"] for r in finite],
        )
        by_step = threshold_by_step({m: ev for m, ev in curves.items() if m is not None})
        summary = {
            "settings": {**asdict(resolved), "n_tasks": "per row"},
            "rows": rows,
            "threshold": est,
            "paper_threshold": paper,
            "threshold_by_step": by_step,
        }
        run.write_json("sweep.json", summary)
        table = _table(rows, est, paper).encode()
        atomic_write(run.path("table.md"), lambda f: f.write(table))
        run.save_figure("sweep.png", _figure(rows, est))
        run.save_figure("sweep_training.png", _training_figure(curves, by_step))
        run.finish()
    return summary


class _FinalEvals:
    """The final evaluation of each finished run of a sweep on ``n_samples`` fresh sequences per distribution,
    cached in the sweep's ``final_eval.json`` (keyed by run name and sample count) and written as each one is
    done, so an interrupted sweep keeps them."""

    def __init__(self, run: RunFolder, n_samples: int, device: str = "cpu"):
        self.run, self.n_samples, self.device = run, n_samples, device
        path = run.path("final_eval.json")
        fix = "delete it; the evaluations are recomputed"
        self.cache = read_json(path, what="final evaluations", fix=fix) if path.exists() else {}

    def get(self, name: str) -> dict:
        """``{"n_samples", "true": {"mean_error", "delta"}, "pretrain": {...}}`` of the run ``name``."""
        hit = self.cache.get(name)
        if hit is not None and hit.get("n_samples") == self.n_samples:
            return hit
        model, cfg = load_transformer(self.run.path(name))
        model.to(self.device)
        task = cfg.task()
        estimators = {"transformer": model, **bayes_estimators(task)}
        result: dict = {"n_samples": self.n_samples}
        for i, d in enumerate(DISTRIBUTIONS):
            # seeds apart from the in-training evaluation sets (10_000 + i) and every training stream
            batches = eval_batches(task, d, self.n_samples, seed=20_000 + i)
            ev, _ = evaluate(estimators, batches, d)
            ev = ev.to_json()
            result[d] = {"mean_error": ev["mean_error"], "delta": ev["delta"]}
        self.cache[name] = result
        self.run.write_json("final_eval.json", self.cache)
        return result


def _run_name(m: int | None, budget_pair: str | None = None) -> str:
    """The sub-folder of the run of pool size ``m``: ``M=16``, ``M=inf``; ``M=16,2x-batch`` for the doubled
    budget of a ``budget_pair``."""
    return f"M={'inf' if m is None else m}" + (f",2x-{budget_pair}" if budget_pair else "")


def threshold_by_step(evals: dict[int, list[dict]]) -> list[dict]:
    """M_mid (same rule as :func:`threshold`) at every evaluation step shared by all finite-M runs, to show
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
    per M; log2 M_mid at each evaluation; Delta(PT, dMMSE) on the pretraining pool (how far memorisation got)."""
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
    axes[1].set_title("midpoint log2 M_mid at each evaluation (not the paper's threshold)", fontsize=9)
    axes[1].set_ylabel("log2 M_mid")
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


def _table(rows, est, paper=None) -> str:
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
        f"Errors are per-position means / D against the noiseless target. M_mid = {star}; rule: {RULE}.",
    ]
    if paper is not None:
        at = (
            "not crossed (" + paper["status"] + ")"
            if paper["M_star"] is None
            else f"2^{paper['log2_M_star']:.2f}"
        )
        gaps = ", ".join(f"{g:+.3f}" for g in paper["gaps"])
        lines += [
            "",
            f"Paper's threshold (2x {paper['budget_pair']}) = {at}; gaps {gaps}; rule: {PAPER_RULE}.",
        ]
    inf = [r for r in rows if r["M"] is None]
    if inf:
        pt, ridge = inf[0]["mean_error"]["true"]["transformer"], inf[0]["mean_error"]["true"]["ridge"]
        if pt > 1.5 * ridge:
            lines += [
                "",
                f"Warning: at M = inf the transformer's error ({pt:.3f}) is far above ridge's ({ridge:.3f}): the "
                "models are undertrained, so M_mid says little; train longer (--steps).",
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
