"""Shared machinery of the training-set ("empirical") denoisers IS, LS and ELS.

Every machine of Kamb & Ganguli 2024 (Sec. 3-4) is a posterior mean over a dictionary built from the training
set: whole images (IS), same-location patches (LS) or patches from every location (ELS). This module holds what
they share: input validation, class restriction (the class-conditional machines restrict the dictionary to the
label's images, Sec. 5), grouping a batch by (t, label), patch extraction, the streamed posterior mean of
:mod:`.patch_posterior`, and the provenance report (which training image each output pixel's patch came from).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dlscience.diffusion.denoiser import Denoiser
from dlscience.diffusion.patch_posterior import DictionaryChunk, merge_identical, posterior_mean
from dlscience.diffusion.patch_schedule import PatchSchedule, resolve_patch_size
from dlscience.diffusion.schedule import signal_and_noise
from dlscience.errors import InputValidationError

__all__ = ["EmpiricalDenoiser", "PatchMatch", "PixelGroups"]

DEFAULT_MEMORY_LIMIT = 2 * 1024**3
PRECISIONS = ("auto", "float32", "float64")
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
    """

    query_pos: torch.Tensor
    dict_pos: torch.Tensor
    cacheable: bool = False


def unfold_patches(x: torch.Tensor, patch_size: int, padding: str) -> torch.Tensor:
    """All P x P patches of ``x`` centred at every pixel.

    Parameters
    ----------
    x : Tensor (B, C, H, W)
    patch_size : odd int P
    padding : {"zeros", "circular"}
        How pixels outside the image are filled.

    Returns
    -------
    Tensor (B, C * P * P, H * W)
        Column ``row * W + col`` is the flattened patch centred at (row, col), channel-major.
    """
    r = patch_size // 2
    if r == 0:
        return x.flatten(2)
    if padding == "circular":
        H, W = x.shape[-2:]
        if r > H or r > W:  # wrap more than once
            reps = (1, 1, 2 * (r // H) + 3, 2 * (r // W) + 3)
            big = x.repeat(*reps)
            oy, ox = (r // H + 1) * H - r, (r // W + 1) * W - r
            xp = big[..., oy : oy + H + 2 * r, ox : ox + W + 2 * r]
        else:
            xp = F.pad(x, (r, r, r, r), mode="circular")
    else:
        xp = F.pad(x, (r, r, r, r))
    return F.unfold(xp, patch_size)


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

    Raises
    ------
    InputValidationError
        Wrong shape/dtype, values outside [-1, 1] or non-finite, labels of the wrong length, bad settings.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        num_classes: int | None = None,
        precision: str = "auto",
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ):
        name = type(self).__name__
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
            raise InputValidationError(
                f"{name}: precision must be one of {PRECISIONS}, got {precision!r}"
            )
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
            self.num_classes = int(num_classes or int(self.labels.max()) + 1)
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
        return self._run(x_t, t_vec, labels, track=True)

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
                raise InputValidationError(
                    f"{type(self).__name__}: class {label} has no training images"
                )
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
    ):
        b, C, H, W = x.shape
        HW = H * W
        out = torch.empty(b, C, HW, dtype=x.dtype)
        src = torch.zeros(b, HW, dtype=torch.int64)
        weight = torch.zeros(b, HW, dtype=x.dtype)
        q_all = unfold_patches(x, patch_size, query_padding)  # (b, D, HW)
        D = q_all.shape[1]
        for gi, g in enumerate(groups):
            G, nq = g.query_pos.shape
            queries = q_all[:, :, g.query_pos].permute(2, 0, 3, 1).reshape(G, b * nq, D).contiguous()
            if g.cacheable:
                chunks = self._cached_dictionary((cache_key, gi), ids, patch_size, g)
            else:
                chunks = self._dictionary_chunks(ids, patch_size, g, merge=False)
            block = max(1 << 16, min(1 << 20, self.memory_limit // (16 * self._itemsize)))
            res = posterior_mean(queries, chunks, a=a, sigma=sigma, block_elements=block)
            mean = res.mean.reshape(G, b, nq, C).permute(1, 3, 0, 2).reshape(b, C, G * nq)
            pos = g.query_pos.reshape(-1)
            out[:, :, pos] = mean
            if res.best_source is not None:
                src[:, pos] = res.best_source.reshape(G, b, nq).permute(1, 0, 2).reshape(b, G * nq)
                weight[:, pos] = res.best_weight.reshape(G, b, nq).permute(1, 0, 2).reshape(b, G * nq)
        return out.view(b, C, H, W), src, weight

    @property
    def _itemsize(self) -> int:
        return 4 if self.dtype == torch.float32 else 8

    def _images_per_chunk(self, D: int, rows_per_image: int) -> int:
        C, H, W = self.image_shape
        per_image = (D * H * W + 2 * rows_per_image * (D + C + 3)) * self._itemsize
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
        step = self._images_per_chunk(D, G * k)
        for start in range(0, ids.numel(), step):
            chunk_ids = ids[start : start + step]
            imgs = self.images[chunk_ids]
            n = imgs.shape[0]
            patches = unfold_patches(imgs, patch_size, "zeros")[:, :, g.dict_pos]  # (n, D, G, k)
            patches = patches.permute(2, 0, 3, 1).reshape(G, n * k, D)
            centres = imgs.flatten(2)[:, :, g.dict_pos].permute(2, 0, 3, 1).reshape(G, n * k, C)
            sources = (chunk_ids.view(1, n, 1) * HW + g.dict_pos.view(G, 1, k)).reshape(G, n * k)
            if merge and G == 1 and _worth_merging(patches[0]):
                p, lc, s = merge_identical(patches[0].contiguous(), sources[0])
                centre_idx = torch.arange(C) * patch_size * patch_size + (patch_size * patch_size) // 2
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
        chunks = list(self._dictionary_chunks(ids, patch_size, g, merge=True))
        size = sum(c.patches.numel() + c.centres.numel() + 3 * c.sq_norms.numel() for c in chunks)
        size *= self._itemsize
        while self._cache and self._cache_bytes + size > budget:
            _, (_, old) = self._cache.popitem(last=False)
            self._cache_bytes -= old
        self._cache[key] = (chunks, size)
        self._cache_bytes += size
        return chunks


def _worth_merging(patches: torch.Tensor, sample: int = 4096) -> bool:
    """Cheap test on a strided sample: merge only when at least 2% of rows repeat (saves work, not accuracy)."""
    M = patches.shape[0]
    if M < 2 * sample:
        return True
    rows = patches[:: M // sample][:sample]
    return torch.unique(rows, dim=0).shape[0] < 0.98 * rows.shape[0]
