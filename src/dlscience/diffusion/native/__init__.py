"""Compiled kernels of the ELS machine, built on first use with the system C compiler.

:func:`els_interior` wraps ``els_kernel.c`` (the summed-area ELS kernel; see the C file's header for the
algorithm). The shared library is compiled once per source version and CPU instruction set into
``$DLSCIENCE_CACHE`` (default ``~/.cache/dlscience``) with ``cc -O3 -fopenmp`` (plus ``-mavx2 -mfma`` when the
CPU has them) and loaded with :mod:`ctypes`. When no compiler is available, or ``DLSCIENCE_NATIVE=0`` is set,
:func:`available` is False and the machines use their pure-torch path, which gives the same results.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["available", "els_interior", "els_pruned", "isa", "patch_bias", "to_blocks", "LANES", "SKIP_NATS"]

LANES = 8  # training images per SIMD block, as in els_kernel.c
SKIP_NATS = 60.0  # pairs this far below the best logit are skipped (SKIP in els_kernel.c)
_SOURCE = Path(__file__).with_name("els_kernel.c")


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cache_dir() -> Path:
    env = os.environ.get("DLSCIENCE_CACHE")
    if env:
        return Path(env) / "native"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlscience" / "native"


def _compile(compiler: str, flags: list[str], cache: Path) -> Path:
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    lib_path = cache / f"els_kernel-{key}.so"
    if lib_path.exists():
        return lib_path
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".els_kernel-", suffix=".so", dir=cache)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *flags, str(_SOURCE), "-o", tmp, "-lm"], check=True, capture_output=True, timeout=120
        )
        os.replace(tmp, lib_path)  # atomic: concurrent builds each write their own temporary file
    finally:
        Path(tmp).unlink(missing_ok=True)
    return lib_path


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    if os.environ.get("DLSCIENCE_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    flags = ["-O3", "-fPIC", "-shared"]
    if {"avx2", "fma"} <= _cpu_flags():
        flags += ["-mavx2", "-mfma"]
    errors = []
    # with OpenMP first, then without (a compiler without OpenMP still gives a single-threaded kernel);
    # the user cache first, then the system temporary folder (read-only home)
    for extra in (["-fopenmp"], []):
        for cache in (_cache_dir(), Path(tempfile.gettempdir()) / "dlscience-native"):
            try:
                lib = ctypes.CDLL(str(_compile(compiler, flags + extra, cache)))
            except subprocess.CalledProcessError as exc:
                errors.append(exc.stderr.decode(errors="replace")[-300:].strip())
                break  # the compiler refused these flags: another folder will not help
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(str(exc))
                continue
            d, i, lng = ctypes.POINTER(ctypes.c_double), ctypes.c_int, ctypes.POINTER(ctypes.c_int64)
            lib.els_interior.argtypes = [
                d,
                i,
                i,
                i,
                i,
                i,
                i,
                i,
                i,
                d,
                d,
                lng,
                i,
                i,
                i,
                i,
                ctypes.c_double,
                d,
                d,
                lng,
                d,
                i,
                i,
            ]
            lib.els_interior.restype = i
            lib.els_pruned.argtypes = [
                d,
                d,
                d,
                i,
                i,
                i,
                i,  # q, qf, qr, nq, C, P, k
                d,
                d,
                d,
                d,
                lng,
                d,
                lng,
                ctypes.c_long,  # pf, pr, psq, logc, off, cen, src, K
                d,
                d,
                i,
                i,  # images, pat (or NULL), H, W
                ctypes.c_double,
                ctypes.c_double,
                ctypes.c_double,
                ctypes.c_double,  # a, sigma, skip, slack
                d,
                d,
                lng,
                d,
                lng,
                i,
                i,  # outputs, stats, track, threads
            ]
            lib.els_pruned.restype = i
            lib.els_kernel_isa.restype = ctypes.c_char_p
            return lib
    warnings.warn(
        "dlscience: could not build the native ELS kernel, using the slower pure-torch path: "
        + " | ".join(errors),
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def available() -> bool:
    """True when the compiled kernel can be used (compiling it on the first call)."""
    return _library() is not None


def isa() -> str:
    """Instruction set the kernel was compiled for ("avx2" or "generic"); "none" when unavailable."""
    lib = _library()
    return "none" if lib is None else lib.els_kernel_isa().decode()


def _ptr(a: np.ndarray, kind):
    return a.ctypes.data_as(ctypes.POINTER(kind))


def els_interior(
    q: np.ndarray,
    rect: tuple[int, int, int, int],
    y_blocks: np.ndarray,
    bias: np.ndarray,
    ids: np.ndarray,
    patch_size: int,
    alpha: float,
    track: bool,
    threads: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean over all interior patches of the training images, for a rectangle of query pixels.

    Parameters
    ----------
    q : float64 array (B, C, H + 2r, W + 2r)
        Query images padded by r = patch_size // 2 (zeros or circular).
    rect : (qi0, qi1, qj0, qj1)
        Query pixel centres: rows [qi0, qi1), columns [qj0, qj1) (unpadded coordinates).
    y_blocks : float64 array (NB, C, H, W, LANES)
        Training images, LANES per block (see :func:`to_blocks`).
    bias : float64 array (NB, H - P + 1, W - P + 1, LANES)
        -a^2 ||p||^2 / (2 sigma^2) per patch top-left corner; -1e30 for padding lanes.
    ids : int64 array (NB * LANES,)
        Global id of the image in each lane (reported for the best patch).
    patch_size : odd int
    alpha : float
        a / sigma^2.
    track : bool
        Also return the best patch per query.
    threads : int
        OpenMP threads.

    Returns
    -------
    mean (B, nq, C), log_normalizer (B, nq), best (B, nq) int64 (= id * H * W + row * W + col of the best
    patch's centre), best_weight (B, nq); nq = (qi1 - qi0) * (qj1 - qj0), row-major.

    Raises
    ------
    RuntimeError
        If the kernel is unavailable or fails (out of memory).
    ValueError
        If the blocks are not laid out by :func:`to_blocks`.
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("the native ELS kernel is not available")
    q = np.ascontiguousarray(q, dtype=np.float64)
    B, C, Hq, Wq = q.shape
    NB, _, H, W, lanes = y_blocks.shape
    if lanes != LANES or not (y_blocks.flags.c_contiguous and bias.flags.c_contiguous):
        raise ValueError("y_blocks and bias must be C-contiguous blocks of LANES images (see to_blocks)")
    qi0, qi1, qj0, qj1 = rect
    nq = (qi1 - qi0) * (qj1 - qj0)
    mean = np.empty((B, nq, C))
    logz = np.empty((B, nq))
    best = np.zeros((B, nq), dtype=np.int64)
    bestw = np.zeros((B, nq))
    rc = lib.els_interior(
        _ptr(q, ctypes.c_double),
        B,
        C,
        Hq,
        Wq,
        qi0,
        qi1,
        qj0,
        qj1,
        _ptr(y_blocks, ctypes.c_double),
        _ptr(bias, ctypes.c_double),
        _ptr(ids, ctypes.c_long),
        NB,
        H,
        W,
        patch_size,
        float(alpha),
        _ptr(mean, ctypes.c_double),
        _ptr(logz, ctypes.c_double),
        _ptr(best, ctypes.c_long),
        _ptr(bestw, ctypes.c_double),
        int(bool(track)),
        int(threads),
    )
    if rc != 0:
        raise RuntimeError(
            f"native ELS kernel failed (code {rc}: {'empty problem' if rc == 1 else 'out of memory'})"
        )
    return mean, logz, best, bestw


def to_blocks(images: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lay out training images for the kernel.

    Parameters
    ----------
    images : float array (N, C, H, W)
    ids : int64 array (N,)
        Global image ids (reported as provenance).

    Returns
    -------
    blocks : float64 array (NB, C, H, W, LANES), NB = ceil(N / LANES); the last block is padded with zero
        images, whose patches :func:`patch_bias` excludes.
    ids : int64 array (NB * LANES,); padding lanes get id 0.
    """
    N, C, H, W = images.shape
    NB = -(-N // LANES)
    padded = np.zeros((NB * LANES, C, H, W), dtype=np.float64)
    padded[:N] = images
    blocks = np.ascontiguousarray(padded.reshape(NB, LANES, C, H, W).transpose(0, 2, 3, 4, 1))
    all_ids = np.zeros(NB * LANES, dtype=np.int64)
    all_ids[:N] = ids
    return blocks, all_ids


def patch_bias(norms: np.ndarray, n_images: int, a: float, sigma: float) -> np.ndarray:
    """Per-patch logit bias -a^2 ||p||^2 / (2 sigma^2) in block layout, -1e30 on padding lanes.

    Parameters
    ----------
    norms : float64 array (NB * LANES, Hd, Wd)
        ||p||^2 of the patch at each top-left corner, image-major (padding images included).
    n_images : int
        Number of real images (the rest are padding lanes, which must never win).
    a, sigma : float
        sqrt(alpha_bar) and sqrt(1 - alpha_bar).

    Returns
    -------
    float64 array (NB, Hd, Wd, LANES), C-contiguous.
    """
    bias = norms * (-(a * a) / (2 * sigma**2))
    bias[n_images:] = -1e30
    NB = norms.shape[0] // LANES
    return np.ascontiguousarray(bias.reshape(NB, LANES, *norms.shape[1:]).transpose(0, 2, 3, 1))


def els_pruned(
    q: np.ndarray,
    qf: np.ndarray,
    qr: np.ndarray,
    dictionary: dict,
    images: np.ndarray,
    patch_size: int,
    a: float,
    sigma: float,
    slack: float,
    track: bool,
    threads: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact pruned posterior mean over a sorted patch dictionary (``els_pruned`` in els_kernel.c).

    For every query the dictionary entries are visited outwards from the query's key, and an entry's exact
    distance ||q - a p||^2 is computed only when the lower bound

        LB = ||U^T q - a U^T p||^2 + max(0, | ||q_perp|| - a ||p_perp|| | - slack)^2 - margin  <=  ||q - a p||^2

    (U orthonormal, ``_perp`` the residual off U's span; Pythagoras and the reverse triangle inequality) does
    not prove its weight below e^-SKIP_NATS times the largest weight seen so far (a realised weight, so a
    lower bound on the maximum: the skip rule of :func:`els_interior`). Output within rounding (~1e-12) plus
    (number of patches) x e^-60 of the unpruned kernel.

    Parameters
    ----------
    q : float64 array (nq, D)
        Query patches, D = C P^2, channel-major (c * P * P + dy * P + dx).
    qf : float64 array (nq, k)
        Projections q @ U.
    qr : float64 array (nq,)
        Residual norms ||q - (q @ U) U^T||.
    dictionary : dict of arrays
        Sorted by ``pf[:, 0]`` ascending: ``pf`` (K, k) float64 projections, ``pr`` (K,) residual norms,
        ``psq`` (K,) ||p||^2, ``logc`` (K,) log counts of merged identical patches, ``off`` (K,) int64 offset of
        the patch's top-left pixel in ``images``, ``cen`` (K, C) centre pixels, ``src`` (K,) int64 provenance
        ids (image id * H * W + centre row * W + centre col); optionally ``pat`` (K, D) float64, the patches in
        sorted order (exact distances then stream memory instead of gathering from ``images``).
    images : float64 array (N, C, H, W), C-contiguous
        The training images the offsets point into.
    patch_size : odd int P
    a, sigma : float
        sqrt(alpha_bar), sqrt(1 - alpha_bar).
    slack : float >= 0
        Bound on the rounding error of | ||q_perp|| - a ||p_perp|| |.
    track : bool
        Also report the best patch (largest per-copy logit; ties to the smallest id) and its weight.
    threads : int
        OpenMP threads.

    Returns
    -------
    mean (nq, C), log_normalizer (nq,) (of the logits alpha <q, p> - beta ||p||^2 + log count), best (nq,)
    int64, best_weight (nq,), stats (nq, 2) int64: entries whose bound was evaluated, entries evaluated exactly.

    Raises
    ------
    RuntimeError
        If the kernel is unavailable or fails.
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("the native ELS kernel is not available")
    # the kernel takes queries sorted by key (tiles of neighbours share their pass over the dictionary)
    order = np.argsort(np.asarray(qf)[:, 0], kind="stable")
    q = np.ascontiguousarray(np.asarray(q, dtype=np.float64)[order])
    qf = np.ascontiguousarray(np.asarray(qf, dtype=np.float64)[order])
    qr = np.ascontiguousarray(np.asarray(qr, dtype=np.float64)[order])
    nq, D = q.shape
    k = qf.shape[1]
    N, C, H, W = images.shape
    if not images.flags.c_contiguous or images.dtype != np.float64:
        raise ValueError("images must be a C-contiguous float64 array")
    if D != C * patch_size**2 or dictionary["pf"].shape[1] != k:
        raise ValueError("query and dictionary shapes do not match")
    K = dictionary["pf"].shape[0]
    mean = np.empty((nq, C))
    logz = np.empty(nq)
    best = np.zeros(nq, dtype=np.int64)
    bestw = np.zeros(nq)
    stats = np.zeros((nq, 2), dtype=np.int64)
    rc = lib.els_pruned(
        _ptr(q, ctypes.c_double),
        _ptr(qf, ctypes.c_double),
        _ptr(qr, ctypes.c_double),
        nq,
        C,
        patch_size,
        k,
        _ptr(dictionary["pf"], ctypes.c_double),
        _ptr(dictionary["pr"], ctypes.c_double),
        _ptr(dictionary["psq"], ctypes.c_double),
        _ptr(dictionary["logc"], ctypes.c_double),
        _ptr(dictionary["off"], ctypes.c_long),
        _ptr(dictionary["cen"], ctypes.c_double),
        _ptr(dictionary["src"], ctypes.c_long),
        K,
        _ptr(images, ctypes.c_double),
        None if dictionary.get("pat") is None else _ptr(dictionary["pat"], ctypes.c_double),
        H,
        W,
        float(a),
        float(sigma),
        SKIP_NATS,
        float(slack),
        _ptr(mean, ctypes.c_double),
        _ptr(logz, ctypes.c_double),
        _ptr(best, ctypes.c_long),
        _ptr(bestw, ctypes.c_double),
        _ptr(stats, ctypes.c_long),
        int(bool(track)),
        int(threads),
    )
    if rc != 0:
        raise RuntimeError(f"native pruned ELS kernel failed (code {rc})")
    inv = np.empty_like(order)
    inv[order] = np.arange(nq)
    return mean[inv], logz[inv], best[inv], bestw[inv], stats[inv]
