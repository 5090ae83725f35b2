"""Preprocessing is a documented, deterministic function of the declared spec, and bad
declarations, class lists and arrays are named in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shardguard.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    ClassList,
    Preprocess,
    folder_labels,
    open_data,
    parse_preprocess,
)
from shardguard.errors import ConfigError, DataError


def test_steps_run_in_the_documented_order_with_torchvision_sizes():
    image = np.arange(100 * 50, dtype=np.uint8).reshape(1, 100, 50)  # (B, H, W): tall
    pre = Preprocess(resize=32, crop=[20, 30])
    assert pre.output_shape(100, 50, 1) == (1, 20, 30)
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(image.astype(np.float32) / 255.0)[:, None], size=(64, 32),
        mode="bilinear", align_corners=False, antialias=True)  # shorter side 50 → 32
    top, left = round((64 - 20) / 2), round((32 - 30) / 2)
    assert torch.equal(pre.apply(image), resized[:, :, top:top + 20, left:left + 30])


def test_an_image_already_at_the_target_size_is_not_resampled(test_split):
    x = PRESETS["fashion-mnist"].apply(test_split.images[:50])
    assert torch.equal(x, test_split.tensors(50)[0])  # bit for bit: recorded accuracies hold


def test_fashion_mnist_becomes_imagenet_style_224_rgb_normalised(test_split):
    """What the efficientnet-lite0-fmnist head is trained and evaluated on."""
    pre = Preprocess(resize=[224, 224], channels=3, mean=list(IMAGENET_MEAN),
                     std=list(IMAGENET_STD))
    x = pre.apply(test_split.images[:4])
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    grey = torch.nn.functional.interpolate(test_split.tensors(4)[0], size=(224, 224),
                                           mode="bilinear", antialias=True)
    for c in range(3):  # the one grey channel, replicated, then each channel's statistics
        assert torch.allclose(x[:, c], (grey[:, 0] - IMAGENET_MEAN[c]) / IMAGENET_STD[c],
                              atol=1e-6)


def test_rgb_to_grey_is_pillows_luma():
    rgb = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    grey = Preprocess(channels=1).apply(rgb)[0, 0].numpy() * 255
    pillow = np.asarray(Image.fromarray(rgb[0]).convert("L"), dtype=np.float32)
    assert np.abs(grey - pillow).max() <= 0.51  # Pillow rounds to integers


def test_a_large_dataset_streams_in_batches_at_224(test_split):
    data = open_data(None, input_shape=(3, 224, 224), preprocess="imagenet")
    sizes = [len(b) for b in data.batches(n=600, batch_size=256)]
    assert sizes == [256, 256, 88]
    assert "224×224" in data.describe() and "normalise" in data.describe()


@pytest.mark.parametrize("text, message", [
    ("{std: [0.2, 0.0, 0.3], channels: 3}", "std: every value must be > 0"),
    ("{resize: -3}", "resize"),
    ("{channels: 2}", "channels"),
    ("{mean: [0.5, 0.5], channels: 3}", "mean: give one value or one per channel"),
    ("{size: 3}", "size: unknown field"),
    ("imagenett", "not a preset (imagenet, fashion-mnist)"),
])
def test_a_bad_preprocessing_is_named(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_preprocess(text)


def test_presets_yaml_files_and_inline_mappings_give_the_same_preprocessing(tmp_path):
    path = tmp_path / "pre.yaml"
    path.write_text("resize: 256\ncrop: 224\nchannels: 3\nmean: [0.485, 0.456, 0.406]\n"
                    "std: [0.229, 0.224, 0.225]\n")
    inline = parse_preprocess("{resize: 256, crop: 224, channels: 3, mean: [0.485, 0.456, "
                              "0.406], std: [0.229, 0.224, 0.225]}")
    assert parse_preprocess(str(path)) == inline == PRESETS["imagenet"]


def test_class_lists_and_folder_labels(tmp_path):
    listing = tmp_path / "classes.txt"
    listing.write_text("n02000000 zebra\nn01000000 apple tree\nn03000000 T-shirt/top\n")
    classes = ClassList.from_file(listing)
    assert classes.names == ("zebra", "apple tree", "T-shirt/top")
    assert folder_labels(["n01000000", "n03000000"], classes)[0] == [1, 2]
    assert folder_labels(["apple_tree", "t-shirt_top"], classes)[0] == [1, 2]
    labels, how = folder_labels(["b", "a"], classes)
    assert labels == [0, 1] and "sorted" in how
    with pytest.raises(DataError, match="'n09999999' is not one of the model's 3 WordNet ids"):
        folder_labels(["n01000000", "n09999999"], classes)
    listing.write_text("n02000000 zebra\napple\n")
    with pytest.raises(DataError, match="every line or none"):
        ClassList.from_file(listing)


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.zeros(3, np.int64)}, "no array 'x'"),
    ({"x": np.full((3, 8, 8), 2.0)}, "float images must be finite and in .0, 1."),
    ({"x": np.zeros((3, 8, 8), np.uint8), "y": np.zeros(2, np.int64)}, "y must hold 3"),
    ({"x": np.zeros((3, 8, 8, 4), np.uint8)}, "expected .N, H, W. or .N, H, W, C."),
])
def test_a_bad_npz_is_named(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        open_data(path, input_shape=(1, 8, 8))


def test_a_folder_mixing_images_and_class_folders_is_refused(tmp_path):
    (tmp_path / "cats").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "cats" / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match="both images and subfolders"):
        open_data(tmp_path, input_shape=(1, 8, 8))


def test_images_that_do_not_fit_the_model_are_refused_before_anything_runs(tmp_path):
    np.savez(tmp_path / "small.npz", x=np.zeros((2, 20, 20), np.uint8))
    with pytest.raises(DataError, match="images are 1×20×20 after preprocessing .* the model "
                                        "takes 1×28×28"):
        open_data(tmp_path / "small.npz", input_shape=(1, 28, 28), preprocess="{channels: 1}")
