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
