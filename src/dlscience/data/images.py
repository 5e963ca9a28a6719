"""Small image datasets as ``[-1, 1]`` float tensors: Fashion-MNIST, MNIST, CIFAR-10 and digits.

Files are read with this package's own readers (IDX for MNIST / Fashion-MNIST, the python pickle
batches for CIFAR-10), so torchvision is needed only for ``download=True``. Pixel scaling and the
optional resize follow Kamb & Ganguli (2024), "An analytic theory of creativity in convolutional
diffusion models", App. C: uint8 pixels map to ``v / 127.5 - 1`` and MNIST / Fashion-MNIST are
resized 28 -> 32 with a bilinear, antialiased resize (torchvision ``Resize``).
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dlscience.data.idx import read_idx
from dlscience.errors import DatasetNotFoundError, InputValidationError, UserError

__all__ = ["CLASS_NAMES", "DATASETS", "ImageDataset", "load_images"]

#: Names accepted by :func:`load_images`.
DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist", "cifar10", "digits")

#: Class names, indexed by integer label, for each dataset.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "mnist": tuple(str(i) for i in range(10)),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    "digits": tuple(str(i) for i in range(10)),
}

_SPLITS = ("train", "test")
_ENV_VAR = "DLSCIENCE_DATA"
_DEFAULT_DOWNLOAD_ROOT = Path("~/.cache/dlscience")

#: Dataset-specific subfolders checked inside each base folder, before the base folder itself
#: (``<root>/FashionMNIST/raw`` and ``<root>/MNIST/raw`` are torchvision's download layout).
_IDX_SUBDIRS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
    "mnist": ("mnist", "MNIST/raw"),
}
#: System-wide folders checked last (Debian package ``dataset-fashion-mnist``).
_SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),
    "cifar10": (),
}
_TORCHVISION_CLASS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10"}
_HOW_TO_GET = {
    "fashion-mnist": (
        "install it with `apt-get install dataset-fashion-mnist`, or pass --data-dir with the "
        "IDX files (train-images-idx3-ubyte[.gz] etc.), or pass --download"
    ),
    "mnist": ("pass --download, or --data-dir with the IDX files (train-images-idx3-ubyte[.gz] etc.)"),
    "cifar10": "pass --download, or --data-dir containing `cifar-10-batches-py`",
}


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset held in memory.

    Attributes
    ----------
    images : torch.Tensor
        ``float32``, shape ``(N, C, H, W)``, values in ``[-1, 1]``.
    labels : torch.Tensor
        ``int64``, shape ``(N,)``, values in ``0 .. len(class_names) - 1``.
    class_names : tuple of str
        Name of each label, indexed by label.
    name : str
        Dataset name, one of :data:`DATASETS`.
    source : str
        Where the data was read from (a folder, or ``"sklearn.datasets.load_digits"``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def digests(self) -> dict[str, str]:
        """SHA-256 digests (16 hex digits) of the images and labels, a run folder's record of its inputs
        (:class:`dlscience.runs.RunFolder`): ``{"training_images": ..., "training_labels": ...}``."""
        from dlscience.runs import digest_array

        return {"training_images": digest_array(self.images), "training_labels": digest_array(self.labels)}

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, "
            f"image_shape={tuple(self.images.shape[1:])}, source={self.source!r})"
        )


# ----------------------------------------------------------------------------- locating files


def _base_dirs(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Base folders in search order: ``data_dir`` alone when one is given (a folder the user named is never
    silently replaced by another), else ``$DLSCIENCE_DATA``.

    Raises DatasetNotFoundError if ``data_dir`` is given but is not a folder."""
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise DatasetNotFoundError(
                f"--data-dir {folder} {what}; give the folder that holds the dataset files (or add --download "
                "to fetch them into it)"
            )
        return [folder]
    bases = []
    env = os.environ.get(_ENV_VAR)
    if env:
        bases.append(Path(env).expanduser())
    return bases


