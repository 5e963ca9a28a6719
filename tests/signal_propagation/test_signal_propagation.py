"""The research note's eight checks (paper 1, Sec. d) plus the pieces of the maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dlscience.errors import InputValidationError
from dlscience.signal_propagation import (
    RandomTransformer,
    SignalPropParams,
    angle_exponent,
    attention_overlaps,
    block_map,
    collapsed_fixed_point,
    critical_sigma_w,
    gradient_exponent,
    iterate_maps,
    mlp_chi,
    mlp_kernel,
)
from dlscience.signal_propagation.maps import _kernel_table, layer_factors, mlp_kernel_at_one
from dlscience.signal_propagation.simulate import (
    angle_exponent_mc,
    gram_stats,
    simplex_tokens,
    simulate_geometry,
)

torch.set_num_threads(1)


def test_collapsed_state_is_invariant():
    """Check 1: identical tokens stay identical through any block (network and maps)."""
    p = SignalPropParams(0.3, 0.7, 1.5, 4.0)
    x = torch.randn(1, 64, dtype=torch.float64).expand(6, 64).clone()
    y = RandomTransformer(64, 5, p, seed=0).double()(x)
    assert torch.allclose(y, y[:1].expand_as(y), atol=1e-12, rtol=0)
    _, _, q2, p2 = block_map(0.8, 0.8, p, n=6)
    assert p2 == pytest.approx(q2, abs=1e-12)


def test_attention_alone_collapses_tokens_at_rate_one_minus_alpha_squared():
    """Check 2: with alpha_M = 0, rho rises monotonically to 1, and 1 - rho contracts by 1 - alpha_A^2 near 1."""
    for alpha in (0.2, 0.5, 0.9):
        p = SignalPropParams(alpha, 0.0, 1.0, 1.0)
        rho = iterate_maps(1.0, 0.2, p, 40, n=8).rho
        assert np.all(np.diff(rho) >= 0) and rho[1] > rho[0]
        assert rho[-1] > (0.99 if alpha >= 0.5 else 0.6)
        _, _, q2, p2 = block_map(1.0, 1 - 1e-6, p, n=8)
        assert (1 - p2 / q2) / 1e-6 == pytest.approx(1 - alpha**2, rel=1e-4)
        assert angle_exponent(p) == pytest.approx(math.log(1 - alpha**2))


def test_pre_ln_branches_see_only_the_angle():
    """Check 3: scaling the input by 5 leaves both branch outputs unchanged (only q changes)."""
    p = SignalPropParams(0.5, 0.5, 1.0, 2.0)
    block = RandomTransformer(32, 1, p, seed=1).double().blocks[0]
    x = torch.randn(5, 32, dtype=torch.float64)
    torch.testing.assert_close(block.attention(5 * x), block.attention(x))
    torch.testing.assert_close(block.mlp(5 * x), block.mlp(x))
    q, rho = gram_stats(x)
    q5, rho5 = gram_stats(5 * x)
    assert q5 == pytest.approx(25 * q) and rho5 == pytest.approx(rho)


@pytest.mark.parametrize(
    "setting", [(0.5, 0.0, 1.0), (0.5, 0.5, 3.0), (0.3, 0.7, 4.0)], ids=["attention", "ordered", "chaotic"]
)
def test_maps_track_simulation(setting):
    """Check 4 (reduced): the maps' rho stays within 0.04 of finite networks (d = 512, n = 8, 12 layers, 3
    networks); the full-size table (d = 1024, 30 layers, ten settings) is `dlscience sigprop simulate`."""
    p = SignalPropParams(*setting[:2], 1.0, setting[2])
    theory = iterate_maps(1.0, 0.3, p, 12, n=8).rho
    sim = simulate_geometry(p, n=8, d=512, n_layers=12, rho0=0.3, n_networks=3)
    measured = np.array([e.mean for e in sim["rho"]])
    assert np.max(np.abs(theory - measured)) < 0.04


def test_relu_is_marginal_and_tanh_expands():
    """Check 5: the normalised ReLU cosine map has slope 1 at rho = 1 and c(rho) > rho; tanh's chi / K(1) > 1."""
    c = lambda r: mlp_kernel(r, 2.0, "relu") / mlp_kernel(1.0, 2.0, "relu")  # noqa: E731
    assert (c(1.0) - c(1 - 1e-6)) / 1e-6 == pytest.approx(1.0, abs=1e-3)
    r = np.linspace(-0.9, 0.99, 50)
    assert np.all(c(r) > r)
    assert mlp_chi(2.0, "relu") == pytest.approx(mlp_kernel_at_one(2.0, "relu"))
    ratios = [mlp_chi(s) / mlp_kernel_at_one(s) for s in (0.5, 1, 2, 3, 4)]
    np.testing.assert_allclose(ratios, [1.034, 1.178, 1.612, 2.104, 2.616], atol=2e-3)  # research note b.5
    assert all(x > 1 for x in ratios)


def test_kernel_quadrature_against_closed_form_and_limits():
    """The quadrature that serves tanh and GELU reproduces the ReLU arc-cosine kernel (to 1e-4: ReLU's kink is
    the worst case for Gauss-Legendre; for tanh a dblquad check agrees to 1e-12); K(1) = E phi^2."""
    rhos, table = _kernel_table(1.7, "relu")
    np.testing.assert_allclose(table, mlp_kernel(rhos, 1.7, "relu"), atol=1.5e-4)
    assert mlp_kernel(0.0, 3.0, "tanh") == pytest.approx(0.0, abs=1e-9)  # odd phi: independent inputs
    assert mlp_kernel(1.0, 3.0, "tanh") == pytest.approx(mlp_kernel_at_one(3.0, "tanh"), abs=1e-9)
    assert mlp_kernel(-0.5, 3.0, "tanh") == pytest.approx(-mlp_kernel(0.5, 3.0, "tanh"), abs=1e-7)


