"""Seed-by-seed agreement between a trained network and analytic machines (Kamb & Ganguli 2024, Sec. 6).

The network and each machine get the same seed phi_T ~ N(0, I) and the same label; the network is sampled with
the deterministic DDIM sampler from t = 1, the machines (as in the paper) treat the seed as the state at
t = 0.95 and make 19 evaluations. Per seed, over all pixels and channels (research note els.md Sec. 3):

    r      = <x - mean(x), y - mean(y)> / (|x - mean(x)| |y - mean(y)|)     Pearson r (the paper's metric)
    r^2    = r squared (what the paper's axes call r^2)
    R^2    = 1 - sum (x - y)^2 / sum (x - mean(x))^2                        coefficient of determination,
                                                                            x = network, y = machine
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dlscience.diffusion.denoiser import Denoiser
from dlscience.diffusion.sampler import DDIMSampler
from dlscience.errors import InputValidationError
from dlscience.results import load_torch, save_torch

__all__ = ["pearson_r", "determination", "SeedComparison", "compare"]


def pearson_r(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample over all pixels and channels: x, y (B, ...) -> (B,) float64."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-300)


def determination(reference: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination R^2 of ``prediction`` for ``reference`` per sample: (B, ...) -> (B,)."""
    x, y = reference.flatten(1).double(), prediction.flatten(1).double()
    ss_res = ((x - y) ** 2).sum(1)
    ss_tot = ((x - x.mean(1, keepdim=True)) ** 2).sum(1)
    return 1 - ss_res / ss_tot.clamp_min(1e-300)


@dataclass
class SeedComparison:
    """Samples and per-seed agreement of :func:`compare`.

    Attributes
    ----------
    seeds : list of int
    labels : LongTensor (n,) or None
    network : Tensor (n, C, H, W)
        The network's samples.
    machines : dict of str -> Tensor (n, C, H, W)
        Each machine's samples.
    r, r2, R2 : dict of str -> Tensor (n,) float64
        Pearson r, r squared and the coefficient of determination against the network, per seed.
    """

    seeds: list[int]
    labels: torch.Tensor | None
    network: torch.Tensor
    machines: dict[str, torch.Tensor]
    r: dict[str, torch.Tensor]
    r2: dict[str, torch.Tensor]
    R2: dict[str, torch.Tensor]

    def summary(self) -> dict:
        """Median and interquartile range of each metric per machine, and the fraction of seeds on which each
        machine beats each other one in r."""
        out = {}
        for name in self.machines:
            row = {}
            for metric, values in (("r", self.r), ("r2", self.r2), ("R2", self.R2)):
                v = values[name]
                q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
                row[metric] = {"median": float(q[1]), "q25": float(q[0]), "q75": float(q[2])}
            row["beats"] = {
                other: float((self.r[name] > self.r[other]).double().mean())
                for other in self.machines
                if other != name
            }
            out[name] = row
        return out


def compare(
    network: Denoiser,
    machines: dict[str, Denoiser],
    *,
    n_seeds: int = 100,
    seed: int = 0,
    n_steps: int = 20,
    machine_t_start: float = 0.95,
    progress: Callable[[str, int], None] | None = None,
    checkpoint: str | Path | None = None,
) -> SeedComparison:
    """Sample the network and every machine from the same seeds and labels and measure their agreement.

    Parameters
    ----------
    network : Denoiser
        The trained network (sampled from t = 1).
    machines : dict of name -> Denoiser
        E.g. {"ELS": ..., "LS": ..., "IS": ...} with the network's conditioning.
    n_seeds : int
        Seeds ``seed, seed + 1, ...``; noise for seed s is ``torch.randn(C, H, W)`` from a generator seeded
        with s, so a seed's sample does not depend on n_seeds.
    seed : int
        First seed; also seeds the random labels of a class-conditional network.
    n_steps : int
        DDIM grid of both samplers.
    machine_t_start : float
        First evaluation time of the machines (the paper's 0.95).
    progress : callable, optional
        Called as ``progress(name, seed_index)`` after each sample (also for samples restored from the
        checkpoint).
    checkpoint : path, optional
        File that receives every finished sample atomically; an interrupted comparison restarted with the same
        arguments continues from it and gives the same result as an uninterrupted one. The caller keeps it to
        one identity (``els compare`` keeps it in its :class:`~dlscience.runs.RunFolder`, whose fingerprint
        covers the network file, schedule, machines and seeds).

    Returns
    -------
    SeedComparison

    Raises
    ------
    InputValidationError
        If n_seeds < 1.
    UserError
        If ``checkpoint`` is damaged (named).
    """
    if n_seeds < 1:
        raise InputValidationError(f"--n-seeds must be >= 1, got {n_seeds}")
    C, H, W = network.image_shape
    seeds = list(range(seed, seed + n_seeds))
    noise = torch.stack([torch.randn(C, H, W, generator=torch.Generator().manual_seed(s)) for s in seeds])
    labels = None
    if network.conditional:
        labels = torch.randint(network.num_classes, (n_seeds,), generator=torch.Generator().manual_seed(seed))

    state = None
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_torch(
            checkpoint, what="comparison checkpoint", fix="delete it to start the comparison afresh"
        )
    if state is None:
        state = {"samples": {}, "done": {}}

    def run(denoiser, sampler, name):
        out = state["samples"].setdefault(name, torch.zeros(n_seeds, C, H, W))
        start = state["done"].get(name, 0)
        for i in range(n_seeds):
            if i >= start:
                y = None if labels is None else labels[i : i + 1]
                out[i] = sampler.sample(denoiser, noise[i : i + 1], y)[0]
                state["done"][name] = i + 1
                if checkpoint is not None:
                    save_torch(checkpoint, state)
            if progress is not None:
                progress(name, i)
        return out

    net = run(network, DDIMSampler(n_steps, 1.0), "network")
    outs = {name: run(m, DDIMSampler(n_steps, machine_t_start), name) for name, m in machines.items()}
    return SeedComparison(
        seeds=seeds,
        labels=labels,
        network=net,
        machines=outs,
        r={k: pearson_r(net, v) for k, v in outs.items()},
        r2={k: pearson_r(net, v) ** 2 for k, v in outs.items()},
        R2={k: determination(net, v) for k, v in outs.items()},
    )
