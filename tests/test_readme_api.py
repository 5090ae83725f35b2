"""The README's Python API section, run as a user runs it: a script in a fresh process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.timeout(600)


def _api_block() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the README's Python API section has a python block"
    return found.group(1)


def test_the_readme_python_api_runs_as_written(tmp_path):
    script = _api_block()
    assert "sg.make_plan(" not in script and "ModelRef" not in script  # the short path only
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=580)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.splitlines()
    assert any(line.endswith("images/s") and line.startswith("100 answered") for line in out)
    assert any(line.startswith("recommended: ") for line in out)
    candidates = [int(line.split()[0]) for line in out if line.endswith(" candidates")]
    assert candidates and candidates[0] >= 1
    assert (tmp_path / "plan.yaml").is_file() and (tmp_path / "out" / "explore").is_dir()


def test_the_top_level_names_resolve_and_plan_takes_a_loaded_model_or_a_name():
    import shardguard as sg

    for name in sg.__all__:
        assert getattr(sg, name) is not None, name
    by_name = sg.plan("lenet5", "rpi4x4-ethernet")
    loaded = sg.plan(sg.load_model("lenet5"), sg.load_platform("rpi4x4-ethernet"))
    assert by_name.plan.model == loaded.plan.model
    assert by_name.plan.model.weights is None  # the shipped checkpoint, not a path to it
    assert by_name.cost.latency_s == loaded.cost.latency_s
