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
    # killed while writing the fourth row: the cut line is dropped and its trial runs again
    (tmp_path / "results.jsonl").write_text("\n".join(journal[:3]) + "\n" + journal[3][:40])
    resumed = run_campaign(spec, tmp_path)
    assert sorted(r["trial"] for r in resumed) == sorted(r["trial"] for r in rows)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) and all(json.loads(line) for line in lines)
    fewer = CampaignSpec.model_validate({**SPEC, "threats": SPEC["threats"][1:]})
    only_d1 = run_campaign(fewer, tmp_path)  # the same directory: its own trials, no others
    assert {r["threat"] for r in only_d1} == {"D1"} and len(only_d1) == len(devices) * 2


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


def test_defences_are_a_campaign_dimension_with_detection_false_positives_and_energy(tmp_path):
    spec = CampaignSpec(
        model="resnet-small", platform="rpi4x4-ethernet", strategies=["pipeline"],
        samples=300, processes=1,
        threats=[{"id": "L4", "target": "every"}, {"id": "D4", "target": "pi1"},
                 # 1e-3: harmful in every draw (at 1e-4 it depends on the draw: 0.95 or 0.007)
                 {"id": "D5", "target": "pi1", "ber": 1e-3, "bits": "exponent-high"}],
        defences=["none", "seal:aead:chacha20-poly1305", "vote:3", "freivalds", "digest"])
    rows = {(r["threat"], r["defence"]): r for r in run_campaign(spec, tmp_path)}
    assert ("D5", "vote:3") not in rows and ("D5", "freivalds") not in rows  # not meaningful
    clean = rows[("L4", "none")]["clean_accuracy"]
    for threat in ("L4", "D4", "D5"):
        assert rows[(threat, "none")]["accuracy"] < clean - 0.3  # each attack does harm
    seal, vote = rows[("L4", "seal:aead:chacha20-poly1305")], rows[("D4", "vote:3")]
    # every replay is caught; an attacker replaying every message replays the re-sent ones
    # too, so after the runtime's attempts the requests fail, as they do on real workers
    assert seal["detection_rate"] == 1.0 and seal["availability"] < 0.05
    assert rows[("D4", "seal:aead:chacha20-poly1305")]["detection_rate"] == 0.0  # own sender
    assert vote["detection_rate"] == 1.0 and vote["accuracy"] == clean  # masked by two copies
    assert rows[("D4", "freivalds")]["detection_rate"] == 1.0
    assert rows[("D4", "freivalds")]["availability"] == 0.0  # caught, so not answered
    assert rows[("D5", "digest")]["detection_rate"] == 1.0
    assert rows[("D5", "digest")]["accuracy"] == clean  # reloaded from trusted weights
    for r in rows.values():
        if r["defence"] != "none":
            assert r["false_positive_rate"] == 0.0
    energy = json.loads(seal["defence_energy_j"])
    assert set(energy) == {"pi1", "pi2", "pi3", "pi4"} and all(j > 0 for j in energy.values())
    assert json.loads(vote["defence_energy_j"]) != energy


@pytest.mark.parametrize("defence, message", [("vote:5", "vote:2 .detect. or vote:3"),
                                              ("seal:aead:rot13", "unknown protection"),
                                              ("moat", "unknown defence 'moat'")])
def test_an_unknown_defence_is_named(tmp_path, defence, message):
    spec = CampaignSpec.model_validate({**SPEC, "defences": ["none", defence]})
    with pytest.raises(ConfigError, match=message):
        run_campaign(spec, tmp_path)


@pytest.mark.timeout(600)
def test_a_ray_backed_campaign_gives_the_same_rows_as_the_local_pool(tmp_path):
    """Against a local Ray instance started for the run (``--ray local``)."""
    spec = CampaignSpec.model_validate({**SPEC, "seeds": [0], "defences": ["none", "guard"]})
    local = run_campaign(spec, tmp_path / "local")
    on_ray = run_campaign(spec, tmp_path / "ray", ray="local")
    assert {r["defence"] for r in local} == {"none", "guard"} and len(local) >= 2 * 6
    same = [json.dumps(sorted(rows, key=lambda r: r["trial"])) for rows in (local, on_ray)]
    assert same[0] == same[1]  # as JSON: a NaN detection rate equals itself there


