"""Pretraining: the schedule, exact resume, learning, the sweep and its threshold rule, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dlscience.cli import main
from dlscience.errors import InputValidationError, UserError
from dlscience.icl.sweep import paper_threshold, parse_tasks, run_sweep, threshold, threshold_by_step
from dlscience.icl.training import ICLConfig, load_transformer, train, triangle_lr

TINY = {
    "n_dims": 3,
    "n_points": 6,
    "n_layer": 1,
    "n_embd": 16,
    "n_head": 2,
    "batch_size": 16,
    "eval_samples": 256,
}


def test_triangle_schedule():
    lrs = [triangle_lr(s, 10, 1e-3) for s in range(11)]
    assert lrs[0] == 0 and lrs[5] == pytest.approx(1e-3) and lrs[10] == 0
    assert lrs[2] == pytest.approx(0.4e-3) and lrs[8] == pytest.approx(0.4e-3)


def test_resume_reaches_the_identical_state(tmp_path):
    """A run stopped at step 6 and continued to 12 equals a 12-step run bit for bit (model and log)."""
    cfg = ICLConfig(n_tasks=4, steps=12, eval_every=6, checkpoint_every=3, **TINY)
    full = train(cfg, tmp_path / "full", progress=False)

    class Stop(Exception):
        pass

    calls = {"n": 0}
    original = torch.optim.Adam.step

    def stop_after_seven(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise Stop
        return original(self, *a, **k)

    torch.optim.Adam.step = stop_after_seven
    try:
        with pytest.raises(Stop):
            train(cfg, tmp_path / "part", progress=False)
    finally:
        torch.optim.Adam.step = original
    resumed = train(cfg, tmp_path / "part", progress=False)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["loss_curve"] == full["loss_curve"] and resumed["evals"] == full["evals"]
    with pytest.raises(UserError, match="other settings"):
        train(ICLConfig(n_tasks=5, steps=12, **TINY), tmp_path / "full", progress=False)
    with pytest.raises(UserError, match="--steps 12"):
        train(ICLConfig(n_tasks=4, steps=20, eval_every=6, checkpoint_every=3, **TINY), tmp_path / "full")


def test_training_learns_in_context(tmp_path):
    """A small model trained briefly on M = 1 learns the single task: its error falls far below its initial
    error and near dMMSE's (which is exact for M = 1)."""
    cfg = ICLConfig(n_tasks=1, steps=150, eval_every=150, lr=3e-3, **{**TINY, "batch_size": 32})
    log = train(cfg, tmp_path, progress=False)
    first, last = log["evals"][0]["pretrain"]["mean_error"], log["evals"][-1]["pretrain"]["mean_error"]
    assert last["transformer"] < 0.2 * first["transformer"]
    assert last["dmmse"] < 1e-9
    model, saved = load_transformer(tmp_path)
    assert saved.n_tasks == 1 and not model.training


def test_threshold_rule_and_task_parsing():
    assert parse_tasks("1,2^4,inf") == [1, 16, None]
    with pytest.raises(InputValidationError, match="--tasks"):
        parse_tasks("0,4")
    # log(d_dmmse / d_ridge) = -1 at M = 4 and +1 at M = 16 -> crossing at log2 M = 3
    e = 2.718281828459045
    est = threshold([1, 4, 16], [0.1 / e**2, 0.1 / e, 0.1 * e], [0.1, 0.1, 0.1])
    assert est["status"] == "crossed" and est["log2_M_star"] == pytest.approx(3.0)
    assert "not the paper's threshold" in est["rule"]
    assert threshold([1, 4], [0.01, 0.01], [1.0, 1.0])["status"] == "above grid"
    assert threshold([1, 4], [1.0, 1.0], [0.01, 0.01])["status"] == "below grid"


def test_paper_threshold_on_synthetic_curves_with_a_known_crossing():
    """Two budgets' Delta(PT, ridge): the doubled budget is 0.2 farther from ridge at M = 2^2, 0.1 at 2^4,
    equal from 2^6 on (gap 0.1 -> -0.1 between log2 M = 4 and 6: crossing at log2 M = 5)."""
    ms = [4, 16, 64, 256]
    base = [1.0, 0.5, 0.2, 0.05]
    double = [1.2, 0.6, 0.1, 0.05]
    est = paper_threshold(ms, base, double)
    assert est["status"] == "crossed" and est["log2_M_star"] == pytest.approx(5.0)
    assert est["gaps"] == pytest.approx([0.2, 0.1, -0.1, 0.0])
    # a tolerance moves the crossing: gap - 0.05 = 0.15, 0.05, -0.15 -> log2 M = 4 + 2 * 0.05 / 0.2 = 4.5
    assert paper_threshold(ms, base, double, tol=0.05)["log2_M_star"] == pytest.approx(4.5)
    assert paper_threshold(ms, base, [b + 0.3 for b in base])["status"] == "above grid"
    assert paper_threshold(ms, base, base)["status"] == "below grid"
    with pytest.raises(InputValidationError):
        paper_threshold([16, 4], [1, 1], [1, 1])


