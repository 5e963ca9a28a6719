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

from dlscience.errors import UserError


class DamagedFileError(UserError):
    """A file this program reads is truncated, corrupted or of another format; the message names the file and
    the fix."""


def _damaged(path, what: str, exc: BaseException, fix: str | None) -> DamagedFileError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if reason.startswith("Weights only load failed") or "invalid load key" in reason:
        reason = "not a torch file"
    elif "PytorchStreamReader" in reason or "Invalid argument" in reason:
        reason = "truncated or corrupted torch file"
    if len(reason) > 120:
        reason = reason[:117] + "..."
    return DamagedFileError(f"{path} is damaged or not a {what} ({reason})" + (f"; {fix}" if fix else ""))


__all__ = [
    "atomic_write",
    "write_json",
    "write_npz",
    "write_npy",
    "write_parquet",
    "save_figure",
    "save_torch",
    "load_torch",
    "read_json",
    "load_npy",
    "read_parquet",
    "DamagedFileError",
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


def load_torch(path: str | Path, *, what: str = "dlscience checkpoint", fix: str | None = None):
    """Load a file written by :func:`save_torch` (tensors and plain Python containers only), on the CPU.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file should be, for the error message (e.g. "model written by `dlscience diffusion train`").
    fix : str, optional
        How to repair it, appended to the message.

    Raises
    ------
    DamagedFileError
        If the file is truncated, corrupted or not a torch file (naming it); FileNotFoundError if missing.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        AttributeError,
        TypeError,
        UnicodeDecodeError,
        IndexError,
    ) as exc:
        raise _damaged(path, what, exc, fix) from None
    except OSError as exc:
        if exc.filename is not None:  # the file system (permissions, ...), not the file's content
            raise
        raise _damaged(path, what, exc, fix) from None  # torch's reader on some truncated files: EINVAL


def read_json(path: str | Path, *, what: str = "JSON file", fix: str | None = None):
    """Read a JSON file written by :func:`write_json` (or by a user).

    Raises
    ------
    DamagedFileError
        If the file is not valid UTF-8 JSON (truncated, corrupted), naming it; FileNotFoundError if missing.
    """
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, what, exc, fix) from None


def load_npy(path: str | Path, *, mmap: bool = True, what: str = ".npy array", fix: str | None = None):
    """Open a ``.npy`` file (memory-mapped by default), checking that it holds all its declared bytes.

    Raises
    ------
    DamagedFileError
        If the header is unreadable or the file is shorter than its header says (truncated), naming it.
    """
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _damaged(path, what, exc, fix) from None


def read_parquet(path: str | Path, *, columns=None, what: str = "parquet file", fix: str | None = None):
    """Read a parquet file as a ``pyarrow.Table``.

    Raises
    ------
    DamagedFileError
        If the file is truncated or not parquet, naming it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _damaged(path, what, exc, fix) from None
