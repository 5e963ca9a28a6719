"""Tests for dlscience.data: IDX / CIFAR-10 readers and load_images."""

from __future__ import annotations

import builtins
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dlscience.data import CLASS_NAMES, DATASETS, ImageDataset, load_images, read_idx
from dlscience.data import images as images_mod
from dlscience.errors import DatasetNotFoundError, InputValidationError, UserError

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX format."""
    assert arr.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim)
    header += b"".join(struct.pack(">i", d) for d in arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool) -> Path:
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def make_split(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fake 28x28 images: background 0, a square of value 255 in the middle; labels i % 10.

    Pixel (0, 1) holds the image index so that rows can be identified after subsetting.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 10:18, 10:18] = 255
    images[:, 0, 1] = np.arange(n, dtype=np.uint8)
    images[:, 27, 27] = rng.integers(0, 256, n, dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_mnist_dir(folder: Path, *, gz: bool, n_train: int = 40, n_test: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make_split(n, seed=n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return folder


def write_cifar_dir(root: Path, n_per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        data[:, 0] = i  # red channel, pixel (0, 0) = batch number
        labels = [(i + j) % 10 for j in range(n_per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASS_NAMES["cifar10"]]}, f)
    return folder


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No $DLSCIENCE_DATA and no system folders unless a test sets them."""
    monkeypatch.delenv("DLSCIENCE_DATA", raising=False)
    monkeypatch.setattr(images_mod, "_SYSTEM_DIRS", {"fashion-mnist": (), "mnist": (), "cifar10": ()})


# ----------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", arr, gz=gz)
    out = read_idx(path)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.uint8
    assert not out.flags.writeable  # cached arrays cannot be mutated by callers


