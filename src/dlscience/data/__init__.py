"""Image datasets for the experiments: Fashion-MNIST, MNIST, CIFAR-10 and scikit-learn digits.

The main entry point is :func:`load_images`, which returns an :class:`ImageDataset` of
``float32`` images ``(N, C, H, W)`` in ``[-1, 1]`` with ``int64`` labels. :func:`read_idx`
reads the IDX files used by MNIST and Fashion-MNIST.
"""

from dlscience.data.idx import read_idx
from dlscience.data.images import CLASS_NAMES, DATASETS, ImageDataset, load_images

__all__ = ["CLASS_NAMES", "DATASETS", "ImageDataset", "load_images", "read_idx"]
