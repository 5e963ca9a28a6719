"""Issue 15 for the ICL study: run folders (manifest, resume, refusal, legacy folders), parse-time validation,
damaged files, interruption, the baselines job. Every refusal is one line, exit status 2, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from dlscience.cli import build_parser, main
from dlscience.cli_options import out_is_file_message
from dlscience.errors import InputValidationError, UserError
from dlscience.icl.baselines import MAX_BASELINE_TASKS, baseline_errors
from dlscience.icl.sweep import run_sweep
from dlscience.icl.training import ICLConfig, load_transformer, train

TINY = ["--n-dims", "3", "--n-points", "6", "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
        "--batch-size", "8", "--eval-samples", "64", "--steps", "4", "--eval-every", "2", "--no-progress"]  # fmt: skip
TINY_CFG = {"n_dims": 3, "n_points": 6, "n_layer": 1, "n_embd": 16, "n_head": 2, "batch_size": 8,
            "eval_samples": 64, "steps": 4, "eval_every": 2}  # fmt: skip
LEGACY = Path(__file__).resolve().parents[2] / "results" / "icl_sweep"


def _train(out, *extra, tasks="4"):
    return main(["icl", "train", "--tasks", tasks, *TINY, "--out", str(out), *extra])


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlscience: error: "), err
    return lines[0]


def _no_training(monkeypatch):
    """Make any optimiser step fail: proves that a run was reused, not retrained."""

    def boom(self, *a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(torch.optim.Adam, "step", boom)


# ------------------------------------------------------------------------------------ parse-time validation
@pytest.mark.parametrize(
    ("option", "value"),
    [("--lr", "0"), ("--lr", "-0.001"), ("--n-embd", "0"), ("--n-layer", "-1"), ("--n-head", "0"),
     ("--batch-size", "0"), ("--steps", "0"), ("--eval-every", "0"), ("--eval-samples", "0"), ("--n-dims", "0"),
     ("--n-points", "-2"), ("--noise-variance", "0"), ("--noise-variance", "-0.25"), ("--lr", "nan"),
     ("--seed", "-1"), ("--task-seed", "-3")],
)  # fmt: skip
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_bad_values_are_refused_before_anything_is_written(tmp_path, capsys, command, option, value):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["icl", command, *TINY, option, value, "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert exit_info.value.code == 2 and f"argument {option}: expected" in line and repr(value) in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--samples", "0"), ("--n-dims", "0"), ("--n-points", "-1"), ("--noise-variance", "0")],
)
def test_bad_baselines_values_are_refused(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["icl", "baselines", option, value])
    out = capsys.readouterr()
    assert exit_info.value.code == 2 and f"argument {option}: expected" in _one_error_line(out.err)
    assert out.out == ""


def test_duplicate_tasks_are_refused(tmp_path, capsys):
    for command, tasks, shown in [("sweep", "1,4,2^2", "M = 2^2"), ("baselines", "inf,16,inf", "M = inf")]:
        with pytest.raises(SystemExit) as exit_info:
            extra = [*TINY, "--out", str(tmp_path / "sweep")] if command == "sweep" else []
            main(["icl", command, "--tasks", tasks, *extra])
        line = _one_error_line(capsys.readouterr().err)
        assert exit_info.value.code == 2 and f"{shown} more than once" in line, line
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(InputValidationError, match="more than once"):
        run_sweep([4, 4], ICLConfig(**TINY_CFG), tmp_path / "api", progress=False)
    assert not (tmp_path / "api").exists()


def test_too_many_tasks_are_refused_with_the_reason(tmp_path, capsys):
    """baselines: M above 2^16 (dMMSE's time grows linearly with M); train/sweep: above 2^20; a huge exponent
    is refused at once (not computed)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["icl", "baselines", "--tasks", "4,2^17"])
    line = _one_error_line(capsys.readouterr().err)
    assert exit_info.value.code == 2 and "M = 2^17 is above 2^16" in line and "dMMSE" in line
    assert build_parser().parse_args(["icl", "baselines", "--tasks", "65536"]).tasks == [MAX_BASELINE_TASKS]
    for command, tasks in [("train", "2^21"), ("sweep", "1,2^1000000000")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["icl", command, "--tasks", tasks, *TINY, "--out", str(tmp_path / command)])
        line = _one_error_line(capsys.readouterr().err)
        assert exit_info.value.code == 2 and "is above 2^20" in line and "use inf" in line
        assert not (tmp_path / command).exists()
    with pytest.raises(InputValidationError, match="above 2"):
        baseline_errors([1 << 17], n_dims=2, n_points=2, samples=4)
    with pytest.raises(InputValidationError, match="--tasks must be between 1 and 2"):
        train(ICLConfig(n_tasks=(1 << 20) + 1, **TINY_CFG), tmp_path / "api")
    assert not (tmp_path / "api").exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    for command in ("train", "sweep"):
        with pytest.raises(SystemExit) as exit_info:
            main(["icl", command, *TINY, "--out", str(target)])
        line = _one_error_line(capsys.readouterr().err)
        assert exit_info.value.code == 2 and out_is_file_message(target).removeprefix("--out ") in line
    with pytest.raises(UserError, match="is a file; give a folder"):
        train(ICLConfig(n_tasks=2, **TINY_CFG), target, progress=False)
    assert target.read_text() == "keep me"


