"""Tests for the Denoiser interface (eps / score relations) and the deterministic DDIM sampler."""

from __future__ import annotations

import math

import pytest
import torch

from dlscience.diffusion import DDIMSampler, Denoiser, ELSDenoiser, IdealDenoiser, add_noise
from dlscience.errors import InputValidationError


def theta(t: float) -> float:
    """Angle of the legacy cosine schedule: a_t = cos(theta), sigma_t = sin(theta)."""
    return t / 1.008 * math.pi / 2


class StandardGaussianDenoiser(Denoiser):
    """Exact posterior mean for data x0 ~ N(0, I): x_t ~ N(0, I) too and E[x0 | x_t] = a_t x_t."""

    def __init__(self, shape=(1, 4, 4)):
        self.image_shape = shape
        self.calls: list[float] = []

    def _denoise(self, x_t, t, labels):
        self.calls.append(float(t[0]))
        a = torch.cos(t * (math.pi / 2 / 1.008)).to(x_t.dtype).view(-1, 1, 1, 1)
        return a * x_t


# ----------------------------------------------------------------------------- time steps


def test_timesteps_from_one_and_from_095():
    """t_start = 1.0 gives the networks' 20 evaluations, t_start = 0.95 the ELS machine's 19
    (els.md Sec. 1)."""
    full = DDIMSampler(n_steps=20, t_start=1.0).timesteps()
    els = DDIMSampler(n_steps=20, t_start=0.95).timesteps()
    assert len(full) == 20 and len(els) == 19
    assert full == pytest.approx([i / 20 for i in range(20, 0, -1)], abs=1e-15)
    assert els == pytest.approx(full[1:], abs=1e-15)
    assert els[0] == pytest.approx(0.95) and els[-1] == pytest.approx(0.05)
    assert DDIMSampler(n_steps=100, t_start=0.95).timesteps()[-1] == pytest.approx(0.01)


@pytest.mark.parametrize("kwargs", [{"n_steps": 0}, {"t_start": 0.0}, {"t_start": 1.5}, {"t_start": 0.93}])
def test_sampler_rejects_bad_settings(kwargs):
    """n_steps < 1 and a t_start that is not a grid point in (0, 1] raise InputValidationError."""
    with pytest.raises(InputValidationError):
        DDIMSampler(**kwargs)


def test_sampler_rejects_bad_start_index():
    """start_index outside [0, number of evaluations) is refused."""
    s = DDIMSampler(n_steps=4, t_start=1.0)
    with pytest.raises(InputValidationError, match="start_index"):
        s.sample(StandardGaussianDenoiser(), torch.zeros(1, 1, 4, 4), start_index=4)


# ----------------------------------------------------------------------------- DDIM update


def test_step_formula(gen):
    """x_t' = a' x0_hat + sigma' (x_t - a x0_hat) / sigma, with a, sigma from the cosine
    schedule."""
    x, x0 = torch.randn(2, 1, 3, 3, generator=gen), torch.rand(2, 1, 3, 3, generator=gen)
    t, tn = 0.6, 0.55
    a, s = math.cos(theta(t)), math.sin(theta(t))
    an, sn = math.cos(theta(tn)), math.sin(theta(tn))
    torch.testing.assert_close(DDIMSampler.step(x, t, tn, x0), an * x0 + sn * (x - a * x0) / s)


def test_ddim_with_exact_gaussian_denoiser_has_closed_form(gen):
    """For N(0, I) data each DDIM step multiplies x by a a' + sigma sigma' = cos(theta - theta');
    the output is
    a_{t_1} times the product applied to the seed."""
    den = StandardGaussianDenoiser()
    sampler = DDIMSampler(n_steps=10, t_start=1.0)
    x = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    out = sampler.sample(den, x)
    times = sampler.timesteps()
    factor = math.prod(math.cos(theta(t) - theta(tn)) for t, tn in zip(times, times[1:], strict=False))
    expected = math.cos(theta(times[-1])) * factor * x
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert den.calls == pytest.approx(times)  # one evaluation per time, in order


def test_single_training_image_is_reproduced_exactly(gen):
    """IS with one training image returns that image at every t, so DDIM from any seed reproduces
    it."""
    img = torch.rand(1, 2, 5, 5, generator=gen) * 2 - 1
    den = IdealDenoiser(img)
    x = 3 * torch.randn(4, 2, 5, 5, generator=gen)
    for t in (0.05, 0.5, 1.0):
        torch.testing.assert_close(den.denoise(x, t), img.expand(4, -1, -1, -1), rtol=0, atol=1e-6)
    out = DDIMSampler(n_steps=20, t_start=0.95).sample(den, x)
    torch.testing.assert_close(out, img.expand(4, -1, -1, -1), rtol=0, atol=1e-6)


def test_resume_from_start_index_equals_uninterrupted_run(gen):
    """Restarting from the state saved by the callback at evaluation k gives the identical final
    output."""
    imgs = torch.rand(4, 1, 6, 6, generator=gen) * 2 - 1
    den = ELSDenoiser(imgs, 3, "circular")
    sampler = DDIMSampler(n_steps=20, t_start=0.95)
    x = torch.randn(2, 1, 6, 6, generator=gen)
    states = {}
    seen = []

    def callback(i, t, x_next, x0_hat):
        seen.append((i, t))
        states[i + 1] = x_next.clone()

    full = sampler.sample(den, x, callback=callback)
    times = sampler.timesteps()
    assert [i for i, _ in seen] == list(range(19))
    assert [t for _, t in seen] == pytest.approx(times)
    assert torch.equal(states[19], full)  # after the last evaluation x_next is x0_hat
    for k in (1, 7, 18):
        resumed = sampler.sample(den, states[k], start_index=k)
        assert torch.equal(resumed, full), f"resume at {k} differs"


# ----------------------------------------------------------------------------- eps and score


@pytest.mark.parametrize("t", [0.05, 0.4, 1.0])
def test_eps_and_score_relations(gen, t):
    """eps_hat = (x - a x0_hat) / sigma and score = -eps_hat / sigma (Tweedie), for a real
    machine."""
    imgs = torch.rand(5, 1, 6, 6, generator=gen) * 2 - 1
    den = ELSDenoiser(imgs, 3, "zeros", precision="float64")
    x = add_noise(imgs[:2].double(), t, generator=gen)
    a, sigma = math.cos(theta(t)), math.sin(theta(t))
    x0 = den.denoise(x, t)
    eps = den.eps(x, t)
    torch.testing.assert_close(eps, (x - a * x0) / sigma, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(den.score(x, t), -(x - a * x0) / sigma**2, rtol=1e-12, atol=1e-10)


def test_per_sample_times_in_eps(gen):
    """A vector t applies each sample's own (a, sigma)."""
    den = StandardGaussianDenoiser()
    x = torch.randn(2, 1, 4, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.2, 0.9])
    eps = den.eps(x, t)
    for i in range(2):
        a, s = math.cos(theta(float(t[i]))), math.sin(theta(float(t[i])))
        torch.testing.assert_close(eps[i], (x[i] - a * a * x[i]) / s, rtol=1e-12, atol=1e-12)
