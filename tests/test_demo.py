"""The main job runs end to end and reports what it found."""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli


@pytest.mark.slow
def test_demo_runs_end_to_end_and_summarises(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out))
    assert result.code == 0, result.err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    facts = summary["facts"]
    assert facts["test_accuracy"] >= 0.91
    assert facts["stages"] >= 2
    assert facts["check_same_class"] == 10_000
    assert facts["distributed_answered"] == 500  # 2000 images in requests of 4
    assert facts["distributed_same_class"] == 2000
    assert facts["most_critical"].startswith(("device", "link"))
    assert (out / "analysis" / "criticality.png").is_file()
    assert (out / "plan.yaml").is_file() and (out / "plan.png").stat().st_size > 10_000
    assert "ShardGuard demo — summary" in result.out
