"""Stochastic collapse theory (Chen et al. 2023; research note theory_dynamics.md paper 3, checks 3-6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlscience.errors import InputValidationError
from dlscience.learning_dynamics.collapse_theory import (
    DiagonalTeacherStudent,
    QuarticWell,
    TanhNeuron,
    attractivity_margin,
    crossing,
    is_attractive,
)


def test_attractivity_margin_of_the_quartic_well_by_finite_differences():
    mu = 1.5
    for zeta in (0.5, 1.7, 1.8, 3.0):
        margin = attractivity_margin(lambda t: t**4 / 4 - mu * t**2 / 2, lambda t, z=zeta: z**2 * t**2 / 2)
        assert margin == pytest.approx(-mu + zeta**2 / 2, abs=1e-6)
        assert margin == pytest.approx(QuarticWell(mu).margin(zeta), abs=1e-6)
    assert not is_attractive(-1.5, 2.9) and is_attractive(-1.5, 3.1)  # numbers: L''(0) + D''(0)/2
    assert is_attractive(0.2, 0.0)  # a minimum attracts without noise


def test_check4_quartic_collapse_probability_crosses_half_within_10pct_of_zeta_c():
    well = QuarticWell(1.5)
    assert well.zeta_c == pytest.approx(math.sqrt(3.0))
    zetas = np.array([1.4, 1.55, 1.65, 1.75, 1.85, 1.95, 2.1])
    p = well.collapse_probability(zetas, n_paths=300, T=400.0, n_steps=4000, seed=1)
    assert p[0] < 0.05 and p[-1] > 0.95
    cross = crossing(zetas, p)
    assert cross is not None and abs(cross - well.zeta_c) / well.zeta_c < 0.10, (cross, p)
    assert abs(cross - well.zeta_c) / well.zeta_c < 0.04  # measured: 0.3 % off


def test_quartic_exponent_tracks_theory_and_note_threshold_check():
    well = QuarticWell(1.5)
    zetas = [2.5, 3.0]
    u = well.simulate(zetas, n_paths=200, T=50.0, n_steps=2000, seed=2)
    med = np.median(u, 1) / 50.0
    np.testing.assert_allclose(med, well.lyapunov(zetas), atol=0.05)
    # the note's check (T = 25, theta_T^2 < 1e-30): ~0.73 at zeta = 2.5 and 1.0 at 3.0, 0 at 1.7
    p = well.collapse_probability(
        [1.7, 2.5, 3.0], criterion="threshold", T=25.0, n_steps=5000, n_paths=300, seed=3, scheme="theta"
    )
    assert p[0] == 0 and 0.55 < p[1] < 0.9 and p[2] > 0.97


def test_check3_no_collapse_to_the_unstable_origin_without_noise():
    well = QuarticWell(1.5)
    u = well.simulate([0.0], n_paths=3, T=30.0, n_steps=3000, theta0=1e-3)
    np.testing.assert_allclose(np.exp(u), math.sqrt(1.5), rtol=1e-3)  # goes to the minimum, not 0
    neuron = TanhNeuron((1.0, -0.5, 2.0), (0.6, -0.2, 1.1), eta=0.05)
    w = neuron.simulate([0.0], n_paths=2, n_steps=3000, w0=1e-3)
    assert (w > 0.1).all()  # gradient descent leaves the saddle at the origin


def test_check5_tanh_neuron_condition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8)
    neuron = TanhNeuron(tuple(x), tuple(0.5 * x + 0.05 * rng.standard_normal(8)), eta=0.01)
    zc = neuron.zeta_c
    assert zc == pytest.approx(math.sqrt(2 * neuron.ratio / 0.01))
    assert not neuron.collapses(0.9 * zc) and neuron.collapses(1.1 * zc)
    w = neuron.simulate([0.6 * zc, 1.5 * zc], n_paths=40, n_steps=6000, seed=1)
    p = (w < 1e-6).mean(1)
    assert p[0] == 0.0 and p[1] == 1.0, p


def test_check6_teacher_student_surviving_modes_and_denoising():
    ts = DiagonalTeacherStudent(seed=0)
    assert ts.s_star.shape == (64,) and np.all(np.diff(ts.s_star) <= 0)
    eta, sigmas = 3 / 1024, [0.0, 10.0, 20.0]
    res = ts.simulate(sigmas, eta=eta, steps=40_000, drop_at=None, replicates=6, average_last=20_000, seed=1)
    counts = []
    for i, sigma in enumerate(sigmas):
        pred = ts.predicted(eta, sigma)
        sim, theory = ts.surviving(res["mean"][i], 0.05), ts.surviving(pred, 0.05)
        assert abs(int(sim) - int(theory)) <= 1, (sigma, sim, theory)
        assert np.abs(res["mean"][i] - pred).max() < 0.15
        counts.append(int(sim))
    assert counts[0] > counts[1] > counts[2]  # more noise, fewer modes (measured 59, 49, 20)
    err = ts.test_error(res["mean"])
    assert err[2] < 0.5 * err[0]  # collapse removes the noise modes: test error improves


def test_teacher_student_predicted_modes_formula():
    ts = DiagonalTeacherStudent(seed=3)
    pred = ts.predicted(0.01, 10.0)  # threshold 0.5
    np.testing.assert_allclose(pred, np.maximum(ts.s_star - 0.5, 0))
    assert ts.surviving(pred, 0.0) == (ts.s_star > 0.5).sum()


def test_bad_inputs():
    with pytest.raises(InputValidationError):
        QuarticWell().simulate([-1.0])
    with pytest.raises(InputValidationError):
        QuarticWell().collapse_probability([1.0], criterion="other", n_paths=2, n_steps=2)
    with pytest.raises(InputValidationError):
        DiagonalTeacherStudent(rank=100)
    assert crossing([0, 1, 2], [0.0, 0.2, 0.4]) is None
    assert crossing([0, 1, 2], [0.0, 0.4, 0.8]) == pytest.approx(1.25)
