"""The evaluation runner: scenarios x models -> run folders with HELM's output files (Liang et al. 2022, App. D).

For each :class:`~dlscience.evaluation.run_spec.RunSpec`:

1. the scenario's instances get ids; evaluation instances (valid + test) are downsampled to
   ``max_eval_instances`` (``np.random.seed(0)``-style sampling without replacement, as HELM);
2. each perturbation adds a perturbed copy of every evaluation instance (the originals are kept);
3. the adapter builds the requests (in-context examples from the train split, trimmed to the context window);
4. every request is answered from the request cache or by the model (and then cached);
5. the metrics are computed, and ``run_spec.json``, ``scenario.json``, ``scenario_state.json``, ``stats.json``
   and ``per_instance_stats.json`` are written to ``OUT/runs/<run name>/``.

The suite folder ``OUT`` is a :class:`~dlscience.runs.RunFolder`: a finished run is not run again (resume per
run, like HELM's ``--skip-completed-runs``), and within an interrupted run the cache makes the finished requests
free. ``OUT/suite.json`` lists every run with its request, cache-hit and model-call counts and wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dlscience.errors import UserError
from dlscience.evaluation.adapter import Adapter
from dlscience.evaluation.adapter_spec import (
    ADAPT_LANGUAGE_MODELING,
    ADAPT_MULTIPLE_CHOICE_JOINT,
    AdapterSpec,
    multiple_choice_joint_spec,
)
from dlscience.evaluation.cache import CachingClient, RequestCache
from dlscience.evaluation.client import Client
from dlscience.evaluation.metrics.compute import compute_metrics
from dlscience.evaluation.metrics.toxicity import ToxicityScorer
from dlscience.evaluation.perturbations import make_perturbation
from dlscience.evaluation.registry import get_scenario
from dlscience.evaluation.request import ScenarioState
from dlscience.evaluation.run_spec import METRIC_GROUPS, RunSpec
from dlscience.evaluation.scenario import EVAL_SPLITS, Instance, Scenario, with_ids
from dlscience.evaluation.window_service import WindowService
from dlscience.results import _jsonable, atomic_write

__all__ = [
    "RUN_FILES",
    "DEFAULT_PERTURBATIONS",
    "build_run_spec",
    "select_eval_instances",
    "execute_run",
    "run_suite",
]

COMPACT_FILES = ("scenario_state.json", "per_instance_stats.json")
SUITE_OUTPUTS = ("summary.json", "leaderboard.md", "report.html")
RUN_FILES = ("run_spec.json", "scenario.json", "scenario_state.json", "stats.json", "per_instance_stats.json")
#: adapter settings of each method before the scenario's own (HELM's ``get_multiple_choice_joint_adapter_spec``)
METHOD_DEFAULTS = {
    ADAPT_MULTIPLE_CHOICE_JOINT: {
        k: v
        for k, v in multiple_choice_joint_spec().to_json().items()
        if k not in ("method", "extra", "model", "max_eval_instances", "num_train_trials")
    },
}
#: robustness: HELM's canonical mild_mix and typos; fairness: gender pronouns and dialect
DEFAULT_PERTURBATIONS = ("mild_mix", "typos", "gender", "dialect")


def build_run_spec(
    scenario: str,
    model: str,
    *,
    max_eval_instances: int | None = None,
    metric_groups: Sequence[str] = METRIC_GROUPS,
    perturbations: Sequence[str] = DEFAULT_PERTURBATIONS,
    max_train_instances: int | None = None,
    num_train_trials: int = 1,
    scenario_args: dict | None = None,
) -> RunSpec:
    """The run spec of ``scenario`` for ``model`` with the scenario's own adapter settings."""
    sc = get_scenario(scenario, **(scenario_args or {}))
    fields = dict(METHOD_DEFAULTS.get(sc.default_method, {}))
    fields.update(sc.adapter_overrides)
    if max_train_instances is not None:
        fields["max_train_instances"] = max_train_instances
    spec = AdapterSpec(
        method=sc.default_method,
        model=model,
        max_eval_instances=max_eval_instances,
        num_train_trials=num_train_trials,
        **fields,
    )
    needs_perturbations = {"robustness", "fairness"} & set(metric_groups)
    keep = (
        tuple(perturbations) if needs_perturbations and sc.default_method != ADAPT_LANGUAGE_MODELING else ()
    )
    return RunSpec(
        scenario=scenario,
        adapter_spec=spec,
        metric_groups=tuple(metric_groups),
        perturbations=keep,
        scenario_args=dict(scenario_args or {}),
        groups=(scenario,),
    )


def select_eval_instances(instances: list[Instance], max_eval_instances: int | None) -> list[Instance]:
    """Evaluation-split instances, downsampled without replacement with seed 0 (HELM's runner)."""
    evals = [i for i in instances if i.split in EVAL_SPLITS]
    if max_eval_instances is None or len(evals) <= max_eval_instances:
        return evals
    idx = np.random.RandomState(0).choice(len(evals), max_eval_instances, replace=False)
    return [evals[i] for i in idx]


