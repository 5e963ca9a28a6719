"""Tests for the streamed softmax kernel (posterior_mean) and exact deduplication
(merge_identical): check 10."""

from __future__ import annotations

import math

import pytest
import torch

from dlscience.diffusion.patch_posterior import DictionaryChunk, merge_identical, posterior_mean


def dense_posterior(queries, patches, centres, a, sigma, log_counts=None):
    """Naive float64 posterior with the FULL squared distance ||q - a p||^2 (norm of q included)."""
    q, p, c = queries.double(), patches.double(), centres.double()
    d2 = ((q[:, :, None, :] - a * p[:, None, :, :]) ** 2).sum(-1)  # (G, n, m)
    logits = -d2 / (2 * sigma**2)
    if log_counts is not None:
        logits = logits + log_counts.double()[:, None, :]
    w = torch.softmax(logits, dim=-1)
    return w @ c, logits, w


def split(patches, centres, sources, sizes):
    """Cut a dictionary (G, m, .) into chunks of the given row counts."""
    chunks, start = [], 0
    for s in sizes:
        sl = slice(start, start + s)
        chunks.append(DictionaryChunk(patches[:, sl], centres[:, sl], sources=sources[:, sl]))
        start += s
    assert start == patches.shape[1]
    return chunks


@pytest.fixture
def problem(gen):
    G, n, m, D, Cp = 3, 5, 23, 9, 2
    patches = torch.rand(G, m, D, generator=gen) * 2 - 1
    centres = torch.rand(G, m, Cp, generator=gen) * 2 - 1
    queries = torch.randn(G, n, D, generator=gen)
    sources = torch.arange(G * m).view(G, m) + 1000
    return queries, patches, centres, sources


@pytest.mark.parametrize("t_a_sigma", [(0.9, 0.44), (0.5, 0.866), (0.05, 0.9987)])
def test_streaming_matches_dense_softmax(problem, t_a_sigma):
    """Check 10: one chunk, many tiny chunks with block_elements=1 (one row per block), and a dense
    float64
    softmax with the full distance all agree; log_normalizer, best_source and best_weight too."""
    queries, patches, centres, sources = problem
    sigma, a = (
        t_a_sigma[0],
        math.sqrt(1 - t_a_sigma[0] ** 2),
    )  # any (a, sigma) with a^2 + sigma^2 = 1
    q64 = queries.double()
    ref_mean, logits, w = dense_posterior(q64, patches, centres, a, sigma)
    one = posterior_mean(q64, [DictionaryChunk(patches, centres, sources=sources)], a=a, sigma=sigma)
    many = posterior_mean(
        q64,
        split(patches, centres, sources, [1, 4, 2, 7, 1, 8]),
        a=a,
        sigma=sigma,
        block_elements=1,
    )
    f32 = posterior_mean(
        queries, split(patches, centres, sources, [5, 18]), a=a, sigma=sigma, block_elements=16
    )
    for res, tol in ((one, 1e-12), (many, 1e-12), (f32, 1e-5)):
        torch.testing.assert_close(res.mean.double(), ref_mean, rtol=0, atol=tol)
        best = w.argmax(-1)
        assert torch.equal(res.best_source, torch.gather(sources, 1, best))
        torch.testing.assert_close(res.best_weight.double(), w.max(-1).values, rtol=0, atol=tol)
    # the log-normaliser omits ||q||^2 / (2 sigma^2) (it cancels in the softmax)
    q_norm = (q64 * q64).sum(-1) / (2 * sigma**2)
    torch.testing.assert_close(one.log_normalizer, torch.logsumexp(logits, -1) + q_norm)
    torch.testing.assert_close(many.log_normalizer, one.log_normalizer)


def test_streaming_is_stable_at_huge_logit_scale(gen):
    """At sigma -> 0 the logits are ~1e6: the running max keeps the result finite and equal to the
    nearest
    patch's centre (weights one-hot)."""
    patches = torch.rand(1, 40, 4, generator=gen, dtype=torch.float64) * 2 - 1
    centres = torch.rand(1, 40, 1, generator=gen, dtype=torch.float64)
    queries = patches[:, [3, 17, 31]] + 1e-4
    sigma = 1e-3
    a = math.sqrt(1 - sigma**2)
    res = posterior_mean(
        queries,
        split(patches, centres, torch.arange(40).view(1, 40), [13, 13, 14]),
        a=a,
        sigma=sigma,
        block_elements=2,
    )
    assert torch.isfinite(res.mean).all()
    torch.testing.assert_close(res.mean[0, :, 0], centres[0, [3, 17, 31], 0], rtol=0, atol=1e-12)
    assert res.best_source[0].tolist() == [3, 17, 31]
    torch.testing.assert_close(res.best_weight, torch.ones(1, 3, dtype=torch.float64))


