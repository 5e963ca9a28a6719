"""Many neurons (Kunin et al. 2024): per-neuron invariants in ReLU networks, the deep linear matrix invariant,
the (tau, delta) parametrisation, symmetric initialisation, exact gradients; the jobs and their CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlscience.cli import main
from dlscience.errors import InputValidationError
from dlscience.learning_dynamics.lazy_rich_jobs import PhaseDiagramConfig, run_phase_diagram
from dlscience.learning_dynamics.two_layer import (
    BatchedReLUNetwork,
    deep_linear_invariant,
    neuron_deltas,
    sphere,
    tau_delta_scales,
    teacher_network,
)


@pytest.mark.parametrize("tau, delta", [(0.1, 0.0), (2.0, 0.0), (0.1, 1.0), (0.1, -1.0), (1.5, -0.3)])
def test_parametrisation_identities(tau, delta):
    w, a = tau_delta_scales(tau, delta)
    assert a**2 - w**2 == pytest.approx(delta, abs=1e-12)
    assert a * w == pytest.approx(tau**2, rel=1e-12)


def _net(R=3, m=6, d=4, seed=0, taus=(0.5, 1.0, 0.2), deltas=(0.0, 1.0, -1.0)):
    gens = [torch.Generator().manual_seed(seed + r) for r in range(R)]
    return BatchedReLUNetwork.symmetric_init(taus[:R], deltas[:R], m, d, gens)


def test_symmetric_init_starts_at_zero_with_zero_distances():
    net = _net()
    X = torch.stack([sphere(10, 4, torch.Generator().manual_seed(r)) for r in range(3)])
    assert net(X).abs().max() < 1e-15  # pairs cancel (up to the summation order)
    torch.testing.assert_close(neuron_deltas(net.W, net.a)[1], torch.full((6,), 1.0, dtype=torch.float64))
    dist = net.distances(X)
    assert dist["kernel"].abs().max() < 1e-12 and dist["hamming"].max() == 0 and dist["parameter"].max() == 0


def test_exact_gradients_match_autograd():
    net = _net()
    g = torch.Generator().manual_seed(5)
    X = torch.stack([sphere(12, 4, g) for _ in range(3)])
    y = torch.randn(3, 12, generator=g, dtype=torch.float64)
    net.W.data += 0.1 * torch.randn(net.W.shape, generator=g, dtype=torch.float64)
    loss, gW, ga = net.gradients(X, y)
    ((net(X) - y) ** 2).mean(1).sum().backward()
    torch.testing.assert_close(gW, net.W.grad)
    torch.testing.assert_close(ga, net.a.grad)
    # the NTK equals J J^T with J from autograd
    r = 0
    J = []
    for i in range(12):
        net.zero_grad()
        net(X)[r, i].backward()
        J.append(torch.cat([net.W.grad[r].flatten(), net.a.grad[r]]))
    J = torch.stack(J)
    torch.testing.assert_close(net.ntk(X)[r], J @ J.T)


def test_per_neuron_deltas_are_conserved_up_to_order_lr_squared():
    g = torch.Generator().manual_seed(1)
    V, s = teacher_network(4, 3, g)
    X = sphere(30, 4, g).expand(3, 30, 4).contiguous()
    y = (X @ V.T).clamp_min(0) @ s
    drift = {}
    for lr in (4e-3, 2e-3):
        net = _net()
        start = neuron_deltas(net.W, net.a).clone()
        steps = int(round(2.0 / lr))
        for _ in range(steps):
            _, gW, ga = net.gradients(X, y)
            with torch.no_grad():
                net.W -= lr * gW
                net.a -= lr * ga
        drift[lr] = (neuron_deltas(net.W, net.a) - start).abs().max().item()
        assert net.W.sub(net.W0).abs().max() > 1e-3  # it did move
    assert drift[2e-3] < 1e-4 and drift[4e-3] / drift[2e-3] == pytest.approx(2.0, rel=0.1)


def test_deep_linear_matrix_invariant_is_conserved():
    g = torch.Generator().manual_seed(2)
    W1 = 0.3 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    W2 = 0.3 * torch.randn(2, 3, generator=g, dtype=torch.float64)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    Y = torch.randn(40, 2, generator=g, dtype=torch.float64)
    eta1, eta2, lr = 1.0, 0.5, 1e-3
    start = deep_linear_invariant(W1, W2, eta1, eta2)
    for _ in range(2000):
        W1.requires_grad_(True)
        W2.requires_grad_(True)
        loss = 0.5 * ((X @ W1.T @ W2.T - Y) ** 2).sum() / 40
        g1, g2 = torch.autograd.grad(loss, (W1, W2))
        W1 = (W1 - lr * eta1 * g1).detach()
        W2 = (W2 - lr * eta2 * g2).detach()
    assert (deep_linear_invariant(W1, W2, eta1, eta2) - start).abs().max() < 2e-4
    with pytest.raises(InputValidationError, match="expected W1"):
        deep_linear_invariant(W1, W1)
    with pytest.raises(InputValidationError, match="torch.from_numpy"):
        neuron_deltas(np.ones((2, 3)), torch.ones(2))


TINY = PhaseDiagramConfig(
    taus=(0.1, 1.0),
    deltas=(-1.0, 1.0),
    n_seeds=1,
    d=5,
    n=20,
    m=6,
    steps=60,
    checkpoints=(0, 10, 60),
    n_test=50,
    n_kernel=20,
)


def test_phase_diagram_job_resumes_and_shows_the_rapid_rich_corner(tmp_path):
    full = run_phase_diagram(TINY, tmp_path / "a", progress=False)
    steps = [r["step"] for r in full["records"]]
    assert steps == [0, 10, 60]
    first = full["records"][0]
    assert np.allclose(first["kernel_distance"], 0, atol=1e-12) and np.all(
        np.array(first["hamming_distance"]) == 0
    )
    # small tau, upstream delta: the activation patterns move most (rich), large tau: barely (lazy)
    ham = np.array(full["records"][-1]["hamming_distance"])
    assert ham[0, 1] > ham[1, 1] and ham[0, 1] > 0.05
    # a shorter run extended to the same steps gives identical numbers
    from dataclasses import replace

    run_phase_diagram(replace(TINY, steps=30, checkpoints=(0, 10)), tmp_path / "b", progress=False)
    resumed = run_phase_diagram(TINY, tmp_path / "b", progress=False)
    assert resumed["records"] == full["records"]
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["finished"] and "phase_diagram.png" in m["files"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--taus", "0.1"], "at least 2 values"),
        (["--taus", "0.1,0.1"], "more than once"),
        (["--m", "0"], "positive integer"),
        (["--steps", "-3"], "positive integer"),
        (["--base-lr", "0"], "positive number"),
        (["--m", "5"], "m must be even"),
        (["--taus", "-1,1"], "tau values must be > 0"),
    ],
)
def test_phase_diagram_bad_values_one_line(capsys, tmp_path, args, message):
    out = tmp_path / "out"
    try:
        code = main(["dynamics", "lazy-rich", "phase-diagram", "--out", str(out), "--no-progress", *args])
    except SystemExit as exc:  # argparse refuses bad values at parse time
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists() or not any(p.name != "manifest.json" for p in out.iterdir())


def test_single_neuron_cli(capsys, tmp_path):
    assert main(["dynamics", "lazy-rich", "single-neuron", "--out", str(tmp_path), "--deltas", "-1,0,4"]) == 0
    out = capsys.readouterr().out
    assert "max error" in out
    data = json.loads((tmp_path / "single_neuron.json").read_text())
    assert data["max_closed_form_vs_ode_error"] < 1e-8
    assert [r["delta"] for r in data["deltas"]] == [-1.0, 0.0, 4.0]
    np.testing.assert_allclose(data["deltas"][1]["low_rank_limit"], [0.943, 0.629], atol=6e-4)
