"""Campaigns on an int8 plan: the real quantized stages, their zero points, int8 bit classes."""

from __future__ import annotations

import json

import pytest
import yaml

from .conftest import run_cli, succeeded

SPEC = {
    "model": "lenet5", "platform": "rpi4x4-ethernet", "strategies": ["pipeline"],
    "objective": "energy", "samples": 300, "seeds": [0], "processes": 2,
    "precision": "int8", "defences": ["none", "guard:links", "vote:2"],
    "threats": [
        {"id": "L1", "target": "every", "ber": 1e-3, "bits": "all"},
        {"id": "L1", "target": "every", "ber": 1e-2, "bits": "msb"},
    ],
}


@pytest.mark.slow
def test_a_campaign_on_an_int8_plan_runs_its_quantized_stages_from_the_cli(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(SPEC))
    succeeded(run_cli("campaign", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "out")),
              "campaign")
    rows = [json.loads(line) for line in
            (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert {r["precision"] for r in rows} == {"int8"}
    plan = yaml.safe_load((tmp_path / "out" / "plans" / "pipeline.yaml").read_text())
    assert {st["precision"] for seg in plan["segments"] for st in seg["stages"]} == {"int8"}
    for r in rows:
        if r["defence"] == "guard:links":  # bounds profiled in float, clipped in codes
            assert r["false_positive_rate"] < 0.05, r
        if r["defence"] == "vote:2":  # copies of the quantized stages agree when clean
            assert r["false_positive_rate"] == 0.0, r
    by_bits = {r["param_bits"]: r for r in rows if r["defence"] == "none"}
    # MSB flips of int8 codes at 1% of values hurt more than any bits at 0.1%
    assert by_bits["msb"]["accuracy"] < by_bits["all"]["accuracy"]


def test_a_float32_bit_class_on_an_int8_campaign_is_refused_in_one_line(tmp_path):
    spec = {**SPEC, "threats": [{"id": "L1", "target": "every", "ber": 1e-3,
                                 "bits": "exponent"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli("campaign", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "out"))
    assert result.code != 0 and "Traceback" not in result.err
    assert "the plan is int8" in result.err and "'exponent'" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_check_inside_int8_stages_is_refused_in_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**SPEC, "defences": ["freivalds"]}))
    result = run_cli("campaign", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "out"))
    assert result.code != 0 and "Traceback" not in result.err
    assert "'freivalds'" in result.err and "int8" in result.err
    assert len(result.err.strip().splitlines()) == 1