def test_a_reused_worker_process_starts_each_campaign_afresh(tmp_path):
    """Ray keeps its worker processes between campaigns: a second campaign's set-up must
    not keep the first's images, clean answers or cached false-positive rates."""
    from shardguard.analysis import campaign

    from .conftest import planned, write_plan

    plan = str(write_plan(tmp_path, planned("lenet5", objective="energy")))
    campaign._init({"pipeline": plan}, 20, 1)
    campaign._STATE["fpr"] = {("pipeline", "guard"): 0.5}
    campaign._init({"pipeline": plan}, 30, 1)
    assert len(campaign._STATE["x"]) == 30 and len(campaign._STATE["clean"]["pipeline"]) == 30
    assert "fpr" not in campaign._STATE


def test_the_campaign_eavesdropper_trains_as_analyze_does_unless_given_a_fixed_budget():
    """L6 in a campaign and analyze's eavesdropper share their settings and defaults;
    ``epochs``, as older campaign files write it, is the limit (``max_epochs``)."""
    from shardguard.threats.eavesdrop import EavesdropTraining
    from shardguard.threats.spec import parse_threat

    default = parse_threat({"id": "L6", "target": "s0>s1"})
    analyze = EavesdropTraining()
    assert (default.max_epochs, default.patience, default.min_gain_db, default.holdout,
            default.train_samples) == (analyze.max_epochs, analyze.patience,
                                       analyze.min_gain_db, analyze.holdout, analyze.images)
    assert default.patience is not None  # converging: stopped on a held-out split
    old = parse_threat({"id": "L6", "epochs": 3})
    assert (old.max_epochs, old.patience) == (3, default.patience)
    fixed = parse_threat({"id": "L6", "epochs": 3, "patience": None})
    assert (fixed.max_epochs, fixed.patience) == (3, None)
    with pytest.raises(ConfigError, match="max_epochs or epochs"):
        parse_threat({"id": "L6", "epochs": 3, "max_epochs": 4})


@pytest.mark.slow
def test_a_campaign_eavesdropper_stops_on_its_held_out_split_and_reports_its_epochs(tmp_path):
    """A campaign file, run as a command with its progress shown: each L6 row says how many
    epochs the decoder trained and whether the held-out criterion stopped it; a fixed
    budget (``patience: null``) trains exactly its epochs; each trial has its own bar."""
    from .conftest import run_cli, succeeded

    spec = {**SPEC, "samples": 100, "seeds": [0], "threats": [
        # no epoch gains 100 dB: the first epoch, then one without a gain, and it stops
        {"id": "L6", "target": "links", "train_samples": 200, "max_epochs": 6,
         "patience": 1, "min_gain_db": 100.0},
        {"id": "L6", "target": "links", "train_samples": 200, "epochs": 3, "patience": None},
        {"id": "L6", "target": "links", "train_samples": 200, "epochs": 2}]}  # an old file
    path = tmp_path / "campaign.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    result = succeeded(run_cli("campaign", str(path), "-o", str(tmp_path / "out"),
                               env={"SHARDGUARD_QUIET": "0"}), "campaign")
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    links = {r["target"] for r in rows}
    assert len(links) >= 2 and len(rows) == 3 * len(links)
    for r in rows:
        assert r["psnr_db"] > 0 and 0 < r["ssim"] <= 1
        if "param_min_gain_db" in r:
            assert (r["epochs"], r["converged"]) == (2, True)
        elif "param_patience" in r:
            assert (r["epochs"], r["converged"]) == (3, False)
        else:  # an old `epochs: 2` is a limit under the default patience of 2, which needs
            # 3 epochs to stop early: the limit stops it, not convergence
            assert (r["epochs"], r["converged"]) == (2, False)
    for link in links:  # a bar per trial, from the pool's processes (processes: 2)
        assert f"eavesdropper on {link}" in result.err
    with (tmp_path / "out" / "results.csv").open() as f:
        assert {"epochs", "converged"} <= set(csv.DictReader(f).fieldnames or ())
