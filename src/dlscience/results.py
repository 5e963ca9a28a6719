"""Writing results without losing anything: every file is written to a temporary name in the destination
folder and renamed into place when complete (an interrupted run never leaves a half-written file)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_write",
    "write_json",
    "write_npz",
    "write_npy",
    "write_parquet",
    "save_figure",
    "save_torch",
    "load_torch",
]


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it to ``path`` when it returns.

    Parameters
    ----------
    path : str or Path
        Destination; its folder is created if needed.
    write : callable
        Receives a binary file object opened for writing.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(x: Any):
    if isinstance(x, float | np.floating) and not np.isfinite(x):
        return None  # strict JSON has no NaN or inf
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return _jsonable(x.item())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):  # torch tensors
        return _jsonable(x.tolist())
    return x


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON atomically (numpy/torch values and paths are converted)."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_npz(path: str | Path, **arrays) -> Path:
    """Write arrays to a compressed ``.npz`` atomically (torch tensors are converted to numpy)."""
    arrays = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in arrays.items()}
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def save_figure(path: str | Path, fig) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    fmt = Path(path).suffix.lstrip(".") or "png"
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def write_npy(path: str | Path, array) -> Path:
    """Write one array as ``.npy`` atomically (readable with ``np.load(path, mmap_mode="r")``)."""
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def write_parquet(path: str | Path, table, *, metadata: dict[str, str] | None = None) -> Path:
    """Write a ``pyarrow.Table`` as parquet atomically, with optional string ``metadata`` in its schema.

    The bytes depend only on the table and the pyarrow version, so equal tables give identical files.
    """
    import pyarrow.parquet as pq

    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    return atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd"))


def save_torch(path: str | Path, obj) -> Path:
    """``torch.save`` atomically (for checkpoints)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path: str | Path):
    """Load a checkpoint written by :func:`save_torch` (tensors and plain Python containers only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
