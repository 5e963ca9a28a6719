"""Resumable training, shared by every study's training loop.

:class:`TrainingCheckpoint` saves a model, its optimiser, its learning-rate schedule, the data generator and a
plain ``state`` dict atomically, with a fingerprint of the settings; restoring a checkpoint of other settings
is refused. :func:`record_loss` keeps the running loss window inside ``state`` so that a resumed run logs the
same loss curve as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dlscience.errors import UserError
from dlscience.results import load_torch, save_torch

__all__ = ["TrainingCheckpoint", "record_loss"]


class TrainingCheckpoint:
    """One ``checkpoint.pt`` holding everything needed to continue a run bit for bit.

    Parameters
    ----------
    path : path
        The checkpoint file (written atomically).
    settings : dict
        The settings that must match for a resume (JSON-serialisable); their hash is the fingerprint, and a
        refused resume names the ones that differ.
    model, optimizer, scheduler : torch objects with ``state_dict`` / ``load_state_dict``
    generator : torch.Generator
        The data (and noise) stream.
    extra : dict, optional
        Further values saved beside the states (e.g. the planned number of steps).
    averaged : torch.optim.swa_utils.AveragedModel, optional
        An exponential moving average of the weights, saved and restored with the rest; restoring a checkpoint
        written without one leaves it untouched (the average then starts at the next update).
    """

    def __init__(
        self, path, settings: dict, *, model, optimizer, scheduler, generator, extra=None, averaged=None
    ):
        self.path = Path(path)
        self.fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.model, self.optimizer, self.scheduler, self.generator = model, optimizer, scheduler, generator
        self.averaged = averaged
        self.extra = dict(extra or {})
        self.settings = dict(settings)

    def restore(self, default_state: dict, *, other_settings: str) -> tuple[dict, dict]:
        """Load the checkpoint if it exists.

        Parameters
        ----------
        default_state : dict
            Returned (with an empty loss window) when there is no checkpoint.
        other_settings : str
            Message of the :class:`UserError` raised when the checkpoint's fingerprint differs.

        Returns
        -------
        state : dict
            The saved or the default state (always with a ``"window"`` list).
        saved_extra : dict
            The extra values stored with the checkpoint (empty without one).
        """
        if not self.path.exists():
            return {**default_state, "window": []}, {}
        saved = load_torch(
            self.path,
            what="training checkpoint",
            fix="delete it to restart the run from step 0, or use another --out",
        )
        if not isinstance(saved, dict) or "model" not in saved:
            raise UserError(
                f"{self.path} is not a dlscience training checkpoint; delete it or use another --out"
            )
        if saved.get("fingerprint") != self.fingerprint:
            old = saved.get("settings") or {}
            diffs = [f"{k} {old[k]!r} -> {v!r}" for k, v in self.settings.items() if k in old and old[k] != v]
            raise UserError(other_settings + (f" (differs: {', '.join(diffs)})" if diffs else ""))
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.generator.set_state(saved["generator"])
        if self.averaged is not None and saved.get("averaged") is not None:
            self.averaged.load_state_dict(saved["averaged"])
        state = saved["state"]
        state.setdefault("window", [])  # checkpoints written before the window was kept
        return state, dict(saved.get("extra", {}))

    def save(self, state: dict) -> None:
        """Write the checkpoint atomically."""
        save_torch(
            self.path,
            {
                "fingerprint": self.fingerprint,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "averaged": None if self.averaged is None else self.averaged.state_dict(),
                "state": state,
                "extra": self.extra,
                "settings": self.settings,
            },
        )


def record_loss(state: dict, loss: float, *, every: int = 50, final: bool = False) -> bool:
    """Add one step's loss to ``state["window"]``; every ``every`` steps (or at the last step) append
    ``[state["step"], mean]`` to ``state["losses"]`` and empty the window. Returns True when it logged."""
    window = state["window"]
    window.append(float(loss))
    if len(window) >= every or final:
        state["losses"].append([state["step"], sum(window) / len(window)])
        window.clear()
        return True
    return False
