"""Any model wherever a model is accepted: file.py:factory and .onnx models in campaigns
and explorations, ImageNet-size zoo models through every command without a traceback,
plans that still run when copied elsewhere, forced splits, and bad counts refused."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from .conftest import REPO, run_cli, succeeded

NETS = "from shardguard.zoo import load_model\n\n\ndef make():\n" \
       "    return load_model('lenet5').module  # trained weights\n"
THREATS = "threats:\n  - {id: L1, target: links, ber: 1.0e-3, bits: exponent-high}\n"
SMALL_EXPLORE = ["-n", "20", "--budget", "4", "--strategies", "pipeline", "--max-devices", "2",
                 "--protections", "none", "--copies", "1", "--guards", "off"]


@pytest.fixture(scope="module")
def onnx_lenet5(tmp_path_factory):
    """The zoo's trained lenet5 exported by the legacy (TorchScript) exporter."""
    import torch

    from shardguard.zoo import load_model

    path = tmp_path_factory.mktemp("onnx") / "lenet5.onnx"
    torch.onnx.export(load_model("lenet5").module, torch.zeros(1, 1, 28, 28), str(path),
                      dynamo=False)
    return path


@pytest.mark.parametrize("kind", ["factory", "onnx"])
def test_campaign_and_explore_run_a_model_file(tmp_path, kind, onnx_lenet5):
    if kind == "factory":
        (tmp_path / "nets.py").write_text(NETS)
        model = "nets.py:make"
    else:
        shutil.copy(onnx_lenet5, tmp_path / "lenet5.onnx")
        model = "lenet5.onnx"
    spec = tmp_path / "campaign.yaml"  # the model's path is relative to the spec
    spec.write_text(yaml.safe_dump({
        "model": model, "input_shape": [1, 28, 28], "platform": "rpi4x4-ethernet",
        "strategies": ["pipeline"], "samples": 100, "processes": 1,
        "threats": [{"id": "L1", "target": "every", "ber": 1e-3, "bits": "exponent-high"},
                    {"id": "D1", "target": "devices"}]}))
    elsewhere = tmp_path / "run-from-here"
    elsewhere.mkdir()
    campaign = run_cli("campaign", str(spec), "-o", "out", cwd=elsewhere)
    succeeded(campaign, "campaign")
    rows = [json.loads(line) for line in
            (elsewhere / "out" / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["measure"] == "accuracy" for r in rows)
    assert rows[0]["clean_accuracy"] > 0.85  # lenet5's trained weights, on real images
    (tmp_path / "threats.yaml").write_text(THREATS)
    explore = run_cli("explore", model, "--input-shape", "1,28,28", "-p", "rpi4x4-ethernet",
                      "-t", "threats.yaml", "-o", "explore", *SMALL_EXPLORE, cwd=tmp_path)
    succeeded(explore, "explore")
    assert "recommended ★" in explore.out and "Fashion-MNIST test split" in explore.out
    plan = tmp_path / "explore" / "plans" / "recommended.yaml"
    assert run_cli("check", str(plan), "-n", "50").code == 0  # its paths resolve from there


def test_a_model_file_without_an_input_shape_is_refused_in_one_line(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "threats.yaml").write_text(THREATS)
    result = run_cli("explore", "nets.py:make", "-p", "rpi4x4-ethernet", "-t", "threats.yaml",
                     *SMALL_EXPLORE, cwd=tmp_path)
    assert result.code == 1 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "input_shape" in lines[0]


# Each model's eval, resnet18's plan → check → run → analyze, and its campaign and
# exploration are separate tests, so that parallel workers share them (they were one test,
# the second longest of the suite).
@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "resnet50", "vgg16", "mobilenetv2"])
def test_imagenet_size_models_evaluate_without_a_traceback(model):
    result = run_cli("eval", model, "-n", "2")
    succeeded(result, f"eval {model}")
    assert "on 2 images" in result.out and "224×224" in result.out


@pytest.mark.slow
def test_imagenet_size_models_go_through_every_command_without_a_traceback(tmp_path):
    plan = tmp_path / "plan.yaml"
    succeeded(run_cli("plan", "resnet18", "-p", "rpi4x4-ethernet", "--stages", "2", "-o",
                   str(plan)), "plan")
    succeeded(run_cli("check", str(plan), "-n", "2"), "check")
    succeeded(run_cli("run", str(plan), "--spawn-local", "-n", "2", "--check"), "run")
    analysis = run_cli("analyze", str(plan), "-n", "2", "-o", str(tmp_path / "analysis"),
                       "--eavesdrop-epochs", "2")
    succeeded(analysis, "analyze")
    assert "criticality" in analysis.out


