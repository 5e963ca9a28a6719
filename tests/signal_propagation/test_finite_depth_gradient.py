"""The finite-depth gradient exponent lambda_g(L, n) and the causal angle exponent (issue 16), against exact
Jacobians (torch.func.jacrev) and simulated token geometry of finite random transformers (model.py), and
against closed forms and limits of the theory (finite_depth_gradient.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import jacrev

from dlscience.errors import InputValidationError
from dlscience.signal_propagation import RandomTransformer, SignalPropParams
from dlscience.signal_propagation.finite_depth_gradient import (
    attention_average,
    collapsed_norm_trajectory,
    finite_depth_gradient_exponent,
    jacobian_norm,
    jacobian_token_covariance,
    token_difference_covariance,
)
from dlscience.signal_propagation.maps import (
    angle_exponent,
    collapsed_fixed_point,
    gradient_exponent,
    jacobian_growth,
)


def _exact_jacobian_norms(params, *, n, d, n_layers, networks, causal, q0=1.0):
    """|J|_F^2 / (n d) of the exact L-block Jacobian at identical input tokens (|x|^2 = q0 d), per network."""
    out = []
    with torch.no_grad():
        for seed in range(networks):
            net = RandomTransformer(d, n_layers, params, causal=causal, seed=seed).double()
            g = torch.Generator().manual_seed(10_000 + seed)
            x = torch.randn(d, generator=g, dtype=torch.float64)
            X = (x * math.sqrt(q0 * d) / x.norm()).expand(n, d).clone()
            J = jacrev(net)(X)  # (n, d, n, d)
            out.append(float((J**2).sum()) / (n * d))
    return np.array(out)


# Width correction. The theory is the d -> infinity limit. At width d the norms q_l entering each block
# fluctuate by O(d^-1/2), so E[1/q_l] exceeds 1/E[q_l] by O(1/d) (Jensen), and the gains a_l = alpha_A^2/q_l,
# m_l = c_M^2 + alpha_M^2 chi/q1_l are biased upwards by O(1/d) per block: O(L/d) in E|J|_F^2. Measured relative
# excess for alpha = 0.5, sigma_w = 2, n = 4, L = 6 (bidirectional): +12% (d = 32), +8.0% (64), +5.6% (128),
# +0.3% +- 2% (256), i.e. about 0.6-1.2 x L/d. We allow L/d on top of 3 standard errors.
CASES = [
    # alpha, sigma_w, mask, residual
    (0.5, 2.0, "bidirectional", "complementary"),
    (0.5, 2.0, "causal", "complementary"),
    (0.3, 2.0, "causal", "identity"),
]


@pytest.mark.parametrize("alpha,sigma_w,mask,residual", CASES)
def test_jacobian_norm_matches_exact_jacobians(alpha, sigma_w, mask, residual):
    torch.set_num_threads(1)
    n, d, L, networks = 4, 128, 6, 40
    p = SignalPropParams(alpha, alpha, 1.0, sigma_w, residual=residual)
    mc = _exact_jacobian_norms(p, n=n, d=d, n_layers=L, networks=networks, causal=mask == "causal")
    mean, sem = mc.mean(), mc.std(ddof=1) / math.sqrt(networks)
    theory = jacobian_norm(p, n, L, mask=mask)
    tol = 3 * sem + (L / d) * theory
    assert abs(mean - theory) < tol, (mean, sem, theory)
    # the check has power: the other mask's prediction is excluded
    other = jacobian_norm(p, n, L, mask="causal" if mask == "bidirectional" else "bidirectional")
    assert abs(mean - other) > tol, (mean, other, tol)
    # and the exponent is its log per block
    assert finite_depth_gradient_exponent(p, n, L, mask=mask) == pytest.approx(
        math.log(theory) / L, rel=1e-12
    )


def test_bidirectional_closed_form_equals_matrix_recursion():
    """(1/n) prod g_l + (1 - 1/n) prod h_l against the n x n backward recursion (independent code paths)."""
    for alpha, sw, res in [(0.5, 2.0, "complementary"), (0.8, 4.0, "complementary"), (0.3, 1.0, "identity")]:
        p = SignalPropParams(alpha, alpha, 1.0, sw, residual=res)
        for n, L, q0 in [(2, 1, 1.0), (16, 12, 0.3), (7, 40, 3.0)]:
            trace = np.trace(jacobian_token_covariance(p, n, L, q0=q0)) / n
            assert jacobian_norm(p, n, L, q0=q0) == pytest.approx(trace, rel=1e-12)


def test_limits_of_the_finite_depth_exponent():
    p = SignalPropParams(0.5, 0.5, 1.0, 2.0)
    q_star, _ = collapsed_fixed_point(p)
    la, lg = angle_exponent(p), gradient_exponent(p)
    # started at the norm fixed point, bidirectional: the research note's two-mode formula (maps.jacobian_growth)
    for n, L in [(4, 6), (16, 12), (256, 16)]:
        assert finite_depth_gradient_exponent(p, n, L, q0=q_star) == pytest.approx(
            jacobian_growth(p, n, L), abs=1e-12
        )
    # L -> infinity: the token-mean mode dominates, for either mask (e_1 e_1^T is the causal mean mode)
    for mask in ("bidirectional", "causal"):
        assert finite_depth_gradient_exponent(p, 16, 4000, q0=q_star, mask=mask) == pytest.approx(
            lg, abs=2e-3
        )
    # n -> infinity at fixed L (bidirectional): the difference modes, i.e. lambda_a
    assert finite_depth_gradient_exponent(p, 10**9, 8, q0=q_star) == pytest.approx(la, abs=1e-6)
    # one token: only the mean mode
    assert finite_depth_gradient_exponent(p, 1, 8, q0=q_star) == pytest.approx(lg, abs=1e-12)
    # at the edge of chaos (lambda_a = 0) the finite-depth exponent is positive for every L, n
    from dlscience.signal_propagation.maps import critical_sigma_w

    edge = SignalPropParams(0.4, 0.4, 1.0, critical_sigma_w(0.4))
    assert angle_exponent(edge) == pytest.approx(0.0, abs=1e-6)
    for n, L in [(2, 1), (32, 16), (10**6, 100)]:
        assert finite_depth_gradient_exponent(edge, n, L, q0=collapsed_fixed_point(edge)[0]) > 0


def test_collapsed_norm_trajectory_converges_to_q_star():
    p = SignalPropParams(0.6, 0.4, 1.0, 3.0)
    q = collapsed_norm_trajectory(p, 400, q0=5.0)
    assert q[0] == 5.0 and q[-1] == pytest.approx(collapsed_fixed_point(p)[0], rel=1e-12)


def test_attention_average():
    M = attention_average(4, "causal")
    assert np.allclose(M.sum(1), 1) and np.allclose(np.triu(M, 1), 0)
    assert np.allclose(np.diag(M), [1, 1 / 2, 1 / 3, 1 / 4])
    assert np.allclose(attention_average(3), np.full((3, 3), 1 / 3))
    with pytest.raises(InputValidationError, match="mask"):
        attention_average(3, "sliding")
    with pytest.raises(InputValidationError, match="n_layers"):
        jacobian_norm(SignalPropParams(), 4, 0)
    with pytest.raises(InputValidationError, match="q0"):
        jacobian_norm(SignalPropParams(), 4, 3, q0=-1.0)


# ---------------------------------------------------------------------------------------- causal lambda_a


@pytest.mark.parametrize("alpha_A,alpha_M,sigma_w", [(0.5, 0.5, 2.0), (0.3, 0.7, 3.0), (0.9, 0.2, 1.0)])
def test_causal_angle_exponent_closed_form(alpha_A, alpha_M, sigma_w):
    """lambda_a(causal) = lambda_a + log(1 + alpha_A^2 / (4 c_A^2 q*)), and equals the log of the largest eigenvalue
    of the linearised map of token-difference second moments, built independently in the coordinates of the
    differences x_i - x_{i+1} (M acts on them as B M B^+, B the difference matrix), for any n >= 2."""
    p = SignalPropParams(alpha_A, alpha_M, 1.0, sigma_w)
    q_star, q1_star = collapsed_fixed_point(p)
    la_bi, la_c = angle_exponent(p), angle_exponent(p, mask="causal")
    assert la_c == pytest.approx(la_bi + math.log(1 + alpha_A**2 / (4 * p.c_A**2 * q_star)), abs=1e-12)
    assert la_c > la_bi
    from dlscience.signal_propagation.maps import mlp_chi

    m = p.c_M**2 + p.alpha_M**2 * mlp_chi(sigma_w, "tanh") / q1_star
    a = alpha_A**2 / q_star
    for n in (2, 3, 5, 12):
        B = np.eye(n - 1, n) - np.eye(n - 1, n, k=1)
        for mask, la in (("causal", la_c), ("bidirectional", la_bi)):
            Mt = B @ attention_average(n, mask) @ np.linalg.pinv(B)
            op = m * (p.c_A**2 * np.eye((n - 1) ** 2) + a * np.kron(Mt, Mt))
            assert math.log(max(abs(np.linalg.eigvals(op)))) == pytest.approx(la, abs=1e-9)


def test_causal_token_geometry_matches_finite_networks():
    """Causal networks from a nearly collapsed simplex (1 - rho0 = 1e-4, q0 = q*): the mean squared distance of
    token pairs (1, 2) and of all pairs after L = 4 blocks, against the linearised causal recursion. The
    bidirectional prediction is excluded."""
    torch.set_num_threads(1)
    p = SignalPropParams(0.5, 0.5, 1.0, 2.0)
    q_star, _ = collapsed_fixed_point(p)
    n, d, L, networks, eps = 6, 256, 4, 12, 1e-4
    logs_12, logs_all = [], []
    with torch.no_grad():
        for seed in range(networks):
            g = torch.Generator().manual_seed(500 + seed)
            common = torch.randn(d, generator=g, dtype=torch.float64)
            z = torch.randn(n, d, generator=g, dtype=torch.float64)
            X = math.sqrt(q_star) * (math.sqrt(1 - eps) * common + math.sqrt(eps) * z)
            net = RandomTransformer(d, L, p, causal=True, seed=seed).double()
            states = net(X, return_all=True)
            diff0, diffL = states[0][:, None] - states[0][None], states[-1][:, None] - states[-1][None]
            d0, dL = (diff0**2).sum(-1), (diffL**2).sum(-1)
            logs_12.append(math.log(dL[0, 1] / d0[0, 1]))
            logs_all.append(math.log(dL.sum() / d0.sum()))
    C0 = q_star * eps * np.eye(n)

    def predicted(mask):
        C = token_difference_covariance(p, n, L, q0=q_star, mask=mask, C0=C0)
        dist = np.diagonal(C, axis1=1, axis2=2)
        D = dist[:, :, None] + dist[:, None, :] - 2 * C
        return math.log(D[-1, 0, 1] / D[0, 0, 1]), math.log(D[-1].sum() / D[0].sum())

    causal, bidirectional = predicted("causal"), predicted("bidirectional")
    for logs, th, other in zip((logs_12, logs_all), causal, bidirectional, strict=True):
        mean, sem = np.mean(logs), np.std(logs, ddof=1) / math.sqrt(networks)
        # 3 standard errors plus the O(L/d) width correction of the log (see the Jacobian test above)
        assert abs(mean - th) < 3 * sem + L / d, (mean, sem, th)
        assert abs(mean - other) > 3 * sem + L / d, (mean, other)
