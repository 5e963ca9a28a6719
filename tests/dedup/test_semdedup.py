"""The checks of research note semdedup.md Sec. 7 on the in-memory algorithm (checks 1-11)."""

from __future__ import annotations

import numpy as np
import pytest

from dlscience.dedup import earlier_max_similarity, extract, keep_mask, rank_members, semdedup
from dlscience.dedup.pipeline import kept_fraction_curve
from dlscience.dedup.semdedup import normalize_rows
from dlscience.errors import InputValidationError


def _planted(n=600, d=32, n_dup=120, noise=0.01, seed=0):
    """Random unit vectors plus near-copies of the first n_dup (cosine about 1 - d noise^2 / 2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    dup = x[:n_dup] + noise * rng.normal(size=(n_dup, d)) * np.linalg.norm(x[:n_dup], axis=1, keepdims=True)
    return np.concatenate([x, dup]).astype(np.float32)


def test_nemo_six_vector_case():
    """Check 1: maxima, argmaxes and kept counts of the NeMo test vector (one cluster, given order)."""
    x = normalize_rows(np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], [1, 2, 3], [1, 2, 3]], float))
    m, arg = earlier_max_similarity(x)
    np.testing.assert_allclose(m, [0, 0.974632, 0.998191, 0.999619, 1, 1], atol=2e-6)
    np.testing.assert_array_equal(arg, [-1, 0, 1, 2, 0, 0])
    kept = {eps: int(keep_mask(m, eps).sum()) for eps in (1e-4, 1e-3, 0.01, 0.03)}
    assert kept == {1e-4: 4, 1e-3: 3, 0.01: 2, 0.03: 1}


def test_max_similarity_against_brute_force_and_block_size():
    """Checks 7-8: blocked maxima equal a dense float64 computation; every block size gives identical bits."""
    x = normalize_rows(_planted(300, 16, 60))
    g = x.astype(np.float64) @ x.T.astype(np.float64)
    g[np.triu_indices(len(x))] = -np.inf
    ref_max, ref_arg = g.max(1), g.argmax(1)
    m, arg = earlier_max_similarity(x, block_size=64)
    np.testing.assert_allclose(m[1:], ref_max[1:], atol=1e-6)
    np.testing.assert_array_equal(arg[1:], ref_arg[1:])
    for block in (1, 2, 7, 64, 299, 300, 1000):
        m2, arg2 = earlier_max_similarity(x, block_size=block)
        np.testing.assert_array_equal(m2, m)
        np.testing.assert_array_equal(arg2, arg)


def test_exact_duplicates_tie_to_the_earliest_and_one_survives():
    """Check 2: exact copies share a cluster; exactly one of each group survives at eps >= 1e-6."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    x = np.concatenate([base, base[:10], base[:10] * 3.0, base[:5]])  # groups of 1-4 copies (scaled too)
    t = semdedup(x, n_clusters=5, eps=(1e-6, 1e-5), seed=2)
    group = np.concatenate([np.arange(50), np.arange(10), np.arange(10), np.arange(5)])
    for eps in (1e-6, 1e-5):
        keep = t.column(f"keep_{eps:g}").to_numpy(zero_copy_only=False)
        assert np.bincount(group[keep], minlength=50).tolist() == [1] * 50
    cluster = t.column("cluster").to_numpy()
    for g in range(10):
        assert len(set(cluster[group == g])) == 1


def test_chain_semantics():
    """Check 3: 0, 6, 12 degrees in rank order with eps = 0.01 keep only 0 degrees (the reference's rule: an
    item is removed by any earlier item, even a removed one)."""
    angles = np.deg2rad([0.0, 6.0, 12.0])
    x = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    m, arg = earlier_max_similarity(x)
    np.testing.assert_allclose(m, [0, np.cos(np.deg2rad(6)), np.cos(np.deg2rad(6))], atol=1e-6)
    np.testing.assert_array_equal(arg, [-1, 0, 1])
    assert keep_mask(m, 0.01).tolist() == [True, False, False]


def test_monotone_in_eps_and_one_survivor_per_cluster():
    """Checks 4-5: removed sets grow with eps; every non-empty cluster keeps its first-ranked member, even at
    eps = 1."""
    eps = (0.001, 0.003, 0.01, 0.05, 0.2, 1.0)
    t = semdedup(_planted(), n_clusters=8, eps=eps, seed=0)
    keeps = [t.column(f"keep_{e:g}").to_numpy(zero_copy_only=False) for e in eps]
    for looser, stricter in zip(keeps, keeps[1:], strict=False):
        assert np.all(stricter <= looser)
    cluster = t.column("cluster").to_numpy()
    rank = t.column("rank").to_numpy()
    assert keeps[-1][rank == 0].all()
    assert keeps[-1].sum() >= len(np.unique(cluster))
    assert int(keeps[0].sum()) < len(cluster)  # the planted copies are found
    curve = kept_fraction_curve(t.column("max_sim").to_numpy(), np.array(eps))
    np.testing.assert_allclose(curve, [k.mean() for k in keeps])