def test_sweep_with_a_budget_pair_trains_each_m_twice(tmp_path):
    base = ICLConfig(steps=3, eval_every=3, **TINY)
    summary = run_sweep(
        [1, 4, None], base, tmp_path, progress=False, budget_pair="batch", final_eval_samples=256
    )
    assert sorted(p.name for p in tmp_path.glob("M=*")) == [
        "M=1",
        "M=1,2x-batch",
        "M=4",
        "M=4,2x-batch",
        "M=inf",
    ]
    saved = json.loads((tmp_path / "M=4,2x-batch" / "log.json").read_text())["settings"]
    assert saved["batch_size"] == 2 * base.resolved().batch_size and saved["n_tasks"] == 4
    paper = summary["paper_threshold"]
    assert paper["budget_pair"] == "batch" and len(paper["gaps"]) == 2
    assert all("delta_double_budget" in r for r in summary["rows"] if r["M"] is not None)
    finals = json.loads((tmp_path / "final_eval.json").read_text())
    assert sorted(finals) == ["M=1", "M=1,2x-batch", "M=4", "M=4,2x-batch", "M=inf"]
    row4 = summary["rows"][1]
    assert row4["eval_samples"] == 256 and row4["delta"]["true"] == finals["M=4"]["true"]["delta"]
    assert row4["delta_double_budget"]["true"] == finals["M=4,2x-batch"]["true"]["delta"]
    assert paper["gaps"][1] == pytest.approx(
        finals["M=4,2x-batch"]["true"]["delta"]["transformer|ridge"]
        - finals["M=4"]["true"]["delta"]["transformer|ridge"]
    )


def test_threshold_by_step_tracks_the_crossing_over_training():
    """At each shared evaluation step the rule is applied to that step's Deltas: a crossing at log2 M = 3 at
    step 10 (as in the test above) and none at step 20 (everything nearer dMMSE); steps missing from a run are
    skipped."""
    e = math.e

    def ev(step, d_dmmse, d_ridge):
        return {"step": step, "true": {"delta": {"transformer|dmmse": d_dmmse, "transformer|ridge": d_ridge}}}

    evals = {
        1: [ev(10, 0.1 / e**2, 0.1), ev(20, 0.01, 1.0), ev(30, 0.1, 0.1)],
        4: [ev(10, 0.1 / e, 0.1), ev(20, 0.01, 1.0)],
        16: [ev(10, 0.1 * e, 0.1), ev(20, 0.01, 1.0)],
    }
    out = threshold_by_step(evals)
    assert [b["step"] for b in out] == [10, 20]
    assert out[0]["log2_M_star"] == pytest.approx(3.0) and out[0]["status"] == "crossed"
    assert out[1]["log2_M_star"] is None and out[1]["status"] == "above grid"
    assert threshold_by_step({4: evals[4]}) == []


def test_sweep_writes_table_figure_and_reuses_runs(tmp_path):
    base = ICLConfig(steps=4, eval_every=4, **TINY)
    summary = run_sweep([1, 4, None], base, tmp_path, progress=False, final_eval_samples=128)
    assert [r["M"] for r in summary["rows"]] == [1, 4, None]
    # the final evaluation is cached: a rerun of the same size reads it, another size recomputes it
    cached = (tmp_path / "final_eval.json").read_bytes()
    assert run_sweep([1, 4, None], base, tmp_path, progress=False, final_eval_samples=128) == summary
    assert (tmp_path / "final_eval.json").read_bytes() == cached
    bigger = run_sweep([1, 4, None], base, tmp_path, progress=False, final_eval_samples=512)
    assert (
        bigger["rows"][1]["eval_samples"] == 512 and bigger["rows"][1]["delta"] != summary["rows"][1]["delta"]
    )
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    assert (tmp_path / "sweep_training.png").stat().st_size > 1000
    assert [b["step"] for b in summary["threshold_by_step"]] == [0, 4]  # evaluations at steps 0 and 4
    table = (tmp_path / "table.md").read_text()
    assert "| inf |" in table and "rule:" in table
    assert "Warning: at M = inf" in table  # 4 steps: far from ridge, and the table says so
    assert "| - |" in table.split("| inf |")[1].splitlines()[0] + "|"  # no dMMSE at M = inf
    mtime = (tmp_path / "M=4" / "model.pt").stat().st_mtime_ns
    run_sweep([4], base, tmp_path, progress=False, final_eval_samples=128)
    assert (tmp_path / "M=4" / "model.pt").stat().st_mtime_ns >= mtime
    assert json.loads((tmp_path / "sweep.json").read_text())["rows"][0]["M"] == 4


def test_cli(tmp_path, capsys):
    code = main(["icl", "train", "--tasks", "2^2", "--n-dims", "3", "--n-points", "6", "--n-layer", "1",
                 "--n-embd", "16", "--batch-size", "8", "--steps", "3", "--eval-every", "3",
                 "--eval-samples", "64", "--out", str(tmp_path / "run")])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0 and "error/D transformer" in out.out
    with pytest.raises(SystemExit) as exit_info:
        main(["icl", "train", "--tasks", "zero", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --tasks: must be a positive integer, 2^k or inf" in err
    code = main(["icl", "train", "--n-embd", "15", "--out", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert code == 2 and "divisible" in err and not (tmp_path / "y").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_matches_cpu(tmp_path):
    """--device cuda trains the same model from the same CPU-drawn data stream: losses and the final Delta
    agree with the CPU run up to float32 rounding."""
    cfg = ICLConfig(steps=20, eval_every=10, **TINY)
    cpu = train(cfg, tmp_path / "cpu", progress=False)
    gpu = train(cfg, tmp_path / "gpu", progress=False, device="cuda")
    np.testing.assert_allclose(gpu["loss_curve"], cpu["loss_curve"], rtol=1e-3, atol=1e-5)


def test_device_option_reaches_training(tmp_path):
    code = main(["icl", "train", "--tasks", "4", "--n-dims", "3", "--n-points", "6", "--n-layer", "1",
                 "--n-embd", "16", "--batch-size", "8", "--steps", "2", "--eval-every", "2",
                 "--eval-samples", "32", "--device", "cpu", "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 0
    model, _ = load_transformer(tmp_path / "run")
    assert model.wpe.weight.device.type == "cpu"
