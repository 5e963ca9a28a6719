"""Robustness and fairness: worst case over perturbations (HELM's ``compute_worst_case_metrics``).

For each (metric, instance), the stat on the original input is merged with every stat whose perturbation is
flagged ``robustness`` (or ``fairness``), and the **minimum** is recorded with ``computed_on="worst"`` under the
perturbation name ``robustness`` (``fairness``). For each single perturbation the worst of it and the original
is recorded too, and the same instances' original value with ``computed_on="original"``. The aggregate is the
mean over instances of these per-instance minima.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from dlscience.evaluation.metrics.statistic import MetricName, Stat, merge_into
from dlscience.evaluation.scenario import PerturbationDescription

__all__ = ["worst_case_stats"]


def worst_case_stats(per_instance: list[tuple[str, list[Stat]]]) -> list[Stat]:
    """Worst-case stats from per-instance stats.

    Parameters
    ----------
    per_instance : list of (instance_id, stats)
        Stats of each (instance, perturbation) pair; the instance's original and perturbed copies share its id.

    Returns
    -------
    list of Stat
        Aggregates (over instances) named like the input stats with perturbations ``robustness`` /
        ``fairness`` / each perturbation, ``computed_on`` ``worst`` (and ``original`` for single ones).
    """
    grouped: dict[tuple[MetricName, str], list[Stat]] = defaultdict(list)
    for instance_id, stats in per_instance:
        for stat in stats:
            grouped[(replace(stat.name, perturbation=None), instance_id)].append(stat)
    out: dict[MetricName, Stat] = {}
    for (name, _), stats in grouped.items():
        original = None
        robustness = Stat(replace(name, perturbation=PerturbationDescription("robustness", robustness=True)))
        fairness = Stat(replace(name, perturbation=PerturbationDescription("fairness", fairness=True)))
        single: dict[PerturbationDescription, Stat] = {}
        for stat in stats:
            p = stat.name.perturbation
            if p is None:
                original = stat
                continue
            if p.robustness:
                robustness.merge(stat)
            if p.fairness:
                fairness.merge(stat)
            single[p] = Stat(stat.name).merge(stat)
        for stat in [robustness, fairness, *single.values()]:
            p = stat.name.perturbation
            if original is not None:
                stat.merge(original)
                if p.name not in ("robustness", "fairness"):
                    before = replace(stat.name, perturbation=replace(p, computed_on="original"))
                    merge_into(out, Stat(before).merge(original))
            if stat.count > 0:  # HELM: also when only the original is there
                worst = replace(stat.name, perturbation=replace(p, computed_on="worst"))
                merge_into(out, Stat(worst).add(stat.min))
    return list(out.values())