def test_hard_and_easy_orders_flip_the_survivor():
    """Check 6: 'hard' keeps the member farthest from the centroid, 'easy' the nearest."""
    # three near-identical vectors around a direction; member 1 sits on it, 0 and 2 off to the sides
    x = np.array([[1.0, 0.02, 0.0], [1.0, 0.0, 0.0], [1.0, -0.01, 0.0]], np.float32)
    hard = semdedup(x, n_clusters=1, eps=0.01, order="hard")
    easy = semdedup(x, n_clusters=1, eps=0.01, order="easy")
    sim = hard.column("sim_to_centroid").to_numpy()
    assert hard.column("keep_0.01").to_pylist() == (np.arange(3) == sim.argmin()).tolist()
    assert easy.column("keep_0.01").to_pylist() == (np.arange(3) == sim.argmax()).tolist()
    assert sim.argmin() != sim.argmax()
    # ties are broken by id, ascending
    ranked = rank_members(np.array([0.5, 0.5, 0.2]), np.array([2, 0, 1]), "hard")
    np.testing.assert_array_equal(ranked, [2, 1, 0])


def test_one_cluster_equals_brute_force():
    """Check 7: with k = 1 the result is the all-pairs rule on the ranked list."""
    x = _planted(200, 12, 40, noise=0.02)
    t = semdedup(x, n_clusters=1, eps=(0.005, 0.05))
    u = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    sim = t.column("sim_to_centroid").to_numpy()
    order = np.lexsort((np.arange(len(x)), sim))
    g = u[order] @ u[order].T
    g[np.triu_indices(len(x))] = -np.inf
    expected = np.empty(len(x))
    expected[order] = np.where(np.arange(len(x)) == 0, 0.0, g.max(1))
    np.testing.assert_allclose(t.column("max_sim").to_numpy(), expected, atol=1e-6)
    for eps in (0.005, 0.05):
        np.testing.assert_array_equal(
            t.column(f"keep_{eps:g}").to_numpy(zero_copy_only=False), ~(expected > 1 - eps)
        )


def test_determinism_row_order_and_scale_invariance():
    """Checks 9-10: the same seed gives the same table; permuting rows (with their ids) or rescaling vectors
    leaves the removed ids unchanged."""
    x = _planted(300, 16, 60, noise=0.005)
    ids = np.arange(len(x)) * 7 + 3
    a = semdedup(x, ids, n_clusters=1, eps=0.01, seed=4)
    assert a.equals(semdedup(x, ids, n_clusters=1, eps=0.01, seed=4))
    perm = np.random.default_rng(0).permutation(len(x))
    b = semdedup(x[perm], ids[perm], n_clusters=1, eps=0.01, seed=4)
    scale = np.random.default_rng(1).uniform(0.1, 10, size=(len(x), 1)).astype(np.float32)
    c = semdedup(x * scale, ids, n_clusters=1, eps=0.01, seed=4)

    def removed(t):
        return set(t.filter(~t.column("keep_0.01").to_numpy(zero_copy_only=False)).column("id").to_pylist())

    assert removed(a) == removed(b) == removed(c)
    assert len(removed(a)) > 30
    k = semdedup(x, ids, n_clusters=6, eps=0.01, seed=4)
    assert k.equals(semdedup(x, ids, n_clusters=6, eps=0.01, seed=4))


def test_accounting_and_provenance():
    """Check 11: kept + removed = N; each removed row's max_id is in its cluster, ranked earlier, with that
    similarity."""
    x = _planted(500, 16, 100, noise=0.02)
    ids = np.array([f"doc-{i:04d}" for i in range(len(x))])
    t = semdedup(x, ids, n_clusters=7, eps=(0.001, 0.02), seed=1, order="random")
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    pos = {v: i for i, v in enumerate(ids)}
    cluster, rank = t.column("cluster").to_numpy(), t.column("rank").to_numpy()
    max_sim, max_id = t.column("max_sim").to_numpy(), t.column("max_id").to_pylist()
    for eps in (0.001, 0.02):
        keep = t.column(f"keep_{eps:g}").to_numpy(zero_copy_only=False)
        assert keep.sum() + (~keep).sum() == len(x)
        for i in np.flatnonzero(~keep):
            j = pos[max_id[i]]
            assert cluster[j] == cluster[i] and rank[j] < rank[i] and max_sim[i] > 1 - eps
            assert abs(float(u[i] @ u[j]) - max_sim[i]) < 1e-5
    assert all(max_id[i] is None for i in np.flatnonzero(rank == 0))


def test_extract_rethresholds_without_recomputing():
    t = semdedup(_planted(), n_clusters=4, eps=0.01)
    again = extract(t.drop_columns(["keep_0.01"]), [0.01, 0.1])
    assert again.column("keep_0.01").equals(t.column("keep_0.01"))
    assert (
        again.column("keep_0.1").to_numpy(zero_copy_only=False).sum()
        <= t.column("keep_0.01").to_numpy(zero_copy_only=False).sum()
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_clusters": 10_000}, "n_clusters must be between 1 and the number of items"),
        ({"n_clusters": 0}, "n_clusters"),
        ({"eps": 0.0}, r"eps must be in \(0, 1\]"),
        ({"eps": 1.5}, r"eps must be in \(0, 1\]"),
        ({"order": "middle"}, "order must be one of"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(InputValidationError, match=match):
        semdedup(_planted(50, 4, 5), **kwargs)


def test_bad_embeddings_and_ids_are_named():
    x = _planted(50, 4, 5)
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(InputValidationError, match="row 7 has NaN"):
        semdedup(bad)
    bad = x.copy()
    bad[3] = 0
    with pytest.raises(InputValidationError, match="row 3 is all zeros"):
        semdedup(bad)
    with pytest.raises(InputValidationError, match="duplicate id 5"):
        semdedup(x, ids=np.r_[np.arange(54), 5])
    with pytest.raises(InputValidationError, match="2-D"):
        semdedup(x[0])
