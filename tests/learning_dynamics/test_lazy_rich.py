"""Single-neuron lazy/rich theory (Kunin et al. 2024) against the research note's checks: conservation of delta
(flow and O(lr^2) per GD step), closed form vs integrated ODE, sign of a, the lazy limit, the low-rank limit."""

from __future__ import annotations

import numpy as np
import pytest

from dlscience.errors import InputValidationError
from dlscience.learning_dynamics import (
    SingleNeuron,
    conserved_delta,
    function_space_matrix,
    init_from_beta,
    kernel_distance,
)

FIG2_DELTAS = (
    -4.0,
    -2.0,
    -1.0,
    0.0,
    1.0,
    2.0,
    4.0,
)  # the paper's Fig. 2: beta* = (0, 1), beta0 = (-1, 0), T = 20
T = np.linspace(0.0, 20.0, 161)


@pytest.mark.parametrize("delta", FIG2_DELTAS)
def test_closed_form_matches_the_integrated_flow_to_1e8(delta):
    model = SingleNeuron.whitened([0.0, 1.0])
    a0, w0 = init_from_beta([-1.0, 0.0], delta)
    exact = model.closed_form(a0, w0, T)
    flow = model.gradient_flow(a0, w0, T)
    assert np.max(np.abs(exact.a - flow.a)) < 1e-8
    assert np.max(np.abs(exact.w - flow.w)) < 1e-8
    np.testing.assert_allclose(exact.delta, delta, atol=1e-10)  # conserved along the closed form
    np.testing.assert_allclose(flow.delta, delta, atol=1e-9)  # and along the integrated flow
    np.testing.assert_allclose(exact.beta[-1], [0.0, 1.0], atol=0.2)  # converging to beta*


def test_other_learning_rates_map_onto_unit_rates():
    model = SingleNeuron.whitened([0.3, -1.2, 0.5], eta_w=3.0, eta_a=0.25)
    a0, w0 = init_from_beta([0.2, 0.1, -0.4], -0.7, eta_w=3.0, eta_a=0.25)
    assert conserved_delta(a0, w0, 3.0, 0.25) == pytest.approx(-0.7)
    exact = model.closed_form(a0, w0, T[:60])
    flow = model.gradient_flow(a0, w0, T[:60])
    assert np.max(np.abs(exact.a - flow.a)) < 1e-8 and np.max(np.abs(exact.w - flow.w)) < 1e-8


def test_nu_follows_the_riccati_tanh_solution():
    model = SingleNeuron.whitened([0.0, 1.0])
    a0, w0 = 1.0, np.array([0.3, 0.2])  # nu_0 = 0.2, inside the two fixed points
    delta = a0**2 - w0 @ w0
    R = np.sqrt(delta**2 + 4)
    t = np.linspace(0, 5, 21)
    nu = 0.5 * (-delta + R * np.tanh(R * t / 2 + np.arctanh((delta + 2 * 0.2) / R)))
    np.testing.assert_allclose(model.nu_closed_form(a0, w0, t), nu, atol=1e-10)


def test_gradient_descent_changes_delta_by_order_lr_squared_per_step():
    model = SingleNeuron.whitened([0.0, 1.0])
    a0, w0 = init_from_beta([-1.0, 0.0], 0.5)
    drifts = []
    for lr in (1e-2, 5e-3, 2.5e-3):
        gd = model.gradient_descent(a0, w0, steps=int(round(5 / lr)), lr=lr)
        drifts.append(abs(gd.delta[-1] - 0.5))
        # one step: delta changes by exactly lr^2 (eta_a g_a^2 - eta_w |g_w|^2) (unit rates)
        ga, gw = model.gradient(a0, w0)
        one = model.gradient_descent(a0, w0, steps=1, lr=lr)
        assert one.delta[-1] - 0.5 == pytest.approx(lr**2 * (ga**2 - gw @ gw), rel=1e-9, abs=1e-15)
    # over a fixed horizon the drift is O(lr): halving lr halves it
    assert drifts[0] / drifts[1] == pytest.approx(2.0, rel=0.05)
    assert drifts[1] / drifts[2] == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("delta", FIG2_DELTAS)
