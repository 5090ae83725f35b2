"""Every command reads images through one path (IDX, image folder, .npz, or noise when
asked), says which data it used, and scores unlabelled data against the clean model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import run_cli

# A small model whose classes are WordNet ids: its logits are the mean of each colour
# channel, so an image is classed by its dominant colour. Index order (red, green, blue)
# differs from the sorted order of the ids, so only the WordNet-id mapping labels right.
COLOURS = {"n09000001": (0, "red"), "n01000002": (1, "green"), "n05000003": (2, "blue")}
NETS = """
import torch


class MeanColour(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))  # (B, 3): one logit per colour channel


def make():
    return MeanColour()
"""


def _accuracy(out: str) -> str:
    match = re.search(r"test accuracy (\S+% \[\S+%, \S+%\]) on (\d+) images", out)
    assert match, out
    return f"{match.group(1)} on {match.group(2)}"


def test_an_npz_copy_of_the_test_set_gives_exactly_the_idx_accuracy(tmp_path, test_split):
    np.savez(tmp_path / "test.npz", x=test_split.images, y=test_split.labels)
    idx = run_cli("eval", "lenet5")
    npz = run_cli("eval", "lenet5", "--data", str(tmp_path / "test.npz"))
    assert idx.code == 0 and npz.code == 0, npz.err
    assert _accuracy(npz.out) == _accuracy(idx.out)
    assert _accuracy(idx.out).endswith("on 10000")
    assert "Fashion-MNIST test split" in idx.out and "test.npz (28×28 uint8)" in npz.out


def _imagenet_layout(root: Path) -> Path:
    """Two images per class, JPEG and PNG of different sizes, in WordNet-id folders."""
    for wnid, (channel, _) in COLOURS.items():
        (root / wnid).mkdir(parents=True)
        for k, (size, suffix) in enumerate([((40, 50), "JPEG"), ((64, 48), "png")]):
            pixels = np.full((size[1], size[0], 3), 30, np.uint8)
            pixels[..., channel] = 200
            Image.fromarray(pixels).save(root / wnid / f"ILSVRC2012_val_{k:08d}.{suffix}")
    return root


def test_an_imagenet_validation_layout_is_labelled_by_the_models_wordnet_ids(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    classes = tmp_path / "classes.txt"  # in the model's index order: red, green, blue
    classes.write_text("".join(f"{w} {name}\n" for w, (_, name) in
                               sorted(COLOURS.items(), key=lambda item: item[1][0])))
    val = _imagenet_layout(tmp_path / "val")
    model = [f"{tmp_path / 'nets.py'}:make", "--input-shape", "3,32,32",
             "--preprocess", "{resize: 32, crop: 32, channels: 3}", "--data", str(val)]
    right = run_cli("eval", *model, "--classes", str(classes))
    assert right.code == 0, right.err
    assert "WordNet-id subfolders → the model's classes" in right.out
    assert _accuracy(right.out).startswith("100.00% [") and _accuracy(right.out).endswith("on 6")
    unmapped = run_cli("eval", *model)  # no class list: sorted folder order, wrong here
    assert unmapped.code == 0, unmapped.err
    assert "sorted subfolder order" in unmapped.out and "model declares none" in unmapped.out
    assert _accuracy(unmapped.out).startswith("0.00% [")


def test_unlabelled_data_is_scored_against_the_clean_models_answers(tmp_path, test_split):
    np.savez(tmp_path / "photos.npz", x=test_split.images[:200])  # no y
    spec = tmp_path / "campaign.yaml"
    spec.write_text("model: lenet5\nplatform: rpi4x4-ethernet\ndata: photos.npz\n"
                    "strategies: [pipeline]\nsamples: 200\nprocesses: 1\nthreats:\n"
                    "  - {id: L1, target: every, ber: 1.0e-3, bits: exponent-high}\n"
                    "  - {id: L1, target: every, ber: 1.0e-6, bits: mantissa}\n")
    out = tmp_path / "out"
    result = run_cli("campaign", str(spec), "-o", str(out))  # data: relative to the spec
    assert result.code == 0, result.err
    assert "no labels" in result.out and "agreement with the clean model's top-1" in result.out
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["measure"] for r in rows} == {"agreement"}
    assert all(r["clean_accuracy"] == 1.0 and r["samples"] == 200 for r in rows)
    harsh = [r for r in rows if r["param_bits"] == "exponent-high"]
    assert harsh and harsh[0]["accuracy_drop"] > 0.05  # answers changed: silent corruption
    report = run_cli("report", str(out), "-o", str(tmp_path / "report.html"))
    assert report.code == 0, report.err
    html = (tmp_path / "report.html").read_text()
    assert "What is measured: agreement with the clean model" in html
    assert "clean agreement" in html and "clean accuracy" not in html


def test_noise_is_used_only_when_asked_for_and_named_in_the_output(tmp_path):
    plan = tmp_path / "plan.yaml"
    assert run_cli("plan", "mobilenetv2", "-p", "rpi4x4-ethernet", "-o", str(plan)).code == 0
    real = run_cli("check", str(plan), "-n", "2")  # a 3×224×224 model gets real images
    assert real.code == 0, real.err
    assert "Fashion-MNIST test split" in real.out and "NOISE" not in real.out
    noise = run_cli("check", str(plan), "-n", "2", "--data", "noise")
    assert noise.code == 0, noise.err
    assert "data: NOISE: uniform random inputs" in noise.out
    evaluated = run_cli("eval", "lenet5", "--data", "noise", "-n", "10")
    assert evaluated.code == 0 and "NOISE" in evaluated.out and "no accuracy" in evaluated.out


@pytest.mark.parametrize("command", ["eval", "check", "run", "analyze", "campaign",
                                     "explore", "demo"])
def test_every_command_that_takes_images_has_the_data_option(command):
    result = run_cli(command, "-h")
    assert result.code == 0 and "--data" in result.out
