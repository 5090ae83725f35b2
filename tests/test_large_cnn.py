"""A real 224×224 CNN end to end: ``efficientnet-lite0-fmnist`` (EfficientNet-Lite0's
ImageNet backbone with a Fashion-MNIST head) and the same network exported to ONNX go
through the commands a user runs: the zoo model plan → check → run → analyze → explore,
its ONNX export plan → check (against onnxruntime) → run, planned on a platform whose
memory forces a split.

The counts here are small (2 cores); ``make bench`` runs the same chain on 200 images
and records each step's time (``benchmarks/bench_large.py``).
"""

from __future__ import annotations

import json

import pytest
import yaml

from shardguard.zoo import checkpoints

from .conftest import run_cli, succeeded

pytestmark = pytest.mark.slow

MODEL = "efficientnet-lite0-fmnist"
#: The ONNX export declares nothing: its preprocessing is given as a user would.
ONNX_PREPROCESS = ("{resize: [224, 224], channels: 3, mean: [0.498039], std: [0.501961], "
                   "interpolation: bilinear}")
THREATS = "threats:\n  - {id: L1, target: links, ber: 1.0e-3, bits: exponent-high}\n"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``efficientnet-lite0-fmnist`` exported by today's default (dynamo) exporter."""
    import torch

    from shardguard.zoo import load_model

    path = tmp_path_factory.mktemp("onnx") / "lite0-fmnist.onnx"
    torch.onnx.export(load_model(MODEL).module, (torch.zeros(1, 3, 224, 224),), str(path))
    return path


def test_the_shipped_head_is_small_and_eval_reproduces_its_recorded_accuracy():
    head = checkpoints.shipped(MODEL)
    assert head is not None and head.stat().st_size < 100_000  # the 1280×10 head alone
    meta = json.loads(head.with_suffix(".json").read_text())
    assert meta["backbone"] == "efficientnet-lite0" and meta["dataset"] == "fashion-mnist"
    assert meta["test_accuracy"] > 0.8  # a linear probe of frozen ImageNet features
    result = succeeded(run_cli("eval", MODEL, "-n", "200"), "eval")
    assert "224×224" in result.out
    assert f"test accuracy {meta['accuracy_on_first']['200']:.2%} [" in result.out
    assert "reproduces the recorded accuracy" in result.err


def _plan_check_run(model, given, tmp_path, against):
    plan = tmp_path / "plan.yaml"
    succeeded(run_cli("plan", model, "-p", "rpi4x4-12mb", *given, "-o", str(plan)), "plan")
    segments = yaml.safe_load(plan.read_text())["segments"]
    assert len(segments) >= 2  # 18.6 MB of weights do not fit a 12 MB board
    checked = succeeded(run_cli("check", str(plan), "-n", "2"), "check")
    assert f"plan matches {against}" in checked.out and "on 2/2" in checked.out
    ran = succeeded(run_cli("run", str(plan), "--spawn-local", "-n", "8", "--check"), "run")
    assert "8/8 requests answered" in ran.out
    return plan


@pytest.mark.timeout(1800)
def test_a_224_cnn_goes_through_plan_check_run_analyze_explore(tmp_path):
    plan = _plan_check_run(MODEL, [], tmp_path, "the whole model")
    # 2 images, as for the ImageNet-size models (test_any_model): what is checked is that the
    # analysis runs and says what it measured; each of its 72 trials runs every image
    # through the 224×224 model, so 20 images made this the longest test of the suite
    analysis = succeeded(run_cli("analyze", str(plan), "-n", "2", "-o", str(tmp_path / "a"),
                                 "--eavesdrop-epochs", "2", timeout=1200), "analyze")
    assert "criticality" in analysis.out
    report = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert report["measure"] == "accuracy"  # Fashion-MNIST's labels, through the model's head
    (tmp_path / "threats.yaml").write_text(THREATS)
    explored = succeeded(run_cli(
        "explore", MODEL, "-p", "rpi4x4-ethernet", "-t", str(tmp_path / "threats.yaml"),
        "-o", str(tmp_path / "x"), "-n", "10", "--budget", "3", "--strategies", "pipeline",
        "--max-devices", "2", "--protections", "none", "--copies", "1", "--guards", "off",
        "--processes", "1", timeout=1200), "explore")
    assert "front" in explored.out.lower()


@pytest.mark.timeout(1200)
def test_its_onnx_export_is_planned_checked_against_onnxruntime_and_run(exported, tmp_path):
    _plan_check_run(str(exported), ["--preprocess", ONNX_PREPROCESS], tmp_path,
                    f"onnxruntime running {exported}")


@pytest.mark.parametrize("args, message", [
    (["--failout", "0.3"], "trains its head alone"),
    (["--data", "noise"], "training needs a directory of IDX files"),
])
def test_training_a_head_refuses_what_it_cannot_do_in_one_line(args, message, tmp_path):
    result = run_cli("train", MODEL, *args, "-o", str(tmp_path / "head.pt"))
    assert result.code != 0
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "head.pt").exists()