def test_sign_of_a_and_the_hyperboloid_bound(delta):
    model = SingleNeuron.whitened([0.0, 1.0])
    a0, w0 = init_from_beta([-1.0, 0.0], delta)
    traj = model.closed_form(a0, w0, np.linspace(0, 20, 2001))
    if delta > 0:
        assert np.all(traj.a > 0)  # a never changes sign (two-sheeted hyperboloid)
    if delta < 0:
        assert np.all(np.sum(traj.w**2, axis=1) >= -delta - 1e-10)  # |w|^2 >= |delta| / eta_a


def test_lazy_limit_kernel_barely_moves_and_beta_goes_straight():
    model = SingleNeuron.whitened([0.0, 1.0])
    S = {}
    for delta in (0.0, 4.0, 50.0):
        a0, w0 = init_from_beta([-1.0, 0.0], delta)
        traj = model.closed_form(a0, w0, np.linspace(0, 30, 301))
        S[delta] = traj.kernel_distance()[-1]
        if delta == 50.0:
            # straight line from beta0 to the interpolator closest to it (beta* here)
            b = traj.beta
            cross = (b[:, 0] + 1) * 1.0 - (b[:, 1] - 0) * 1.0  # distance from the segment (-1,0)->(0,1) (x2)
            assert np.max(np.abs(cross)) < 0.05
    assert S[4.0] == pytest.approx(0.0015, abs=2e-4)  # research note, check 5
    assert S[50.0] < 1e-4 < S[4.0] < S[0.0]


def test_kernel_distance_uses_the_current_readout():
    a, w = np.array([1.0, 2.0]), np.array([[1.0, 0.0], [1.0, 0.0]])
    M = function_space_matrix(a, w)
    np.testing.assert_allclose(M[1], np.diag([5.0, 4.0]))
    assert kernel_distance(M[0], M[0]) == pytest.approx(0.0, abs=1e-15)
    expected = 1 - (2 * 5 + 1 * 4) / (np.sqrt(5) * np.sqrt(41))
    assert kernel_distance(M[0], M[1]) == pytest.approx(expected)


@pytest.mark.parametrize(
    "delta, expected",
    [
        (-4.0, (1.551, 0.324)),
        (-1.0, (1.188, 0.506)),
        (0.0, (0.943, 0.629)),
        (1.0, (0.803, 0.698)),
        (4.0, (0.748, 0.726)),
        (50.0, (0.740, 0.730)),
    ],
)
def test_low_rank_limit_matches_the_note_and_the_flow(delta, expected):
    x = np.array([0.5, 1.0])
    model = SingleNeuron(np.outer(x, x), 1.1 * x)  # Fig. 4b
    beta0 = 0.5 * (0.6 * np.array([1.0, -0.5]) + 0.4 * np.array([0.5, 1.0]))
    a0, w0 = init_from_beta(beta0, delta)
    limit = model.limit(a0, w0)
    np.testing.assert_allclose(limit, expected, atol=6e-4)
    flow = model.gradient_flow(a0, w0, [0.0, 500.0])
    np.testing.assert_allclose(flow.beta[-1], limit, atol=1e-7)
    n_hat = np.array([1.0, -0.5]) / np.linalg.norm([1.0, -0.5])  # null direction of x x^T
    assert flow.w[-1] @ n_hat == pytest.approx(w0 @ n_hat, abs=1e-9)  # null component of w conserved


def test_bad_input_is_named():
    with pytest.raises(InputValidationError, match="XtX must have shape"):
        SingleNeuron(np.eye(3), np.ones(2))
    with pytest.raises(InputValidationError, match="symmetric positive semi-definite"):
        SingleNeuron(-np.eye(2), np.ones(2))
    with pytest.raises(InputValidationError, match="learning rates"):
        SingleNeuron.whitened([1.0, 0.0], eta_w=0.0)
    with pytest.raises(InputValidationError, match="whitened"):
        SingleNeuron(np.diag([1.0, 2.0]), np.ones(2)).closed_form(1.0, np.ones(2), [0.0, 1.0])
    with pytest.raises(InputValidationError, match="beta0 must not be zero"):
        init_from_beta([0.0, 0.0], 1.0)
    torch = pytest.importorskip("torch")
    with pytest.raises(InputValidationError, match="numpy array, got a torch tensor"):
        SingleNeuron.whitened(torch.ones(2))