def test_log_counts_equal_repeated_rows(problem):
    """A row with log count log(k) weighs exactly like k copies of it."""
    queries, patches, centres, sources = problem
    q = queries.double()
    counts = torch.tensor([1, 3, 1, 2] + [1] * 19).repeat(3, 1)
    expanded = torch.repeat_interleave(torch.arange(23), counts[0])
    rep = posterior_mean(q, [DictionaryChunk(patches[:, expanded], centres[:, expanded])], a=0.8, sigma=0.6)
    merged = posterior_mean(
        q, [DictionaryChunk(patches, centres, log_counts=counts.double().log())], a=0.8, sigma=0.6
    )
    torch.testing.assert_close(merged.mean, rep.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(merged.log_normalizer, rep.log_normalizer, rtol=0, atol=1e-12)


def test_empty_dictionary_raises():
    """No dictionary rows -> ValueError."""
    q = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="empty"):
        posterior_mean(q, [], a=0.5, sigma=0.8)
    with pytest.raises(ValueError, match="empty"):
        posterior_mean(q, [DictionaryChunk(torch.zeros(1, 0, 3), torch.zeros(1, 0, 1))], a=0.5, sigma=0.8)


def test_merge_identical_known_duplicates():
    """Check 10: rows [A, B, A, C, B, A] -> [A, B, C] with counts [3, 2, 1] and first-occurrence
    sources."""
    A, B, C = [0.5, -1.0, 0.25], [0.5, -1.0, 0.0], [1.0, 1.0, 1.0]
    patches = torch.tensor([A, B, A, C, B, A])
    sources = torch.tensor([10, 11, 12, 13, 14, 15])
    unique, log_counts, src = merge_identical(patches, sources)
    assert torch.equal(unique, torch.tensor([A, B, C]))
    torch.testing.assert_close(log_counts.exp(), torch.tensor([3.0, 2.0, 1.0]))
    assert log_counts.dtype == patches.dtype
    assert src.tolist() == [10, 11, 13]
    u2, lc2, s2 = merge_identical(patches.double())
    assert torch.equal(u2, unique.double()) and s2 is None
    torch.testing.assert_close(lc2, log_counts.double())


def test_merge_identical_no_duplicates_and_empty(gen):
    """Distinct rows are kept in order with zero log counts; an empty input passes through."""
    p = torch.rand(50, 4, generator=gen)
    u, lc, s = merge_identical(p, torch.arange(50))
    assert torch.equal(u, p) and torch.equal(s, torch.arange(50))
    assert torch.equal(lc, torch.zeros(50))
    u, lc, s = merge_identical(torch.zeros(0, 4))
    assert u.shape == (0, 4) and lc.shape == (0,)


def test_merged_dictionary_gives_the_same_posterior(gen):
    """Check 10: a dictionary with many duplicates (quantised patches) merged with log counts gives
    the same
    posterior mean as the unmerged one, and the merged counts sum to the number of rows."""
    levels = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)  # float64: log counts exact to 1e-16
    idx = torch.randint(0, 3, (300, 4), generator=gen)
    idx[:, 3] = idx[:, 0]  # correlated columns: more duplicates
    patches = levels[idx]
    sources = torch.arange(300)
    unique, log_counts, src = merge_identical(patches, sources)
    assert unique.shape[0] < 81  # at most 3^3 distinct rows here
    assert round(float(log_counts.exp().sum())) == 300
    # every merged row's source is the FIRST row equal to it
    for row, s in zip(unique, src.tolist(), strict=True):
        matches = (patches == row).all(-1).nonzero().flatten()
        assert s == int(matches[0])
        assert log_counts[(unique == row).all(-1)].exp().round().item() == matches.numel()
    centre = patches[:, 1:2]
    q = torch.randn(1, 7, 4, generator=gen, dtype=torch.float64)
    for a, sigma in ((0.95, math.sqrt(1 - 0.95**2)), (0.3, math.sqrt(1 - 0.09))):
        full = posterior_mean(q, [DictionaryChunk(patches[None], centre[None])], a=a, sigma=sigma)
        merged = posterior_mean(
            q,
            [DictionaryChunk(unique[None], unique[None, :, 1:2], log_counts=log_counts[None])],
            a=a,
            sigma=sigma,
        )
        torch.testing.assert_close(merged.mean, full.mean, rtol=0, atol=1e-12)
        ref, _, _ = dense_posterior(q, patches[None], centre[None], a, sigma)
        torch.testing.assert_close(merged.mean, ref, rtol=0, atol=1e-12)
        # float32 dictionary (float32 log counts) into a float32 computation: rounding-level
        # agreement
        u32, lc32, _ = merge_identical(patches.float())
        m32 = posterior_mean(
            q.float(),
            [DictionaryChunk(u32[None], u32[None, :, 1:2], log_counts=lc32[None])],
            a=a,
            sigma=sigma,
        )
        torch.testing.assert_close(m32.mean.double(), ref, rtol=0, atol=1e-6)
