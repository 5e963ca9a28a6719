"""The compiled summed-area ELS kernel (dlscience.diffusion.native) against the dense float64 reference and
the matrix-multiply (torch) path: values, provenance, multi-channel images, the low-noise skip, many
training images (several SIMD blocks and threads), and the fallback when it is disabled."""

from __future__ import annotations

import pytest
import torch

from dlscience.diffusion import ELSDenoiser, native
from dlscience.diffusion.reference import reference_els
from dlscience.diffusion.schedule import add_noise
from dlscience.errors import InputValidationError

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: native kernel unavailable")


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("P", [1, 3, 5, 7])
@pytest.mark.parametrize("t", [0.05, 0.3, 0.9])
def test_native_matches_dense_reference(gen, padding, P, t):
    """Native backend equals the dense float64 reference to 1e-12 (it computes in float64), for 13 images
    (two SIMD blocks, one partly padded), 2 channels and non-square images."""
    imgs = torch.rand(13, 2, 9, 8, generator=gen, dtype=torch.float64) * 2 - 1
    x = torch.cat(
        [
            add_noise(imgs[:2] * 0.9, t, generator=gen),
            2 * torch.randn(1, 2, 9, 8, generator=gen, dtype=torch.float64),
        ]
    )
    m = ELSDenoiser(imgs, P, padding, precision="float64", backend="native")
    torch.testing.assert_close(m.denoise(x, t), reference_els(imgs, x, t, P, padding), rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_native_and_torch_paths_agree_with_provenance(gen, padding):
    """Both backends give the same x0_hat and the same arg-max patch (image, row, col) per pixel at low noise,
    where the best patch is unambiguous."""
    imgs = torch.rand(20, 1, 10, 10, generator=gen) * 2 - 1
    x = add_noise(imgs[3:5], 0.1, generator=gen)
    a = ELSDenoiser(imgs, 3, padding, backend="native").explain(x, 0.1)
    b = ELSDenoiser(imgs, 3, padding, backend="torch", precision="float64").explain(x, 0.1)
    torch.testing.assert_close(a.x0_hat, b.x0_hat, rtol=0, atol=1e-6)
    confident = b.weight > 0.99
    assert confident.float().mean() > 0.5
    for field in ("image_index", "row", "col"):
        assert torch.equal(getattr(a, field)[confident], getattr(b, field)[confident]), field
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-5)  # edges: float32 vs float64
    # the arg-max patch's centre pixel is a training pixel whose value is the output at high weight
    src = imgs[a.image_index, 0, a.row, a.col]
    assert ((src - a.x0_hat[:, 0]).abs()[a.weight > 0.9999] < 1e-3).all()


def test_native_low_noise_skip_is_exact(gen):
    """At t = 0.05 almost every pair lies > 60 nats below the running maximum and is skipped; the result still
    equals the dense reference (the skipped mass is < e^-60 per pair)."""
    imgs = torch.rand(40, 1, 12, 12, generator=gen, dtype=torch.float64) * 2 - 1
    x = add_noise(imgs[:2], 0.05, generator=gen)
    m = ELSDenoiser(imgs, 5, "zeros", precision="float64", backend="native")
    torch.testing.assert_close(
        m.denoise(x, 0.05), reference_els(imgs, x, 0.05, 5, "zeros"), rtol=0, atol=1e-12
    )


def test_native_class_conditional_uses_only_class_images(gen):
    """With labels, the kernel sees only the label's images: provenance points into that class and the output
    equals an unconditional machine built on the class alone."""
    imgs = torch.rand(30, 1, 8, 8, generator=gen) * 2 - 1
    labels = torch.arange(30) % 3
    x = torch.randn(2, 1, 8, 8, generator=gen)
    m = ELSDenoiser(imgs, 3, "circular", labels=labels, backend="native")
    pm = m.explain(x, 0.4, torch.tensor([2, 2]))
    assert (labels[pm.image_index] == 2).all()
    only = ELSDenoiser(imgs[labels == 2], 3, "circular", backend="native")
    torch.testing.assert_close(pm.x0_hat, only.denoise(x, 0.4), rtol=0, atol=1e-6)


def test_backend_validation_and_fallback(gen, monkeypatch):
    """Unknown backends are refused; with the kernel disabled, "auto" falls back to torch and "native" raises
    a clear error."""
    imgs = torch.rand(4, 1, 6, 6, generator=gen) * 2 - 1
    with pytest.raises(InputValidationError, match="backend"):
        ELSDenoiser(imgs, 3, backend="cuda")
    x = torch.randn(1, 1, 6, 6, generator=gen)
    expected = ELSDenoiser(imgs, 3, backend="torch").denoise(x, 0.5)
    monkeypatch.setattr(native, "available", lambda: False)
    torch.testing.assert_close(ELSDenoiser(imgs, 3).denoise(x, 0.5), expected, rtol=0, atol=1e-6)
    with pytest.raises(InputValidationError, match="compiled kernel is unavailable"):
        ELSDenoiser(imgs, 3, backend="native").denoise(x, 0.5)


def test_native_result_does_not_depend_on_thread_count(gen):
    """Static scheduling and a smallest-id tie-break: 1 and 2 threads give the same outputs (to rounding of the
    merge order) and the same provenance, even with many identical (background) patches."""
    imgs = -torch.ones(24, 1, 10, 10)
    imgs[:, :, 3:7, 3:7] = torch.rand(24, 1, 4, 4, generator=gen) * 2 - 1
    x = add_noise(imgs[:2], 0.1, generator=gen)
    m = ELSDenoiser(imgs, 3, "circular", backend="native")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = m.explain(x, 0.1)
        torch.set_num_threads(2)
        two = m.explain(x, 0.1)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one.x0_hat, two.x0_hat, rtol=0, atol=1e-6)
    for field in ("image_index", "row", "col"):
        assert torch.equal(getattr(one, field), getattr(two, field)), field
