"""The grokking job: data, initialisation scales, early stop at grokking, resume, CLI errors."""

from __future__ import annotations

import json

import pytest
import torch

from dlscience.cli import main
from dlscience.learning_dynamics.grokking import GrokkingConfig, _model, modular_addition, run_grokking

TINY = GrokkingConfig(
    scales=(0.5, 2.0),
    seeds=(0,),
    p=7,
    hidden=32,
    steps=300,
    eval_every=20,
    grok_accuracy=0.3,
    train_fraction=0.6,
)


def test_modular_addition_covers_every_pair_once():
    X, y, train, test = modular_addition(7, 0.6, seed=3)
    assert X.shape == (49, 14) and torch.all(X.sum(1) == 2)
    a, b = X[:, :7].argmax(1), X[:, 7:].argmax(1)
    assert torch.equal(y, (a + b) % 7)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(49)) and len(train) == 29


def test_scales_set_delta_and_compensation_keeps_the_product():
    base = _model(TINY, 1.0, 0)
    small = _model(TINY, 0.5, 0)
    comp = _model(GrokkingConfig(**{**TINY.__dict__, "compensate": True}), 0.5, 0)
    torch.testing.assert_close(small[0].weight, 0.5 * base[0].weight)
    torch.testing.assert_close(small[2].weight, base[2].weight)
    torch.testing.assert_close(comp[2].weight, 2.0 * base[2].weight)


def test_job_records_steps_extends_and_resumes(tmp_path):
    from dataclasses import replace

    summary = run_grokking(TINY, tmp_path / "a", progress=False)
    first = summary["runs"][0]
    assert first["steps_run"] == 300 and len(first["evals"]) == 15
    fits = [e[0] for e in first["evals"] if e[1] >= 0.99]
    assert first["fit_step"] == (fits[0] if fits else None)
    # at this size it memorises (test accuracy 0): it never groks and runs to the end of its budget
    assert first["grok_step"] is None
    # a longer budget extends the finished runs instead of starting again
    longer = run_grokking(replace(TINY, steps=340), tmp_path / "a", progress=False)
    assert longer["runs"][0]["evals"][:15] == first["evals"] and longer["runs"][0]["steps_run"] == 340
    fresh = run_grokking(TINY, tmp_path / "c", progress=False)  # same seed, same numbers
    assert [r["evals"] for r in fresh["runs"]] == [r["evals"] for r in summary["runs"]]
    again = run_grokking(replace(TINY, steps=340), tmp_path / "a", progress=False)  # finished: read back
    assert [r["evals"] for r in again["runs"]] == [r["evals"] for r in longer["runs"]]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["finished"] and "runs" in manifest["files"] and "grokking.png" in manifest["files"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scales", "0.1,0.1"], "more than once"),
        (["--seeds", "1,1"], "given more than once"),
        (["--train-fraction", "1.5"], "[0, 1]"),
        (["--lr", "0"], "positive number"),
        (["--scales", "0,1"], "distinct positive"),
        (["--train-fraction", "1"], "train_fraction must be in (0, 1)"),
    ],
)
def test_bad_values_one_line(capsys, tmp_path, args, message):
    try:
        code = main(["dynamics", "lazy-rich", "grokking", "--out", str(tmp_path / "o"), *args])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