def test_attention_overlaps_limits():
    for method in ("monte-carlo", "asymptotic"):
        s2, s11 = attention_overlaps(1.0, 2.0, 10, method=method)
        assert s2 == pytest.approx(0.1) and s11 == pytest.approx(0.1)
    s2, s11 = attention_overlaps(np.array([0.0, 0.5]), 0.0, 10)
    np.testing.assert_allclose(s2, 0.1)
    np.testing.assert_allclose(s11, 0.1)
    mc = np.array(attention_overlaps(np.array([0.2, 0.6]), 1.0, 256, n_samples=200))
    asym = np.array(attention_overlaps(np.array([0.2, 0.6]), 1.0, 256, method="asymptotic"))
    np.testing.assert_allclose(mc, asym, rtol=0.05)  # large n: the closed forms of the note


def test_angle_exponent_formula_and_estimator():
    """Check 6: lambda_a's closed form against the one-block estimator (rho = 0.999), the note's edge-of-chaos
    values, and independence of sigma_A."""
    p = SignalPropParams(0.5, 0.5, 1.0, 2.0)
    mc = angle_exponent_mc(p, n=16, d=512, n_networks=12)
    assert abs(mc.mean - angle_exponent(p)) < 0.03 + 2 * mc.sem
    assert angle_exponent(p) == pytest.approx(-0.236, abs=2e-3)
    for s in (0.5, 3.0):
        assert angle_exponent(SignalPropParams(0.5, 0.5, s, 2.0)) == angle_exponent(p)
    mc_a = angle_exponent_mc(SignalPropParams(0.5, 0.5, 3.0, 2.0), n=16, d=512, n_networks=12)
    assert abs(mc_a.mean - mc.mean) < 0.03 + 2 * (mc.sem + mc_a.sem)
    assert critical_sigma_w(0.1) == pytest.approx(3.40, abs=0.01)
    assert critical_sigma_w(0.5) == pytest.approx(4.07, abs=0.01)


def test_gradient_modes():
    """Check 7: at the collapsed state a token-difference perturbation grows at lambda_a per block and a
    token-mean perturbation at lambda_g > lambda_a (exact Jacobian-vector products, d = 1024, 6 blocks)."""
    p = SignalPropParams(0.5, 0.5, 1.0, 2.0)
    q_star, _ = collapsed_fixed_point(p)
    g = torch.Generator().manual_seed(0)
    n, d, L = 4, 1024, 6
    x0 = simplex_tokens(n, d, q_star, 1.0, g)
    rates = {"difference": [], "mean": []}
    for k in range(4):
        net = RandomTransformer(d, L, p, seed=k).double()
        v = torch.randn(n, d, generator=g, dtype=torch.float64)
        v = v - (v @ x0[0])[:, None] * x0[0] / (x0[0] @ x0[0])  # orthogonal to the tokens' direction
        for name, dv in (("difference", v - v.mean(0)), ("mean", v.mean(0).expand(n, d).clone())):
            _, jv = torch.autograd.functional.jvp(net, x0, dv)
            rates[name].append(math.log(float((jv**2).sum() / (dv**2).sum())) / L)
    assert np.mean(rates["difference"]) == pytest.approx(angle_exponent(p), abs=0.03)
    assert np.mean(rates["mean"]) == pytest.approx(gradient_exponent(p), abs=0.03)
    assert gradient_exponent(p) > angle_exponent(p)
    g_perp, g_mean = layer_factors(q_star, p)
    assert math.log(g_perp) == pytest.approx(angle_exponent(p))


def test_chaotic_phase_settles_on_one_regular_simplex():
    """Check 8: in the chaotic phase rho tends to the same rho* < 1 from any start, with equal cosines."""
    p = SignalPropParams(0.3, 0.7, 1.0, 4.0)
    assert angle_exponent(p) > 0
    ends = [iterate_maps(1.0, r0, p, 80, n=8).rho[-1] for r0 in (0.05, 0.5, 0.95)]
    assert max(ends) - min(ends) < 2e-3 and ends[0] < 0.5
    x = simplex_tokens(8, 1024, 1.0, 0.9, torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = RandomTransformer(1024, 40, p, seed=3).double()(x)
    cos = torch.nn.functional.normalize(y, dim=1) @ torch.nn.functional.normalize(y, dim=1).T
    off = cos[~torch.eye(8, dtype=torch.bool)]
    assert float(off.std()) < 0.08 and abs(float(off.mean()) - ends[1]) < 0.08


def test_bad_parameters_are_named():
    with pytest.raises(InputValidationError, match="alpha_A must be in"):
        SignalPropParams(1.5, 0.5)
    with pytest.raises(InputValidationError, match="nonlinearity"):
        SignalPropParams(nonlinearity="sigmoid")
    with pytest.raises(InputValidationError, match="no norm fixed point"):
        collapsed_fixed_point(SignalPropParams(0.5, 0.5, residual="identity"))
    with pytest.raises(InputValidationError, match="rho"):
        simplex_tokens(4, 16, 1.0, 1.5, torch.Generator())
