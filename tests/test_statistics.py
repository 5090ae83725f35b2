"""Findings a researcher can publish (issue 14, points 2, 3 and 10): NaN answers are no
class, every accuracy carries its 95 % interval, every trial draws from its own stream,
and nothing is silently left out."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from shardguard.analysis.campaign import CampaignSpec, expand
from shardguard.analysis.metrics import measure, wilson
from shardguard.errors import ConfigError

from .conftest import planned, run_cli, succeeded, write_plan

LENET = {"model": "lenet5", "platform": "rpi4x4-ethernet", "strategies": ["pipeline"],
         "objective": "energy", "processes": 1, "seeds": [0]}


def _campaign(tmp_path, spec, *extra):
    path = tmp_path / "campaign.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return run_cli("campaign", str(path), "-o", str(tmp_path / "out"), *extra)


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


# -- point 2: NaN outputs are their own outcome ---------------------------------------------
def test_a_nan_output_is_wrong_and_unscorable_never_class_0():
    from shardguard.analysis.metrics import scored

    output = torch.randn(6, 10)
    output[:3] = float("nan")  # no answer in these
    output[3, 4] = float("inf")
    predicted, scorable = scored(output)
    assert scorable.tolist() == [False, False, False, False, True, True]
    assert (predicted[:4] == -1).all()  # argmax would have said class 0 (or 4)
    labels = torch.zeros(6, dtype=torch.long)
    m = measure(labels, labels.clone(), predicted, torch.ones(6, dtype=torch.bool),
                scorable=scorable)
    assert m.unscorable == pytest.approx(4 / 6)
    assert m.accuracy == pytest.approx(float((predicted[4:] == 0).sum()) / 6)


def test_a_campaign_at_ber_1e_2_no_longer_floors_at_the_class_0_share(tmp_path):
    spec = {**LENET, "samples": 300, "threats": [{"id": "L1", "target": "every", "ber": 3e-2,
                                                  "bits": "all"}]}
    succeeded(_campaign(tmp_path, spec), "campaign")
    (row,) = _rows(tmp_path / "out" / "results.csv")
    from shardguard.data import open_data
    from shardguard.zoo import load_model

    labels = open_data(None, model=load_model("lenet5")).labels(300)
    class_0 = float((labels == 0).double().mean())  # what NaN "predicted" as class 0 scored
    assert float(row["accuracy"]) < class_0 / 2
    assert float(row["unscorable"]) > 0.9  # nearly every output is NaN or infinite
    assert float(row["accuracy"]) <= 1 - float(row["unscorable"])


# -- point 3: intervals ---------------------------------------------------------------------
def test_every_campaign_row_carries_95_percent_intervals(tmp_path):
    spec = {**LENET, "samples": 400, "seeds": [0, 1], "threats": [
        {"id": "L1", "target": "every", "ber": 1e-3, "bits": "exponent-high"}]}
    succeeded(_campaign(tmp_path, spec), "campaign")
    rows = _rows(tmp_path / "out" / "results.csv")
    for r in rows:
        for k in ("clean_accuracy", "accuracy", "accuracy_drop"):
            low, value, high = (float(r[f"{k}_low"]), float(r[k]), float(r[f"{k}_high"]))
            assert low <= value <= high and high - low > 0.01, (k, low, value, high)
        # the bootstrap agrees with the Wilson interval of the same proportion
        w_low, w_high = wilson(round(float(r["accuracy"]) * 400), 400)
        assert float(r["accuracy_high"]) - float(r["accuracy_low"]) == pytest.approx(
            w_high - w_low, rel=0.25)


def test_pooled_seeds_give_the_mean_with_an_interval_no_wider_than_one_seed():
    from shardguard.analysis.metrics import pool

    rng = np.random.default_rng(0)
    labels = torch.zeros(500, dtype=torch.long)
    rows = []
    for _ in range(4):  # four draws: each image is hit with probability 0.3
        hit = torch.from_numpy(rng.random(500) < 0.3)
        rows.append(measure(labels, labels.clone(), hit.long(), torch.ones(500, dtype=bool)).row())
    both = pool(rows)
    assert both["accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in rows]))
    assert both["accuracy_low"] <= both["accuracy"] <= both["accuracy_high"]
    one = rows[0]["accuracy_high"] - rows[0]["accuracy_low"]
    assert both["accuracy_high"] - both["accuracy_low"] < one  # draws average out


# -- point 3: each trial its own stream -----------------------------------------------------
def _flipped(trial) -> set[int]:
    """Which elements of a tensor crossing a link the trial's threat changes, as
    ``campaign.run_trial`` builds it."""
    from types import SimpleNamespace

    from shardguard.analysis.trials import trial_threat
    from shardguard.threats.local import ThreatInterceptor

    value = torch.ones(64, 256)
    link = SimpleNamespace(src="s0", dst="s1")  # all a link threat looks at
    out = ThreatInterceptor(trial_threat(trial)).on_link(link, value, None)
    return set(torch.nonzero((out != value).flatten()).flatten().tolist())


def test_trials_differing_only_in_bit_position_draw_independently_and_reproducibly():
    from shardguard.analysis.trials import stream_seed

    spec = CampaignSpec.model_validate({**LENET, "threats": [
        {"id": "L1", "target": "every", "ber": 1e-3, "bits": [[28], [29]]}]})
    bit28, bit29 = expand(spec, {"pipeline": {"devices": [], "links": []}})
    assert bit28.threat["bits"] == [28] and bit29.threat["bits"] == [29]
    flips28, flips29 = _flipped(bit28), _flipped(bit29)
    assert flips28 and flips29
    assert len(flips28 & flips29) < 0.1 * len(flips28)  # independent, not the same elements
    assert _flipped(bit28) == flips28  # the same trial draws the same again
    assert stream_seed(bit28.threat) != stream_seed({**bit28.threat, "seed": 1})


def test_the_resume_key_of_a_trial_is_unchanged():
    from shardguard.analysis.campaign import Trial  # where it was

    threat = {"id": "L1", "target": "every", "ber": 1e-4, "bits": [28], "seed": 0}
    assert Trial("pipeline", threat, 0).key == "ba724c0166d4209e"  # as on main before
    assert Trial("pipeline", threat, 0, "guard").key == "8dfb07976e8727f4"


# -- point 10: nothing silently left out ----------------------------------------------------
def test_a_threat_that_matches_no_target_is_refused_in_one_line(tmp_path):
    spec = {**LENET, "samples": 50, "threats": [
        {"id": "L1", "target": "every", "ber": 1e-3},
        {"id": "L1", "target": "nowhere>s0", "ber": 1e-3}]}
    result = _campaign(tmp_path, spec)
    assert result.code == 1 and "Traceback" not in result.err
    line = result.err.strip()
    assert "\n" not in line and "threats.1" in line and "'nowhere>s0'" in line
    assert "pipeline plan" in line
    with pytest.raises(ConfigError, match="threats.0: L1 target 'links' matches no link"):
        expand(CampaignSpec.model_validate({**LENET, "threats": [
            {"id": "L1", "target": "links", "ber": 1e-3}]}),
            {"pipeline": {"devices": ["pi1"], "links": []}})


@pytest.mark.slow
def test_the_campaign_report_splits_strategies_and_names_threats(tmp_path):
    spec = {**LENET, "samples": 100, "strategies": ["pipeline", "spatial"], "threats": [
        {"id": "L1", "target": "every", "ber": 1e-3, "bits": "exponent-high"}]}
    succeeded(_campaign(tmp_path, spec), "campaign")
    page = tmp_path / "report.html"
    succeeded(run_cli("report", str(tmp_path / "out"), "-o", str(page)), "report")
    html = page.read_text()
    cells = [c.strip() for c in html.replace("<td", "\n<td").splitlines()
             if c.startswith("<td")]
    named = "L1 on every: ber=0.001, bits=exponent-high"
    assert sum(named in c for c in cells) == 2  # one line per strategy
    assert any(">pipeline<" in c for c in cells) and any(">spatial<" in c for c in cells)
    assert "{&#34;" not in html and '{"ber"' not in html  # no raw dicts


@pytest.mark.slow
def test_analyze_saves_its_plan_platform_and_setup_and_the_report_shows_them(tmp_path):
    plan = write_plan(tmp_path, planned("lenet5", objective="energy"))
    out = tmp_path / "analysis"
    succeeded(run_cli("analyze", str(plan), "-o", str(out), "-n", "100", "--seeds", "2",
                      "--eavesdrop-images", "400", "--eavesdrop-epochs", "2"), "analyze")
    setup = json.loads((out / "analysis.json").read_text())
    assert setup["seeds"] == 2 and setup["platform"] == "rpi4x4-ethernet"
    assert (out / "plan.yaml").read_text() == plan.read_text()
    assert "devices:" in (out / "platform.yaml").read_text()
    for c in _rows(out / "conditions.csv"):
        assert int(c["seeds"]) == (1 if c["threat"] == "D1" else 2) or c["threat"] == "L5"
        assert float(c["accuracy_low"]) <= float(c["accuracy"]) <= float(c["accuracy_high"])
    ranking = json.loads((out / "ranking.json").read_text())
    assert all(not math.isnan(r["accuracy_drop_low"]) for r in ranking)
    page = tmp_path / "report.html"
    succeeded(run_cli("report", str(out), "-o", str(page)), "report")
    html = page.read_text()
    assert "platform.yaml" in html and "Stages: what runs where" in html
    assert "95% interval" in html and "seeds" in html


@pytest.mark.slow
def test_explore_takes_seeds_and_gives_each_front_point_an_interval(tmp_path):
    threats = tmp_path / "threats.yaml"
    threats.write_text("threats:\n  - {id: L1, target: links, ber: 1.0e-3, "
                       "bits: exponent-high}\n")
    result = run_cli("explore", "lenet5", "-p", "rpi4x4-ethernet", "-t", str(threats),
                     "--budget", "12", "--max-devices", "2", "--copies", "1", "--guards", "off",
                     "--protections", "none,mac:blake2b", "-n", "100", "--seeds", "2",
                     "--processes", "1", "-o", str(tmp_path / "out"))
    succeeded(result, "explore")
    assert "95% interval" in result.out
    spec = json.loads((tmp_path / "out" / "spec.json").read_text())
    assert spec["seeds"] == 2
    front = _rows(tmp_path / "out" / "front.csv")
    for r in front:
        low, value, high = (float(r["vulnerability_low"]), float(r["vulnerability"]),
                            float(r["vulnerability_high"]))
        assert low <= value <= high
    assert any(float(r["vulnerability_high"]) - float(r["vulnerability_low"]) > 0.01
               for r in front)  # an unprotected point: bit flips land, and vary


def test_run_counts_an_answer_with_nan_or_infinity_as_wrong_never_as_a_class(capsys):
    """``run``'s accuracy: an infinite logit would win argmax, a NaN row used to be taken for
    an unanswered request and dropped from the count; both are answered and wrong."""
    from shardguard.cli.runtime import _print_answers
    from shardguard.runtime.cluster import StreamResult

    outputs = np.zeros((4, 3), dtype=np.float32)
    outputs[:, 1] = 1.0  # class 1, the label of every image
    outputs[1, 1] = np.inf  # argmax would call it class 1, the right one
    outputs[2, 0] = np.nan  # one NaN: answered, no class
    outputs[3] = np.nan  # never answered
    result = StreamResult(outputs, {3: "lost"}, np.array([.1, .1, .1, np.nan]),
                          np.ones(4), np.array([1, 1, 1, 0]), 1.0, 4)
    ok = _print_answers(result, np.ones(4, dtype=np.int64))
    out = capsys.readouterr().out
    assert ok.tolist() == [True, True, True, False]
    assert "2 answered images have NaN or infinite outputs" in out
    assert "accuracy 33.33% [" in out and "on 3 answered images" in out
