"""Shared machinery of the training-set ("empirical") denoisers IS, LS and ELS.

Every machine of Kamb & Ganguli 2024 (Sec. 3-4) is a posterior mean over a dictionary built from the training
set: whole images (IS), same-location patches (LS) or patches from every location (ELS). This module holds what
they share: input validation, class restriction (the class-conditional machines restrict the dictionary to the
label's images, Sec. 5), grouping a batch by (t, label), patch extraction, the streamed posterior mean of
:mod:`.patch_posterior`, and the provenance report (which training image each output pixel's patch came from).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dlscience.diffusion.box_filter import box_sum
from dlscience.diffusion.denoiser import Denoiser
from dlscience.diffusion.patch_posterior import DictionaryChunk, merge_identical, posterior_mean
from dlscience.diffusion.schedule import require_tensor, signal_and_noise
from dlscience.errors import InputValidationError

__all__ = ["EmpiricalDenoiser", "PatchMatch", "PixelGroups"]

DEFAULT_MEMORY_LIMIT = 2 * 1024**3
PRECISIONS = ("auto", "float32", "float64")
BACKENDS = ("auto", "native", "torch")
PRUNE_MODES = ("auto", "on", "off")
PRUNE_SAMPLE_QUERIES = 48  # queries on which "auto" measures the pruned kernel's work
# cost model of "auto" (ns per unit on one loaded core of the project's 2-core AMD EPYC, fitted to
# runs/prune_exp on Fashion-MNIST; only speed depends on it, never results): the summed-area kernel per pair;
# the pruned kernel per entry whose bound is evaluated and per entry evaluated exactly
_COST_PAIR_BASE, _COST_PAIR_PER_P = 2.5, 0.35
_COST_BOUND, _COST_EXACT_BASE, _COST_EXACT_PER_D = 11.0, 8.0, 0.25
AUTO_FLOAT64_THRESHOLD = 2000.0  # (a / sigma^2) * D above which float32 logits may err by > 1e-4 in x0_hat


@dataclass
class PatchMatch:
    """Provenance of a denoiser output: for each pixel, the dictionary entry with the largest weight.

    By Theorem 4.1 of Kamb & Ganguli 2024 the final sample is a mosaic of these patches.

    Attributes
    ----------
    x0_hat : Tensor (B, C, H, W)
        The denoiser output.
    image_index : LongTensor (B, H, W)
        Index (into the machine's ``images``) of the training image the arg-max patch came from.
    row, col : LongTensor (B, H, W)
        Centre of that patch in its training image (for IS: the pixel itself).
    weight : Tensor (B, H, W)
        Its softmax weight in (0, 1] (near 1 at low noise: the output pixel is that patch's centre).
    """

    x0_hat: torch.Tensor
    image_index: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    weight: torch.Tensor


@dataclass(frozen=True)
class PixelGroups:
    """A batch of G pixel groups of one geometry: queries at ``query_pos`` use the dictionary of all training
    patches centred at ``dict_pos`` (flattened pixel indices row * W + col).

    Attributes
    ----------
    query_pos : LongTensor (G, nq)
    dict_pos : LongTensor (G, k)
    cacheable : bool
        Whether the dictionary is worth caching (the large interior dictionary of ELS).
    rect : (qi0, qi1, qj0, qj1), optional
        Set when the queries are the pixel rectangle rows [qi0, qi1) x cols [qj0, qj1) (row-major) and the
        dictionary is every interior patch: the case the compiled kernel handles.
    border : {"top", "bottom", "left", "right"}, optional
        Set for the edge groups of the boundary-broken ELS (G = r rows at distance d = 0..r-1 from that
        border, each with the inner pixels along it), which the compiled kernel handles as 1-row bands.
    """

    query_pos: torch.Tensor
    dict_pos: torch.Tensor
    cacheable: bool = False
    rect: tuple[int, int, int, int] | None = None
    border: str | None = None


def patches_at(x: torch.Tensor, patch_size: int, positions: torch.Tensor, padding: str) -> torch.Tensor:
    """The P x P patches of ``x`` centred at the given pixels only.

    Parameters
    ----------
    x : Tensor (B, C, H, W)
    patch_size : odd int P
    positions : LongTensor of any shape S
        Flattened pixel indices row * W + col.
    padding : {"zeros", "circular"}

    Returns
    -------
    Tensor (B, *S, C * P * P)
        Flattened patches, channel-major: entry c * P * P + dy * P + dx.
    """
    B, C, H, W = x.shape
    r = patch_size // 2
    xp = _pad(x, r, padding)
    Wp = W + 2 * r
    rows, cols = positions.reshape(-1) // W, positions.reshape(-1) % W
    d = torch.arange(patch_size)
    offsets = (d.view(-1, 1) * Wp + d.view(1, -1)).reshape(-1)  # (P*P,)
    idx = (rows * Wp + cols).view(-1, 1) + offsets  # (k, P*P): window top-left is (row, col) in padded coords
    patches = xp.reshape(B, C, -1)[:, :, idx]  # (B, C, k, P*P)
    return patches.permute(0, 2, 1, 3).reshape(B, *positions.shape, C * patch_size * patch_size)


def _pad(x: torch.Tensor, r: int, padding: str) -> torch.Tensor:
    if r == 0:
        return x
    if padding == "circular":
        H, W = x.shape[-2:]
        rows = torch.arange(-r, H + r) % H
        cols = torch.arange(-r, W + r) % W
        return x[:, :, rows][:, :, :, cols]
    return F.pad(x, (r, r, r, r))


class EmpiricalDenoiser(Denoiser):
    """Base class of the IS, LS and ELS machines (see the module docstring).

    Parameters
    ----------
    images : Tensor (N, C, H, W), float
        Training images in [-1, 1].
    labels : LongTensor (N,), optional
        Class labels; when given the machine is class-conditional and ``denoise`` requires labels.
    num_classes : int, optional
        Number of classes (default ``labels.max() + 1``).
    precision : {"auto", "float32", "float64"}, default "auto"
        Precision of the logits. "auto" uses float32 unless float32 rounding of the logits could move the
        output by more than about 1e-4: the logit scale is a / sigma^2 and rounding grows with the patch
        dimension D = C P^2, so calls with (a / sigma^2) * D > 2000 (low noise with large patches; never on
        the calibrated schedules) run in float64.
    memory_limit : int, default 2 GiB
        Bound in bytes on working memory (dictionary chunks, logits blocks and cached dictionaries).
    backend : {"auto", "native", "torch"}, default "auto"
        How the all-interior-patch dictionaries of ELS are searched: "native" uses the compiled summed-area
        kernel (:mod:`dlscience.diffusion.native`, float64, many times faster at large P), "torch" the
        matrix-multiply path; "auto" takes the kernel when it can be compiled. Results agree to ~1e-6.
    prune : {"off", "auto", "on"}, default "off"
        Exact pruning of the interior dictionary in the compiled path (:mod:`.pruned_search`): a pair's
        distance is computed only when a lower bound does not prove its weight below e^-60 of the best, the
        cutoff of the kernel's own skip, so results agree with "off" to ~1e-12. "auto" measures the pruned
        kernel's work on a few queries and uses it when a cost model estimates it cheaper than the summed-area
        kernel; "on" always uses it. Off by default: on Fashion-MNIST 20-40% of the pairs lie within the 60-nat
        cutoff even at t = 0.05, and the summed-area kernel is cheaper (benchmarks/els_speed.py). Ignored by
        the matrix-multiply path.

    Raises
    ------
    InputValidationError
        Wrong shape/dtype, values outside [-1, 1] or non-finite, labels of the wrong length, bad settings;
        ``images`` given as a numpy array (the message says to convert with ``torch.from_numpy``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        num_classes: int | None = None,
        precision: str = "auto",
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        backend: str = "auto",
        prune: str = "off",
        device: str | torch.device = "cpu",
    ):
        name = type(self).__name__
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InputValidationError(f"{name}: bad device {device!r}: {exc}") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputValidationError(f"{name}: device {device!r} requested but CUDA is not available")
        if self.device.type != "cpu":
            if backend == "native":
                raise InputValidationError(f"{name}: backend='native' runs on the CPU only; use device='cpu'")
            backend = "torch"
        if backend not in BACKENDS:
            raise InputValidationError(f"{name}: backend must be one of {BACKENDS}, got {backend!r}")
        if prune not in PRUNE_MODES:
            raise InputValidationError(f"{name}: prune must be one of {PRUNE_MODES}, got {prune!r}")
        self.backend = backend
        self.prune = prune
        # one record per interior kernel call: patch size, pairs, the pruned kernel's work, whether it was used
        self.prune_log: list[dict] = []
        require_tensor(images, "images", name)
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputValidationError(f"{name}: images must be a tensor (N, C, H, W), got {shape}")
        if not images.dtype.is_floating_point:
            raise InputValidationError(
                f"{name}: images must be floating point in [-1, 1], got {images.dtype}; "
                "scale uint8 images with x / 127.5 - 1"
            )
        if images.shape[0] == 0:
            raise InputValidationError(f"{name}: the training set is empty")
        if not torch.isfinite(images).all():
            raise InputValidationError(f"{name}: training images contain NaN or infinite values")
        if images.min() < -1 - 1e-5 or images.max() > 1 + 1e-5:
            raise InputValidationError(
                f"{name}: training images must lie in [-1, 1] (got [{images.min():.3g}, {images.max():.3g}])"
            )
        if precision not in PRECISIONS:
            raise InputValidationError(f"{name}: precision must be one of {PRECISIONS}, got {precision!r}")
        if int(memory_limit) < 16 * 1024**2:
            raise InputValidationError(f"{name}: memory_limit={memory_limit} bytes is below 16 MiB")
        self.precision = precision
        self.dtype = torch.float64 if precision == "float64" else torch.float32
        self.images = images.detach().to(self.dtype).contiguous()
        self.image_shape = tuple(images.shape[1:])
        self.memory_limit = int(memory_limit)
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes = 0
        if labels is None:
            if num_classes is not None:
                raise InputValidationError(f"{name}: num_classes given without labels")
            self.labels = None
            self.num_classes = None
        else:
            labels = torch.as_tensor(labels)
            if labels.dtype.is_floating_point or labels.dim() != 1 or labels.numel() != images.shape[0]:
                raise InputValidationError(
                    f"{name}: labels must be integers of shape ({images.shape[0]},), "
                    f"got {labels.dtype} {tuple(labels.shape)}"
                )
            self.labels = labels.to(torch.int64)
            if self.labels.min() < 0:
                raise InputValidationError(f"{name}: labels must be non-negative")
            self.num_classes = int(num_classes) if num_classes is not None else int(self.labels.max()) + 1
            if self.labels.max() >= self.num_classes:
                raise InputValidationError(f"{name}: a label is >= num_classes={self.num_classes}")

    # -- public -----------------------------------------------------------------------------------------------
    def explain(
        self, x_t: torch.Tensor, t: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> PatchMatch:
        """Denoise and report, per output pixel, the training patch with the largest weight.

        Parameters and errors as :meth:`denoise`. Returns a :class:`PatchMatch`.
        """
        x_t, t_vec, labels = self._validate(x_t, t, labels)
        match = self._run(x_t, t_vec, labels, track=True)
        match.x0_hat = match.x0_hat.to(x_t.dtype)
        match.weight = match.weight.to(x_t.dtype)
        return match

    def patch_size_at(self, t: float) -> int | None:
        """Patch size used at time t (None for the ideal denoiser, which compares whole images)."""
        return None

    # -- internals --------------------------------------------------------------------------------------------
    def _denoise(self, x_t, t, labels):
        return self._run(x_t, t, labels, track=False).x0_hat

    def _run(self, x_t, t, labels, track: bool) -> PatchMatch:
        B, C, H, W = x_t.shape
        out = torch.empty(B, C, H, W, dtype=torch.float64 if self.precision != "float32" else torch.float32)
        src = torch.zeros(B, H * W, dtype=torch.int64)
        weight = torch.zeros(B, H * W, dtype=out.dtype)
        keys = [(float(t[i]), None if labels is None else int(labels[i])) for i in range(B)]
        for key in dict.fromkeys(keys):
            idx = torch.tensor([i for i, k in enumerate(keys) if k == key])
            t_val, label = key
            ids = self._class_ids(label)
            if ids.numel() == 0:
                raise InputValidationError(f"{type(self).__name__}: class {label} has no training images")
            a, sigma = signal_and_noise(t_val)
            dtype = self._compute_dtype(a, sigma, t_val)
            x0, s, w = self._posterior(x_t[idx].to(dtype), a, sigma, t_val, ids, label, track)
            out[idx] = x0.to(out.dtype)
            if track:
                src[idx], weight[idx] = s, w.to(weight.dtype)
        HW = H * W
        return PatchMatch(
            x0_hat=out,
            image_index=(src // HW).view(B, H, W),
            row=((src % HW) // W).view(B, H, W),
            col=(src % W).view(B, H, W),
            weight=weight.view(B, H, W),
        )

    def _compute_dtype(self, a: float, sigma: float, t: float) -> torch.dtype:
        if self.precision != "auto":
            return self.dtype
        C, H, W = self.image_shape
        P = self.patch_size_at(t)
        D = C * H * W if P is None else C * P * P
        return torch.float64 if (a / sigma**2) * D > AUTO_FLOAT64_THRESHOLD else torch.float32

    def _class_ids(self, label: int | None) -> torch.Tensor:
        if label is None:
            return torch.arange(self.images.shape[0])
        key = ("class-ids", label)
        if key not in self._cache:
            self._cache[key] = (torch.nonzero(self.labels == label).flatten(), 0)
        return self._cache[key][0]

    @abstractmethod
    def _posterior(self, x, a, sigma, t, ids, label, track):
        """Return (x0_hat (b, C, H, W), best source (b, H*W) long, best weight (b, H*W)) for one (t, label)."""

    # -- patch machinery shared by LS and ELS ------------------------------------------------------------------
    def _patch_posterior(
        self,
        x: torch.Tensor,
        a: float,
        sigma: float,
        patch_size: int,
        groups: list[PixelGroups],
        ids: torch.Tensor,
        query_padding: str,
        cache_key,
        track: bool = True,
    ):
        b, C, H, W = x.shape
        HW = H * W
        out = torch.empty(b, C, HW, dtype=x.dtype)
        src = torch.zeros(b, HW, dtype=torch.int64)
        weight = torch.zeros(b, HW, dtype=x.dtype)
        for gi, g in enumerate(groups):
            G, nq = g.query_pos.shape
            pos = g.query_pos.reshape(-1)
            if (g.rect is not None or g.border is not None) and self._use_native():
                if g.rect is not None:
                    mean, best, best_w = self._native_interior(
                        x, a, sigma, patch_size, g.rect, ids, query_padding, cache_key, track
                    )
                else:
                    mean, best, best_w = self._native_border(x, a, sigma, patch_size, g.border, ids, track)
                out[:, :, pos] = mean.to(x.dtype)
                src[:, pos], weight[:, pos] = best, best_w.to(x.dtype)
                continue
            queries = patches_at(x, patch_size, g.query_pos, query_padding)  # (b, G, nq, D)
            queries = queries.permute(1, 0, 2, 3).reshape(G, b * nq, -1).contiguous().to(self.device)
            if g.cacheable:
                chunks = self._cached_dictionary((cache_key, gi), ids, patch_size, g)
            else:
                chunks = self._dictionary_chunks(ids, patch_size, g, merge=False)
            block = max(1 << 16, min(1 << 20, self.memory_limit // (16 * self._itemsize)))
            res = posterior_mean(queries, chunks, a=a, sigma=sigma, block_elements=block)
            res = _to_cpu(res)
            out[:, :, pos] = res.mean.reshape(G, b, nq, C).permute(1, 3, 0, 2).reshape(b, C, G * nq)
            if res.best_source is not None:
                src[:, pos] = res.best_source.reshape(G, b, nq).permute(1, 0, 2).reshape(b, G * nq)
                weight[:, pos] = res.best_weight.reshape(G, b, nq).permute(1, 0, 2).reshape(b, G * nq)
        return out.view(b, C, H, W), src, weight

    def _local_posterior(self, x, a, sigma, patch_size, ids, pixels: torch.Tensor | None = None):
        """LS posterior (same-location patches only) for the given pixels, with box sums in float64.

        The cross term sum_window phi * phi_n is a P x P box sum of the product map phi * phi_n
        (:func:`.box_filter.box_sum`), so the cost is O(N H W) per query whatever P is (Eq. (6)).
        Returns mean (b, C, npix), best source (b, npix), best weight (b, npix).
        """
        b, C, H, W = x.shape
        HW = H * W
        pix = torch.arange(HW) if pixels is None else pixels.reshape(-1)
        npix = pix.numel()
        alpha, beta = a / sigma**2, a * a / (2 * sigma**2)
        xd = x.double()
        run_max = torch.full((b, npix), -math.inf, dtype=torch.float64)
        acc = torch.zeros(b, npix, C + 1, dtype=torch.float64)
        best_src = torch.zeros(b, npix, dtype=torch.int64)
        step = max(1, (self.memory_limit // 16) // (4 * (b + 2) * (H + patch_size) * (W + patch_size) * 8))
        for start in range(0, ids.numel(), step):
            chunk_ids = ids[start : start + step]
            y = self.images[chunk_ids].double()  # (n, C, H, W)
            n = y.shape[0]
            norms = box_sum((y * y).sum(1), patch_size).reshape(n, HW)[:, pix]  # (n, npix)
            cross = box_sum((y[None] * xd[:, None]).sum(2), patch_size).reshape(b, n, HW)[:, :, pix]
            logits = alpha * cross - beta * norms  # (b, n, npix)
            cmax, carg = logits.max(dim=1)
            new_max = torch.maximum(run_max, cmax)
            w = torch.exp(logits - new_max[:, None, :])
            centres = torch.cat(
                [y.reshape(n, C, HW)[:, :, pix], torch.ones(n, 1, npix, dtype=torch.float64)], 1
            )
            contrib = torch.einsum("bnp,ncp->bpc", w, centres)
            acc = acc * torch.exp(run_max - new_max)[..., None] + contrib
            src = chunk_ids[carg] * HW + pix
            best_src = torch.where(cmax > run_max, src, best_src)
            run_max = new_max
        total = acc[..., -1]
        mean = (acc[..., :-1] / total[..., None]).permute(0, 2, 1)
        return mean, best_src, 1.0 / total

    def _use_native(self) -> bool:
        if self.backend == "torch" or self.device.type != "cpu":
            return False
        from dlscience.diffusion import native

        if native.available():
            return True
        if self.backend == "native":
            raise InputValidationError(
                "backend='native' was requested but the compiled kernel is unavailable (no C compiler, or "
                "DLSCIENCE_NATIVE=0); install gcc or use backend='auto'"
            )
        return False

    def _native_interior(self, x, a, sigma, patch_size, rect, ids, query_padding, cache_key, track):
        """All-interior-patch posterior for a rectangle of queries with the compiled kernel (float64)."""
        from dlscience.diffusion import native

        label = cache_key[1] if cache_key is not None else None
        if self.prune != "off":
            res = self._pruned_interior(x, a, sigma, patch_size, rect, ids, query_padding, label, track)
            if res is not None:
                return res
        blocks, block_ids = self._cached(
            ("native-blocks", label), lambda: native.to_blocks(self.images[ids].double().numpy(), ids.numpy())
        )

        def patch_norms():
            # ||p||^2 of every interior patch by top-left corner, image-major: (NB * LANES, H - P + 1, W - P + 1)
            sq = torch.from_numpy(blocks).permute(0, 4, 1, 2, 3).pow(2)  # (NB, LANES, C, H, W)
            NB, L, C, H, W = sq.shape
            norms = F.avg_pool2d(sq.reshape(NB * L, C, H, W), patch_size, stride=1) * patch_size**2
            return norms.sum(1).numpy()

        norms = self._cached(("native-norms", patch_size, label), patch_norms)
        bias = native.patch_bias(norms, ids.numel(), a, sigma)
        r = patch_size // 2
        q = _pad(x.double(), r, query_padding).numpy()
        mean, _, best, best_w = native.els_interior(
            q,
            rect,
            blocks,
            bias,
            block_ids,
            patch_size,
            a / sigma**2,
            track,
            torch.get_num_threads(),
        )
        b, C = x.shape[0], x.shape[1]
        return (
            torch.from_numpy(mean).permute(0, 2, 1).reshape(b, C, -1),
            torch.from_numpy(best),
            torch.from_numpy(best_w),
        )

    def _pruned_interior(self, x, a, sigma, patch_size, rect, ids, query_padding, label, track):
        """The interior posterior with the exact pruned kernel (:func:`.native.els_pruned`), or None when
        ``prune="auto"`` estimates the summed-area kernel cheaper (measured on a few queries first).

        Returns mean (b, C, nq), best source (b, nq), best weight (b, nq) as :meth:`_native_interior`.
        """
        from dlscience.diffusion import native
        from dlscience.diffusion.pruned_search import (
            _slack,
            build_dictionary,
            dictionary_bytes,
            query_features,
        )

        P = patch_size
        b, C, H, W = x.shape
        imgs = self._cached(
            ("pruned-images", label), lambda: np.ascontiguousarray(self.images[ids].double().numpy())
        )
        key = ("pruned-dictionary", P, label)
        if key in self._cache:
            self._cache.move_to_end(key)
            dic = self._cache[key][0]
        else:
            dic = build_dictionary(imgs, ids.numpy(), P, max_copy_bytes=self.memory_limit // 4)
            self._cache_put(key, dic, dictionary_bytes(dic))
        qi0, qi1, qj0, qj1 = rect
        pos = (torch.arange(qi0, qi1).view(-1, 1) * W + torch.arange(qj0, qj1).view(1, -1)).reshape(-1)
        q = patches_at(x.double(), P, pos, query_padding).reshape(-1, C * P * P)  # (b * nq, D)
        qf, qr = query_features(q, dic["U"])
        q, qf, qr = q.numpy(), qf.numpy(), qr.numpy()
        slack = _slack(C * P * P, a)
        threads = torch.get_num_threads()
        pairs_per_query = dic["n_patches"]
        record = {
            "patch_size": P,
            "a": a,
            "sigma": sigma,
            "queries": q.shape[0],
            "pairs": q.shape[0] * pairs_per_query,
        }
        if self.prune == "auto":
            n = q.shape[0]
            pick = np.unique(np.linspace(0, n - 1, min(n, PRUNE_SAMPLE_QUERIES)).round().astype(np.int64))
            *_, st = native.els_pruned(
                q[pick], qf[pick], qr[pick], dic, imgs, P, a, sigma, slack, False, threads
            )
            bounds, exact = st.sum(0) / len(pick)
            pruned_cost = bounds * _COST_BOUND + exact * (_COST_EXACT_BASE + _COST_EXACT_PER_D * C * P * P)
            full_cost = pairs_per_query * (_COST_PAIR_BASE + _COST_PAIR_PER_P * P)
            record.update(
                sample_bound_fraction=bounds / pairs_per_query, sample_exact_fraction=exact / pairs_per_query
            )
            if pruned_cost >= full_cost:
                self.prune_log.append({**record, "used": False})
                return None
        mean, _, best, best_w, st = native.els_pruned(
            q, qf, qr, dic, imgs, P, a, sigma, slack, track, threads
        )
        bounds, exact = st.sum(0)
        self.prune_log.append(
            {
                **record,
                "used": True,
                "bound_fraction": bounds / record["pairs"],
                "exact_fraction": exact / record["pairs"],
            }
        )
        nq = pos.numel()
        return (
            torch.from_numpy(mean).view(b, nq, C).permute(0, 2, 1),
            torch.from_numpy(best).view(b, nq),
            torch.from_numpy(best_w).view(b, nq),
        )

    def _native_border(self, x, a, sigma, patch_size, border, ids, track):
        """Edge pixels of the boundary-broken ELS with the compiled kernel.

        The images are turned so that ``border`` is the top one; for each distance d < r from it, the
        dictionary (zero-padded patches centred on row d, at the inner columns) is the set of all interior
        patches of the P-row band of the padded images starting at row d, so the interior kernel applies.
        Returns mean (b, C, r * L), best source (b, r * L), weight (b, r * L), ordered (d, position along the
        border) as :func:`~dlscience.diffusion.equivariant_local_score.boundary_broken_groups`.
        """
        from dlscience.diffusion import native

        P, r = patch_size, patch_size // 2
        b, C, H, W = x.shape
        turn = {
            "top": lambda z: z,
            "bottom": lambda z: z.flip(-2),
            "left": lambda z: z.transpose(-1, -2),
            "right": lambda z: z.transpose(-1, -2).flip(-2),
        }[border]
        # the bands only reach P rows into the turned image: cut before padding and casting
        xo = F.pad(turn(x)[..., :P, :].double(), (r, r, r, r))
        yo = F.pad(turn(self.images[ids])[..., :P, :].double(), (r, r, r, r))
        Wo = xo.shape[-1] - 2 * r  # side along the border
        L = Wo - 2 * r
        means, bests, weights = [], [], []
        for d in range(r):
            y_band = yo[:, :, d : d + P, r : Wo + r]  # (N, C, P, Wo)
            blocks, block_ids = native.to_blocks(y_band.numpy(), ids.numpy())
            norms = np.zeros((blocks.shape[0] * native.LANES, 1, L))
            norms[: ids.numel()] = (F.avg_pool2d(y_band.pow(2), P, stride=1).sum(1) * P * P).numpy()
            bias = native.patch_bias(norms, ids.numel(), a, sigma)
            q = np.ascontiguousarray(xo[:, :, d : d + P, r : Wo + r].numpy())
            mean, _, best, best_w = native.els_interior(
                q, (0, 1, 0, L), blocks, bias, block_ids, P, a / sigma**2, track, torch.get_num_threads()
            )
            means.append(torch.from_numpy(mean).permute(0, 2, 1))  # (b, C, L)
            # decode (image, band column) and turn back to the original orientation
            best = torch.from_numpy(best)
            img, col = best // (P * Wo), best % Wo
            row_o = torch.full_like(col, d)
            row, col = {
                "top": (row_o, col),
                "bottom": (H - 1 - row_o, col),
                "left": (col, row_o),
                "right": (col, W - 1 - row_o),
            }[border]
            bests.append(img * (H * W) + row * W + col)
            weights.append(torch.from_numpy(best_w))
        return torch.cat(means, -1), torch.cat(bests, -1), torch.cat(weights, -1)

    def _cached(self, key, build):
        """The cached value for ``key``, built with ``build()`` (numpy arrays or tuples of them) on a miss."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key][0]
        value = build()
        parts = value if isinstance(value, tuple) else (value,)
        self._cache_put(key, value, sum(v.nbytes for v in parts))
        return value

    def _cache_put(self, key, value, size: int) -> None:
        """Keep ``value`` within half of ``memory_limit``, evicting the least recently used entries; an entry
        larger than that budget is not kept (it is rebuilt when needed)."""
        budget = self.memory_limit // 2
        if size > budget:
            return
        while self._cache and self._cache_bytes + size > budget:
            _, (_, old) = self._cache.popitem(last=False)
            self._cache_bytes -= old
        self._cache[key] = (value, size)
        self._cache_bytes += size

    @property
    def _itemsize(self) -> int:
        return 4 if self.dtype == torch.float32 else 8

    def _images_per_chunk(self, rows_per_image: int, D: int) -> int:
        C = self.image_shape[0]
        per_image = 3 * rows_per_image * (D + C + 3) * self._itemsize
        return max(1, (self.memory_limit // 8) // per_image)

    def _dictionary_chunks(
        self, ids: torch.Tensor, patch_size: int, g: PixelGroups, merge: bool
    ) -> Iterator[DictionaryChunk]:
        """Stream the dictionary of group batch ``g``: patches of training images ``ids`` centred at
        ``g.dict_pos``, zero-padded, as chunks (G, m, D) with centres (G, m, C) and sources."""
        C, H, W = self.image_shape
        HW = H * W
        G, k = g.dict_pos.shape
        D = C * patch_size * patch_size
        step = self._images_per_chunk(G * k, D)
        centre_idx = torch.arange(C) * patch_size * patch_size + (patch_size * patch_size) // 2
        for start in range(0, ids.numel(), step):
            chunk_ids = ids[start : start + step]
            imgs = self.images[chunk_ids]
            n = imgs.shape[0]
            patches = patches_at(imgs, patch_size, g.dict_pos, "zeros")  # (n, G, k, D)
            patches = patches.permute(1, 0, 2, 3).reshape(G, n * k, D)
            centres = patches[:, :, centre_idx]
            sources = (chunk_ids.view(1, n, 1) * HW + g.dict_pos.view(G, 1, k)).reshape(G, n * k)
            if merge and G == 1 and _worth_merging(patches[0]):
                p, lc, s = merge_identical(patches[0].contiguous(), sources[0])
                yield DictionaryChunk(
                    p[None], p[:, centre_idx][None], (p * p).sum(-1)[None], lc[None], s[None]
                )
            else:
                patches = patches.contiguous()
                yield DictionaryChunk(
                    patches, centres.contiguous(), (patches * patches).sum(-1), None, sources
                )

    def _cached_dictionary(self, key, ids, patch_size, g) -> list[DictionaryChunk] | Iterator:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key][0]
        G, k = g.dict_pos.shape
        D = self.image_shape[0] * patch_size**2
        est = ids.numel() * G * k * (D + 4) * self._itemsize
        budget = self.memory_limit // 2
        if est > budget:  # too large to keep: stream it (merging within chunks only)
            return self._dictionary_chunks(ids, patch_size, g, merge=True)
        chunks = [c.to_device(self.device) for c in self._dictionary_chunks(ids, patch_size, g, merge=True)]
        size = sum(c.patches.numel() + c.centres.numel() + 3 * c.sq_norms.numel() for c in chunks)
        self._cache_put(key, chunks, size * self._itemsize)
        return chunks


def _to_cpu(res):
    """A :class:`PosteriorMean` with its tensors on the CPU."""
    from dlscience.diffusion.patch_posterior import PosteriorMean

    return PosteriorMean(
        res.mean.cpu(),
        res.log_normalizer.cpu(),
        None if res.best_source is None else res.best_source.cpu(),
        res.best_weight.cpu(),
    )


def _worth_merging(patches: torch.Tensor, sample: int = 4096) -> bool:
    """Cheap test on a strided sample: merge only when at least 2% of rows repeat (saves work, not accuracy)."""
    M = patches.shape[0]
    if M < 2 * sample:
        return True
    rows = patches[:: M // sample][:sample]
    return torch.unique(rows, dim=0).shape[0] < 0.98 * rows.shape[0]
