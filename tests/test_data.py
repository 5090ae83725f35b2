"""Fashion-MNIST is read from its IDX files, and every kind of bad file is named."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from shardguard.data import DEFAULT_DATA_DIR, load_split, synthetic
from shardguard.data.idx import read_idx
from shardguard.errors import DataError

from .conftest import run_cli


def test_fashion_mnist_has_70000_real_images_in_10_balanced_classes(train_split, test_split):
    assert len(train_split) == 60_000 and len(test_split) == 10_000
    assert train_split.images.shape == (60_000, 28, 28)
    assert np.bincount(test_split.labels).tolist() == [1000] * 10
    assert np.bincount(train_split.labels).tolist() == [6000] * 10
    x, y = test_split.tensors(5)
    assert x.shape == (5, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert 0.2 < float(test_split.tensors()[0].mean()) < 0.4  # real clothes images, not noise


def _copy_dataset(tmp_path: Path) -> Path:
    target = tmp_path / "fmnist"
    shutil.copytree(DEFAULT_DATA_DIR, target)
    return target


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> None:
    header = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(gzip.compress(header + payload))


@pytest.mark.parametrize("damage, message", [
    ("missing", "file not found"),
    ("not-gzip", "not a readable gzip file"),
    ("bad-magic", "bad magic number"),
    ("wrong-count", "holds 9999 items, expected 10000"),
    ("truncated", "bytes after decompression"),
])
def test_a_damaged_file_gets_an_error_naming_it(tmp_path, damage, message):
    root = _copy_dataset(tmp_path)
    labels = root / "t10k-labels-idx1-ubyte.gz"
    if damage == "missing":
        labels.unlink()
    elif damage == "not-gzip":
        labels.write_bytes(b"this is not gzip")
    elif damage == "bad-magic":
        _write_idx(labels, 0x00000903, (10_000,), bytes(10_000))
    elif damage == "wrong-count":
        _write_idx(labels, 0x00000801, (9_999,), bytes(9_999))
    elif damage == "truncated":
        _write_idx(labels, 0x00000801, (10_000,), bytes(5_000))
    load_split.cache_clear()
    with pytest.raises(DataError, match=message) as info:
        load_split("test", root)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


def test_uncompressed_idx_files_are_accepted(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 0x00000801, 3) + bytes([1, 2, 3]))
    assert read_idx(path, ndim=1, count=3).tolist() == [1, 2, 3]


def test_cli_names_a_missing_dataset_in_one_line_without_traceback(tmp_path):
    result = run_cli("eval", "lenet5", "--data", str(tmp_path / "nowhere"))
    assert result.code == 1
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "nowhere" in lines[0] and "not found" in lines[0]


def test_data_directory_comes_from_the_environment(tmp_path):
    result = run_cli("eval", "lenet5", env={"SHARDGUARD_DATA": str(tmp_path / "elsewhere")})
    assert result.code == 1 and "elsewhere" in result.err


def test_synthetic_split_is_seeded():
    a, b = synthetic(32, seed=3), synthetic(32, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
