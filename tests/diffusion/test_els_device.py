"""Device plumbing of the matrix-multiply path (issue 22): ``device="cpu"`` given explicitly equals the
default, CUDA (when present) equals the CPU within float32 tolerance, and bad devices are refused."""

from __future__ import annotations

import pytest
import torch

from dlscience.diffusion import ELSDenoiser, IdealDenoiser, LocalDenoiser
from dlscience.diffusion.sample_job import SampleConfig, _identity
from dlscience.errors import InputValidationError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_explicit_cpu_device_equals_default_torch_backend(gen, padding):
    imgs = torch.rand(7, 1, 9, 9, generator=gen) * 2 - 1
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0])
    x = torch.randn(3, 1, 9, 9, generator=gen)
    y = torch.tensor([0, 1, 1])
    ref = ELSDenoiser(imgs, 3, padding, labels=labels, backend="torch")
    dev = ELSDenoiser(imgs, 3, padding, labels=labels, backend="torch", device=torch.device("cpu"))
    assert dev.device.type == "cpu"
    for t in (0.1, 0.6):
        a, b = ref.explain(x, t, y), dev.explain(x, t, y)
        assert torch.equal(a.x0_hat, b.x0_hat) and torch.equal(a.image_index, b.image_index)


def test_device_option_validated():
    imgs = torch.zeros(2, 1, 5, 5)
    with pytest.raises(InputValidationError, match="device"):
        ELSDenoiser(imgs, 3, device="not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(InputValidationError, match="CUDA is not available"):
            ELSDenoiser(imgs, 3, device="cuda")


def test_device_and_prune_do_not_change_the_run_identity():
    base = SampleConfig()
    assert _identity(base) == _identity(SampleConfig(device="cuda", prune="on"))


@cuda
@pytest.mark.parametrize("machine", ["els", "ls", "is"])
def test_cuda_equals_cpu(gen, machine):
    imgs = torch.rand(12, 1, 10, 10, generator=gen) * 2 - 1
    x = torch.randn(4, 1, 10, 10, generator=gen)
    make = {
        "els": lambda **kw: ELSDenoiser(imgs, 5, "zeros", **kw),
        "ls": lambda **kw: LocalDenoiser(imgs, 5, **kw),
        "is": lambda **kw: IdealDenoiser(imgs, **kw),
    }[machine]
    cpu, gpu = make(backend="torch"), make(device="cuda")
    for t in (0.05, 0.5, 0.95):
        torch.testing.assert_close(gpu.denoise(x, t), cpu.denoise(x, t), atol=1e-5, rtol=0)
