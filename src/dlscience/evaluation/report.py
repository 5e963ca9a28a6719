"""The HTML leaderboard (HELM's static web UI, in one self-contained file): a table per metric group with win
rates, plots (accuracy by scenario and model; accuracy against its worst case under robustness and fairness
perturbations; a reliability diagram of the unperturbed instances), and the runs' details. Plots are
matplotlib PNGs embedded as data URIs, so the file opens anywhere, offline."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from dlscience.evaluation.summarize import _fmt
from dlscience.results import read_json

__all__ = ["render_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td.name{text-align:left}td.best{font-weight:bold;background:#e8f4e8}
h2{border-bottom:1px solid #ddd;padding-bottom:4px}.note{color:#666;font-size:90%}img{max-width:100%}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(summary: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = []
    models, scenarios = summary["models"], list(summary["scenarios"])
    acc = summary["groups"]["accuracy"]["table"]
    shown = [s for s in scenarios if summary["scenarios"][s].get("main_metric") != "bits_per_byte"]
    if shown:
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(shown)), 3.2))
        width = 0.8 / len(models)
        for k, m in enumerate(models):
            vals = [acc[m][s] if isinstance(acc[m][s], int | float) else 0 for s in shown]
            ax.bar(np.arange(len(shown)) + k * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(shown)) + width * (len(models) - 1) / 2, shown, rotation=20, ha="right")
        ax.set_ylabel("accuracy (main metric)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        out.append(("Accuracy by scenario", _png(fig)))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    for ax, group in zip(axes, ("robustness", "fairness"), strict=True):
        tab = summary["groups"][group]["table"]
        for m in models:
            xs = [
                acc[m][s]
                for s in shown
                if isinstance(tab[m][s], int | float) and isinstance(acc[m][s], int | float)
            ]
            ys = [
                tab[m][s]
                for s in shown
                if isinstance(tab[m][s], int | float) and isinstance(acc[m][s], int | float)
            ]
            ax.scatter(xs, ys, label=m)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("accuracy")
        ax.set_ylabel(f"worst case ({group})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(group)
    axes[0].legend(fontsize=8)
    out.append(("Accuracy against worst-case accuracy under perturbations", _png(fig)))
    reliability = summary.get("reliability") or {}
    if reliability:
        fig, ax = plt.subplots(figsize=(4, 3.6))
        for m, pts in reliability.items():
            conf = np.array([p[0] for p in pts])
            corr = np.array([p[1] for p in pts])
            if len(conf) == 0:
                continue
            order = np.argsort(conf)
            bins = np.array_split(order, min(10, len(order)))
            ax.plot([conf[b].mean() for b in bins], [corr[b].mean() for b in bins], "o-", label=m)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("confidence (max_prob), equal-mass bins")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
        out.append(("Reliability diagram (all scenarios, unperturbed instances)", _png(fig)))
    return out


def reliability_points(summary: dict) -> dict[str, list[tuple[float, float]]]:
    """(max_prob, exact_match) of every unperturbed evaluation instance, by model."""
    points: dict[str, list] = {}
    for run in summary["runs"]:
        folder = Path(run["folder"])
        spec = read_json(folder / "run_spec.json", what="run spec")
        model = spec["adapter_spec"]["model"]
        for item in read_json(folder / "per_instance_stats.json", what="per-instance stats"):
            if item["perturbation"] is not None:
                continue
            values = {s["name"]["name"]: s["mean"] for s in item["stats"]}
            if "max_prob" in values and "exact_match" in values:
                points.setdefault(model, []).append((values["max_prob"], values["exact_match"]))
    return points


def render_report(summary: dict, *, title: str = "dlscience eval leaderboard") -> str:
    """The report's HTML."""
    summary = dict(summary)
    summary["reliability"] = reliability_points(summary)
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1 id='title'>{e(title)}</h1>",
        "<p class='note'>Holistic evaluation in the manner of HELM (Liang et al. 2022): every scenario x seven "
        "metric groups. Bold: best model in a column. Win rate: mean over scenarios of the share of other "
        "models beaten.</p>",
    ]
    models, scenarios = summary["models"], list(summary["scenarios"])
    parts.append(
        "<h2>Scenarios</h2><table id='scenarios'><tr><th>scenario</th><th>method</th><th>main metric</th>"
        "<th>eval instances</th><th>description</th></tr>"
    )
    for s, info in summary["scenarios"].items():
        parts.append(
            f"<tr><td class='name'>{e(s)}</td><td class='name'>{e(str(info.get('method')))}</td>"
            f"<td class='name'>{e(str(info.get('main_metric')))}</td><td>{info.get('num_eval_instances')}</td>"
            f"<td class='name'>{e(str(info.get('description')))}</td></tr>"
        )
    parts.append("</table>")
    for group, g in summary["groups"].items():
        parts.append(f"<h2 id='group-{group}'>{e(group)}</h2><p class='note'>{e(g['description'])}</p>")
        parts.append(f"<table class='leaderboard' data-group='{group}'><tr><th>model</th><th>win rate</th>")
        parts += [f"<th>{e(s)}</th>" for s in scenarios] + ["</tr>"]
        best = {}
        for s in scenarios:
            vals = [g["table"][m][s] for m in models if isinstance(g["table"][m][s], int | float)]
            if len(vals) > 1:
                best[s] = min(vals) if g["lower_is_better"][s] else max(vals)
        for m in models:
            parts.append(f"<tr><td class='name'>{e(m)}</td><td>{_fmt(g['win_rate'][m])}</td>")
            for s in scenarios:
                v = g["table"][m][s]
                cls = " class='best'" if s in best and v == best[s] else ""
                parts.append(f"<td{cls}>{e(_fmt(v))}</td>")
            parts.append("</tr>")
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for caption, uri in _plots(summary):
        parts.append(
            f"<figure><img alt='{e(caption)}' src='{uri}'><figcaption>{e(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Runs</h2><ul>")
    parts += [f"<li>{e(r['name'])}: {e(r['folder'])}</li>" for r in summary["runs"]]
    parts.append("</ul></body></html>")
    return "\n".join(parts)
