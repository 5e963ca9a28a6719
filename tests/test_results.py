"""Atomic result writing and the shared checkpoint helper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlscience.checkpoint import TrainingCheckpoint, record_loss
from dlscience.errors import UserError
from dlscience.results import atomic_write, write_json


def test_json_is_strict_and_converts_arrays(tmp_path):
    path = write_json(
        tmp_path / "a.json", {"x": np.array([1.0, np.nan]), "t": torch.tensor([2, 3]), "inf": -np.inf}
    )
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}")) == {
        "x": [1.0, None],
        "t": [2, 3],
        "inf": None,
    }


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def boom(f):
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "out.bin", boom)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_round_trip_and_refusal(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    gen = torch.Generator().manual_seed(3)
    ck = TrainingCheckpoint(tmp_path / "c.pt", {"lr": 1}, model=model, optimizer=opt, scheduler=sched, generator=gen,
                            extra={"steps": 7})  # fmt: skip
    state, extra = ck.restore({"step": 0, "losses": []}, other_settings="nope")
    assert state == {"step": 0, "losses": [], "window": []} and extra == {}
    for step in range(1, 4):
        state["step"] = step
        record_loss(state, float(step), every=2)
    assert state["losses"] == [[2, 1.5]] and state["window"] == [3.0]
    torch.randn(2, generator=gen)
    ck.save(state)
    expected = torch.randn(2, generator=gen)
    gen2 = torch.Generator().manual_seed(99)
    ck2 = TrainingCheckpoint(tmp_path / "c.pt", {"lr": 1}, model=torch.nn.Linear(2, 1), optimizer=opt, scheduler=sched,
                             generator=gen2)  # fmt: skip
    state2, extra2 = ck2.restore({}, other_settings="nope")
    assert state2 == state and extra2 == {"steps": 7}
    assert torch.equal(torch.randn(2, generator=gen2), expected)
    with pytest.raises(UserError, match=r"other run \(differs: lr 1 -> 2\)"):
        TrainingCheckpoint(tmp_path / "c.pt", {"lr": 2}, model=model, optimizer=opt, scheduler=sched,
                           generator=gen).restore({}, other_settings="other run")  # fmt: skip