def test_read_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(DatasetNotFoundError, match="bad magic number 0x12340803") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_truncated(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(data[:-100])
    with pytest.raises(DatasetNotFoundError, match="truncated") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((50, 28, 28), np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetNotFoundError, match="corrupt or truncated") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_corrupt_file_via_load_images(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", gz=False)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte"):
        load_images("mnist", data_dir=folder)


# ----------------------------------------------------------------------------- load_images


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_scaling_and_labels(tmp_path: Path, gz: bool) -> None:
    folder = write_mnist_dir(tmp_path / "d", gz=gz)
    ds = load_images("mnist", data_dir=folder)
    assert isinstance(ds, ImageDataset)
    assert len(ds) == 40
    assert ds.images.shape == (40, 1, 28, 28)
    assert ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [i % 10 for i in range(40)]
    assert ds.class_names == tuple(str(i) for i in range(10))
    assert ds.name == "mnist"
    assert ds.source == str(folder)
    # Exact scaling v / 127.5 - 1.
    assert (ds.images[:, 0, 0, 0] == -1.0).all()
    assert (ds.images[:, 0, 12, 12] == 1.0).all()
    raw, _ = make_split(40, seed=40)
    expected = torch.from_numpy(raw.astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(ds.images[:, 0], expected, rtol=0, atol=0)
    assert ds.images.min() >= -1 and ds.images.max() <= 1

    test = load_images("mnist", split="test", data_dir=folder)
    assert test.images.shape == (20, 1, 28, 28)


def test_returned_tensors_do_not_alias_cache(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", gz=True)
    a = load_images("mnist", data_dir=folder)
    a.images.fill_(0.5)
    a.labels.fill_(3)
    b = load_images("mnist", data_dir=folder)
    assert b.images[0, 0, 0, 0] == -1.0
    assert b.labels[0] == 0


def test_class_filter(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", gz=False)
    ds = load_images("fashion-mnist", data_dir=folder, classes=[3, 7])
    assert len(ds) == 8
    assert set(ds.labels.tolist()) == {3, 7}
    # Original order kept: pixel (0, 1) holds the original index.
    idx = ((ds.images[:, 0, 0, 1] + 1) * 127.5).round().long().tolist()
    assert idx == [3, 7, 13, 17, 23, 27, 33, 37]
    assert ds.class_names[9] == "Ankle boot"


def test_seeded_subset(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", gz=False)

    def picked(seed: int, **kw) -> list[int]:
        ds = load_images("mnist", data_dir=folder, n=10, seed=seed, **kw)
        return ((ds.images[:, 0, 0, 1] + 1) * 127.5).round().long().tolist()

    a = picked(0)
    assert len(a) == 10 == len(set(a))
    assert a == sorted(a)  # increasing original index
    assert a == picked(0)  # deterministic
    assert a != picked(1)  # seed matters
    # Subset drawn after the class filter: every pick has label 2, 4 or 6.
    b = picked(5, classes=[2, 4, 6])
    assert all(i % 10 in (2, 4, 6) for i in b)
    expected = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:10].sort().values
    assert a == expected.tolist()


def test_resize_shape_and_constant_background(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", gz=False)
    for size in (32, 16, 7):
        ds = load_images("mnist", data_dir=folder, size=size)
        assert ds.images.shape == (40, 1, size, size)
        assert ds.images.dtype == torch.float32
        assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    ds = load_images("mnist", data_dir=folder, size=32)
    # The -1 background far from the square and the corner markers stays exactly -1.0.
    assert (ds.images[:, 0, 4:8, 4:8] == -1.0).all()
    assert (ds.images[:, 0, 28:32, 0:4] == -1.0).all()
    # The middle of the white square stays white.
    assert (ds.images[:, 0, 15:17, 15:17] > 0.99).all()


def test_env_var_and_torchvision_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist_dir(tmp_path / "FashionMNIST" / "raw", gz=True)
    write_mnist_dir(tmp_path / "mnist", gz=False, n_train=30)
    monkeypatch.setenv("DLSCIENCE_DATA", str(tmp_path))
    assert len(load_images("fashion-mnist")) == 40
    assert load_images("fashion-mnist").source == str(tmp_path / "FashionMNIST" / "raw")
    assert len(load_images("mnist")) == 30


def test_missing_dataset_lists_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "env"
    monkeypatch.setenv("DLSCIENCE_DATA", str(env))
    with pytest.raises(DatasetNotFoundError) as e:
        load_images("fashion-mnist")
    msg = str(e.value)
    assert "\n" not in msg
    for place in (env, env / "fashion-mnist", env / "FashionMNIST" / "raw"):
        assert str(place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--download" in msg and "--data-dir" in msg

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="MNIST/raw.*--download"):
        load_images("mnist", data_dir=empty)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_images("cifar10", data_dir=empty)


def test_named_data_dir_is_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A --data-dir that does not exist, or lacks the files, is an error naming it, even where
    $DLSCIENCE_DATA or the system folder holds the dataset."""
    elsewhere = write_mnist_dir(tmp_path / "env" / "fashion-mnist", gz=False)
    monkeypatch.setenv("DLSCIENCE_DATA", str(tmp_path / "env"))
    monkeypatch.setitem(images_mod._SYSTEM_DIRS, "fashion-mnist", (elsewhere,))
    assert load_images("fashion-mnist").source == str(elsewhere)
    with pytest.raises(DatasetNotFoundError) as e:
        load_images("fashion-mnist", data_dir=tmp_path / "nowhere")
    assert str(e.value) == (
        f"--data-dir {tmp_path / 'nowhere'} does not exist; give the folder that holds the dataset files (or "
        "add --download to fetch them into it)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as e:
        load_images("fashion-mnist", data_dir=empty)
    assert str(empty) in str(e.value) and str(elsewhere) not in str(e.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        load_images("fashion-mnist", data_dir=tmp_path / "file")


def test_system_dir_searched_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = write_mnist_dir(tmp_path / "system", gz=True, n_train=12)
    monkeypatch.setitem(images_mod._SYSTEM_DIRS, "fashion-mnist", (system,))
    assert load_images("fashion-mnist").source == str(system)
    mine = write_mnist_dir(tmp_path / "mine", gz=False)
    assert load_images("fashion-mnist", data_dir=mine).source == str(mine)


def test_validation_errors(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", gz=False)
    with pytest.raises(InputValidationError, match="fashion-mnist, mnist, cifar10, digits"):
        load_images("imagenet")
    with pytest.raises(InputValidationError, match="n=41 is larger than the 40"):
        load_images("mnist", data_dir=folder, n=41)
    with pytest.raises(InputValidationError, match="larger than the 4 .* in classes"):
        load_images("mnist", data_dir=folder, classes=[1], n=5)
    with pytest.raises(InputValidationError, match=r"0\.\.9"):
        load_images("mnist", data_dir=folder, classes=[10])
    with pytest.raises(InputValidationError, match=r"0\.\.9"):
        load_images("mnist", data_dir=folder, classes=[-1])
    with pytest.raises(InputValidationError, match="empty"):
        load_images("mnist", data_dir=folder, classes=[])
    with pytest.raises(InputValidationError, match="split"):
        load_images("mnist", data_dir=folder, split="val")
    with pytest.raises(InputValidationError, match="size"):
        load_images("mnist", data_dir=folder, size=0)
    with pytest.raises(InputValidationError, match="n must be"):
        load_images("mnist", data_dir=folder, n=0)


def test_download_without_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(UserError, match="pip install torchvision"):
        load_images("mnist", data_dir=tmp_path, download=True)


# ----------------------------------------------------------------------------- CIFAR-10, digits


def test_cifar10(tmp_path: Path) -> None:
    folder = write_cifar_dir(tmp_path)
    train = load_images("cifar10", data_dir=tmp_path)
    assert train.images.shape == (20, 3, 32, 32)
    assert train.images.dtype == torch.float32
    assert train.source == str(folder)
    assert train.class_names[0] == "airplane" and train.class_names[9] == "truck"
    # Batches concatenated in order 1..5; pixel (0, 0) of the red channel = batch index.
    np.testing.assert_array_equal(
        train.images[:, 0, 0, 0].numpy(),
        np.repeat(np.arange(5, dtype=np.float32), 4) / np.float32(127.5) - np.float32(1),
    )
    assert train.labels.tolist() == [(i + j) % 10 for i in range(5) for j in range(4)]
    # Channel-major layout (N, 3072) -> (N, 3, 32, 32), as in the CIFAR-10 docs.
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    expected = torch.from_numpy(raw.reshape(-1, 3, 32, 32).astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(train.images[:4], expected, rtol=0, atol=0)

    test = load_images("cifar10", split="test", data_dir=tmp_path, classes=[5, 6])
    assert test.labels.tolist() == [5, 6]
    assert (test.images[:, 0, 0, 0] == 5 / 127.5 - 1).all()


def test_cifar10_corrupt_batch(tmp_path: Path) -> None:
    folder = write_cifar_dir(tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetNotFoundError, match="test_batch"):
        load_images("cifar10", split="test", data_dir=tmp_path)


def test_digits() -> None:
    ds = load_images("digits")
    assert ds.images.shape == (1797, 1, 8, 8)
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    # v / 8 - 1 with v in 0..16: every value is a multiple of 1/8.
    assert torch.equal(ds.images * 8, (ds.images * 8).round())
    assert set(ds.labels.tolist()) == set(range(10))
    assert ds.source == "sklearn.datasets.load_digits"
    small = load_images("digits", size=16, classes=[0], n=5, seed=3)
    assert small.images.shape == (5, 1, 16, 16)
    assert (small.labels == 0).all()
    with pytest.raises(InputValidationError, match="split"):
        load_images("digits", split="test")


def test_datasets_constant() -> None:
    assert DATASETS == ("fashion-mnist", "mnist", "cifar10", "digits")
    assert all(len(CLASS_NAMES[d]) == 10 for d in DATASETS)


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(
    not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(images_mod._SYSTEM_DIRS, "fashion-mnist", (DEBIAN_FMNIST,))
    ds = load_images("fashion-mnist", size=32)
    assert ds.images.shape == (60000, 1, 32, 32)
    assert ds.labels[0] == 9 and ds.class_names[9] == "Ankle boot"
    assert torch.bincount(ds.labels).tolist() == [6000] * 10
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert ds.source == str(DEBIAN_FMNIST)
    test = load_images("fashion-mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28)
