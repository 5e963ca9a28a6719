"""The leaderboard: one table per metric group (models x scenarios) with HELM's win rates (``helm-summarize``).

Each group's headline value of a run:

==============  =====================================================================  =================
group           value                                                                  better
==============  =====================================================================  =================
accuracy        the scenario's main metric (exact match, quasi-exact match, bits/byte)  higher (bpb lower)
calibration     ``ece_10_bin``                                                         lower
robustness      main metric, worst case over the robustness perturbations             higher
fairness        main metric, worst case over the fairness perturbations               higher
bias            mean of the available bias metrics (total-variation distances)         lower
toxicity        ``toxic_frac`` (``unavailable`` without a scorer)                      lower
efficiency      ``inference_runtime`` (seconds per instance)                            lower
==============  =====================================================================  =================

A model's win rate in a group is the mean over scenarios of the share of other models it beats
(:func:`dlscience.evaluation.metrics.win_rate.win_rates`).
"""

from __future__ import annotations

from pathlib import Path

from dlscience.errors import UserError
from dlscience.evaluation.metrics.bias import BIAS_METRICS
from dlscience.evaluation.metrics.win_rate import win_rates
from dlscience.evaluation.run_spec import METRIC_GROUPS
from dlscience.results import read_json

__all__ = ["load_runs", "stat_mean", "headline", "summarize", "markdown_tables"]

LOWER_IS_BETTER = {
    "accuracy": False,
    "calibration": True,
    "robustness": False,
    "fairness": False,
    "bias": True,
    "toxicity": True,
    "efficiency": True,
}
DESCRIPTION = {
    "accuracy": "main metric (exact / quasi-exact match; bits per byte for language modelling)",
    "calibration": "10-bin equal-mass expected calibration error",
    "robustness": "main metric, worst case over robustness perturbations (mild_mix, typos)",
    "fairness": "main metric, worst case over fairness perturbations (gender, dialect)",
    "bias": "mean total-variation distance of the bias metrics (gender / race representation and associations)",
    "toxicity": "fraction of toxic completions (needs --toxicity-scorer)",
    "efficiency": "observed inference runtime per instance, seconds",
}


def load_runs(suites: list[str | Path]) -> list[dict]:
    """Every finished run under the suites' ``runs/`` folders: run spec, scenario and stats.

    Raises
    ------
    UserError
        If a suite folder has no runs (naming it); damaged files are named by :func:`read_json`.
    """
    runs = []
    for suite in suites:
        folder = Path(suite) / "runs"
        found = sorted(p for p in folder.glob("*") if (p / "stats.json").is_file()) if folder.is_dir() else []
        if not found:
            raise UserError(
                f"{suite} holds no evaluation runs (no runs/*/stats.json); run `dlscience eval run` first"
            )
        for p in found:
            runs.append(
                {
                    "folder": str(p),
                    "run_spec": read_json(p / "run_spec.json", what="run spec"),
                    "scenario": read_json(p / "scenario.json", what="scenario record"),
                    "stats": read_json(p / "stats.json", what="stats file"),
                }
            )
    return runs


def stat_mean(
    stats: list[dict],
    name: str,
    *,
    perturbation: str | None = None,
    computed_on: str | None = None,
    sub_split: str | None = None,
) -> float | None:
    """The mean of the stat called ``name`` on the evaluation split (unperturbed unless ``perturbation``)."""
    for s in stats:
        n = s["name"]
        if n["name"] != name or n.get("sub_split") != sub_split or n.get("split") == "train":
            continue
        p = n.get("perturbation")
        if perturbation is None and p is None:
            return s["mean"]
        if (
            perturbation is not None
            and p is not None
            and p["name"] == perturbation
            and p["computed_on"] == computed_on
        ):
            return s["mean"]
    return None


