"""Reader for the IDX file format used by MNIST and Fashion-MNIST.

The IDX format (LeCun, Cortes & Burges, "The MNIST database of handwritten digits",
http://yann.lecun.com/exdb/mnist/) is a big-endian binary array: a 4-byte magic number
``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian ``int32`` dimension sizes, then the
data in C order. Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) uses the same format and file names.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from dlscience.errors import DatasetNotFoundError

__all__ = ["read_idx"]

#: IDX dtype codes (third magic byte) -> numpy big-endian dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed, if the name ends in ``.gz``) contents of ``path``."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DatasetNotFoundError(
            f"cannot read IDX file {path}: {e} (the file is corrupt or truncated; "
            "delete it and download it again)"
        ) from e


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    # ``mtime_ns`` and ``size`` are part of the cache key only, so a rewritten file is reread.
    p = Path(path)
    data = _read_bytes(p)

    def bad(problem: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(f"corrupt IDX file {p}: {problem} (delete it and download it again)")

    if len(data) < 4:
        raise bad(f"only {len(data)} bytes, too short for the 4-byte magic number")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        magic = int.from_bytes(data[:4], "big")
        raise bad(
            f"bad magic number 0x{magic:08x} (expected 0x0000TTNN with a known dtype code TT, "
            "e.g. 0x00000803 for images or 0x00000801 for labels)"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad(f"truncated header: {len(data)} bytes, need {header} for {ndim} dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise bad(f"{what}: header says shape {shape} ({expected} data bytes), found {actual}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    arr.flags.writeable = False
    return arr


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a read-only numpy array.

    Parameters
    ----------
    path : str or path-like
        The IDX file, e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``.
        Names ending in ``.gz`` are decompressed with :mod:`gzip`.

    Returns
    -------
    numpy.ndarray
        Read-only array in native byte order with the shape and dtype given by the header, e.g.
        ``uint8`` of shape ``(60000, 28, 28)`` for MNIST training images and ``(60000,)`` for
        its labels. Results are cached per (path, modification time, size) within a process, so
        the array is shared: copy it before modifying.

    Raises
    ------
    DatasetNotFoundError
        If the file is missing, unreadable, not valid gzip, has a bad magic number, or its size
        does not match the dimensions in its header (truncated or trailing bytes). The message
        names the file and the problem.

    Notes
    -----
    Format: LeCun, Cortes & Burges, "The MNIST database of handwritten digits".
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise DatasetNotFoundError(f"cannot read IDX file {p}: {e}") from e
    return _read_idx_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)
