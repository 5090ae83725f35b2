"""Datasets through one interface: IDX directories, image folders, ``.npz`` arrays, noise.

    from shardguard.data import open_data
    data = open_data("val/", model=loaded)      # or None: Fashion-MNIST; "x.npz"; "noise"
    print(data.describe())
    x, y = data.images(100), data.labels(100)   # preprocessed as the model declares; y: None
                                                # without labels

Fashion-MNIST's splits as uint8 arrays (training reads these):

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
from .classes import ClassList, folder_labels
from .dataset import Data, Measure, open_data, plan_data
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, PRESETS, Preprocess, parse_preprocess

__all__ = [
    "CLASSES",
    "DEFAULT_DATA_DIR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "ClassList",
    "Data",
    "Measure",
    "Preprocess",
    "Split",
    "data_dir",
    "folder_labels",
    "load_fashion_mnist",
    "load_split",
    "open_data",
    "parse_preprocess",
    "plan_data",
    "synthetic",
]
