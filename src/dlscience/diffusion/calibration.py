"""Patch-size calibration of the LS/ELS machines against a trained network (Kamb & Ganguli 2024, App. C.2).

Procedure (research note els.md Sec. 2):
    1. run the network's own deterministic DDIM trajectory (20 steps from t = 1) from fresh noise, with a
       random label when the network is class-conditional;
    2. at every step, evaluate the machine for each candidate patch size P on the network's current state;
    3. score each P by the cosine similarity, over the whole image, between the network's score
       -eps_theta / sigma and the machine's score;
    4. take the best P per sample and step, then the median over samples.
The result is a :class:`~dlscience.diffusion.patch_schedule.PatchSchedule` over the time grid (entry k at
t = (k + 1) / n_steps) that ``ELSDenoiser(..., patch_size=schedule)`` and ``els sample --schedule FILE`` accept.
Caveat from the note: at high noise both scores are dominated by the shared -x_t / sigma^2 term, so all
cosines are near 1 there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dlscience.diffusion.denoiser import Denoiser
from dlscience.diffusion.patch_schedule import PatchSchedule, resolve_patch_size
from dlscience.diffusion.sampler import DDIMSampler
from dlscience.errors import InputValidationError
from dlscience.results import load_torch, save_torch

__all__ = ["CalibrationResult", "calibrate", "cosine_similarity"]


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each sample's flattened tensors: a, b (B, ...) -> (B,) float64."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


@dataclass
class CalibrationResult:
    """Outcome of :func:`calibrate`.

    Attributes
    ----------
    schedule : PatchSchedule
        Median best P per grid time (n_steps entries; entry k at t = (k + 1) / n_steps).
    candidates : tuple of int
        The patch sizes tried.
    times : list of float
        Evaluation times, descending (as the sampler visits them).
    cosine : Tensor (n_samples, n_times, n_candidates), float64
        Cosine similarity of network and machine scores.
    best : LongTensor (n_samples, n_times)
        Best patch size per sample and time.
    labels : LongTensor (n_samples,) or None
    """

    schedule: PatchSchedule
    candidates: tuple[int, ...]
    times: list[float]
    cosine: torch.Tensor
    best: torch.Tensor
    labels: torch.Tensor | None

    def to_json(self) -> dict:
        """JSON-ready summary; ``sizes`` (what :meth:`PatchSchedule.from_file` reads) and every per-time list
        run in ascending t, aligned with ``times``. The median over samples is the lower median (an actual
        candidate when the number of samples is even)."""
        order = list(range(len(self.times)))[::-1]  # the sampler visits times in descending order
        return {
            "sizes": list(self.schedule.sizes),
            "candidates": list(self.candidates),
            "times": [self.times[i] for i in order],
            "best_per_sample": self.best[:, order].tolist(),
            "median_cosine_of_best": self.cosine.max(-1).values.median(0).values[order].tolist(),
        }


def calibrate(
    network: Denoiser,
    machine_for: Callable[[int], Denoiser],
    *,
    candidates: Sequence[int] = (3, 5, 7, 9, 11, 13, 15, 17),
    n_samples: int = 10,
    n_steps: int = 20,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: str | Path | None = None,
) -> CalibrationResult:
    """Calibrate a machine's patch size to a network along the network's own sampling trajectories.

    Parameters
    ----------
    network : Denoiser
        The trained network (or any denoiser to calibrate against).
    machine_for : callable
        ``machine_for(P)`` returns the machine with constant patch size P (same conditioning as ``network``).
    candidates : sequence of odd int
        Patch sizes to try.
    n_samples : int
        Trajectories (the median is taken over them; paper 10-20).
    n_steps : int
        DDIM grid (the network starts at t = 1).
    seed : int
        Seeds the noise and the random labels.
    progress : callable, optional
        Called as ``progress(done, total)`` after each machine evaluation.
    checkpoint : path, optional
        File that receives the trajectory state after every time step (atomically); a calibration restarted
        with the same arguments continues from it and gives the same result as an uninterrupted one. The
        caller keeps it to one identity (``els calibrate`` keeps it in its
        :class:`~dlscience.runs.RunFolder`, whose fingerprint covers the network, machine and arguments).

    Returns
    -------
    CalibrationResult

    Raises
    ------
    InputValidationError
        Empty candidate list or n_samples < 1.
    UserError
        If ``checkpoint`` is damaged (named).
    """
    if not candidates or n_samples < 1:
        raise InputValidationError("calibrate needs at least one candidate patch size and one sample")
    for P in candidates:
        resolve_patch_size(P)  # odd positive integers only
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n_samples, *network.image_shape), generator=gen)
    labels = None
    if network.conditional:
        labels = torch.randint(network.num_classes, (n_samples,), generator=gen)
    sampler = DDIMSampler(n_steps, 1.0)
    times = sampler.timesteps()
    machines = {P: machine_for(P) for P in candidates}
    cos = torch.zeros(n_samples, len(times), len(candidates), dtype=torch.float64)
    done, total = 0, len(times) * len(candidates)
    start = 0
    saved = _load(checkpoint)
    if saved is not None:
        start, x, cos = saved["next_step"], saved["x"], saved["cosine"]
        done = start * len(candidates)
        if progress is not None:
            progress(done, total)
    for i, t in enumerate(times):
        if i < start:
            continue
        net_score = network.score(x, t, labels)
        for j, P in enumerate(candidates):
            cos[:, i, j] = cosine_similarity(net_score, machines[P].score(x, t, labels))
            done += 1
            if progress is not None:
                progress(done, total)
        x0_hat = network.denoise(x, t, labels)
        if i + 1 < len(times):
            x = sampler.step(x, t, times[i + 1], x0_hat)
        if checkpoint is not None:
            save_torch(checkpoint, {"next_step": i + 1, "x": x, "cosine": cos})
    best = torch.tensor(candidates)[cos.argmax(-1)]  # (n_samples, n_times)
    median = best.double().median(dim=0).values  # lower median: an actual candidate for even n
    sizes = [0] * n_steps
    for i, t in enumerate(times):
        sizes[round(t * n_steps) - 1] = int(median[i])
    return CalibrationResult(
        PatchSchedule(tuple(sizes), name="calibrated"), tuple(candidates), times, cos, best, labels
    )


def _load(checkpoint) -> dict | None:
    """The saved state at ``checkpoint`` (None without one). Raises UserError naming a damaged file."""
    if checkpoint is None or not Path(checkpoint).exists():
        return None
    return load_torch(
        checkpoint, what="calibration checkpoint", fix="delete it to start the calibration afresh"
    )
