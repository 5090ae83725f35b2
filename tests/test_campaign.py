"""Campaigns: tidy rows, resumable, reproducible, parallel."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest

from shardguard.analysis.campaign import CampaignSpec, run_campaign
from shardguard.errors import ConfigError

SPEC = {
    "model": "lenet5", "platform": "rpi4x4-ethernet", "strategies": ["pipeline"],
    "objective": "energy", "samples": 500, "seeds": [0, 1], "processes": 2,
    "threats": [
        {"id": "L1", "target": "every", "ber": [1e-6, 1e-3], "bits": ["exponent-high", "mantissa"]},
        {"id": "D1", "target": "devices"},
    ],
}


@pytest.mark.slow
def test_a_campaign_writes_one_row_per_trial_and_resumes(tmp_path):
    spec = CampaignSpec.model_validate(SPEC)
    rows = run_campaign(spec, tmp_path)
    devices = json.loads(json.dumps(sorted({r["target"] for r in rows if r["threat"] == "D1"})))
    assert len(rows) == (2 * 2 + len(devices)) * 2
    assert len({r["trial"] for r in rows}) == len(rows)
    with (tmp_path / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert pq.read_table(tmp_path / "results.parquet").num_rows == len(rows)
    for r in rows:
        if r["threat"] == "D1":  # a pipeline without replicas: nothing answers
            assert r["availability"] == 0.0 and r["accuracy"] == 0.0
    journal = (tmp_path / "results.jsonl").read_text().splitlines()
    again = run_campaign(spec, tmp_path)  # resumed: nothing left to run
    assert (tmp_path / "results.jsonl").read_text().splitlines() == journal
    assert sorted(r["trial"] for r in again) == sorted(r["trial"] for r in rows)


@pytest.mark.slow
def test_a_trial_is_reproducible_from_its_row(tmp_path):
    spec = CampaignSpec.model_validate({**SPEC, "processes": 1, "seeds": [3], "threats": [
        {"id": "L1", "target": "every", "ber": 1e-3, "bits": "all"}]})
    first = run_campaign(spec, tmp_path / "a")
    second = run_campaign(spec, tmp_path / "b")
    assert first == second


def test_an_outage_longer_than_the_deadline_loses_the_requests_in_it(tmp_path):
    spec = CampaignSpec.model_validate({**SPEC, "processes": 1, "seeds": [0], "deadline_s": 0.5,
                                        "threats": [{"id": "D2", "target": "devices",
                                                     "seconds": [0.2, 2.0], "start_s": 0.0}]})
    rows = run_campaign(spec, tmp_path)
    short = [r for r in rows if r["param_seconds"] == 0.2]
    long = [r for r in rows if r["param_seconds"] == 2.0]
    assert all(r["availability"] == 1.0 for r in short)  # they wait, within the deadline
    assert all(r["availability"] < 1.0 for r in long)


def test_an_unknown_threat_in_a_campaign_is_refused(tmp_path):
    spec = CampaignSpec.model_validate({**SPEC, "threats": [{"id": "L9", "target": "every"}]})
    with pytest.raises(ConfigError, match="not available in campaigns"):
        run_campaign(spec, tmp_path)
