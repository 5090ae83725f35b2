"""Datasets as tensors: Fashion-MNIST from its IDX files, and synthetic sets for tests.

    from shardguard.data import load_fashion_mnist
    train, test = load_fashion_mnist()          # default: /usr/share/datasets/fashion-mnist
    x, y = test.tensors()                       # x: (10000, 1, 28, 28) float32 in [0, 1]
"""

from ._datasets import (
    CLASSES,
    DEFAULT_DATA_DIR,
    Split,
    data_dir,
    load_fashion_mnist,
    load_split,
    synthetic,
)

__all__ = [
    "CLASSES",
    "DEFAULT_DATA_DIR",
    "Split",
    "data_dir",
    "load_fashion_mnist",
    "load_split",
    "synthetic",
]
