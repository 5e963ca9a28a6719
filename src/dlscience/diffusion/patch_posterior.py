"""Posterior mean over a patch dictionary: the computational core of the IS, LS and ELS machines.

Kamb & Ganguli 2024, Eqs. (5)-(9) (research note els.md Sec. 1). For a query patch phi_Omega(x) of the noisy
image at diffusion time t (signal scale a = sqrt(alpha_bar), noise std sigma), and a dictionary of patches p
with centre pixels p(0), the machine's weights and denoiser are

    W_p(x)      = softmax_p( -|| phi_Omega(x) - a p ||^2 / (2 sigma^2) )                        (weights)
    x0_hat(x)   = sum_p W_p(x) p(0)                                                             (denoiser)

Computation (research note Sec. 6):
    * ||phi_Omega(x)||^2 is constant over p and cancels in the softmax, so the logit is
          l_p = (a / sigma^2) <phi_Omega(x), p>  -  a^2 ||p||^2 / (2 sigma^2)  +  log n_p
      where the cross term is one (batched) matrix multiply and n_p counts identical patches merged into one
      dictionary row (exact: identical rows have identical weights).
    * The softmax is streamed over dictionary chunks with a running maximum (online log-sum-exp), so memory is
      bounded by the chunk size, never by the dictionary size; the centre-pixel sum is a second matmul.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["DictionaryChunk", "PosteriorMean", "posterior_mean", "merge_identical"]


@dataclass
class DictionaryChunk:
    """A slice of a patch dictionary, batched over G independent groups.

    Attributes
    ----------
    patches : Tensor (G, m, D)
        Flattened patches (D = C * P * P), float32 or float64.
    centres : Tensor (G, m, C')
        What each dictionary entry contributes to the posterior mean (the centre pixel for LS/ELS, the whole
        flattened image for IS).
    sq_norms : Tensor (G, m), optional
        ||p||^2 (computed when omitted).
    log_counts : Tensor (G, m), optional
        log of the number of identical patches each row stands for (0 when omitted).
    sources : LongTensor (G, m), optional
        An id per row (e.g. training image and position of the patch), reported for the arg-max patch.
    """

    patches: torch.Tensor
    centres: torch.Tensor
    sq_norms: torch.Tensor | None = None
    log_counts: torch.Tensor | None = None
    sources: torch.Tensor | None = None

    def to(self, dtype: torch.dtype) -> DictionaryChunk:
        """The chunk with its floating-point tensors in ``dtype`` (itself when already so)."""
        if self.patches.dtype == dtype:
            return self

        def cast(x):
            return None if x is None else x.to(dtype)

        patches = cast(self.patches)
        # recompute the norms in the new precision (a float32 norm would carry its rounding into float64)
        sq_norms = (patches * patches).sum(-1)
        return DictionaryChunk(patches, cast(self.centres), sq_norms, cast(self.log_counts), self.sources)

    def to_device(self, device: torch.device | str) -> DictionaryChunk:
        """The chunk with every tensor on ``device`` (itself when already there)."""
        if self.patches.device == torch.device(device):
            return self

        def move(x):
            return None if x is None else x.to(device)

        return DictionaryChunk(
            move(self.patches),
            move(self.centres),
            move(self.sq_norms),
            move(self.log_counts),
            move(self.sources),
        )

    def rows(self, start: int, stop: int) -> DictionaryChunk:
        """The sub-chunk of rows [start, stop) (views, no copies)."""

        def cut(x):
            return None if x is None else x[:, start:stop]

        return DictionaryChunk(
            self.patches[:, start:stop],
            self.centres[:, start:stop],
            cut(self.sq_norms),
            cut(self.log_counts),
            cut(self.sources),
        )


@dataclass
class PosteriorMean:
    """Result of :func:`posterior_mean`.

    Attributes
    ----------
    mean : Tensor (G, n, C')
        sum_p W_p centre_p for every query.
    log_normalizer : Tensor (G, n)
        log sum_p exp(l_p) (the streamed log-sum-exp of the logits).
    best_source : LongTensor (G, n) or None
        ``sources`` of the arg-max row (the nearest patch, Theorem 4.1's mosaic tile; with merged rows, the
        most probable distinct patch, its first occurrence); None without sources.
    best_weight : Tensor (G, n)
        The arg-max row's weight W_p (all its merged copies together), in (0, 1].
    """

    mean: torch.Tensor
    log_normalizer: torch.Tensor
    best_source: torch.Tensor | None
    best_weight: torch.Tensor


def posterior_mean(
    queries: torch.Tensor,
    chunks: Iterable[DictionaryChunk],
    *,
    a: float,
    sigma: float,
    block_elements: int = 1 << 20,
) -> PosteriorMean:
    """Stream the softmax-weighted mean of dictionary centres for every query (Eqs. above).

    Parameters
    ----------
    queries : Tensor (G, n, D)
        Query patches of the noisy image, float32 or float64 (the dtype of the computation; dictionary
        chunks are converted to it), on any device (CPU or CUDA): the computation runs on the queries' device
        and the chunks are moved there.
    chunks : iterable of DictionaryChunk
        The dictionary, in any number of chunks with the same G, D and C'.
    a, sigma : float
        sqrt(alpha_bar(t)) in (0, 1] and sqrt(1 - alpha_bar(t)) in (0, 1).
    block_elements : int
        Upper bound on G * n * m_block, the size of one logits block (memory ~ 4 bytes each in float32).

    Returns
    -------
    PosteriorMean

    Raises
    ------
    ValueError
        If the dictionary is empty.
    """
    G, n, _ = queries.shape
    dtype = queries.dtype
    alpha = a / sigma**2
    norm_coef = a * a / (2 * sigma**2)
    device = queries.device
    run_max = torch.full((G, n), -math.inf, dtype=dtype, device=device)
    acc = None  # (G, n, C' + 1): weighted centre sum and weight sum, rescaled to run_max
    best_src = None
    seen = 0
    m_block = max(1, block_elements // max(1, G * n))
    for chunk in chunks:
        chunk = chunk.to_device(device).to(dtype)
        m_total = chunk.patches.shape[1]
        for start in range(0, m_total, m_block):
            c = chunk.rows(start, min(start + m_block, m_total))
            sq = c.sq_norms if c.sq_norms is not None else (c.patches * c.patches).sum(-1)
            bias = sq * (-norm_coef)
            if c.log_counts is not None:
                bias = bias + c.log_counts
            # logits l[g, q, p] = alpha <query_q, p> + bias_p   (one batched GEMM)
            logits = torch.baddbmm(bias.unsqueeze(1), queries, c.patches.transpose(1, 2), alpha=alpha)
            cmax, carg = logits.max(dim=-1)
            new_max = torch.maximum(run_max, cmax)
            logits.sub_(new_max.unsqueeze(-1)).exp_()
            ones = torch.ones(c.centres.shape[:2] + (1,), dtype=dtype, device=device)
            contrib = torch.bmm(logits, torch.cat([c.centres, ones], dim=-1))
            if acc is None:
                acc = contrib
            else:
                acc.mul_(torch.exp(run_max - new_max).unsqueeze(-1)).add_(contrib)
            if c.sources is not None:
                src = torch.gather(c.sources, 1, carg)
                best_src = src if best_src is None else torch.where(cmax > run_max, src, best_src)
            run_max = new_max
            seen += c.patches.shape[1]
    if acc is None or seen == 0:
        raise ValueError("the patch dictionary is empty")
    total = acc[..., -1]
    mean = acc[..., :-1] / total.unsqueeze(-1)
    return PosteriorMean(
        mean=mean,
        log_normalizer=run_max + total.log(),
        best_source=best_src,
        best_weight=1.0 / total,  # the arg-max row has rescaled weight exp(0) = 1
    )


def merge_identical(
    patches: torch.Tensor, sources: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Merge identical dictionary rows exactly (research note Sec. 6, speed-up 4).

    Rows are grouped by an integer hash of their bit patterns, and every group is verified element by element;
    on a hash collision the function falls back to ``torch.unique(dim=0)``, so the result is always exact.

    Parameters
    ----------
    patches : Tensor (M, D)
        Dictionary rows.
    sources : LongTensor (M,), optional
        Row ids; the first occurrence's id is kept for every merged row.

    Returns
    -------
    unique : Tensor (U, D)
        Distinct rows, in order of first occurrence.
    log_counts : Tensor (U,), dtype of ``patches``
        log(number of copies) per distinct row.
    sources : LongTensor (U,) or None
        The id of each distinct row's first occurrence.
    """
    M, D = patches.shape
    if M == 0:
        return patches, patches.new_zeros(0), sources
    bits = patches.contiguous().view(torch.int32 if patches.dtype == torch.float32 else torch.int64)
    gen = torch.Generator().manual_seed(0x5EED)
    coef = torch.randint(1, 2**62, (D,), generator=gen, dtype=torch.int64) | 1
    h = (bits.to(torch.int64) * coef).sum(dim=1)  # wraps mod 2^64: order-independent and exact
    _, inverse, counts = torch.unique(h, return_inverse=True, return_counts=True)
    # first occurrence of each hash value
    first = torch.full((counts.numel(),), M, dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(M), reduce="amin")
    if not torch.equal(patches[first[inverse]], patches):  # hash collision: exact fallback
        _, inverse, counts = torch.unique(patches, dim=0, return_inverse=True, return_counts=True)
        first = torch.full((counts.numel(),), M, dtype=torch.int64)
        first.scatter_reduce_(0, inverse, torch.arange(M), reduce="amin")
    order = torch.argsort(first)
    first, counts = first[order], counts[order]
    log_counts = counts.to(patches.dtype).log()
    return patches[first], log_counts, (None if sources is None else sources[first])