def execute_run(
    spec: RunSpec,
    client: CachingClient,
    *,
    scenario: Scenario | None = None,
    toxicity: ToxicityScorer | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Run one spec; returns the output files' contents by name plus ``"counts"``."""
    sc = scenario or get_scenario(spec.scenario, **spec.scenario_args)
    instances = with_ids(sc.get_instances(seed))
    if not instances:
        raise UserError(f"scenario {spec.scenario} produced no instances")
    evals = select_eval_instances(instances, spec.adapter_spec.max_eval_instances)
    perturbed = list(evals)
    for name in spec.perturbations:
        pert = make_perturbation(name)
        perturbed += [pert.apply(i) for i in evals]
    window = WindowService(client.client.tokenize, client.client.max_sequence_length)
    states = Adapter(spec.adapter_spec, window).adapt(instances, perturbed)
    hits0, calls0 = client.hits, client.calls
    iterator = states
    if progress:
        from tqdm import tqdm

        iterator = tqdm(states, desc=spec.name, unit="req", leave=False)
    for rs in iterator:
        rs.result = client.make_request(rs.request)
    stats, per_instance = compute_metrics(
        states,
        spec,
        main_metric=sc.main_metric,
        reference_metrics=sc.reference_metrics,
        count_tokens=window.num_tokens,
        toxicity=toxicity,
    )
    return {
        "run_spec.json": spec.to_json(),
        "scenario.json": {
            "name": sc.name,
            "description": sc.description,
            "tags": list(sc.tags),
            "main_metric": sc.main_metric,
            "num_instances": len(instances),
            "num_eval_instances": len(evals),
        },
        "scenario_state.json": ScenarioState(spec.adapter_spec.to_json(), states).to_json(),
        "stats.json": [s.to_json() for s in sorted(stats, key=lambda s: repr(s.name.to_json()))],
        "per_instance_stats.json": [p.to_json() for p in per_instance],
        "counts": {
            "requests": len(states),
            "cache_hits": client.hits - hits0,
            "model_calls": client.calls - calls0,
        },
    }


def run_suite(
    out: str | Path,
    specs: Sequence[RunSpec],
    clients: dict[str, Callable[[], Client]],
    *,
    cache_path: str | Path | None,
    settings: dict,
    identity: dict,
    toxicity: ToxicityScorer | None = None,
    seed: int = 0,
    overwrite: bool = False,
    recompute: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every spec into ``out`` (a run folder), skipping finished runs; returns the suite record.

    Parameters
    ----------
    clients : dict
        Model name -> factory of its client (called only when a run of that model has to be executed).
    cache_path : path or None
        The SQLite request cache (None: no cache).
    recompute : bool
        Run finished runs again too (their requests then come from the cache): after a change of metrics code,
        or to check that a rerun makes no model call.
    settings, identity : dict
        Recorded in the manifest; ``identity`` must match for the folder to resume.
    """
    from dlscience.runs import RunFolder

    run = RunFolder(out, "eval run", settings, identity=identity, overwrite=overwrite)
    cache = RequestCache(cache_path) if cache_path is not None else None
    made: dict[str, CachingClient] = {}
    try:
        with run:
            done = run.state.setdefault("completed", {})
            for spec in specs:
                folder = f"runs/{spec.folder_name}"
                if (
                    not recompute
                    and spec.name in done
                    and all((run.out / folder / f).is_file() for f in RUN_FILES)
                ):
                    log(f"{spec.name}: finished earlier, skipped")
                    continue
                model = spec.adapter_spec.model
                if model not in made:
                    if model not in clients:
                        raise UserError(f"no client for model {model!r}")
                    made[model] = CachingClient(clients[model](), cache)
                start = time.perf_counter()
                outputs = execute_run(spec, made[model], toxicity=toxicity, seed=seed, progress=progress)
                counts = outputs.pop("counts")
                for name in RUN_FILES:
                    if name in COMPACT_FILES:  # one line: the large files shrink by about half
                        text = json.dumps(_jsonable(outputs[name]), separators=(",", ":")) + "\n"
                        atomic_write(run.path(f"{folder}/{name}"), lambda f, t=text: f.write(t.encode()))
                    else:
                        run.write_json(f"{folder}/{name}", outputs[name])
                counts["wall_seconds"] = round(time.perf_counter() - start, 3)
                done[spec.name] = {"folder": folder, **counts}
                run.save_state()
                log(
                    f"{spec.name}: {counts['requests']} requests, {counts['cache_hits']} from the cache, "
                    f"{counts['model_calls']} model calls, {counts['wall_seconds']:.1f} s"
                )
            suite = {
                "runs": [{"name": s.name, **done[s.name]} for s in specs if s.name in done],
                "models": sorted({s.adapter_spec.model for s in specs}),
                "cache": None if cache_path is None else str(cache_path),
                "model_calls_this_session": sum(c.calls for c in made.values()),
                "cache_hits_this_session": sum(c.hits for c in made.values()),
            }
            run.write_json("suite.json", suite)
            for (
                name
            ) in SUITE_OUTPUTS:  # written next by the leaderboard; registered so --overwrite removes them
                run.path(name)
            run.finish()
    finally:
        for c in made.values():
            c.client.close()
        if cache is not None:
            cache.close()
    return suite
