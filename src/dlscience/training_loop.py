"""The one training loop of every study: seeded, resumable bit for bit, with a progress bar and a clean stop.

A study supplies one optimiser step (``step() -> loss``) and, optionally, what to do after a step (evaluate,
log); :func:`train_loop` counts steps, keeps the loss curve (:func:`~dlscience.checkpoint.record_loss`), shows
the progress bar, times the run, writes the :class:`~dlscience.checkpoint.TrainingCheckpoint` every
``checkpoint_every`` steps and at the end, and on SIGINT or SIGTERM finishes the step under way, saves a
checkpoint and raises :class:`~dlscience.runs.RunInterrupted` with one line saying where it stopped. Because
the model, optimiser, learning-rate schedule, data generator and loss window are all in the checkpoint, a
resumed run reaches exactly the state of an uninterrupted one.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from dlscience.checkpoint import TrainingCheckpoint, record_loss
from dlscience.errors import InputValidationError
from dlscience.runs import RunInterrupted

__all__ = ["train_loop", "new_state"]


def new_state(**extra) -> dict:
    """A fresh loop state: ``{"step": 0, "losses": [], "window": [], "seconds": 0.0, **extra}``."""
    return {"step": 0, "losses": [], "window": [], "seconds": 0.0, **extra}


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps (main thread only)."""

    def __init__(self):
        self.requested = False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def train_loop(
    step: Callable[[], float],
    state: dict,
    *,
    steps: int,
    checkpoint: TrainingCheckpoint | None = None,
    checkpoint_every: int = 200,
    progress: bool = True,
    desc: str = "train",
    log_every: int = 50,
    after_step: Callable[[dict], dict | None] | None = None,
    stop_when: Callable[[dict], bool] | None = None,
) -> dict:
    """Run ``step`` until ``state["step"] == steps``, checkpointing and reporting as it goes.

    Parameters
    ----------
    step : callable () -> float
        One optimiser step (forward, backward, ``optimizer.step()``, scheduler and average updates) drawing its
        data from the checkpointed generator; returns the step's loss.
    state : dict
        The loop state from :meth:`TrainingCheckpoint.restore` or :func:`new_state` (keys ``step``, ``losses``,
        ``window``, ``seconds`` and any of the study's own); updated in place.
    steps : int
        Total number of optimiser steps (>= 1); a state already there returns at once.
    checkpoint : TrainingCheckpoint, optional
        Saved every ``checkpoint_every`` steps, at the last step and on interruption (None: never saved).
    checkpoint_every : int
        Steps between checkpoints (>= 1).
    progress : bool
        Show a tqdm progress bar with the running loss.
    desc : str
        The bar's label.
    log_every : int
        Steps per point of the loss curve ``state["losses"]`` (mean over the window).
    after_step : callable (state) -> dict or None, optional
        Called after every step (with ``state["step"]`` already advanced), e.g. to evaluate; a returned dict
        is shown in the progress bar.
    stop_when : callable (state) -> bool, optional
        Early stop: checked before the first step and after every step (after ``after_step``); when true the
        state is checkpointed and returned (a resumed run that had stopped returns at once).

    Returns
    -------
    dict
        ``state``.

    Raises
    ------
    InputValidationError
        ``steps`` or ``checkpoint_every`` below 1.
    RunInterrupted
        On SIGINT/SIGTERM, after the current step is finished and saved; the message names the step and the
        checkpoint (or says that nothing was saved without one).
    """
    if steps < 1 or checkpoint_every < 1:
        raise InputValidationError(f"steps ({steps}) and checkpoint_every ({checkpoint_every}) must be >= 1")
    from tqdm.auto import tqdm

    bar = tqdm(
        total=steps,
        initial=min(state["step"], steps),
        disable=not progress,
        unit="step",
        desc=desc,
        dynamic_ncols=True,
    )
    postfix: dict = {}
    t0 = time.perf_counter()

    def save():
        nonlocal t0
        state["seconds"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if checkpoint is not None:
            checkpoint.save(state)

    try:
        with _StopRequest() as stop:
            while state["step"] < steps and not (stop_when is not None and stop_when(state)):
                loss = float(step())
                state["step"] += 1
                if record_loss(state, loss, every=log_every, final=state["step"] == steps):
                    postfix["loss"] = f"{state['losses'][-1][1]:.4f}"
                if after_step is not None:
                    shown = after_step(state)
                    if shown:
                        postfix.update(shown)
                if postfix:
                    bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if (
                    state["step"] % checkpoint_every == 0
                    or state["step"] == steps
                    or (stop_when is not None and stop_when(state))
                ):
                    save()
                if stop.requested:
                    save()
                    where = (
                        f"saved {checkpoint.path}: run the same command again to resume"
                        if checkpoint is not None
                        else "nothing was saved"
                    )
                    raise RunInterrupted(f"interrupted at step {state['step']} of {steps}; {where}")
    finally:
        bar.close()
    return state
