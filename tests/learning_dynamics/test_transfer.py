"""Features are fate (Tahir et al. 2025): the research note's eight checks (theory_dynamics.md section 2d),
bad input, seeds and resume. Small d keeps the suite fast; tolerances reflect O(1/sqrt(d)) fluctuations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlscience.errors import InputValidationError
from dlscience.learning_dynamics.transfer import (
    FineTune,
    LinearTransfer,
    Scratch,
    TeacherPairs,
    ft_boundary_theta,
    gaussian_joint_distances,
    lt_boundary_gamma,
    pretrain,
    ridgeless_risk,
    source_distance_sq,
)

D = 60


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_1_scratch_reaches_min_norm_interpolator_and_ridgeless_risk():
    g = _gen()
    tp = TeacherPairs.draw([0.3, 0.3], D, g)
    X, y, n = TeacherPairs.sample(tp.beta_t, [30, 30], 0.0, g)
    beta = Scratch(steps=3000).fit(None, X, y, n, g)
    min_norm = torch.linalg.pinv(X) @ y[:, :, None]
    assert torch.allclose(beta, min_norm[:, :, 0], atol=1e-3)
    sim = Scratch(steps=1500).simulate([0.3, 0.3], [0.3, 1.5], 0.2, d=80, instances=6)
    np.testing.assert_allclose(sim, ridgeless_risk([0.3, 1.5], 0.2), atol=0.06)


def test_2_pretrained_network_is_rank_one_balanced_and_fits_beta_s():
    tp = TeacherPairs.draw([0.5], D, _gen())
    net = pretrain(tp.beta_s, _gen(1))
    s = torch.linalg.svdvals(net.W1[0])
    assert s[0] == pytest.approx(1.0, abs=1e-6) and s[1] < 1e-4
    assert torch.allclose(net.W1[0].T @ net.W1[0], torch.outer(net.w2[0], net.w2[0]), atol=1e-6)
    assert torch.allclose(net.beta, tp.beta_s, atol=1e-8)


def test_3_linear_transfer_risk_sin2_and_ridge_formula():
    theta = np.array([np.pi / 6, np.pi / 3])
    np.testing.assert_allclose(LinearTransfer(lam=0.0).risk(theta, 0.5), np.sin(theta) ** 2)
    lt = LinearTransfer(lam=0.3)
    np.testing.assert_allclose(lt.risk(theta, 2.0), 1 - 1.6 * np.cos(theta) ** 2 / 1.69)
    sim = lt.simulate(theta, [0.5, 1.5], 0.0, d=100, instances=4)
    np.testing.assert_allclose(sim, lt.risk(theta, [0.5, 1.5]), atol=0.04)
    sim0 = LinearTransfer(lam=1e-6).simulate(theta, 1.0, 0.0, d=100, instances=4)
    np.testing.assert_allclose(sim0, np.sin(theta) ** 2, atol=0.04)


def test_4_fine_tuning_risk_formula():
    ft = FineTune(steps=1500)
    np.testing.assert_allclose(ft.risk(np.pi / 4, [0.3, 1.5]), [0.7 * 2 * (1 - np.cos(np.pi / 4)), 0.0])
    sim = ft.simulate(np.pi / 4, [0.3, 0.6, 1.5], 0.0, d=80, instances=4)
    np.testing.assert_allclose(sim, ft.risk(np.pi / 4, [0.3, 0.6, 1.5]), atol=0.05)


def test_5_phase_boundaries():
    assert ft_boundary_theta() == pytest.approx(np.pi / 3)
    th = np.linspace(0.05, 1.5, 30)
    for gamma in (0.2, 0.7):
        T = Scratch().risk(th, gamma) - FineTune().risk(th, gamma)
        assert np.all((T > 0) == (th < np.pi / 3))
    gammas = np.linspace(0.02, 0.98, 49)
    for theta in (np.pi / 8, np.pi / 4, 3 * np.pi / 8):
        T = Scratch().risk(theta, gammas) - LinearTransfer(lam=0.0).risk(theta, gammas)
        assert np.all((T > 0) == (gammas < np.cos(theta) ** 2))
    np.testing.assert_allclose(lt_boundary_gamma(np.pi / 4), 0.5)


def test_6_ft_transferability_independent_of_target_noise():
    th, g = np.linspace(0.1, 1.4, 7), np.array([0.2, 0.5, 0.9])
    T = {s: Scratch().risk(th[:, None], g, s) - FineTune().risk(th[:, None], g, s) for s in (0.0, 0.5)}
    np.testing.assert_allclose(T[0.0], T[0.5], atol=1e-12)
    np.testing.assert_allclose(T[0.0], (1 - g) * (2 * np.cos(th[:, None]) - 1), atol=1e-12)
    for s in (0.0, 0.5):
        np.testing.assert_allclose(
            Scratch().risk(0.4, 1.7, s) - FineTune().risk(0.4, 1.7, s), 0.0, atol=1e-12
        )


def test_7_linear_transfer_at_theta_zero_has_small_risk():
    sim = LinearTransfer(lam=1e-6).simulate(0.0, [0.1, 0.5, 2.0], 0.0, d=D, instances=2)
    assert np.all(sim < 1e-6)


def test_8_finite_source_ft_boundary_and_risk():
    gs, ss = 0.5, 0.3
    theta_c = ft_boundary_theta(gs, ss)
    assert 2 * np.cos(theta_c) == pytest.approx(1 + ss**2 / 0.5)
    ft = FineTune(source_gamma=gs, source_sigma=ss)
    T = Scratch().risk([theta_c - 0.05, theta_c + 0.05], 0.4) - ft.risk([theta_c - 0.05, theta_c + 0.05], 0.4)
    assert T[0] > 0 > T[1]
    np.testing.assert_allclose(source_distance_sq(0.7, 3.0, 0.0), 2 - 2 * np.cos(0.7))
    sim = FineTune(steps=1500, source_gamma=gs, source_sigma=ss).simulate(0.5, 0.4, 0.0, d=80, instances=4)
    assert sim == pytest.approx(float(ft.risk(0.5, 0.4)), abs=0.06)


def test_distances_pairs_matched_kl_opposite_sign():
    tpA = TeacherPairs.draw([np.pi], D, _gen())
    tpB = TeacherPairs.draw([np.pi / 2], D, _gen())
    a = gaussian_joint_distances(tpA.beta_s[0], tpA.beta_t[0], 0.5, 0.5)
    b = gaussian_joint_distances(tpB.beta_s[0], tpB.beta_t[0], 0.5 / np.sqrt(2), 0.5 / np.sqrt(2))
    assert a["kl_source_target"] == pytest.approx(b["kl_source_target"]) == pytest.approx(8.0)
    lt = LinearTransfer(lam=0.1)
    T_a = Scratch().risk(np.pi, 0.5, 0.5) - lt.risk(np.pi, 0.5, 0.5)
    T_b = Scratch().risk(np.pi / 2, 0.5, 0.5 / np.sqrt(2)) - lt.risk(np.pi / 2, 0.5, 0.5 / np.sqrt(2))
    assert T_a > 0 > T_b


def test_bad_input_is_one_line_error():
    with pytest.raises(InputValidationError, match="gamma"):
        Scratch().risk(0.3, -1.0)
    with pytest.raises(InputValidationError, match="numpy"):
        TeacherPairs.sample(np.ones((2, 3)), 4, 0.0, _gen())
    with pytest.raises(InputValidationError, match="lam"):
        LinearTransfer(lam=-1.0)
    with pytest.raises(InputValidationError, match="source_gamma"):
        FineTune(source_gamma=1.0)
    with pytest.raises(InputValidationError, match="lr_scale"):
        FineTune(lr_scale=0.0)


def test_same_seed_same_result():
    a = FineTune(steps=200).simulate([0.3, 0.6], 0.5, d=30, instances=2, seed=3)
    b = FineTune(steps=200).simulate([0.3, 0.6], 0.5, d=30, instances=2, seed=3)
    np.testing.assert_array_equal(a, b)


def test_phase_diagram_job_resumes(tmp_path):
    from dlscience.learning_dynamics.transfer_jobs import run_distances, run_phase_diagram

    kw = dict(thetas=(0.3, 0.9), gammas=(0.3, 1.5), d=20, instances=1, steps=300, progress=False)
    first = run_phase_diagram(tmp_path / "pd", **kw)
    again = run_phase_diagram(tmp_path / "pd", **kw)
    assert first["learners"] == again["learners"]
    assert (tmp_path / "pd" / "phase_diagram.png").exists()
    from dlscience.errors import UserError

    with pytest.raises(UserError):
        run_phase_diagram(tmp_path / "pd", **{**kw, "d": 21})
    with pytest.raises(InputValidationError, match="ft_step"):
        run_phase_diagram(tmp_path / "pd2", **{**kw, "ft_step": 0.0})
    # the full fine-tuning step (default: a third, with three times the steps): its own run, same scratch and LT
    full = run_phase_diagram(tmp_path / "pd3", **{**kw, "ft_step": 1.0})
    assert full["learners"]["lt"]["simulated"] == first["learners"]["lt"]["simulated"]
    assert full["learners"]["ft"]["simulated"] != first["learners"]["ft"]["simulated"]
    assert first["settings"]["ft_step"] == 0.3333333333 and "ft_step" not in full["settings"]
    dist = run_distances(tmp_path / "dist", d=20, instances=1)
    assert dist["pairs"][0]["T_lt_theory"] > 0 > dist["pairs"][1]["T_lt_theory"]


def test_relu_network_gradient_matches_autograd():
    """The hand-batched GD step of the two-layer ReLU networks is the autograd gradient of the per-instance
    mean squared error / 2 (padded rows excluded), checked on two instances of different n."""
    from dlscience.learning_dynamics.transfer import TwoLayerReLU

    gen = _gen(1)
    net = TwoLayerReLU.small_init(2, 5, 7, gen, alpha=0.5)
    X, y, n = TeacherPairs.sample(torch.randn(2, 5, generator=gen, dtype=torch.float64), [6, 4], 0.1, gen)
    W, a = net.W.clone().requires_grad_(), net.a.clone().requires_grad_()
    loss = 0
    for r in range(2):
        f = torch.relu(X[r, : n[r]] @ W[r].T) @ a[r]
        loss = loss + ((f - y[r, : n[r]]) ** 2).mean() / 2
    loss.backward()
    lr = torch.tensor([0.1, 0.2], dtype=torch.float64)
    stepped = net.clone().gd(X, y, n, lr, 1)
    torch.testing.assert_close(stepped.W, net.W - lr[:, None, None] * W.grad)
    torch.testing.assert_close(stepped.a, net.a - lr[:, None] * a.grad)


def test_relu_check_follows_the_linear_phase_signs_far_from_boundaries():
    """Nonlinear check (Tahir et al. 2025, Sec. 6): two-layer ReLU networks transfer like the linear theory says
    where it is unambiguous -- at theta = 0.1 both transfers beat scratch at gamma = 0.3; at theta = 1.45
    (nearly orthogonal) both are worse. Linear transfer and fine-tuning share one pretraining (same features)."""
    from dlscience.learning_dynamics.transfer_jobs import sign_agreement

    kw = dict(steps=600, network="relu", hidden=32)
    th, ga = np.array([0.1, 1.45]), 0.3
    sim = {L.name: L.simulate(th, ga, d=24, instances=3, seed=2) for L in
           (Scratch(**kw), LinearTransfer(lam=0.1, **kw), FineTune(**kw))}  # fmt: skip
    for name in ("linear transfer", "fine-tuning"):
        T = sim["scratch"] - sim[name]
        assert T[0] > 0.2 and T[1] < 0, (name, T)
    # the shared pretraining gives the same answer as a fresh one
    from dlscience.learning_dynamics import transfer

    transfer._RELU_CACHE.clear()
    alone = FineTune(**kw).simulate(th, ga, d=24, instances=3, seed=2)
    np.testing.assert_allclose(alone, sim["fine-tuning"], rtol=1e-10)
    assert sign_agreement([0.5, -0.5, 0.01], [0.2, 0.1, 0.3]) == {
        "agree": 2, "points": 3, "clear": 1, "clear_points": 2, "margin": 0.05,
    }  # fmt: skip
    with pytest.raises(InputValidationError, match="network"):
        Scratch(network="tanh")


def test_ridge_sweep_job_follows_the_lt_ridge_formula(tmp_path):
    from dlscience.learning_dynamics.transfer_jobs import run_ridge_sweep

    out = run_ridge_sweep(tmp_path / "ridge", thetas=(0.3,), lams=(0.0, 0.5), d=D, instances=4)
    c2 = np.cos(0.3) ** 2
    assert out["curves"][0]["theory"] == pytest.approx([1 - c2])
    assert out["curves"][1]["theory"] == pytest.approx([1 - 2 * c2 / 1.5**2])
    for c in out["curves"]:
        assert c["simulated"][0] == pytest.approx(c["theory"][0], abs=0.05)
    assert out["scratch_risk"] == pytest.approx(0.5) and (tmp_path / "ridge" / "ridge_sweep.png").exists()
    with pytest.raises(InputValidationError):
        run_ridge_sweep(tmp_path / "bad", lams=(0.1,))
