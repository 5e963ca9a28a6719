"""Diffusion models and the training-free machines that predict them (Kamb & Ganguli 2024).

Public API: the noise schedule (:func:`alpha_bar`, :func:`add_noise`), the :class:`Denoiser` interface, the
:class:`DDIMSampler`, the analytic machines :class:`IdealDenoiser` (IS), :class:`LocalDenoiser` (LS) and
:class:`ELSDenoiser` (ELS / boundary-broken ELS), and the calibrated patch-size schedules
(:class:`PatchSchedule`, :data:`PRESETS`).
"""

from dlscience.diffusion.denoiser import Denoiser
from dlscience.diffusion.empirical import PatchMatch
from dlscience.diffusion.equivariant_local_score import ELSDenoiser
from dlscience.diffusion.ideal_score import IdealDenoiser
from dlscience.diffusion.local_score import LocalDenoiser
from dlscience.diffusion.patch_schedule import PRESETS, PatchSchedule
from dlscience.diffusion.sampler import DDIMSampler
from dlscience.diffusion.schedule import add_noise, alpha_bar, signal_and_noise, time_grid

__all__ = [
    "Denoiser",
    "DDIMSampler",
    "ELSDenoiser",
    "IdealDenoiser",
    "LocalDenoiser",
    "PatchMatch",
    "PatchSchedule",
    "PRESETS",
    "add_noise",
    "alpha_bar",
    "signal_and_noise",
    "time_grid",
]