def headline(run: dict, group: str) -> float | str | None:
    """A run's headline value for a metric group (None when not computed; "unavailable" for toxicity
    without a scorer)."""
    stats, main = run["stats"], run["scenario"]["main_metric"]
    if group not in run["run_spec"]["metric_groups"]:
        return None
    if group == "accuracy":
        return stat_mean(stats, main)
    if group == "calibration":
        return stat_mean(stats, "ece_10_bin")
    if group in ("robustness", "fairness"):
        return stat_mean(stats, main, perturbation=group, computed_on="worst")
    if group == "bias":
        values = [v for v in (stat_mean(stats, m) for m in BIAS_METRICS) if v is not None]
        return sum(values) / len(values) if values else None
    if group == "toxicity":
        if stat_mean(stats, "toxicity_available") == 0.0:
            return "unavailable"
        return stat_mean(stats, "toxic_frac")
    if group == "efficiency":
        return stat_mean(stats, "inference_runtime")
    raise ValueError(group)


def summarize(suites: list[str | Path]) -> dict:
    """The leaderboard of the runs in ``suites`` (see the module docstring)."""
    runs = load_runs(suites)
    models = sorted({r["run_spec"]["adapter_spec"]["model"] for r in runs})
    scenarios = sorted({r["run_spec"]["scenario_spec"]["name"] for r in runs})
    by_key = {
        (r["run_spec"]["adapter_spec"]["model"], r["run_spec"]["scenario_spec"]["name"]): r for r in runs
    }
    groups = {}
    for group in METRIC_GROUPS:
        table = {
            m: {s: headline(by_key[(m, s)], group) if (m, s) in by_key else None for s in scenarios}
            for m in models
        }
        lower = [
            (True if group == "accuracy" and _main(by_key, s) == "bits_per_byte" else LOWER_IS_BETTER[group])
            for s in scenarios
        ]
        numeric = [[v if isinstance(v, int | float) else None for v in table[m].values()] for m in models]
        wr = win_rates(numeric, lower)
        groups[group] = {
            "description": DESCRIPTION[group],
            "lower_is_better": {s: lo for s, lo in zip(scenarios, lower, strict=True)},
            "table": table,
            "win_rate": dict(zip(models, wr, strict=True)),
        }
    return {
        "models": models,
        "scenarios": {s: _scenario_info(by_key, s) for s in scenarios},
        "groups": groups,
        "runs": [
            {
                "name": r["run_spec"]["name"],
                "folder": r["folder"],
                "metric_groups": r["run_spec"]["metric_groups"],
            }
            for r in runs
        ],
    }


def _main(by_key, scenario):
    for (_, s), r in by_key.items():
        if s == scenario:
            return r["scenario"]["main_metric"]
    return None


def _scenario_info(by_key, scenario):
    for (_, s), r in by_key.items():
        if s == scenario:
            sc = r["scenario"]
            return {
                "description": sc["description"],
                "main_metric": sc["main_metric"],
                "method": r["run_spec"]["adapter_spec"]["method"],
                "num_eval_instances": sc.get("num_eval_instances"),
            }
    return {}


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.3f}"


def markdown_tables(summary: dict) -> str:
    """The leaderboard as Markdown: one table with every group's headline per (model, scenario)."""
    lines = []
    groups = list(summary["groups"])
    lines.append("| model | scenario | " + " | ".join(groups) + " |")
    lines.append("|---|---|" + "---|" * len(groups))
    for m in summary["models"]:
        for s in summary["scenarios"]:
            cells = [_fmt(summary["groups"][g]["table"][m][s]) for g in groups]
            lines.append(f"| {m} | {s} | " + " | ".join(cells) + " |")
    if len(summary["models"]) > 1:
        lines.append("")
        lines.append("| model | " + " | ".join(f"{g} win rate" for g in groups) + " |")
        lines.append("|---|" + "---|" * len(groups))
        for m in summary["models"]:
            lines.append(
                f"| {m} | " + " | ".join(_fmt(summary["groups"][g]["win_rate"][m]) for g in groups) + " |"
            )
    return "\n".join(lines) + "\n"
