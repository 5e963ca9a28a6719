"""The one training loop: bit-for-bit resume, checkpoint cadence, loss curve, clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from dlscience.checkpoint import TrainingCheckpoint
from dlscience.errors import InputValidationError, UserError
from dlscience.runs import RunInterrupted
from dlscience.training_loop import new_state, train_loop


def _setup(path, seed=0, lr=0.05):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.98**k)
    gen = torch.Generator().manual_seed(seed + 1)
    ckpt = TrainingCheckpoint(
        path, {"seed": seed, "lr": lr}, model=model, optimizer=opt, scheduler=sched, generator=gen
    )
    state, _ = ckpt.restore(new_state(), other_settings="other settings")

    def step():
        x = torch.randn(16, 4, generator=gen)
        loss = ((model(x).squeeze(1) - x.sum(1).sin()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return loss.item()

    return model, ckpt, state, step


def _train(path, steps, *, stop_at=None, sig=signal.SIGINT, **kw):
    model, ckpt, state, step = _setup(path, **kw)

    def after(s):
        if stop_at is not None and s["step"] == stop_at:
            os.kill(os.getpid(), sig)
        return {"seen": s["step"]}

    train_loop(
        step,
        state,
        steps=steps,
        checkpoint=ckpt,
        checkpoint_every=7,
        progress=False,
        log_every=5,
        after_step=after,
    )
    return model, state


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_and_resumed_equals_uninterrupted_bit_for_bit(tmp_path, sig):
    ref_model, ref_state = _train(tmp_path / "ref.pt", 23)
    with pytest.raises(RunInterrupted, match=r"interrupted at step 10 of 23; saved .*run.pt"):
        _train(tmp_path / "run.pt", 23, stop_at=10, sig=sig)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    model, state = _train(tmp_path / "run.pt", 23)
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert state["losses"] == ref_state["losses"] and state["step"] == 23
    assert [s for s, _ in state["losses"]] == [5, 10, 15, 20, 23]


def test_checkpoint_cadence_and_extension(tmp_path):
    _train(tmp_path / "c.pt", 10)
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert saved["state"]["step"] == 10  # the last step is always saved
    ref, _ = _train(tmp_path / "ref.pt", 15)
    model, state = _train(tmp_path / "c.pt", 15)  # extend the run to more steps
    assert state["step"] == 15
    for a, b in zip(ref.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_without_checkpoint_the_stop_says_nothing_was_saved(tmp_path):
    model, _, state, step = _setup(tmp_path / "unused.pt")

    def after(s):
        if s["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunInterrupted, match="nothing was saved"):
        train_loop(step, state, steps=5, checkpoint=None, progress=False, after_step=after)


def test_bad_values_and_other_settings(tmp_path):
    _, ckpt, state, step = _setup(tmp_path / "x.pt")
    with pytest.raises(InputValidationError):
        train_loop(step, state, steps=0, checkpoint=ckpt)
    with pytest.raises(InputValidationError):
        train_loop(step, state, steps=3, checkpoint=ckpt, checkpoint_every=0)
    _train(tmp_path / "x.pt", 3)
    with pytest.raises(UserError, match=r"other settings \(differs: lr 0.05 -> 0.1\)"):
        _setup(tmp_path / "x.pt", lr=0.1)
    (tmp_path / "x.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match=r"x.pt is damaged or not a training checkpoint"):
        _setup(tmp_path / "x.pt")


def test_early_stop_saves_and_a_resumed_stopped_run_returns_at_once(tmp_path):
    model, ckpt, state, step = _setup(tmp_path / "s.pt")
    train_loop(step, state, steps=50, checkpoint=ckpt, progress=False, stop_when=lambda s: s["step"] >= 12)
    assert state["step"] == 12
    assert torch.load(tmp_path / "s.pt", weights_only=True)["state"]["step"] == 12
    model2, ckpt2, state2, step2 = _setup(tmp_path / "s.pt")
    calls = []
    train_loop(
        lambda: calls.append(1) or 0.0,
        state2,
        steps=50,
        checkpoint=ckpt2,
        progress=False,
        stop_when=lambda s: s["step"] >= 12,
    )
    assert not calls and state2["step"] == 12
