"""Exact pruning of the ELS dictionary (issue 22): the lower bound is never violated, and the pruned machine
equals the unpruned one within 1e-6 (in practice ~1e-12) on random and real inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlscience.diffusion import ELSDenoiser, native
from dlscience.diffusion.empirical import patches_at
from dlscience.diffusion.pruned_search import build_dictionary, lower_bound, projection_basis
from dlscience.diffusion.schedule import signal_and_noise
from dlscience.errors import InputValidationError

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler for the native kernel")


def _digits(n=60, size=8):
    """sklearn digits scaled to [-1, 1] (N, 1, 8, 8), or None."""
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.from_numpy(d.images[:n]).float() / 8.0 - 1.0
    return x.view(-1, 1, size, size).clamp(-1, 1), torch.from_numpy(d.target[:n])


def _all_pixel_patches(x, P, padding):
    """Every pixel's query patch (edges and corners included), (B * H * W, D) float64."""
    B, C, H, W = x.shape
    return patches_at(x.double(), P, torch.arange(H * W), padding).reshape(-1, C * P * P)


@pytest.mark.parametrize("P", [1, 3, 5])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("t", [0.05, 0.3, 0.9])
def test_bound_never_exceeds_exact_distance_random(gen, P, padding, t):
    imgs = torch.rand(5, 2, 7, 7, generator=gen) * 2 - 1
    imgs[0] = -1.0  # constant image: merged patches, zero residuals
    x = torch.randn(3, 2, 7, 7, generator=gen)
    x[0] = 0.0  # zero queries (zero padding everywhere)
    a, _ = signal_and_noise(t)
    d = build_dictionary(imgs.double().numpy(), np.arange(5), P)
    U = d["U"]
    q = _all_pixel_patches(x, P, padding)
    pat = torch.from_numpy(d["pat"]) if d["pat"] is not None else None
    assert pat is None  # no copy unless asked for
    d = build_dictionary(imgs.double().numpy(), np.arange(5), P, max_copy_bytes=1 << 30)
    pat = torch.from_numpy(d["pat"])
    exact = torch.cdist(q, a * pat) ** 2
    exact_direct = ((q[:, None, :] - a * pat[None]) ** 2).sum(-1)
    torch.testing.assert_close(exact, exact_direct, atol=1e-9, rtol=1e-9)
    lb = lower_bound(q, torch.from_numpy(d["pf"]), torch.from_numpy(d["pr"]), U, a)
    assert (lb <= exact_direct).all(), float((lb - exact_direct).max())
    # the bound is not vacuous: it is tight for some pairs
    assert (lb > 0.5 * exact_direct).any()
    # U is orthonormal, the key column is sorted
    torch.testing.assert_close(U.T @ U, torch.eye(U.shape[1], dtype=torch.float64), atol=1e-12, rtol=0)
    assert np.all(np.diff(d["pf"][:, 0]) >= 0)


@pytest.mark.parametrize("P", [3, 5])
def test_bound_never_exceeds_exact_distance_real_digits(P):
    imgs, _ = _digits(40)
    a, sigma = signal_and_noise(0.1)
    x = a * imgs[40 - 4 :] + sigma * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    d = build_dictionary(imgs.double().numpy(), np.arange(40), P, max_copy_bytes=1 << 30)
    pat = torch.from_numpy(d["pat"])
    for padding in ("zeros", "circular"):
        q = _all_pixel_patches(x, P, padding)
        exact = ((q[:, None, :] - a * pat[None]) ** 2).sum(-1)
        lb = lower_bound(q, torch.from_numpy(d["pf"]), torch.from_numpy(d["pr"]), d["U"], a)
        assert (lb <= exact).all()


def test_dictionary_merges_only_identical_patches(gen):
    imgs = torch.rand(3, 1, 6, 6, generator=gen) * 2 - 1
    imgs[1] = -1.0
    imgs[2, :, :3] = 0.5
    d = build_dictionary(imgs.double().numpy(), np.array([7, 8, 9]), 3, max_copy_bytes=1 << 30)
    counts = np.exp(d["logc"]).round()
    assert counts.sum() == d["n_patches"] == 3 * 16
    # merged entries are constant patches, their provenance is the smallest id
    for j in np.nonzero(counts > 1)[0]:
        assert np.ptp(d["pat"][j]) == 0
    # every stored patch is the patch its offset points at
    flat = imgs.double().reshape(-1)
    for j in range(len(d["off"])):
        o = int(d["off"][j])
        ref = torch.stack([flat[o + dy * 6 : o + dy * 6 + 3] for dy in range(3)]).reshape(-1)
        torch.testing.assert_close(torch.from_numpy(d["pat"][j]), ref, atol=0, rtol=0)
    assert set(np.unique(d["src"] // 36)) == {7, 8, 9}


@needs_native
@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("t", [0.05, 0.2, 0.5, 0.95])
def test_pruned_equals_unpruned_random(gen, padding, t):
    imgs = torch.rand(9, 2, 9, 9, generator=gen) * 2 - 1
    imgs[:3, :, :4] = -1.0  # background: merged constant patches
    x = torch.randn(3, 2, 9, 9, generator=gen, dtype=torch.float64)
    P = 5 if t > 0.3 else 3
    on = ELSDenoiser(imgs, P, padding, prune="on", precision="float64")
    off = ELSDenoiser(imgs, P, padding, prune="off", precision="float64")
    m_on, m_off = on.explain(x, t), off.explain(x, t)
    torch.testing.assert_close(m_on.x0_hat, m_off.x0_hat, atol=1e-9, rtol=0)
    torch.testing.assert_close(m_on.weight, m_off.weight, atol=1e-9, rtol=0)
    assert torch.equal(m_on.image_index, m_off.image_index)
    assert on.prune_log and on.prune_log[-1]["used"]
    assert 0 < on.prune_log[-1]["exact_fraction"] <= on.prune_log[-1]["bound_fraction"] <= 1


@needs_native
def test_pruned_equals_unpruned_real_digits_sampler():
    from dlscience.diffusion import DDIMSampler

    imgs, labels = _digits(120)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 1, 7])
    outs = {}
    for prune in ("on", "off"):
        m = ELSDenoiser(imgs, 3, "zeros", labels=labels, num_classes=10, prune=prune)
        outs[prune] = DDIMSampler(20, 0.95).sample(m, x.double(), y)
    assert (outs["on"] - outs["off"]).abs().max() < 1e-6


