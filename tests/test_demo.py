"""The main job runs end to end and reports what it found."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import run_cli


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 2.5 minutes on a quiet 2-core machine; CI may be busy
def test_demo_runs_end_to_end_and_summarises(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), timeout=1800)
    assert result.code == 0, result.err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    facts = summary["facts"]
    assert facts["test_accuracy"] >= 0.91
    assert facts["stages"] >= 2
    # The platform's total energy counts the boards the plan leaves idle (4 on the platform,
    # one per pipeline stage used).
    assert len(facts["idle_boards"]) == 4 - facts["stages"]
    assert facts["total_energy_j"] > facts["max_device_energy_j"] > 0
    assert facts["check_same_class"] == 10_000
    assert facts["distributed_answered"] == 500  # 2000 images in requests of 4
    assert facts["distributed_same_class"] == 2000
    assert facts["most_critical"].startswith(("device", "link"))
    # The defence step: replays on a link go unnoticed unsealed; sealed, they are caught.
    assert facts["sealed_rejected"] > 0 and facts["sealed_answered"] == 2500
    assert facts["sealed_right"] >= facts["unsealed_right"] + 30
    crypto = facts["crypto_uj_per_device"]
    assert all(v == 0 for v in crypto["none"].values())
    for device, chacha in crypto["aead:chacha20-poly1305"].items():  # Pi 4: no AES instructions
        assert 0 < chacha < crypto["aead:aes-128-gcm"][device]
    assert (out / "plan-sealed.yaml").is_file()
    assert (out / "analysis" / "criticality.png").is_file()
    assert (out / "plan.yaml").is_file() and (out / "plan.png").stat().st_size > 10_000
    assert "ShardGuard demo — summary" in result.out
    # The exploration and the report close the demo.
    assert facts["front_points"] >= 2 and facts["recommended_vulnerability"] < 0.5
    # Every accuracy in the summary carries its 95 % interval (issue 14).
    low, high = facts["recommended_vulnerability_interval"]
    assert low <= facts["recommended_vulnerability"] <= high
    for bits, (low, high) in facts["l1_1e4_accuracy_interval"].items():
        assert low <= facts["l1_1e4_accuracy"][bits] <= high
    lines = "\n".join(summary["lines"])
    assert "seeds pooled, 95% intervals" in lines
    found = re.findall(r"\d% \[(\d+\.\d+)%, (\d+\.\d+)%\]", lines)
    assert len(found) >= 8, lines  # accuracy, workers, 3 in the analysis, 2 defended, explore
    # The defaults are chosen so that every interval is under ±2 points (issue 14).
    widest = max(float(high) - float(low) for low, high in found)
    assert widest < 4.0, lines
    assert (out / "explore" / "plans" / "recommended.yaml").is_file()
    report = out / "report.html"
    assert facts["report"] == str(report) and report.stat().st_size > 100_000
    html = report.read_text()
    assert "Findings" in html and "Security against energy: the Pareto front" in html
    assert html.count("95% interval") >= 3  # analysis ranking, its conditions, the front
    assert f"report     {report}" in result.out
    # Each step's time is recorded (not asserted: a shared machine's times are noise).
    assert set(summary["steps"]) == {"load", "evaluate", "profile", "plan+check", "run",
                                     "analyze", "defend", "explore", "report"}
    assert result.out.rstrip().splitlines()[-1].strip().startswith("times      load ")


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet18"], "resnet18: has no trained weights"),
    (["--model", "efficientnet-lite0"], "classes that are not Fashion-MNIST's"),
    (["--platform", "nosuch"], "nosuch: no such platform"),
])
def test_the_demo_refuses_what_it_cannot_measure_before_it_starts(args, message, tmp_path):
    result = run_cli("demo", *args, "--out", str(tmp_path / "demo"),
                     env={"SHARDGUARD_QUIET": "0"})  # the steps' log shows how far it got
    assert result.code != 0
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]
    assert "[1/9] loading" in result.err and "[2/9]" not in result.err
    assert "Traceback" not in result.err