@pytest.mark.slow
def test_imagenet_size_models_go_through_campaign_and_explore_without_a_traceback(tmp_path):
    spec = tmp_path / "campaign.yaml"
    spec.write_text("model: resnet18\nplatform: rpi4x4-ethernet\nsamples: 2\nthreats:\n"
                    "  - {id: D1, target: devices}\n")
    succeeded(run_cli("campaign", str(spec), "-o", str(tmp_path / "campaign")), "campaign")
    (tmp_path / "threats.yaml").write_text(THREATS)
    explore = run_cli("explore", "resnet18", "-p", "rpi4x4-ethernet", "-t",
                      str(tmp_path / "threats.yaml"), "-o", str(tmp_path / "explore"),
                      *SMALL_EXPLORE[:1], "10", *SMALL_EXPLORE[2:])
    succeeded(explore, "explore")


def test_a_plan_copied_to_another_directory_still_runs(tmp_path):
    source = tmp_path / "made-here"
    source.mkdir()
    (source / "nets.py").write_text(NETS)
    shutil.copy(REPO / "examples" / "platform-custom.yaml", source / "boards.yaml")
    made = run_cli("plan", f"{source / 'nets.py'}:make", "--input-shape", "1,28,28",
                   "-p", str(source / "boards.yaml"), "--stages", "2",
                   "-o", str(source / "plan.yaml"))
    succeeded(made, "plan")
    text = (source / "plan.yaml").read_text()
    assert "ref: nets.py:make" in text and "platform: boards.yaml" in text  # plan-relative
    copied = tmp_path / "on-the-coordinator"
    shutil.copytree(source, copied)
    shutil.rmtree(source)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    succeeded(run_cli("check", str(copied / "plan.yaml"), "-n", "100", cwd=elsewhere), "check")
    ran = run_cli("run", str(copied / "plan.yaml"), "--spawn-local", "-n", "40", "--check",
                  cwd=elsewhere)
    succeeded(ran, "run")
    assert "40/40 requests answered" in ran.out


def test_plan_stages_and_devices_force_a_split(tmp_path):
    def stages(*args):
        out = tmp_path / "p.yaml"
        result = run_cli("plan", "lenet5", "-p", "rpi4x4-ethernet", "-o", str(out),
                         "--force", *args)
        assert result.code == 0, result.err
        plan = yaml.safe_load(out.read_text())
        return [st for seg in plan["segments"] for st in seg["stages"]]

    assert len(stages()) == 1  # lenet5 is small enough that one device is fastest
    assert len(stages("--stages", "3")) == 3
    assert len({st["device"] for st in stages("--stages", "3")}) == 3
    tiled = stages("--strategy", "spatial", "--devices", "2")
    assert sum(1 for st in tiled if "rows" in st) == 2


@pytest.mark.parametrize("args, message", [
    (["eval", "lenet5", "-n", "-5"], "-n -5: must be at least 1"),
    (["eval", "lenet5", "-n", "0"], "-n 0: must be at least 1"),
    (["train", "lenet5", "--epochs", "0", "-o", "x.pt"], "--epochs 0: must be at least 1"),
    (["check", str(REPO / "examples" / "plan-resnet-small.yaml"), "-n", "0"],
     "-n 0: must be at least 1"),
    (["analyze", str(REPO / "examples" / "plan-resnet-small.yaml"), "-n", "-1"],
     "-n -1: must be at least 1"),
    (["plan", "lenet5", "-p", "rpi4x4-ethernet", "--stages", "0", "-o", "x.yaml"],
     "--stages 0: must be at least 1"),
    (["plan", "lenet5", "-p", "rpi4x4-ethernet", "--stages", "5", "-o", "x.yaml"],
     "5 devices: platform rpi4x4-ethernet has 4"),
])
def test_bad_counts_are_refused_in_one_line(args, message, tmp_path):
    result = run_cli(*args, cwd=tmp_path)
    assert result.code == 1 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
