"""The command line: help with an example everywhere, one clear line on bad input."""

from __future__ import annotations

import pytest

from shardguard import __version__
from shardguard.cli.app import _register, app

from .conftest import run_cli

_register()
COMMANDS = sorted([c.name or c.callback.__name__ for c in app.registered_commands]
                  + [f"{g.name} {c.name or c.callback.__name__}" for g in app.registered_groups
                     for c in g.typer_instance.registered_commands])


def test_version():
    result = run_cli("--version")
    assert result.code == 0 and result.out.strip() == f"shardguard {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = run_cli(*command.split(), "-h")
    assert result.code == 0, result.err
    assert "Example: shardguard " + command in " ".join(result.out.split())


@pytest.mark.parametrize("args, message", [
    (["eval", "no-such-model"], "unknown model 'no-such-model'"),
    (["profile", "lenet5", "--input-shape", "3,28,28"], "input shape (3, 28, 28) does not fit"),
    (["profile", "lenet5", "--input-shape", "a,b"], "expected integers"),
    (["profile", "missing.py:factory", "--input-shape", "1,28,28"], "model file not found"),
    (["plan", "lenet5", "-p", "nowhere.yaml", "-o", "x.yaml"], "no such platform file"),
    (["check", "missing-plan.yaml"], "missing-plan.yaml: file not found"),
    (["run", "missing-plan.yaml"], "give --workers"),
    (["keys", "generate", "k", "--devices", ","], "give at least one device name"),
    (["plan", "lenet5", "-p", "rpi4x4-ethernet", "--protection", "aead:rot13", "-o", "x.yaml"],
     "unknown protection 'aead:rot13'"),
    (["train", "lenet5", "--failout", "0.3", "--strategy", "pipeline", "-o", "x.pt"],
     "this plan splits none"),
    (["train", "lenet5", "--failout", "1.5", "-o", "x.pt"], "failout probability"),
])
def test_bad_input_gets_one_line_and_a_nonzero_exit(args, message):
    result = run_cli(*args)
    assert result.code == 1
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]


def test_debug_shows_the_traceback():
    result = run_cli("--debug", "eval", "no-such-model")
    assert result.code == 1 and "Traceback" in result.err


def test_train_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "lenet5.pt"
    out.write_bytes(b"precious")
    result = run_cli("train", "lenet5", "-o", str(out))
    assert result.code == 1 and "already exists (use --force" in result.err
    assert out.read_bytes() == b"precious"


def test_profile_prints_a_table_and_totals():
    result = run_cli("profile", "resnet18")
    assert result.code == 0, result.err
    assert "total: 1.814 GMACs, 11.690 M params" in result.out


BAD_PLATFORMS = {
    "unknown field": ("name: p\nmedium: ethernet-100m\ndevices:\n"
                      "  - {name: a, profile: raspberry-pi-4, speed: 3}\n",
                      "devices.0.speed: unknown field"),
    "negative bandwidth": ("name: p\nmedium: {bandwidth_bps: -5, latency_s: 0, "
                           "tx_j_per_byte: 0, rx_j_per_byte: 0}\n"
                           "devices:\n  - {name: a, profile: raspberry-pi-4}\n",
                           "medium.bandwidth_bps: Input should be greater than 0"),
    "device without memory": ("name: p\nmedium: ethernet-100m\ndevices:\n"
                              "  - {name: a, mac_rate: 1.0e+9}\n",
                              "devices.0 (a): device has no memory_bytes"),
    "unknown profile": ("name: p\nmedium: ethernet-100m\ndevices:\n"
                        "  - {name: a, profile: raspberry-pi-9}\n",
                        "unknown profile 'raspberry-pi-9'"),
}


@pytest.mark.parametrize("case", sorted(BAD_PLATFORMS))
def test_a_bad_platform_file_is_named_and_nothing_is_written(case, tmp_path):
    text, message = BAD_PLATFORMS[case]
    platform = tmp_path / "platform.yaml"
    platform.write_text(text)
    out = tmp_path / "plan.yaml"
    result = run_cli("plan", "lenet5", "-p", str(platform), "-o", str(out))
    assert result.code == 1 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_an_untraceable_model_is_refused_and_nothing_is_written(tmp_path):
    source = tmp_path / "nets.py"
    source.write_text("import torch\n\nclass Net(torch.nn.Module):\n"
                      "    def forward(self, x):\n"
                      "        return x if x.sum() > 0 else -x\n\n"
                      "def make():\n    return Net()\n")
    out = tmp_path / "plan.yaml"
    result = run_cli("plan", f"{source}:make", "-p", "rpi4x4-ethernet", "--input-shape",
                     "1,4,4", "-o", str(out))
    assert result.code == 1 and "cannot be traced" in result.err and not out.exists()


def test_a_plan_file_with_an_unknown_protection_names_it(tmp_path):
    plan = tmp_path / "p.yaml"
    assert run_cli("plan", "resnet-small", "-p", "rpi4x4-ethernet", "--strategy", "pipeline",
                   "--objective", "throughput",
                   "-o", str(plan)).code == 0
    text = plan.read_text()
    assert "protection: none" in text
    plan.write_text(text.replace("protection: none", "protection: aead:rot13", 1))
    result = run_cli("check", str(plan))
    assert result.code == 1 and "unknown protection 'aead:rot13'" in result.err
    assert len([line for line in result.err.splitlines() if line.strip()]) == 1
