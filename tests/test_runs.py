"""The shared run folder: fingerprint, manifest, resume, refusal, --overwrite, legacy folders, damaged files,
interruption messages."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from dlscience.errors import UserError
from dlscience.results import DamagedFileError, load_npy, load_torch, read_json, read_parquet
from dlscience.runs import FORMAT, RunFolder, RunInterrupted, digest_array, digest_file, fingerprint


def _run(out, **kw):
    settings = kw.pop("settings", {"a": 1, "steps": 10})
    return RunFolder(out, "test job", settings, identity=kw.pop("identity", {"a": settings["a"]}), **kw)


def test_fingerprint_is_canonical_and_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"x": np.float32(0.5)}) == fingerprint({"x": 0.5})
    assert len(fingerprint({})) == 16


def test_digests_see_every_byte_and_the_shape(tmp_path):
    a = np.arange(12, dtype=np.float32)
    assert digest_array(a) == digest_array(torch.from_numpy(a.copy()))
    assert digest_array(a) != digest_array(a.reshape(3, 4))
    b = a.copy()
    b[7] = np.nextafter(b[7], 100, dtype=np.float32)
    assert digest_array(a) != digest_array(b)
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    d = digest_file(f)
    f.write_bytes(b"abd")
    assert digest_file(f) != d
    with pytest.raises(UserError, match="cannot read"):
        digest_file(tmp_path / "missing")


def test_manifest_records_settings_environment_files_and_finish(tmp_path):
    out = tmp_path / "run"
    with _run(out, inputs={"data": "abc"}) as run:
        assert not run.resumed
        run.write_json("result.json", {"v": 1})
        run.write_npz("arrays.npz", x=np.zeros(3))
        run.finish(summary={"v": 1})
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == FORMAT and m["command"] == "dlscience test job"
    assert m["settings"] == {"a": 1, "steps": 10} and m["identity"] == {"a": 1}
    assert m["inputs"] == {"data": "abc"} and m["finished"] is True and m["summary"] == {"v": 1}
    assert m["files"] == ["arrays.npz", "result.json"]
    assert m["environment"]["python"] and m["environment"]["numpy"] == np.__version__
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_same_identity_resumes_with_state_settings_outside_identity_may_change(tmp_path):
    out = tmp_path / "run"
    with _run(out) as run:
        run.state["done"] = 3
        run.save_state()
    with _run(out, settings={"a": 1, "steps": 20}) as run:
        assert run.resumed and run.state == {"done": 3}
        assert run.manifest["settings"]["steps"] == 20


def test_other_identity_is_refused_naming_the_difference_and_nothing_is_touched(tmp_path):
    out = tmp_path / "run"
    with _run(out) as run:
        run.write_json("result.json", {"v": 1})
        run.finish()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError) as exc:
        _run(out, settings={"a": 2, "steps": 10}).open()
    msg = str(exc.value)
    assert "a 1 -> 2" in msg and "finished" in msg and "--overwrite" in msg and "\n" not in msg
    with pytest.raises(UserError, match="input data"):
        _run(out, inputs={"data": "other"}).open()
    with pytest.raises(UserError, match="results of `dlscience test job`"):
        RunFolder(out, "other job", {"a": 1}).open()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_removes_everything_the_old_run_wrote_including_derived_folders(tmp_path):
    out = tmp_path / "run"
    with _run(out) as run:
        run.write_json("result.json", {"v": 1})
        run.write_npy("parts/p0.npy", np.zeros(2))  # a registered folder
        run.path("derived.parquet").write_text("x")  # written by another step, registered
    (out / "user_notes.txt").write_text("mine")  # not the run's: left alone
    with _run(out, settings={"a": 2, "steps": 10}, overwrite=True) as run:
        assert not run.resumed
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "user_notes.txt"]


def test_unknown_files_are_refused_and_legacy_folders_adopted_or_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="holds files that no `dlscience test job` run wrote"):
        _run(foreign).open()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "checkpoint.pt").write_bytes(b"old")
    with pytest.raises(UserError, match="earlier dlscience, before run manifests; rerun with --overwrite"):
        _run(legacy, legacy=("checkpoint.pt",)).open()
    run = _run(legacy, legacy=("checkpoint.pt",), adopt_legacy=True).open()
    assert run.resumed and run.manifest["files"] == ["checkpoint.pt"]
    fresh = _run(tmp_path / "legacy2", legacy=("checkpoint.pt",), overwrite=True)
    (tmp_path / "legacy2").mkdir()
    (tmp_path / "legacy2" / "checkpoint.pt").write_bytes(b"old")
    fresh.open()
    assert not (tmp_path / "legacy2" / "checkpoint.pt").exists()


def test_out_that_is_a_file_and_a_damaged_manifest(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match=r"--out .*file is a file; give a folder"):
        _run(f).open()
    out = tmp_path / "run"
    with _run(out):
        pass
    (out / "manifest.json").write_bytes(b'{"format": "dlscience-run/1", "finger')
    with pytest.raises(UserError, match="manifest.json is damaged"):
        _run(out).open()
    assert _run(out, overwrite=True).open().manifest["format"] == FORMAT


def test_damaged_checkpoint_names_the_file(tmp_path):
    out = tmp_path / "run"
    with _run(out) as run:
        run.save_checkpoint({"x": torch.ones(3)})
        assert torch.equal(run.load_checkpoint()["x"], torch.ones(3))
        data = (out / "checkpoint.pt").read_bytes()
        (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
        with pytest.raises(DamagedFileError, match=r"checkpoint.pt is damaged or not a checkpoint"):
            run.load_checkpoint()
        (out / "checkpoint.pt").write_bytes(b"garbage")
        with pytest.raises(DamagedFileError, match="not a torch file"):
            run.load_checkpoint()


def test_readers_turn_damaged_files_into_one_line_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(1000.0))
    assert load_npy(npy)[999] == 999
    npy.write_bytes(npy.read_bytes()[:2000])
    with pytest.raises(DamagedFileError, match="a.npy is damaged"):
        load_npy(npy)
    pqf = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), pqf)
    assert read_parquet(pqf).num_rows == 100
    pqf.write_bytes(pqf.read_bytes()[:50])
    with pytest.raises(DamagedFileError, match="t.parquet is damaged"):
        read_parquet(pqf)
    js = tmp_path / "m.json"
    js.write_bytes(b"\xff\xfe{")
    with pytest.raises(DamagedFileError, match="m.json is damaged"):
        read_json(js)
    with pytest.raises(FileNotFoundError):
        load_torch(tmp_path / "none.pt")


def test_interruption_says_whether_anything_was_saved(tmp_path):
    with pytest.raises(RunInterrupted, match="nothing was saved"):
        with _run(tmp_path / "a"):
            raise KeyboardInterrupt
    with pytest.raises(RunInterrupted, match="progress is saved in .*run the same command again"):
        with _run(tmp_path / "b") as run:
            run.save_checkpoint({"step": 1})
            raise KeyboardInterrupt


def test_sigterm_inside_a_run_is_an_interruption_and_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted, match="nothing was saved"):
        with _run(tmp_path / "a"):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes, right after kill returns
                pass
    assert signal.getsignal(signal.SIGTERM) == before
