"""Shared fixtures for the diffusion tests.

The machines are run on tiny images (1-3 channels, 5x5 to 10x10 pixels, 2-12 images) so the whole
suite is
fast. Torch's intra-op thread pool is pinned to one thread: on a busy 2-core machine the OpenMP
barriers of
the default pool make every tiny kernel (im2col of a 10x10 image) take tens of milliseconds instead
of
microseconds.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def gen():
    """A seeded torch.Generator (fresh per test)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def train_images(gen):
    """Six generic training images (N, C, H, W) = (6, 2, 8, 8), uniform in [-1, 1]."""
    return torch.rand(6, 2, 8, 8, generator=gen) * 2 - 1