@needs_native
def test_pruned_equals_unpruned_fashion_mnist():
    from dlscience.data import load_images

    try:
        ds = load_images("fashion-mnist", size=16, n=300, seed=0)
    except Exception as exc:  # noqa: BLE001 -- the dataset folder is optional
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    imgs = ds.images
    g = torch.Generator().manual_seed(0)
    for t, P in ((0.05, 3), (0.25, 5)):
        a, sigma = signal_and_noise(t)
        x = (a * imgs[:2] + sigma * torch.randn(2, *imgs.shape[1:], generator=g)).double()
        on = ELSDenoiser(imgs[2:], P, "zeros", prune="on")
        off = ELSDenoiser(imgs[2:], P, "zeros", prune="off")
        m_on, m_off = on.explain(x, t), off.explain(x, t)
        assert (m_on.x0_hat - m_off.x0_hat).abs().max() < 1e-6
        assert (m_on.weight - m_off.weight).abs().max() < 1e-6
        assert on.prune_log[-1]["exact_fraction"] < 1.0


@needs_native
def test_auto_chooses_and_stays_exact(gen):
    imgs = torch.rand(6, 1, 8, 8, generator=gen) * 2 - 1
    x = torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    auto = ELSDenoiser(imgs, 3, "zeros", prune="auto")
    off = ELSDenoiser(imgs, 3, "zeros", prune="off")
    torch.testing.assert_close(auto.denoise(x, 0.1), off.denoise(x, 0.1), atol=1e-9, rtol=0)
    rec = auto.prune_log[-1]
    assert "sample_exact_fraction" in rec and isinstance(rec["used"], bool)


def test_prune_option_is_validated(gen):
    with pytest.raises(InputValidationError, match="prune"):
        ELSDenoiser(torch.zeros(2, 1, 5, 5), 3, prune="yes")


def test_projection_basis_is_orthonormal_and_deterministic(gen):
    imgs = (torch.rand(20, 3, 8, 8, generator=gen) * 2 - 1).double()
    U1, U2 = projection_basis(imgs, 3), projection_basis(imgs, 3)
    assert torch.equal(U1, U2) and U1.shape == (27, 4)
    torch.testing.assert_close(U1.T @ U1, torch.eye(4, dtype=torch.float64), atol=1e-13, rtol=0)
    # P = 1, C = 1: D = 1, k capped at 1
    assert projection_basis(imgs[:, :1], 1).shape == (1, 1)


def test_unfold_order_matches_conv_projection(gen):
    """The dictionary projections (conv2d) use the flattening order of the query patches."""
    imgs = (torch.rand(2, 2, 6, 6, generator=gen) * 2 - 1).double()
    d = build_dictionary(imgs.numpy(), np.arange(2), 3, max_copy_bytes=1 << 30)
    torch.testing.assert_close(
        torch.from_numpy(d["pat"]) @ d["U"], torch.from_numpy(d["pf"]), atol=1e-12, rtol=0
    )
    ref = F.unfold(imgs, 3).transpose(1, 2).reshape(-1, 18)
    assert torch.equal(ref.sort(0).values, torch.from_numpy(d["pat"]).sort(0).values) or len(d["pat"]) < len(
        ref
    )


@needs_native
@pytest.mark.parametrize("prune", ["off", "on"])
def test_batched_samples_equal_one_by_one(gen, prune):
    """Samples of one class share one pass over its dictionary (one kernel call for the batch); the result is
    the same as denoising them one at a time."""
    imgs = torch.rand(10, 1, 9, 9, generator=gen) * 2 - 1
    labels = torch.tensor([0, 1] * 5)
    x = torch.randn(4, 1, 9, 9, generator=gen, dtype=torch.float64)
    y = torch.tensor([1, 1, 0, 1])
    m = ELSDenoiser(imgs, 3, "zeros", labels=labels, prune=prune)
    batched = m.denoise(x, 0.2, y)
    single = torch.cat([m.denoise(x[i : i + 1], 0.2, y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-12, rtol=0)
