"""Adapter, window, cache, resume, registry and CLI with the mock client (checks 10 and 13 of the HELM note)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from dlscience.cli import main
from dlscience.evaluation.adapter import Adapter, sample_examples
from dlscience.evaluation.adapter_spec import AdapterSpec, multiple_choice_joint_spec
from dlscience.evaluation.cache import CachingClient, RequestCache
from dlscience.evaluation.mock_client import MockClient, mock_tokenize
from dlscience.evaluation.registry import get_scenario, load_scenario_file
from dlscience.evaluation.request import Request
from dlscience.evaluation.runner import (
    RUN_FILES,
    build_run_spec,
    execute_run,
    run_suite,
    select_eval_instances,
)
from dlscience.evaluation.scenario import CORRECT_TAG, TRAIN_SPLIT, Instance, Reference, with_ids
from dlscience.evaluation.window_service import WindowService


def _mc(question, choices, answer, split="test"):
    return Instance(
        question, tuple(Reference(c, (CORRECT_TAG,) if c == answer else ()) for c in choices), split
    )


TRAIN = [_mc(f"q{i}", ["x", "y"], "x" if i % 3 else "y", TRAIN_SPLIT) for i in range(6)]


# ---------------------------------------------------------------------------------------- adapter
def test_multiple_choice_joint_prompt_is_helm_format():
    spec = multiple_choice_joint_spec(model="mock", max_train_instances=1, instructions="Pick one.")
    adapter = Adapter(spec, WindowService(mock_tokenize, 1000))
    train = [_mc("2+2?", ["3", "4"], "4", TRAIN_SPLIT)]
    (state,) = adapter.adapt(train, [_mc("1+1?", ["2", "5"], "2")])
    assert state.request.prompt == (
        "Pick one.\nQuestion: 2+2?\nA. 3\nB. 4\nAnswer: B\n\nQuestion: 1+1?\nA. 2\nB. 5\nAnswer:"
    )
    assert state.output_mapping == {"A": "2", "B": "5"}
    assert (
        state.request.max_tokens == 1
        and state.request.temperature == 0
        and state.request.stop_sequences == ("\n",)
    )


def test_in_context_examples_follow_label_frequency_and_are_deterministic():  # check 10
    a = sample_examples(TRAIN, 3, seed=0)
    assert [i.input for i in a] == [i.input for i in sample_examples(TRAIN, 3, seed=0)]
    labels = [i.first_correct_reference.output for i in a]
    assert labels[0] == "x" and labels[1] == "y"  # most frequent label first, then one per label in turn
    evals = with_ids([_mc(f"e{i}", ["a", "b"], "a") for i in range(40)])
    chosen = select_eval_instances(evals, 10)
    assert [i.id for i in chosen] == [i.id for i in select_eval_instances(evals, 10)]
    assert len({i.id for i in chosen}) == 10


def test_prompts_do_not_depend_on_the_model():  # check 10
    prompts = []
    for model in ("mock-a", "mock-b"):
        spec = build_run_spec("everyday_qa", model, max_eval_instances=4, perturbations=())
        out = execute_run(spec, CachingClient(MockClient(model), None))
        prompts.append([rs["request"]["prompt"] for rs in out["scenario_state.json"]["request_states"]])
    assert prompts[0] == prompts[1]


def test_window_service_drops_examples_then_truncates():
    spec = AdapterSpec(model="mock", max_train_instances=3, max_tokens=5)
    long_train = [
        Instance(f"word {i} " * 10, (Reference("ans", (CORRECT_TAG,)),), TRAIN_SPLIT) for i in range(3)
    ]
    full = Adapter(spec, WindowService(mock_tokenize, 10_000)).adapt(long_train, [Instance("q", ())])[0]
    assert full.num_train_instances == 3
    n_tokens = len(mock_tokenize(full.request.prompt))
    one_less = Adapter(spec, WindowService(mock_tokenize, n_tokens + 5 - 1)).adapt(
        long_train, [Instance("q", ())]
    )[0]
    assert one_less.num_train_instances == 2 and not one_less.prompt_truncated
    assert len(mock_tokenize(one_less.request.prompt)) + 5 <= n_tokens + 4
    tiny = Adapter(spec, WindowService(mock_tokenize, 8)).adapt(
        long_train, [Instance("a b c d e f g h", ())]
    )[0]
    assert tiny.num_train_instances == 0 and tiny.prompt_truncated
    assert len(mock_tokenize(tiny.request.prompt)) == 8 - 5
    assert tiny.request.prompt == "Input: a b"


def test_multiple_choice_separate_calibrated_and_language_modelling_requests():
    spec = AdapterSpec(method="multiple_choice_separate_calibrated", model="mock", max_train_instances=0)
    states = Adapter(spec, WindowService(mock_tokenize, 1000)).adapt(
        [], [_mc("Sky?", ["blue", "red"], "blue")]
    )
    assert [(s.reference_index, s.request_mode) for s in states] == [
        (0, "original"),
        (0, "calibration"),
        (1, "original"),
        (1, "calibration"),
    ]
    assert states[1].request.prompt == "Output: blue" and states[0].request.prompt.endswith("Output: blue")
    assert all(s.request.echo_prompt and s.request.max_tokens == 0 for s in states)
    lm = AdapterSpec(method="language_modeling", model="mock")
    (state,) = Adapter(lm, WindowService(mock_tokenize, 1000)).adapt([], [Instance("some text here", ())])
    assert state.request.prompt == "some text here" and state.continuation == "some text here"


# ---------------------------------------------------------------------------------------- cache
def test_cache_is_keyed_on_the_full_request(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    client = CachingClient(MockClient("mock"), cache)
    r = Request(model="mock", prompt="Input: a cat\nOutput:", max_tokens=3)
    first = client.make_request(r)
    again = client.make_request(Request(model="mock", prompt="Input: a cat\nOutput:", max_tokens=3))
    assert client.calls == 1 and client.hits == 1 and again.cached and not first.cached
    assert again.completions == first.completions and again.request_time == first.request_time
    client.make_request(Request(model="mock", prompt="Input: a cat\nOutput:", max_tokens=4))
    client.make_request(
        Request(model="mock", prompt="Input: a cat\nOutput:", max_tokens=3, stop_sequences=("x",))
    )
    assert client.calls == 3 and len(cache) == 3
    other = CachingClient(MockClient("mock", respond=lambda req: "dog"), cache)
    other.client.identity = "mock:other-weights"
    other.make_request(r)
    assert other.calls == 1  # another model's identity never reuses these answers


def test_damaged_cache_is_one_line_error(tmp_path):
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(Exception, match="is not a request cache"):
        RequestCache(bad).get("x", Request(model="m", prompt="p"))


# ---------------------------------------------------------------------------------------- resume (check 13)
def _suite(out, cache, scenarios=("everyday_qa", "wordnet_synonym"), **kw):
    specs = [
        build_run_spec(s, "mock", max_eval_instances=6, perturbations=("typos", "gender")) for s in scenarios
    ]
    clients = {"mock": lambda: MockClient("mock")}
    return run_suite(
        out,
        specs,
        clients,
        cache_path=cache,
        settings={"n": 6},
        identity={"n": 6},
        progress=False,
        log=lambda m: None,
        **kw,
    ), specs


def test_rerun_makes_zero_model_calls_and_skips_only_complete_runs(tmp_path):
    cache = tmp_path / "cache.sqlite"
    suite, specs = _suite(tmp_path / "a", cache)
    assert suite["model_calls_this_session"] > 0
    for spec in specs:
        for name in RUN_FILES:
            assert (tmp_path / "a" / "runs" / spec.folder_name / name).is_file()
    again, _ = _suite(tmp_path / "a", cache)
    assert again["model_calls_this_session"] == 0 and again["cache_hits_this_session"] == 0  # skipped
    # a run missing one of its five files is run again, answered from the cache
    (tmp_path / "a" / "runs" / specs[0].folder_name / "stats.json").unlink()
    third, _ = _suite(tmp_path / "a", cache)
    assert third["model_calls_this_session"] == 0 and third["cache_hits_this_session"] > 0
    assert (tmp_path / "a" / "runs" / specs[0].folder_name / "stats.json").is_file()
    # recompute: every finished run again, all answers from the cache
    recomputed, _ = _suite(tmp_path / "a", cache, recompute=True)
    assert recomputed["model_calls_this_session"] == 0 and recomputed["cache_hits_this_session"] > 0
    # a fresh folder with the same cache: every run recomputed, zero model calls, same stats
    fresh, _ = _suite(tmp_path / "b", cache)
    assert fresh["model_calls_this_session"] == 0
    for spec in specs:
        a = json.loads((tmp_path / "a" / "runs" / spec.folder_name / "stats.json").read_text())
        b = json.loads((tmp_path / "b" / "runs" / spec.folder_name / "stats.json").read_text())
        assert a == b


# ---------------------------------------------------------------------------------------- registry
SCENARIO_FILE = textwrap.dedent(
    """
    from dlscience.evaluation import CORRECT_TAG, Instance, Reference, Scenario, register_scenario

    @register_scenario("test_capitals")
    class Capitals(Scenario):
        description = "capital cities"
        main_metric = "exact_match"

        def get_instances(self, seed=0):
            data = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Peru", "Lima")]
            return [Instance(c, (Reference(a, (CORRECT_TAG,)),), "train" if i == 0 else "test")
                    for i, (c, a) in enumerate(data)]

    def tox(texts):
        return [0.9 if "Rome" in t else 0.0 for t in texts]
    """
)


def test_a_scenario_is_one_file_and_cli_end_to_end(tmp_path, monkeypatch, capsys):
    path = tmp_path / "capitals_scenario.py"
    path.write_text(SCENARIO_FILE)
    assert load_scenario_file(path) == ["test_capitals"] or get_scenario("test_capitals")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("capitals_scenario", None)
    answers = {"France": "Paris", "Italy": "Rome", "Spain": "Barcelona", "Peru": "Lima"}
    import dlscience.evaluation.mock_client as mc

    def respond(request):
        last = request.prompt.rstrip().lower()
        return next(v for k, v in answers.items() if last.endswith(f"input: {k.lower()}\noutput:"))

    monkeypatch.setattr(mc, "_default_respond", respond)
    out = tmp_path / "suite"
    argv = ["eval", "run", "--model", "mock", "--scenarios", "test_capitals", "--scenario-file", str(path),
            "--cache", str(tmp_path / "c.sqlite"), "--out", str(out), "--no-progress",
            "--toxicity-scorer", "capitals_scenario:tox", "--perturbations", "lowercase"]  # fmt: skip
    assert main(argv) == 0
    stats = json.loads((out / "runs" / "test_capitals_model=mock" / "stats.json").read_text())
    means = {
        s["name"]["name"]: s["mean"]
        for s in stats
        if "perturbation" not in s["name"] and s["name"].get("split") == "test"
    }
    assert means["exact_match"] == pytest.approx(2 / 3)  # Rome, Madrid->Barcelona wrong, Lima
    assert means["toxic_frac"] == pytest.approx(1 / 3) and means["toxicity_available"] == 1.0
    assert "run finished" not in capsys.readouterr().err
    assert main(argv) == 0
    assert "0 model calls" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["groups"]["accuracy"]["table"]["mock"]["test_capitals"] == pytest.approx(2 / 3)
    assert summary["groups"]["toxicity"]["table"]["mock"]["test_capitals"] == pytest.approx(1 / 3)
    assert (out / "report.html").read_text().count("<table") >= 8


def test_toxicity_without_scorer_is_unavailable_and_damaged_files_are_one_line(tmp_path, capsys):
    out = tmp_path / "suite"
    argv = ["eval", "run", "--model", "mock", "--scenarios", "everyday_qa", "--max-eval-instances", "3",
            "--no-cache", "--out", str(out), "--no-progress", "--metrics", "accuracy,toxicity"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["groups"]["toxicity"]["table"]["mock"]["everyday_qa"] == "unavailable"
    assert summary["groups"]["robustness"]["table"]["mock"]["everyday_qa"] is None
    capsys.readouterr()
    (out / "runs" / "everyday_qa_model=mock" / "stats.json").write_text('{"trunc')
    assert main(["eval", "summarize", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stats.json is damaged" in err
    with pytest.raises(SystemExit) as exc:  # refused at parse time
        main(["eval", "run", "--model", "nonsense"])
    assert exc.value.code == 2
    assert (
        main(
            [
                "eval",
                "run",
                "--model",
                "mock",
                "--scenarios",
                "nope",
                "--no-cache",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "unknown scenario" in capsys.readouterr().err


def test_scenario_state_keeps_only_the_scored_tokens_of_echoed_prompts():
    spec = AdapterSpec(method="multiple_choice_separate_original", model="mock", max_train_instances=0)
    (state, _) = Adapter(spec, WindowService(mock_tokenize, 1000)).adapt(
        [], [_mc("Sky colour?", ["blue sky", "red"], "red")]
    )
    state.result = MockClient("mock").make_request(state.request)
    record = state.to_json()
    comp = record["result"]["completions"][0]
    assert [t for t, _ in comp["tokens"]] == [" blue", " sky"]  # the continuation's tokens, as scored
    assert comp["tokens_omitted"] == len(state.result.completions[0].tokens) - 2
    assert (
        len(state.to_json(all_prompt_tokens=True)["result"]["completions"][0]["tokens"])
        == comp["tokens_omitted"] + 2
    )
