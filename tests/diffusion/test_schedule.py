"""Tests for dlscience.diffusion.schedule: the legacy cosine schedule, the forward process and the
time grid."""

from __future__ import annotations

import math

import pytest
import torch

from dlscience.diffusion.schedule import add_noise, alpha_bar, signal_and_noise, time_grid
from dlscience.errors import InputValidationError, UserError


@pytest.mark.parametrize("t, one_minus_ab", [(0.05, 0.0061), (0.3, 0.203), (0.5, 0.494), (0.95, 0.992)])
def test_alpha_bar_matches_research_note(t, one_minus_ab):
    """Schedule values of the research note (els.md Sec. 1): 1 - alpha_bar to 3 decimals (0.0061 to
    4)."""
    decimals = 4 if t == 0.05 else 3
    assert round(1 - alpha_bar(t), decimals) == pytest.approx(one_minus_ab, abs=1e-12)


def test_alpha_bar_endpoints_and_closed_form():
    """alpha_bar(0) = 1, alpha_bar(1) = cos^2(pi / 2 / 1.008) = 1.6e-4, and the tensor path equals
    the float path."""
    assert alpha_bar(0.0) == 1.0
    assert alpha_bar(1.0) == pytest.approx(math.cos(math.pi / 2 / 1.008) ** 2, rel=1e-12)
    assert alpha_bar(1.0) == pytest.approx(1.6e-4, rel=0.05)
    ts = torch.linspace(0, 1, 21, dtype=torch.float64)
    expected = torch.tensor([math.cos(float(t) / 1.008 * math.pi / 2) ** 2 for t in ts], dtype=torch.float64)
    got = alpha_bar(ts)
    assert got.shape == ts.shape and got.dtype == ts.dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)
    assert (got[1:] < got[:-1]).all(), "alpha_bar must decrease strictly in t"


@pytest.mark.parametrize("t", [0.0, 0.05, 0.37, 1.0])
def test_signal_and_noise_is_variance_preserving(t):
    """a = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar): a^2 + sigma^2 = 1."""
    a, sigma = signal_and_noise(t)
    assert a == pytest.approx(math.sqrt(alpha_bar(t)), abs=1e-15)
    assert a * a + sigma * sigma == pytest.approx(1.0, abs=1e-14)
    assert sigma >= 0


@pytest.mark.parametrize("t", [-0.01, 1.01, float("nan")])
def test_alpha_bar_rejects_times_outside_unit_interval(t):
    """Float t outside [0, 1] raises InputValidationError (a UserError) naming the time."""
    with pytest.raises(InputValidationError, match="outside"):
        alpha_bar(t)
    with pytest.raises(UserError):
        signal_and_noise(t)


def test_add_noise_with_given_eps_is_the_forward_process(gen):
    """x_t = a x0 + sigma eps exactly, with a, sigma from the closed form."""
    x0 = torch.rand(3, 2, 5, 5, generator=gen) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen)
    t = 0.3
    ab = math.cos(t / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(add_noise(x0, t, eps=eps), math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps)
    # t = 0 is the identity, and the output keeps the dtype
    torch.testing.assert_close(add_noise(x0.double(), 0.0, eps=eps.double()), x0.double())


def test_add_noise_generator_reproducible_and_statistics():
    """Same seed -> same noise; at t = 1 the output has ~unit variance and ~zero mean (many
    pixels)."""
    x0 = torch.ones(64, 1, 16, 16)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    x1, x2 = add_noise(x0, 1.0, generator=g1), add_noise(x0, 1.0, generator=g2)
    assert torch.equal(x1, x2)
    a, sigma = signal_and_noise(1.0)
    z = (x1 - a) / sigma  # the standard normal noise
    assert abs(z.mean().item()) < 0.03  # 16384 samples: std of the mean 0.008
    assert abs(z.std().item() - 1) < 0.03
    assert not torch.equal(x1, add_noise(x0, 1.0, generator=torch.Generator().manual_seed(8)))


@pytest.mark.parametrize("n", [1, 4, 20])
def test_time_grid(n):
    """t_i = i / n for i = 1..n, ascending, ending at exactly 1."""
    grid = time_grid(n)
    assert len(grid) == n
    assert grid == [i / n for i in range(1, n + 1)]
    assert grid[-1] == 1.0
    assert all(b > a for a, b in zip(grid, grid[1:], strict=False))


def test_time_grid_default_and_errors():
    """Default is the paper's 20 steps (first point 0.05); n < 1 is refused."""
    assert time_grid()[0] == pytest.approx(0.05)
    assert len(time_grid()) == 20
    for bad in (0, -3):
        with pytest.raises(InputValidationError, match="n_steps"):
            time_grid(bad)
