"""box_sum (integral-image P x P window sums with zero padding) against a direct loop."""

from __future__ import annotations

import pytest
import torch

from dlscience.diffusion.box_filter import box_sum


@pytest.mark.parametrize("P", [1, 3, 5, 9, 15])
def test_box_sum_equals_direct_window_sums(gen, P):
    x = torch.randn(2, 3, 7, 6, generator=gen, dtype=torch.float64)
    r = P // 2
    expected = torch.zeros_like(x)
    for i in range(7):
        for j in range(6):
            expected[..., i, j] = x[..., max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].sum((-1, -2))
    torch.testing.assert_close(box_sum(x, P), expected, rtol=0, atol=1e-12)
