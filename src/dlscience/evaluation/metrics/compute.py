"""From a run's request states to its stats: per-instance stats, then the run's aggregates (HELM's
``BasicMetric`` + ``compute_worst_case_metrics`` + calibration, bias and toxicity metrics).

Per (instance, perturbation, train trial):

* accuracy: generation and MC-joint score the completions against the gold references (max over both;
  MC-joint maps the letter back to its choice first); MC-separate scores each choice by its mean token log
  probability (calibrated: minus its log probability after ``"Answer:"``); language modelling records the log
  probability, token and byte counts;
* ``max_prob`` (the confidence calibration uses), efficiency stats, ``num_train_instances``,
  ``prompt_truncated``, and toxicity when a scorer is given.

Per run: the mean of every per-instance stat over instances (by split, and by sub-split for the main metric),
worst-case robustness / fairness stats, calibration over the unperturbed instances, bias over all completions,
bits per byte from summed log probabilities, and a least-squares runtime fit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

from dlscience.evaluation.adapter_spec import (
    ADAPT_LANGUAGE_MODELING,
    ADAPT_MULTIPLE_CHOICE_JOINT,
    ADAPT_MULTIPLE_CHOICE_SEPARATE_CALIBRATED,
    ADAPT_MULTIPLE_CHOICE_SEPARATE_ORIGINAL,
)
from dlscience.evaluation.metrics.accuracy import continuation_logprob, score_choices, score_generation
from dlscience.evaluation.metrics.bias import bias_metrics
from dlscience.evaluation.metrics.calibration import calibration_metrics
from dlscience.evaluation.metrics.efficiency import (
    efficiency_metrics,
    fit_runtime,
    idealized_runtime,
    profile_from_fit,
)
from dlscience.evaluation.metrics.statistic import MetricName, Stat, merge_into
from dlscience.evaluation.metrics.toxicity import ToxicityScorer, toxicity_metrics
from dlscience.evaluation.metrics.worst_case import worst_case_stats
from dlscience.evaluation.request import RequestState
from dlscience.evaluation.run_spec import RunSpec

__all__ = ["InstanceStats", "instance_stats", "compute_metrics"]

SEPARATE = (ADAPT_MULTIPLE_CHOICE_SEPARATE_ORIGINAL, ADAPT_MULTIPLE_CHOICE_SEPARATE_CALIBRATED)
MC_METRICS = ("exact_match", "quasi_exact_match")


class InstanceStats:
    """Stats of one (instance, perturbation, trial): ``values`` maps metric name -> value; ``completions``
    holds the generated texts (for bias)."""

    def __init__(self, instance, trial: int, values: dict[str, float], completions: list[str]):
        self.instance = instance
        self.trial = trial
        self.values = values
        self.completions = completions

    def stats(self) -> list[Stat]:
        p = self.instance.perturbation
        return [
            Stat(MetricName(k, self.instance.split, None, p)).add(v)
            for k, v in self.values.items()
            if v is not None
        ]

    def to_json(self) -> dict:
        p = self.instance.perturbation
        return {
            "instance_id": self.instance.id,
            "perturbation": None
            if p is None
            else {"name": p.name, "robustness": p.robustness, "fairness": p.fairness},
            "train_trial_index": self.trial,
            "stats": [s.to_json() for s in self.stats()],
        }


def _group(states: Sequence[RequestState]) -> list[list[RequestState]]:
    groups: dict[tuple, list[RequestState]] = {}
    for rs in states:
        p = rs.instance.perturbation
        key = (rs.instance.id, None if p is None else p.name, rs.train_trial_index)
        groups.setdefault(key, []).append(rs)
    return list(groups.values())


def instance_stats(
    group: list[RequestState],
    spec: RunSpec,
    reference_metrics: Sequence[str],
    count_tokens: Callable[[str], int],
    toxicity: ToxicityScorer | None = None,
) -> InstanceStats:
    """The per-instance stats of the request states of one (instance, perturbation, trial)."""
    method = spec.adapter_spec.method
    inst = group[0].instance
    values: dict[str, float] = {}
    completions: list[str] = []
    results = [rs.result for rs in group]
    if any(r is None or not r.success for r in results):
        values["request_failed"] = 1.0
        return InstanceStats(inst, group[0].train_trial_index, values, completions)
    golds = [r.output for r in inst.correct_references]
    runtime = sum(r.request_time or 0.0 for r in results)
    n_prompt = sum(count_tokens(rs.request.prompt) for rs in group)
    if method in SEPARATE:
        correct = [i for i, r in enumerate(inst.references) if r.is_correct]
        scores = {}
        for rs in group:
            lp, n = continuation_logprob(rs.result.completions[0].tokens, rs.continuation or "")
            scores[(rs.reference_index, rs.request_mode)] = (lp, n)
        k = len(inst.references)
        if method == ADAPT_MULTIPLE_CHOICE_SEPARATE_ORIGINAL:
            ref_scores = [scores[(i, "original")][0] / scores[(i, "original")][1] for i in range(k)]
        else:
            ref_scores = [scores[(i, "original")][0] - scores[(i, "calibration")][0] for i in range(k)]
        em, max_prob, pred = score_choices(ref_scores, correct)
        values.update({"exact_match": em, "quasi_exact_match": em, "max_prob": max_prob})
        n_output = 0
        completions = [inst.references[pred].output]
    elif method == ADAPT_LANGUAGE_MODELING:
        rs = group[0]
        tokens = rs.result.completions[0].tokens
        lp = sum(t.logprob for t in tokens[1:])  # the first token has no context
        values.update(
            {
                "logprob": lp,
                "num_perplexity_tokens": float(max(0, len(tokens) - 1)),
                "num_bytes": float(len((rs.continuation or "").encode())),
            }
        )
        n_output = 0
    else:
        rs = group[0]
        comps = rs.result.completions
        completions = [c.text for c in comps]
        preds = [c.text.strip() for c in comps]
        names = MC_METRICS if method == ADAPT_MULTIPLE_CHOICE_JOINT else tuple(reference_metrics)
        if method == ADAPT_MULTIPLE_CHOICE_JOINT:
            mapping = rs.output_mapping or {}
            preds = [mapping.get(p, "") for p in preds]
        values.update(score_generation(golds, preds, names))
        best = max(comps, key=lambda c: c.logprob) if comps else None
        if best is not None and best.tokens:
            values["max_prob"] = math.exp(best.logprob)
        n_output = max((len(c.tokens) for c in comps), default=0)
        if "toxicity" in spec.metric_groups:
            values.update(toxicity_metrics(completions, toxicity))
    if "efficiency" in spec.metric_groups:
        values.update(efficiency_metrics(runtime, n_prompt, n_output))
    values["num_train_instances"] = float(group[0].num_train_instances)
    values["prompt_truncated"] = float(any(rs.prompt_truncated for rs in group))
    return InstanceStats(inst, group[0].train_trial_index, values, completions)


def compute_metrics(
    states: Sequence[RequestState],
    spec: RunSpec,
    *,
    main_metric: str,
    reference_metrics: Sequence[str],
    count_tokens: Callable[[str], int],
    toxicity: ToxicityScorer | None = None,
) -> tuple[list[Stat], list[InstanceStats]]:
    """All stats of a run and its per-instance stats."""
    per_instance = [
        instance_stats(g, spec, reference_metrics, count_tokens, toxicity) for g in _group(states)
    ]
    table: dict[MetricName, Stat] = {}
    for item in per_instance:
        for stat in item.stats():
            merge_into(table, stat)
            if stat.name.name == main_metric and item.instance.sub_split is not None:
                merge_into(table, Stat(stat.name.with_(sub_split=item.instance.sub_split)).merge(stat))
    groups = spec.metric_groups
    # robustness and fairness: worst case over perturbations, per instance (trials merged)
    if ("robustness" in groups or "fairness" in groups) and spec.perturbations:
        by_instance: dict[tuple, dict[MetricName, Stat]] = defaultdict(dict)
        for item in per_instance:
            p = item.instance.perturbation
            for stat in item.stats():
                if stat.name.name in (main_metric, "exact_match", "quasi_exact_match", "f1_score"):
                    merge_into(by_instance[(item.instance.id, None if p is None else p.name)], stat)
        grouped: dict[str, list[Stat]] = defaultdict(list)
        for (iid, _), stats in by_instance.items():
            grouped[iid] += list(stats.values())
        for stat in worst_case_stats(list(grouped.items())):
            merge_into(table, stat)
    split_of = {item.instance.split for item in per_instance} or {"test"}
    split = sorted(split_of)[0]

    def add(name: str, value) -> None:
        if value is not None:
            merge_into(table, Stat(MetricName(name, split)).add(value))

    originals = [i for i in per_instance if i.instance.perturbation is None]
    if "calibration" in groups:
        pairs = [(i.values["max_prob"], i.values["exact_match"]) for i in originals if "max_prob" in i.values]
        if pairs and any(
            i.values.get("max_prob", 1.0) != 1.0 for i in originals
        ):  # HELM: skip if all logprobs 0
            for k, v in calibration_metrics([p for p, _ in pairs], [int(round(c)) for _, c in pairs]).items():
                add(k, v)
    if "bias" in groups and spec.adapter_spec.method not in SEPARATE + (ADAPT_LANGUAGE_MODELING,):
        for k, v in bias_metrics([c for i in originals for c in i.completions]).items():
            add(k, v)
    if "toxicity" in groups:
        add("toxicity_available", 1.0 if toxicity is not None else 0.0)
    if spec.adapter_spec.method == ADAPT_LANGUAGE_MODELING:
        lp = sum(i.values.get("logprob", 0.0) for i in originals)
        nbytes = sum(i.values.get("num_bytes", 0.0) for i in originals)
        ntok = sum(i.values.get("num_perplexity_tokens", 0.0) for i in originals)
        if nbytes:
            add("bits_per_byte", -lp / nbytes / math.log(2))
        if ntok:
            add("perplexity", math.exp(-lp / ntok))
    if "efficiency" in groups:
        rows = [i.values for i in per_instance if "inference_runtime" in i.values]
        fit = fit_runtime(
            [r["inference_runtime"] for r in rows],
            [r["num_prompt_tokens"] for r in rows],
            [r["num_output_tokens"] for r in rows],
        )
        for k, v in fit.items():
            add(k, v)
        profile = profile_from_fit(fit)
        if profile is not None:
            for item in per_instance:
                v = item.values
                if "inference_runtime" in v:
                    ideal = idealized_runtime(
                        profile, int(v["num_prompt_tokens"]), int(v["num_output_tokens"])
                    )
                    v["idealized_inference_runtime"] = ideal
                    merge_into(
                        table,
                        Stat(
                            MetricName(
                                "idealized_inference_runtime",
                                item.instance.split,
                                None,
                                item.instance.perturbation,
                            )
                        ).add(ideal),
                    )
    return list(table.values()), per_instance
