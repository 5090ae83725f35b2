"""efficientnet-lite0: the real ImageNet checkpoint in the zoo, ``predict`` naming natural
photographs, and the model traced, partitioned and checked on rpi4x4-ethernet.

The photographs are ones packages install: scikit-image's sample images (a dev
dependency; skimage/data/) and matplotlib's (mpl-data/sample_data/grace_hopper.jpg).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import matplotlib
import pytest
import torch
import yaml

from shardguard.errors import IntegrityError
from shardguard.zoo import load_model
from shardguard.zoo.classes import imagenet_classes
from shardguard.zoo.efficientnet import CHECKPOINT, pretrained_lite0, verified

from .conftest import PLATFORM, run_cli

pytestmark = pytest.mark.slow

_skimage = importlib.util.find_spec("skimage")
assert _skimage is not None and _skimage.submodule_search_locations
SKIMAGE = Path(list(_skimage.submodule_search_locations)[0]) / "data"
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"

#: Photograph → the ImageNet classes that name what it shows (ImageNet has no plain
#: "motorcycle" or "rocket"; these are its nearest classes).
PHOTOS = {
    "chelsea.png": set(range(281, 286)),  # a tabby cat: tabby, tiger, Persian, Siamese, Egyptian
    "coffee.png": {967, 968, 504},  # a cup of coffee: espresso, cup, coffee mug
    "motorcycle_left.png": {665, 670},  # moped, motor scooter
    "rocket.jpg": {657, 744, 812},  # missile, projectile, space shuttle
}
MILITARY_UNIFORM = 652


def test_the_checkpoint_is_the_published_imagenet_one():
    path = pretrained_lite0()
    assert path.name == CHECKPOINT
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = load_model("efficientnet-lite0")
    assert loaded.weights == path
    assert sum(p.numel() for p in loaded.module.parameters()) == 4_652_008
    assert state["_fc.weight"].shape == (1000, 1280)


def test_an_altered_checkpoint_is_refused(tmp_path):
    copy = tmp_path / CHECKPOINT
    shutil.copyfile(pretrained_lite0(), copy)
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the published"):
        verified(copy)


def test_predict_names_natural_photographs():
    photos = [SKIMAGE / name for name in PHOTOS] + [GRACE_HOPPER]
    result = run_cli("predict", "efficientnet-lite0", *map(str, photos), "--top", "5", "--json")
    assert result.code == 0, result.err
    answers = {Path(a["image"]).name: a["top"] for a in json.loads(result.out)}
    names = imagenet_classes()
    for name, right in PHOTOS.items():
        top = answers[name]
        assert top[0]["index"] in right, (name, top[0])
        assert len(top) == 5 and [g["p"] for g in top] == sorted((g["p"] for g in top),
                                                                 reverse=True)
        assert all(g["name"] == names[g["index"]].name for g in top)
        assert 0 < sum(g["p"] for g in top) <= 1 + 1e-6
    # Grace Hopper in her US Navy uniform: also gown and mortarboard-like, so top 3
    assert MILITARY_UNIFORM in [g["index"] for g in answers["grace_hopper.jpg"][:3]]


def test_predict_prints_each_image_with_its_classes():
    result = run_cli("predict", "efficientnet-lite0", str(SKIMAGE / "coffee.png"), "-k", "2")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].endswith("coffee.png") and len(lines) == 3
    assert lines[1].startswith("  1. espresso (class 967): 0.")


@pytest.mark.parametrize("args, message", [
    (["efficientnet-lite0", "{text}"], "notes.txt: not a readable image"),
    (["efficientnet-lite0", "{missing}"], "nowhere.png: image not found"),
    (["efficientnet-lite0", "{photo}", "--top", "0"], "--top 0: must be at least 1"),
    (["{user}", "{photo}"], "net.py:make: declares no preprocessing"),
])
def test_predict_refuses_bad_input_in_one_line(args, message, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    (tmp_path / "net.py").write_text(  # a user's model: it declares no preprocessing
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), "
        "nn.LazyLinear(10))\n")
    paths = {"text": text, "missing": tmp_path / "nowhere.png", "photo": SKIMAGE / "coffee.png",
             "user": f"{tmp_path / 'net.py'}:make"}
    result = run_cli("predict", *[a.format(**paths) for a in args])
    assert result.code == 1 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.err


@pytest.mark.parametrize("strategy", ["pipeline", "spatial", "channel"])
def test_efficientnet_plans_under_every_strategy_and_checks(strategy, tmp_path):
    plan = tmp_path / f"{strategy}.yaml"
    made = run_cli("plan", "efficientnet-lite0", "-p", PLATFORM, "--strategy", strategy,
                   "--objective", "throughput" if strategy != "pipeline" else "energy",
                   "-o", str(plan))
    assert made.code == 0, made.err
    segments = yaml.safe_load(plan.read_text())["segments"]
    assert len(segments) >= 2
    if strategy != "pipeline":
        assert strategy in [s["split"] for s in segments]
    checked = run_cli("check", str(plan), "-n", "2")
    assert checked.code == 0, checked.out + checked.err
    assert "plan matches the whole model" in checked.out
