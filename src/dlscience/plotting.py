"""Small shared plotting helpers (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

__all__ = ["to_display", "provenance_colors"]


def to_display(img) -> np.ndarray:
    """Convert an image (C, H, W) in [-1, 1] (numpy or torch) to an array for ``imshow``.

    Returns (H, W) for one channel (show with ``cmap="gray", vmin=0, vmax=1``) or (H, W, 3) for three, in [0, 1].
    """
    img = np.asarray(img, dtype=np.float32)
    img = np.clip((img + 1) / 2, 0, 1)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def provenance_colors(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """Colour a map of integer source ids (H, W): one random colour per distinct id, (H, W, 3) in [0, 1]."""
    uniq, inv = np.unique(ids, return_inverse=True)
    rng = np.random.default_rng(seed)
    palette = rng.uniform(0.15, 0.95, size=(len(uniq), 3))
    return palette[inv].reshape(*ids.shape, 3)
