"""Input validation of the machines: constructor arguments and denoise / explain inputs."""

from __future__ import annotations

import pytest
import torch

from dlscience.diffusion import ELSDenoiser, IdealDenoiser, LocalDenoiser
from dlscience.errors import InputValidationError, UserError

IMGS = torch.linspace(-1, 1, 4 * 36).view(4, 1, 6, 6)
LABELS = torch.tensor([0, 1, 0, 1])


def machines(labels=None):
    return [
        IdealDenoiser(IMGS, labels),
        LocalDenoiser(IMGS, 3, labels),
        ELSDenoiser(IMGS, 3, "zeros", labels),
        ELSDenoiser(IMGS, 3, "circular", labels),
    ]


X = torch.zeros(2, 1, 6, 6)


@pytest.mark.parametrize(
    "x, t, pattern",
    [
        (torch.full((2, 1, 6, 6), float("nan")), 0.5, "NaN or infinite"),
        (torch.full((2, 1, 6, 6), float("inf")), 0.5, "NaN or infinite"),
        (torch.zeros(2, 1, 6, 5), 0.5, "shape"),
        (torch.zeros(2, 2, 6, 6), 0.5, "shape"),
        (torch.zeros(1, 6, 6), 0.5, "shape"),
        (torch.zeros(2, 1, 6, 6, dtype=torch.int64), 0.5, "float32 or float64"),
        (torch.zeros(2, 1, 6, 6, dtype=torch.float16), 0.5, "float32 or float64"),
        ([[0.0]], 0.5, "torch.Tensor"),
        (X, 0.0, r"\[1e-6, 1\]"),
        (X, -0.2, r"\[1e-6, 1\]"),
        (X, 1.0001, r"\[1e-6, 1\]"),
        (X, float("nan"), r"\[1e-6, 1\]"),
        (X, 1e-9, r"noise level rounds to zero"),
        (X, torch.tensor([0.5, 0.5, 0.5]), "3 values for a batch of 2"),
    ],
)
def test_denoise_rejects_bad_inputs(x, t, pattern):
    """NaN/inf, wrong shape, int/half dtype, non-tensor, t outside (0, 1], wrong t length ->
    InputValidationError."""
    for m in machines():
        with pytest.raises(InputValidationError, match=pattern):
            m.denoise(x, t)
        with pytest.raises(InputValidationError, match=pattern):
            m.explain(x, t)


def test_labels_for_unconditional_machine_are_refused():
    """Labels given to an unconditional machine raise."""
    for m in machines():
        with pytest.raises(InputValidationError, match="unconditional"):
            m.denoise(X, 0.5, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "labels, pattern",
    [
        (None, "class-conditional"),
        (torch.tensor([0, 2]), r"\[0, 2\)"),
        (torch.tensor([-1, 0]), r"\[0, 2\)"),
        (torch.tensor([0]), "1 labels for a batch of 2"),
        (torch.tensor([0.0, 1.0]), "integers"),
        (torch.tensor([True, False]), "integers"),
    ],
)
def test_conditional_machine_label_errors(labels, pattern):
    """Missing, out-of-range, wrong-length or non-integer labels for a conditional machine raise."""
    for m in machines(LABELS):
        assert m.conditional and m.num_classes == 2
        with pytest.raises(InputValidationError, match=pattern):
            m.denoise(X, 0.5, labels)


def test_valid_calls_pass_and_keep_dtype():
    """The same inputs with a valid t and labels work, and the output has x_t's dtype and shape."""
    for m in machines(LABELS):
        for dtype in (torch.float32, torch.float64):
            out = m.denoise(X.to(dtype), 0.5, torch.tensor([1, 0]))
            assert out.dtype == dtype and out.shape == X.shape
    for m in machines():
        assert m.denoise(X, torch.tensor([0.2, 1.0])).shape == X.shape


def test_class_without_images_is_refused():
    """num_classes larger than the labels seen: requesting an empty class raises."""
    m = ELSDenoiser(IMGS, 3, "circular", LABELS, num_classes=3)
    with pytest.raises(InputValidationError, match="class 2 has no training images"):
        m.denoise(X, 0.5, torch.tensor([2, 0]))


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: ELSDenoiser(IMGS, 3, "reflect"), "padding"),
        (lambda: ELSDenoiser(IMGS * 1.01, 3), r"\[-1, 1\]"),
        (lambda: IdealDenoiser(IMGS - 0.5), r"\[-1, 1\]"),
        (lambda: LocalDenoiser(IMGS * 255, 3), r"\[-1, 1\]"),
        (lambda: IdealDenoiser((IMGS > 0).to(torch.uint8)), "floating point"),
        (lambda: IdealDenoiser(IMGS[0]), r"\(N, C, H, W\)"),
        (lambda: IdealDenoiser(IMGS[:0]), "empty"),
        (lambda: IdealDenoiser(torch.full((2, 1, 4, 4), float("nan"))), "NaN"),
        (lambda: LocalDenoiser(IMGS, 3, torch.tensor([0, 1, 0])), r"shape \(4,\)"),
        (lambda: ELSDenoiser(IMGS, 3, "zeros", torch.tensor([0.0, 1.0, 0.0, 1.0])), "integers"),
        (lambda: IdealDenoiser(IMGS, torch.tensor([0, -1, 0, 1])), "non-negative"),
        (lambda: IdealDenoiser(IMGS, LABELS, num_classes=1), "num_classes"),
        (lambda: IdealDenoiser(IMGS, num_classes=2), "num_classes given without labels"),
        (lambda: IdealDenoiser(IMGS, precision="float16"), "precision"),
        (lambda: IdealDenoiser(IMGS, memory_limit=1024), "16 MiB"),
    ],
)
def test_bad_constructor_arguments(build, pattern):
    """Bad padding, images outside [-1, 1], wrong dtype/shape, bad labels and settings raise with a
    message."""
    with pytest.raises(InputValidationError, match=pattern):
        build()


def test_validation_errors_are_user_errors():
    """InputValidationError is a UserError and a ValueError (the CLI prints it as one line)."""
    with pytest.raises(UserError):
        IdealDenoiser(IMGS).denoise(X, 2.0)
    assert issubclass(InputValidationError, ValueError)