def _idx_names(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists first, else ``None``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _not_found(dataset: str, split: str, looked: list[Path], what: str) -> DatasetNotFoundError:
    places = ", ".join(str(p) for p in looked) or "(no folders: none given)"
    return DatasetNotFoundError(
        f"{dataset} ({split} split) not found: looked for {what} in {places}; "
        f"to get it, {_HOW_TO_GET[dataset]} (or set ${_ENV_VAR} to a folder holding it)"
    )


def _candidate_dirs(dataset: str, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    subdirs = _IDX_SUBDIRS.get(dataset, ())
    dirs = []
    for base in _base_dirs(data_dir):
        dirs.extend(base / s for s in subdirs)
        dirs.append(base)
    if data_dir is None:
        dirs.extend(_SYSTEM_DIRS[dataset])
    return dirs


def _locate_idx(dataset: str, split: str, data_dir: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    image_name, label_name = _idx_names(split)
    looked = _candidate_dirs(dataset, data_dir)
    for folder in looked:
        images = _find_file(folder, image_name)
        labels = _find_file(folder, label_name)
        if images is not None and labels is not None:
            return images, labels
    raise _not_found(dataset, split, looked, f"{image_name}[.gz] and {label_name}[.gz]")


def _cifar_files(split: str) -> tuple[str, ...]:
    if split == "train":
        return tuple(f"data_batch_{i}" for i in range(1, 6))
    return ("test_batch",)


def _locate_cifar(split: str, data_dir: str | os.PathLike[str] | None) -> Path:
    looked = [d / "cifar-10-batches-py" for d in _candidate_dirs("cifar10", data_dir)]
    for folder in looked:
        if all((folder / f).is_file() for f in _cifar_files(split)):
            return folder
    names = "+".join(_cifar_files(split))
    raise _not_found("cifar10", split, looked, names)


# ----------------------------------------------------------------------------- reading files


def _read_mnist_like(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check an IDX image/label pair; images ``(N, 1, 28, 28)`` uint8, labels ``(N,)``."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetNotFoundError(
            f"corrupt image file {images_path}: expected a uint8 array of shape (N, H, W), "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetNotFoundError(
            f"corrupt label file {labels_path}: expected a uint8 array of shape (N,), "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DatasetNotFoundError(
            f"{labels_path} has {labels.shape[0]} labels but {images_path} has {images.shape[0]} images"
        )
    return images[:, None], labels


@functools.lru_cache(maxsize=16)
def _read_cifar_batch_cached(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    # ``mtime_ns`` and ``size`` are part of the cache key only, so a rewritten file is reread.
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DatasetNotFoundError(
            f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e} "
            "(the file is corrupt or truncated; delete it and download it again)"
        ) from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetNotFoundError(
            f"corrupt CIFAR-10 batch {path}: expected a dict with keys b'data' and b'labels'"
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetNotFoundError(
            f"corrupt CIFAR-10 batch {path}: b'data' should be uint8 of shape (N, 3072), "
            f"got {data.dtype} of shape {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise DatasetNotFoundError(
            f"corrupt CIFAR-10 batch {path}: {labels.size} labels for {data.shape[0]} images"
        )
    images = data.reshape(-1, 3, 32, 32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _read_cifar(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 python batches: images ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` int64."""
    parts = []
    for name in _cifar_files(split):
        p = folder / name
        st = p.stat()
        parts.append(_read_cifar_batch_cached(str(p.resolve()), st.st_mtime_ns, st.st_size))
    images = np.concatenate([im for im, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([lb for _, lb in parts]) if len(parts) > 1 else parts[0][1]
    return images, labels


def _download(dataset: str, data_dir: str | os.PathLike[str] | None) -> Path:
    """Download ``dataset`` with torchvision; return the root folder it was written under."""
    try:
        import torchvision.datasets as tvd
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken torchvision install
        raise UserError(
            f"download=True needs torchvision, which could not be imported ({e}); "
            "`pip install torchvision`, or download the files yourself and pass --data-dir"
        ) from e
    env = os.environ.get(_ENV_VAR)
    root = Path(data_dir or env or _DEFAULT_DOWNLOAD_ROOT).expanduser()
    cls = getattr(tvd, _TORCHVISION_CLASS[dataset])
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - network / disk errors come in many types
        raise DatasetNotFoundError(f"downloading {dataset} to {root} failed: {type(e).__name__}: {e}") from e
    return root


# ----------------------------------------------------------------------------- public API


def _check_classes(classes: Iterable[int], n_classes: int) -> list[int]:
    try:
        keep = sorted(set(classes))
    except TypeError as e:
        raise InputValidationError(
            f"classes must be an iterable of integer labels in 0..{n_classes - 1}, got {classes!r}"
        ) from e
    if not keep:
        raise InputValidationError(f"classes is empty; give labels in 0..{n_classes - 1}")
    for c in keep:
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c < n_classes:
            raise InputValidationError(
                f"invalid class {c!r}: class labels must be integers in 0..{n_classes - 1}"
            )
    return [int(c) for c in keep]


def _check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputValidationError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def load_images(
    dataset: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    size: int | None = None,
    classes: Iterable[int] | None = None,
    n: int | None = None,
    seed: int = 0,
    download: bool = False,
) -> ImageDataset:
    """Load a small image dataset as ``float32`` tensors in ``[-1, 1]``.

    Parameters
    ----------
    dataset : {"fashion-mnist", "mnist", "cifar10", "digits"}
        Which dataset (see :data:`DATASETS`). ``"fashion-mnist"`` (Xiao et al. 2017) and
        ``"mnist"`` (LeCun et al.) are read from IDX files, ``(N, 1, 28, 28)``; ``"cifar10"``
        (Krizhevsky 2009) from the python pickle batches in ``cifar-10-batches-py``,
        ``(N, 3, 32, 32)``; ``"digits"`` is scikit-learn's bundled 8x8 digits
        (:func:`sklearn.datasets.load_digits`), ``(1797, 1, 8, 8)``.
    split : {"train", "test"}, default "train"
        Which split. ``"digits"`` has no official split: only ``"train"`` (all 1797 images)
        is accepted for it.
    data_dir : str or path-like, optional
        Folder holding the files. When given, only it is searched (it must exist and hold the
        dataset: a folder the user named is never silently replaced by another); otherwise
        ``$DLSCIENCE_DATA``; inside each, the dataset-specific subfolders
        (``fashion-mnist/`` and torchvision's ``FashionMNIST/raw/`` for Fashion-MNIST,
        ``mnist/`` and ``MNIST/raw/`` for MNIST) before the folder itself; finally, without
        ``data_dir``, for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian package
        ``dataset-fashion-mnist``). CIFAR-10 is looked for in ``<folder>/cifar-10-batches-py``.
        IDX files may be gzipped (``.gz``) or not. Ignored for ``"digits"``.
    size : int, optional
        If given, resize every image to ``size x size`` with a bilinear, antialiased resize
        (``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
        antialias=True)``, which matches torchvision ``Resize``), then clamp to ``[-1, 1]``;
        Kamb & Ganguli (2024, App. C) resize MNIST / Fashion-MNIST 28 -> 32 this way. The
        interpolation is done on ``images + 1`` (then 1 is subtracted), which is the same
        linear map but keeps a constant ``-1`` background exactly ``-1.0``.
        ``None`` keeps the native size.
    classes : iterable of int, optional
        Keep only images with these labels (labels are not renumbered).
    n : int, optional
        Keep a random subset of ``n`` images, drawn without replacement with
        ``torch.Generator().manual_seed(seed)`` after the class filter, returned in increasing
        order of their index in the original split. ``None`` keeps all.
    seed : int, default 0
        Seed for the subset; only used when ``n`` is given.
    download : bool, default False
        For ``"mnist"``, ``"fashion-mnist"`` and ``"cifar10"``: first download both splits with
        torchvision (an optional dependency) into ``data_dir``, else ``$DLSCIENCE_DATA``, else
        ``~/.cache/dlscience``, then read the files with this module's readers. Ignored for
        ``"digits"``.

    Returns
    -------
    ImageDataset
        ``images``: ``float32`` ``(N, C, H, W)`` in ``[-1, 1]``, where a uint8 pixel ``v``
        becomes ``v / 127.5 - 1`` (so 0 -> -1.0 and 255 -> 1.0 exactly) and a digits value
        ``v`` in ``0..16`` becomes ``v / 8 - 1``; ``labels``: ``int64`` ``(N,)``; plus
        ``class_names``, ``name`` and ``source`` (the folder read from).

    Raises
    ------
    InputValidationError
        Unknown ``dataset`` or ``split``; ``size`` or ``n`` not a positive integer; a class
        label out of range; ``n`` larger than the number of images left after the class filter.
    DatasetNotFoundError
        The files are not found (the one-line message lists every folder looked in and how to
        get the data), or a file is corrupt or truncated (the message names the file), or a
        download failed.
    UserError
        ``download=True`` but torchvision cannot be imported.

    Notes
    -----
    Raw uint8 arrays are cached per file within a process, so repeated calls are cheap; the
    returned tensors are always fresh copies that the caller may modify. CIFAR-10 batches are
    python pickles: only read files from a source you trust.

    Examples
    --------
    >>> ds = load_images("digits", classes=[0, 1], n=10, seed=1)  # doctest: +SKIP
    >>> ds.images.shape, ds.images.dtype
    (torch.Size([10, 1, 8, 8]), torch.float32)
    """
    if dataset not in DATASETS:
        raise InputValidationError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASETS)}")
    valid_splits = ("train",) if dataset == "digits" else _SPLITS
    if split not in valid_splits:
        raise InputValidationError(f"unknown split {split!r} for {dataset}; valid: {', '.join(valid_splits)}")
    if size is not None:
        size = _check_positive_int(size, "size")
    if n is not None:
        n = _check_positive_int(n, "n")
    class_names = CLASS_NAMES[dataset]
    keep = None if classes is None else _check_classes(classes, len(class_names))

    # Raw values (uint8, or 0..16 for digits), labels, the source, and the scaling to [-1, 1].
    if dataset == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        raw = bunch.images[:, None].astype(np.float32)  # (1797, 1, 8, 8), values 0..16
        raw_labels = bunch.target
        source, scale = "sklearn.datasets.load_digits", 8.0
    else:
        if download:
            # torchvision writes <root>/FashionMNIST/raw, <root>/MNIST/raw or
            # <root>/cifar-10-batches-py, all of which the search below checks first.
            data_dir = _download(dataset, data_dir)
        if dataset == "cifar10":
            folder = _locate_cifar(split, data_dir)
            raw, raw_labels = _read_cifar(folder, split)
            source = str(folder)
        else:
            images_path, labels_path = _locate_idx(dataset, split, data_dir)
            raw, raw_labels = _read_mnist_like(images_path, labels_path)
            source = str(images_path.parent)
        scale = 127.5
        if raw_labels.size and int(raw_labels.max()) >= len(class_names):
            raise DatasetNotFoundError(
                f"corrupt labels in {source}: found label {int(raw_labels.max())}, "
                f"expected 0..{len(class_names) - 1}"
            )

    index = np.arange(raw_labels.shape[0])
    if keep is not None:
        index = index[np.isin(raw_labels, keep)]
    if n is not None:
        if n > index.size:
            where = "" if keep is None else f" in classes {keep}"
            raise InputValidationError(
                f"n={n} is larger than the {index.size} {dataset} {split} images{where}"
            )
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(index.size, generator=g)[:n].sort().values.numpy()
        index = index[pick]

    images = torch.from_numpy(np.ascontiguousarray(raw[index], dtype=np.float32))
    images = images.div_(scale).sub_(1.0)
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        # Interpolate on images + 1 (values in [0, 2]): the same linear map, but a constant
        # background of -1 becomes 0 and stays exactly 0 under the weighted averages.
        images = F.interpolate(
            images + 1.0, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        images = images.sub_(1.0).clamp_(-1.0, 1.0).contiguous()
    labels = torch.from_numpy(np.asarray(raw_labels[index], dtype=np.int64).copy())
    return ImageDataset(images=images, labels=labels, class_names=class_names, name=dataset, source=source)