def test_preset_option_and_its_old_name(capsys):
    parser = build_parser()
    assert parser.parse_args(["icl", "train", "--out", "x"]).preset == "cpu"
    assert (
        parser.parse_args(["icl", "sweep", "--preset", "paper-small", "--out", "x"]).preset == "paper-small"
    )
    assert parser.parse_args(["icl", "train", "--config", "paper-base", "--out", "x"]).preset == "paper-base"
    assert parser.parse_args(["icl", "train", "--out", "x"]).progress is True
    assert parser.parse_args(["icl", "train", "--no-progress", "--overwrite", "--out", "x"]).overwrite is True
    with pytest.raises(SystemExit):
        main(["icl", "train", "--help"])
    shown = capsys.readouterr().out
    assert "--preset" in shown and "--config" not in shown and "--no-progress" in shown


# ------------------------------------------------------------------------------------ run folders
def test_run_folder_manifest_resume_and_refusal(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "dlscience icl train" and manifest["finished"] is True
    assert set(manifest["files"]) == {"checkpoint.pt", "model.pt", "log.json"}
    assert manifest["settings"]["preset"] == "cpu" and manifest["settings"]["n_tasks"] == 4
    capsys.readouterr()
    before = _snapshot(out)
    assert _train(out, "--lr", "0.002") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "other settings" in line and "lr 0.001 -> 0.002" in line and "--overwrite" in line
    assert _snapshot(out) == before
    assert _train(out, "--lr", "0.002", "--overwrite") == 0
    assert json.loads((out / "log.json").read_text())["settings"]["lr"] == 0.002
    assert json.loads((out / "manifest.json").read_text())["settings"]["lr"] == 0.002


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("manifest", [True, False], ids=["run", "legacy"])
def test_damaged_checkpoint_is_named_and_nothing_is_written(tmp_path, capsys, damage, manifest):
    out = tmp_path / "run"
    assert _train(out) == 0
    real = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(
        b"not a checkpoint\n" if damage == "garbage" else real[: len(real) // 2]
    )
    if not manifest:
        (out / "manifest.json").unlink()
    capsys.readouterr()
    before = _snapshot(out)
    assert _train(out) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{out / 'checkpoint.pt'} is damaged" in line and "delete it" in line
    assert _snapshot(out) == before  # no manifest written into a legacy folder either


def test_load_transformer_refuses_a_damaged_model_and_reads_old_ones(tmp_path):
    out = tmp_path / "run"
    assert _train(out) == 0
    model, cfg = load_transformer(out)
    assert cfg.preset == "cpu" and cfg.n_tasks == 4 and not model.training
    saved = torch.load(out / "model.pt", weights_only=True)
    old = dict(saved, config={("config" if k == "preset" else k): v for k, v in saved["config"].items()})
    torch.save(old, tmp_path / "old.pt")  # written before --preset: settings key "config"
    model_old, cfg_old = load_transformer(tmp_path / "old.pt")
    assert cfg_old == cfg and all(
        torch.equal(a, b) for a, b in zip(model.parameters(), model_old.parameters(), strict=True)
    )
    real = (out / "model.pt").read_bytes()
    for name, content, expected in [
        ("garbage.pt", b"\x00garbage", "is damaged"),
        ("truncated.pt", real[: len(real) // 3], "is damaged"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=expected) as info:
            load_transformer(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="is not a model of `dlscience icl train`"):
        load_transformer(tmp_path / "other.pt")
    torch.save(dict(saved, config={**saved["config"], "n_embd": 32}), tmp_path / "mismatch.pt")
    with pytest.raises(UserError, match="does not hold a model"):
        load_transformer(tmp_path / "mismatch.pt")


@pytest.mark.skipif(
    not (LEGACY / "M=1" / "checkpoint.pt").exists() or (LEGACY / "M=1" / "manifest.json").exists(),
    reason="the pre-manifest results/icl_sweep/M=1 is not present (its checkpoint is not in git; a sweep adopts it)",
)
def test_a_legacy_run_of_results_is_adopted_without_training(tmp_path, capsys, monkeypatch):
    """results/icl_sweep/M=1 was written before run manifests (settings key ``config``): the same command
    adopts it (its checkpoint checks the settings) and retrains nothing; other settings are refused with one
    line and nothing written."""
    out = tmp_path / "M=1"
    shutil.copytree(LEGACY / "M=1", out)
    original = json.loads((out / "log.json").read_text())
    assert "config" in original["settings"] and not (out / "manifest.json").exists()
    model, cfg = load_transformer(out)  # a model saved with config=
    assert cfg.preset == "cpu" and cfg.steps == 6000
    before = _snapshot(out)
    assert main(["icl", "train", "--tasks", "1", "--lr", "0.002", "--no-progress", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "other settings" in line and "lr 0.001 -> 0.002" in line and "--overwrite" in line
    assert _snapshot(out) == before
    _no_training(monkeypatch)
    assert main(["icl", "train", "--tasks", "1", "--no-progress", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] is True and manifest["command"] == "dlscience icl train"
    log = json.loads((out / "log.json").read_text())
    assert log["evals"] == original["evals"] and log["loss_curve"] == original["loss_curve"]
    again, _ = load_transformer(out)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_legacy_sweep_folder_reuses_its_finished_runs(tmp_path, monkeypatch, capsys):
    base = ICLConfig(**TINY_CFG)
    first = run_sweep([1, None], base, tmp_path, progress=False, final_eval_samples=64)
    for manifest in tmp_path.rglob("manifest.json"):
        manifest.unlink()  # as written before run manifests
    _no_training(monkeypatch)
    again = run_sweep([1, None], base, tmp_path, progress=False, final_eval_samples=64)
    assert again["rows"] == first["rows"]
    assert json.loads((tmp_path / "manifest.json").read_text())["command"] == "dlscience icl sweep"
    assert json.loads((tmp_path / "M=1" / "manifest.json").read_text())["finished"] is True
    # a sweep of other settings is refused, one line, nothing written
    before = _snapshot(tmp_path)
    code = main(["icl", "sweep", "--tasks", "1,inf", *TINY, "--steps", "6", "--out", str(tmp_path)])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "steps 4 -> 6" in line and "--overwrite" in line
    assert _snapshot(tmp_path) == before


def test_a_legacy_folder_of_other_settings_is_replaced_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    (out / "manifest.json").unlink()
    capsys.readouterr()
    assert _train(out, "--seed", "3") == 2
    assert "other settings" in _one_error_line(capsys.readouterr().err)
    assert not (out / "manifest.json").exists()
    assert _train(out, "--seed", "3", "--overwrite") == 0
    assert json.loads((out / "manifest.json").read_text())["settings"]["seed"] == 3


# ------------------------------------------------------------------------------------ interruption
def test_interrupt_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, capsys, monkeypatch):
    def interrupted(self, xs, ys):
        raise KeyboardInterrupt

    monkeypatch.setattr("dlscience.icl.ridge.Ridge._predict", interrupted)  # during the first evaluation
    out = tmp_path / "run"
    assert _train(out) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"dlscience: interrupted before the first checkpoint: nothing was saved in {out}"
    assert not (out / "checkpoint.pt").exists()


def test_sigint_saves_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path, capsys, monkeypatch):
    """SIGINT at step 3 of 4 (same total, so the same learning-rate triangle): the loop finishes the step,
    saves and says where; the same command then reaches bit for bit the state of an uninterrupted run."""
    assert _train(tmp_path / "straight") == 0
    calls = {"n": 0}
    original = torch.optim.Adam.step

    def sigint_at_three(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", sigint_at_three)
    out = tmp_path / "stopped"
    capsys.readouterr()
    assert _train(out) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"dlscience: interrupted at step 3 of 4; saved {out / 'checkpoint.pt'}: run the same command " \
        "again to resume"  # fmt: skip
    assert torch.load(out / "checkpoint.pt", weights_only=True)["state"]["step"] == 3
    assert not (out / "model.pt").exists()
    monkeypatch.setattr(torch.optim.Adam, "step", original)
    assert _train(out) == 0
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    b = torch.load(out / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a, log_b = (json.loads((p / "log.json").read_text()) for p in (tmp_path / "straight", out))
    assert log_a["loss_curve"] == log_b["loss_curve"] and log_a["evals"] == log_b["evals"]
    assert [e["step"] for e in log_b["evals"]] == [0, 2, 4]


# ------------------------------------------------------------------------------------ baselines job
def test_baselines_job_returns_the_table_the_cli_prints(capsys):
    result = baseline_errors([1, None], n_dims=3, n_points=4, samples=256, seed=0)
    assert [r["M"] for r in result["rows"]] == [1, None]
    assert result["ridge_risk"][0] == 1.0 and len(result["ridge_risk"]) == 4
    assert "dmmse" not in result["rows"][1]["true"]
    # M = 1: dMMSE knows the task, its error on the pool is 0
    assert result["rows"][0]["pretrain"]["dmmse"] < 1e-9 < result["rows"][0]["pretrain"]["ridge"]
    code = main(
        ["icl", "baselines", "--tasks", "1,inf", "--n-dims", "3", "--n-points", "4", "--samples", "256"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "ridge Bayes risk / D per position: 1.000" in out
    inf_row = [line for line in out.splitlines() if line.split()[:1] == ["inf"]][0]
    assert inf_row.split()[1:3] == ["-", "-"]
    assert f"{result['rows'][1]['true']['ridge']:.3f}" in inf_row


def test_config_round_trip_keeps_every_setting():
    cfg = ICLConfig(n_tasks=8, **TINY_CFG).resolved()
    assert ICLConfig.from_dict(asdict(cfg)) == cfg
    with pytest.raises(InputValidationError, match="unknown ICL settings"):
        ICLConfig.from_dict({**asdict(cfg), "width": 3})


def test_an_interrupted_sweep_says_which_runs_are_kept(tmp_path, capsys, monkeypatch):
    """SIGINT during the second run of a sweep: that run is saved, the finished first run is named as kept, and
    the same command then finishes the sweep without retraining the first run."""
    original = torch.optim.Adam.step
    calls = {"n": 0}

    def sigint_in_second_run(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 6:  # step 2 of M = inf (M = 1 takes steps 1-4)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", sigint_in_second_run)
    args = ["icl", "sweep", "--tasks", "1,inf", *TINY, "--out", str(tmp_path)]
    assert main(args) == 130
    err = capsys.readouterr().err.strip()
    assert err == (
        f"dlscience: interrupted at step 2 of 4; saved {tmp_path / 'M=inf' / 'checkpoint.pt'}: run the same "
        f"command again to resume; the finished runs (M=1) are kept in {tmp_path}"
    )
    assert not (tmp_path / "sweep.json").exists()
    model_1 = (tmp_path / "M=1" / "model.pt").read_bytes()
    monkeypatch.setattr(torch.optim.Adam, "step", original)
    assert main(args) == 0
    assert (tmp_path / "M=1" / "model.pt").read_bytes() == model_1
    assert [r["M"] for r in json.loads((tmp_path / "sweep.json").read_text())["rows"]] == [1, None]
    assert json.loads((tmp_path / "manifest.json").read_text())["finished"] is True


@pytest.mark.parametrize(
    "pair_tasks, budget_pair, match",
    [
        ([4, 16], None, "needs budget_pair"),
        ([4, 64], "batch", "from --tasks"),
        ([4], "batch", "at least two"),
        ([4, 4], "batch", "distinct"),
    ],
)
def test_sweep_refuses_bad_pair_tasks_before_writing(tmp_path, pair_tasks, budget_pair, match):
    with pytest.raises(InputValidationError, match=match):
        run_sweep(
            [1, 4, 16, None],
            ICLConfig(**TINY_CFG),
            tmp_path / "sweep",
            progress=False,
            budget_pair=budget_pair,
            pair_tasks=pair_tasks,
        )
    assert not (tmp_path / "sweep").exists()
