"""Our metric values against crfm-helm's own metric functions on the same predictions.

crfm-helm's core dependencies (torch, transformers, spacy, datasets, nltk, ...) are too heavy for the project's
virtual environment, so it is installed in a separate one and called as a subprocess::

    python -m venv /tmp/helmvenv
    /tmp/helmvenv/bin/pip install --no-deps crfm-helm==0.5.16
    /tmp/helmvenv/bin/pip install numpy scikit-learn nltk uncertainty-calibration rouge-score dacite cattrs \\
        pyhocon retrying tqdm pandas sqlitedict zstandard colorlog pyyaml filelock Mako datasets requests \\
        spacy pillow
    python benchmarks/helm_metric_parity.py --helm-python /tmp/helmvenv/bin/python

The predictions are those of a finished ``dlscience eval run`` (``--suite``, default results/eval_smollm2:
SmolLM2's generations, multiple-choice answers, confidences and perturbed inputs), plus seeded random tables
for win rates. Compared, with HELM's function in brackets:

* exact / quasi-exact / prefix match and F1 on every generation (``evaluate_reference_metrics``);
* calibration: ECE 1- and 10-bin, selective accuracy, Platt (``basic_metrics.compute_calibration_metrics``);
* worst-case robustness / fairness aggregates (``metric.compute_worst_case_metrics``);
* bias, 6 metrics on the completions (``bias_metrics.BiasMetric``; HELM's ``word_tokenize`` needs nltk's
  ``punkt_tab``, which cannot be downloaded offline, so the HELM side uses nltk's Treebank tokenizer, what
  ``word_tokenize`` applies within each sentence);
* win rates (``presentation.summarize.compute_aggregate_row_win_rates``);
* perturbations on the evaluation inputs: typos, lowercase, contractions, extra spaces, gender pronouns
  (``augmentations.*``; mild_mix and dialect use smaller word lists here and are reported as differences).

Prints a table of the largest absolute differences and writes JSON (default
``results/eval_smollm2/helm_parity.json``). Run: ``python benchmarks/helm_metric_parity.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path


# ---------------------------------------------------------------------------------------------- helm side
def helm_side(data: dict) -> dict:  # runs under crfm-helm's python: imports helm only
    import helm.benchmark.metrics.bias_metrics as bm
    from helm.benchmark.augmentations.contraction_expansion_perturbation import ContractionPerturbation
    from helm.benchmark.augmentations.gender_perturbation import GenderPerturbation
    from helm.benchmark.augmentations.lowercase_perturbation import LowerCasePerturbation
    from helm.benchmark.augmentations.perturbation_description import PerturbationDescription
    from helm.benchmark.augmentations.space_perturbation import SpacePerturbation
    from helm.benchmark.augmentations.typos_perturbation import TyposPerturbation
    from helm.benchmark.metrics import evaluate_reference_metrics as erm
    from helm.benchmark.metrics.basic_metrics import compute_calibration_metrics
    from helm.benchmark.metrics.metric import compute_worst_case_metrics
    from helm.benchmark.metrics.metric_name import MetricName
    from helm.benchmark.metrics.statistic import Stat
    from helm.benchmark.presentation.summarize import compute_aggregate_row_win_rates
    from helm.benchmark.presentation.table import Cell, HeaderCell, Table
    from helm.benchmark.scenarios.scenario import Input, Instance, Output, Reference
    from nltk.tokenize import TreebankWordTokenizer

    out: dict = {}
    fns = {
        "exact_match": erm.exact_match,
        "quasi_exact_match": erm.quasi_exact_match,
        "prefix_exact_match": erm.prefix_exact_match,
        "f1_score": erm.f1_score,
    }
    out["accuracy"] = [
        {k: max(float(f(g, p)) for g in golds) for k, f in fns.items()} for golds, p in data["generations"]
    ]
    # calibration
    cal = {}
    for name, pairs in data["calibration"].items():
        per = {}
        for i, (prob, correct) in enumerate(pairs):
            inst = Instance(Input(text=f"x{i}"), references=[], id=f"id{i}")
            per[inst] = [
                Stat(MetricName("max_prob")).add(prob),
                Stat(MetricName("exact_match")).add(correct),
                Stat(MetricName("logprob")).add(-1.0),
            ]
        cal[name] = {s.name.name: s.mean for s in compute_calibration_metrics(per)}
    out["calibration"] = cal
    # worst case
    wc = {}
    for name, rows in data["worst_case"].items():
        per = {}
        for iid, pert, robustness, fairness, value in rows:
            p = (
                None
                if pert is None
                else PerturbationDescription(name=pert, robustness=robustness, fairness=fairness)
            )
            inst = Instance(Input(text=iid), references=[], id=iid, perturbation=p)
            per[inst] = [Stat(MetricName("exact_match", split="test", perturbation=p)).add(value)]
        stats = compute_worst_case_metrics(per)
        wc[name] = {f"{s.name.perturbation.name}:{s.name.perturbation.computed_on}": s.mean for s in stats}
    out["worst_case"] = wc
    # bias
    bm.word_tokenize = TreebankWordTokenizer().tokenize
    bias = {}
    for mode, demo, target in data["bias_metrics"]:
        metric = bm.BiasMetric(mode=mode, demographic_category=demo, target_category=target)
        fn = metric.MODE_TO_EVALUATION_FUNCTION[mode]
        bias[metric.get_metric_name()] = fn([t for t in data["bias_texts"] if t])
    out["bias"] = bias
    # win rates
    wr = []
    for table, lower in data["win_rate_tables"]:
        t = Table(
            title="t",
            header=[HeaderCell("model")]
            + [HeaderCell(f"c{j}", lower_is_better=lo) for j, lo in enumerate(lower)],
            rows=[[Cell("m")] + [Cell(v) for v in row] for row in table],
        )
        wr.append(compute_aggregate_row_win_rates(t))
    out["win_rates"] = wr
    # perturbations
    perts = {
        "typos": TyposPerturbation(0.1),
        "lowercase": LowerCasePerturbation(),
        "contractions": ContractionPerturbation(),
        "extra_spaces": SpacePerturbation(3),
        "gender": GenderPerturbation("pronouns", 1.0, "male", "female"),
    }
    po = {}
    for name, pert in perts.items():
        po[name] = [
            pert.apply(
                Instance(Input(text=text), references=[Reference(Output(text=ref), tags=["correct"])], id=iid)
            ).input.text
            for iid, text, ref in data["perturbation_inputs"]
        ]
    out["perturbations"] = po
    return out


# ---------------------------------------------------------------------------------------------- our side
def collect(suite: Path) -> dict:
    """The predictions of a finished suite, in the form both sides read."""
    from dlscience.evaluation.metrics.bias import BIAS_METRICS
    from dlscience.results import read_json

    runs = sorted(p for p in (suite / "runs").glob("*") if (p / "stats.json").is_file())
    if not runs:
        raise SystemExit(f"{suite} holds no finished runs; run `dlscience eval run --out {suite}` first")
    data = {
        "generations": [],
        "calibration": {},
        "worst_case": {},
        "bias_texts": [],
        "perturbation_inputs": [],
    }
    for run in runs:
        state = read_json(run / "scenario_state.json")
        method = state["adapter_spec"]["method"]
        for rs in state["request_states"]:
            inst, result = rs["instance"], rs["result"]
            golds = [r["output"] for r in inst["references"] if "correct" in r["tags"]]
            if method == "generation" and golds:
                for c in result["completions"]:
                    data["generations"].append((golds, c["text"].strip()))
                if inst.get("perturbation") is None:
                    data["bias_texts"] += [c["text"] for c in result["completions"]]
            if inst.get("perturbation") is None and rs.get("reference_index") in (None, 0):
                refs = inst["references"]
                data["perturbation_inputs"].append(
                    (inst["id"] + run.name, inst["input"], refs[0]["output"] if refs else "")
                )
        per = read_json(run / "per_instance_stats.json")
        pairs, rows = [], []
        for item in per:
            values = {s["name"]["name"]: s["mean"] for s in item["stats"]}
            p = item["perturbation"]
            if p is None and "max_prob" in values and "exact_match" in values:
                pairs.append((values["max_prob"], int(round(values["exact_match"]))))
            if "exact_match" in values:
                rows.append(
                    (item["instance_id"], None if p is None else p["name"], bool(p and p["robustness"]),
                     bool(p and p["fairness"]), values["exact_match"])
                )  # fmt: skip
        if pairs:
            data["calibration"][run.name] = pairs
        if rows:
            data["worst_case"][run.name] = rows
    data["bias_metrics"] = [list(v) for v in BIAS_METRICS.values()]
    # stress the bias metrics with texts that do contain the word lists' words
    data["bias_texts"] += [
        "She is a nurse and her brother is an engineer.",
        "He was a lawyer; his wife, a teacher, was kind.",
        "Mr. Chen and Mrs. Garcia met Dr. Smith, a brilliant surgeon.",
        "The man was aggressive and the woman was emotional.",
    ]
    rng = random.Random(0)
    tables = []
    for _ in range(20):
        n_rows, n_cols = rng.randint(2, 6), rng.randint(1, 5)
        table = [
            [rng.choice([None, 0.1, 0.2, 0.3, 0.5, 0.9, rng.random()]) for _ in range(n_cols)]
            for _ in range(n_rows)
        ]
        tables.append((table, [rng.choice([True, False]) for _ in range(n_cols)]))
    data["win_rate_tables"] = tables
    return data


def ours(data: dict) -> dict:
    from dlscience.evaluation.metrics.accuracy import score_generation
    from dlscience.evaluation.metrics.bias import DEMOGRAPHICS, TARGETS, association_bias, representation_bias
    from dlscience.evaluation.metrics.calibration import calibration_metrics
    from dlscience.evaluation.metrics.statistic import MetricName, Stat
    from dlscience.evaluation.metrics.win_rate import win_rates
    from dlscience.evaluation.metrics.worst_case import worst_case_stats
    from dlscience.evaluation.perturbations import make_perturbation
    from dlscience.evaluation.scenario import PerturbationDescription

    names = ["exact_match", "quasi_exact_match", "prefix_exact_match", "f1_score"]
    out = {"accuracy": [score_generation(golds, [p], names) for golds, p in data["generations"]]}
    out["calibration"] = {
        k: calibration_metrics([p for p, _ in v], [c for _, c in v]) for k, v in data["calibration"].items()
    }
    wc = {}
    for name, rows in data["worst_case"].items():
        grouped: dict = {}
        for iid, pert, robustness, fairness, value in rows:
            p = None if pert is None else PerturbationDescription(pert, robustness, fairness)
            grouped.setdefault(iid, []).append(Stat(MetricName("exact_match", "test", None, p)).add(value))
        wc[name] = {
            f"{s.name.perturbation.name}:{s.name.perturbation.computed_on}": s.mean
            for s in worst_case_stats(list(grouped.items()))
        }
    out["worst_case"] = wc
    texts = [t for t in data["bias_texts"] if t]
    bias = {}
    for mode, demo, target in data["bias_metrics"]:
        name = f"bias_metric:mode={mode},demographic_category={demo}" + (
            f",target_category={target}" if target else ""
        )
        groups = DEMOGRAPHICS[demo]
        bias[name] = (
            representation_bias(texts, groups)
            if mode == "representation"
            else association_bias(texts, groups, TARGETS[target])
        )
    out["bias"] = bias
    out["win_rates"] = [win_rates(t, lo) for t, lo in data["win_rate_tables"]]
    from dlscience.evaluation.scenario import CORRECT_TAG, Instance, Reference

    po = {}
    for name in ("typos", "lowercase", "contractions", "extra_spaces", "gender"):
        pert = make_perturbation(name)
        po[name] = [
            pert.apply(Instance(text, (Reference(ref, (CORRECT_TAG,)),), id=iid)).input
            for iid, text, ref in data["perturbation_inputs"]
        ]
    out["perturbations"] = po
    return out


def compare(a: dict, b: dict) -> list[dict]:
    """One row per metric family: number of values compared, max |difference|, number differing."""
    rows = []

    def num_rows(label, xs, ys):
        diffs, missing = [], 0
        for x, y in zip(xs, ys, strict=True):
            if x is None or y is None:
                missing += (x is None) != (y is None)
                continue
            diffs.append(abs(float(x) - float(y)))
        rows.append({"metric": label, "values": len(xs), "max_abs_diff": max(diffs, default=0.0),
                     "differing": sum(d > 1e-9 for d in diffs) + missing})  # fmt: skip

    for k in ["exact_match", "quasi_exact_match", "prefix_exact_match", "f1_score"]:
        num_rows(f"accuracy/{k}", [r[k] for r in a["accuracy"]], [r[k] for r in b["accuracy"]])
    for key in [
        "ece_1_bin",
        "ece_10_bin",
        "selective_cov_acc_area",
        "selective_acc@10",
        "platt_ece_1_bin",
        "platt_ece_10_bin",
        "platt_coef",
        "platt_intercept",
    ]:
        runs = sorted(a["calibration"])
        num_rows(
            f"calibration/{key}",
            [a["calibration"][r].get(key) for r in runs],
            [b["calibration"][r].get(key) for r in runs],
        )
    keys = sorted(
        {(r, k) for r in a["worst_case"] for k in a["worst_case"][r]}
        | {(r, k) for r in b["worst_case"] for k in b["worst_case"][r]}
    )
    num_rows(
        "worst_case (all aggregates)",
        [a["worst_case"][r].get(k) for r, k in keys],
        [b["worst_case"][r].get(k) for r, k in keys],
    )
    names = sorted(a["bias"])
    num_rows("bias (6 metrics)", [a["bias"][n] for n in names], [b["bias"][n] for n in names])
    flat_a = [v for t in a["win_rates"] for v in t]
    flat_b = [v for t in b["win_rates"] for v in t]
    num_rows("win_rate", flat_a, flat_b)
    for name in a["perturbations"]:
        xs, ys = a["perturbations"][name], b["perturbations"][name]
        rows.append({"metric": f"perturbation/{name}", "values": len(xs), "max_abs_diff": None,
                     "differing": sum(x != y for x, y in zip(xs, ys, strict=True))})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--helm-python", default="/tmp/helmvenv/bin/python", help="python of a venv with crfm-helm"
    )
    parser.add_argument(
        "--suite", default="results/eval_smollm2", help="a folder written by `dlscience eval run`"
    )
    parser.add_argument("--out", default="results/eval_smollm2/helm_parity.json", help="JSON output")
    parser.add_argument("--helm-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.helm_side:
        json.dump(helm_side(json.load(sys.stdin)), sys.stdout)
        return
    data = collect(Path(args.suite))
    if not Path(args.helm_python).exists():
        raise SystemExit(
            f"{args.helm_python} does not exist; install crfm-helm in a separate venv (see the docstring)"
        )
    proc = subprocess.run(
        [args.helm_python, __file__, "--helm-side"],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit("crfm-helm side failed:\n" + proc.stderr[-3000:])
    helm = json.loads(proc.stdout)
    mine = ours(data)
    rows = compare(mine, helm)
    print(f"{'metric':<34} {'values':>7} {'max |ours - helm|':>18} {'differing':>10}")
    for r in rows:
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        print(f"{r['metric']:<34} {r['values']:>7} {diff:>18} {r['differing']:>10}")
    version = subprocess.run([args.helm_python, "-c", "import importlib.metadata as m; print(m.version('crfm-helm'))"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    result = {"crfm_helm": version, "suite": args.suite, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
