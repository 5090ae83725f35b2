"""Activation guards (M5): clipping to clean ranges recovers what exponent flips cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shardguard import load_platform
from shardguard.defences.catalogue import parse_defence
from shardguard.defences.guards import (
    GUARD_OPS_PER_ELEMENT,
    RangeGuard,
    guarded_elements,
    profile_bounds,
    profile_guards,
)
from shardguard.errors import ConfigError
from shardguard.local import LocalExecutor
from shardguard.partition import bind
from shardguard.threats.local import ThreatInterceptor, weight_flips
from shardguard.threats.spec import parse_threat

from .conftest import PLATFORM, planned


def test_range_guards_recover_the_accuracy_lost_to_exponent_flips(train_split, test_split):
    compiled = planned().compiled
    bounds = profile_bounds(compiled, train_split.tensors(5000)[0])
    x, y = test_split.tensors(2000)
    # guards bound activations between stages: the attacker is on the link between them
    threat = parse_threat({"id": "L1", "target": "s0>s1", "ber": 1e-3, "bits": "exponent-high",
                           "seed": 1})

    def accuracy(*hooks):
        with torch.no_grad():
            return float((LocalExecutor(compiled, list(hooks)).run(x).argmax(1) == y)
                         .float().mean())

    clean = accuracy()
    attacked = accuracy(ThreatInterceptor(threat))
    guard = RangeGuard(bounds)
    guarded = accuracy(ThreatInterceptor(threat), guard)
    # measured here: clean 93.6 %, attacked 25.0 %, guarded 93.7 % (2000 test images)
    assert attacked < clean - 0.5
    recovered = (guarded - attacked) / (clean - attacked)
    assert recovered >= 0.95
    assert float(torch.cat(guard.flagged).float().mean()) > 0.8  # the attack is noticed
    clean_guard = RangeGuard(bounds)
    assert accuracy(clean_guard) >= clean - 0.005  # clipping clean traffic costs nothing
    assert float(torch.cat(clean_guard.flagged).float().mean()) < 0.05  # few false alarms


# -- Ranger: guards on every activation inside the stages ---------------------------------

def _paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences with its 95% t-interval (over seeds)."""
    from scipy import stats

    d = np.asarray(diffs)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def test_ranger_guards_on_activations_reduce_the_damage_of_weight_bit_flips(train_split,
                                                                           test_split):
    """D5 (weight flips) is not touched by link guards; guards on every activation
    (Ranger, Chen et al., DSN 2021) bound what a flipped weight does inside the stage."""
    compiled = planned("lenet5").compiled
    bounds = profile_guards(compiled, train_split.tensors(2000)[0])
    x, y = test_split.tensors(500)

    def lost(defence: str | None, seed: int) -> float:
        threat = parse_threat({"id": "D5", "target": "every", "ber": 1e-4, "bits": "all",
                               "seed": seed})
        hooks = [] if defence is None else parse_defence(defence).hooks(compiled, [],
                                                                          bounds=bounds)
        with torch.no_grad():
            clean = LocalExecutor(compiled, hooks).run(x).argmax(1) == y
            with weight_flips(compiled, threat):
                hit = LocalExecutor(compiled, hooks).run(x).argmax(1) == y
        return float(clean.float().mean() - hit.float().mean())

    seeds = range(12)
    unguarded = [lost(None, s) for s in seeds]
    guarded = [lost("guard:activations", s) for s in seeds]
    mean, low, high = _paired_interval([g - u for g, u in zip(guarded, unguarded)])
    # measured (500 images, seeds 0-11): 0.478 lost unguarded, 0.027 guarded; paired
    # difference -0.452 [-0.627, -0.276]
    assert high < 0, (np.mean(unguarded), np.mean(guarded), mean, low, high)
    assert np.mean(guarded) < 0.5 * np.mean(unguarded)
    guard = parse_defence("guard:activations")
    with torch.no_grad():  # clipping clean activations costs no accuracy
        kept = LocalExecutor(compiled, guard.hooks(compiled, [], bounds=bounds)).run(x)
        plain = LocalExecutor(compiled).run(x)
    assert float((kept.argmax(1) == y).float().mean()) >= float(
        (plain.argmax(1) == y).float().mean()) - 0.005
    # measured: 2% of clean test images have an activation above its training range
    assert float(guard.flagged(len(x)).float().mean()) < 0.1


def test_guards_sit_where_the_catalogue_says_and_are_charged_per_element():
    compiled = planned().compiled  # resnet-small over two or more stages
    platform = load_platform(PLATFORM)
    inside = guarded_elements(compiled, "activations")
    on_links = guarded_elements(compiled, "links")
    assert all(v > 0 for v in inside.values()) and sum(on_links.values()) > 0
    energy = {p: parse_defence(f"guard:{p}").energy_j(compiled, platform)
              for p in ("links", "activations", "both")}
    for device in energy["both"]:
        assert energy["both"][device] == pytest.approx(energy["links"][device]
                                                       + energy["activations"][device])
    stage = compiled.programs[0]
    spec = platform.devices[stage.device]
    assert energy["activations"][stage.device] == pytest.approx(
        spec.active_power_w * GUARD_OPS_PER_ELEMENT * inside[stage.name] / spec.mac_rate)
    assert parse_defence("guard").placement == "both"
    with pytest.raises(ConfigError, match="guard:activations"):
        parse_defence("guard:everywhere")


def test_guards_are_charged_on_voting_copies_but_not_on_standby_replicas():
    """A replica computes only when it votes: a guard on a plan with failover replicas is
    charged on the stages' own devices, and with ``copies`` on that many of each stage's."""
    compiled = planned(replicas=3).compiled  # every stage has two replicas
    platform = load_platform(PLATFORM)
    guard = parse_defence("guard:activations")
    primary = {p.device for p in compiled.programs}
    alone = guard.energy_j(compiled, platform)
    assert {d for d, j in alone.items() if j > 0} == primary
    voting = guard.energy_j(compiled, platform, copies=3)
    assert {d for d, j in voting.items() if j > 0} == {
        d for p in compiled.programs for d in (p.device, *p.replicas[:2])} > primary
    assert sum(voting.values()) == pytest.approx(3 * sum(alone.values()))


def test_a_campaign_run_from_the_cli_compares_guard_placements_under_weight_flips(tmp_path):
    """As a user runs it: ``defences: [none, guard:links, guard:activations]`` in a spec."""
    import csv
    import json

    from .conftest import run_cli, succeeded

    spec = {"model": "lenet5", "platform": PLATFORM, "strategies": ["pipeline"],
            "objective": "energy", "samples": 300, "seeds": [0, 1, 2], "processes": 1,
            "threats": [{"id": "D5", "target": "every", "ber": 1e-4, "bits": "all"}],
            "defences": ["none", "guard:links", "guard:activations"]}
    (tmp_path / "campaign.yaml").write_text(json.dumps(spec))
    succeeded(run_cli("campaign", str(tmp_path / "campaign.yaml"), "-o", str(tmp_path / "out")),
              "campaign")
    with (tmp_path / "out" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    accuracy: dict[str, list[float]] = {}
    energy: dict[str, dict[str, float]] = {}
    for r in rows:
        accuracy.setdefault(r["defence"], []).append(float(r["accuracy"]))
        energy[r["defence"]] = json.loads(r.get("defence_energy_j") or "{}")
    assert set(accuracy) == {"none", "guard:links", "guard:activations"}
    assert np.mean(accuracy["guard:activations"]) > np.mean(accuracy["none"]) + 0.1
    # each row charges what the catalogue prices for its placement on the campaign's plan
    compiled = bind(tmp_path / "out" / "plans" / "pipeline.yaml").compiled
    for placement in ("links", "activations"):
        priced = parse_defence(f"guard:{placement}").energy_j(compiled, load_platform(PLATFORM))
        assert energy[f"guard:{placement}"] == pytest.approx(
            {d: round(j, 9) for d, j in priced.items()}, abs=1e-9)
    assert sum(energy["guard:activations"].values()) > sum(energy["guard:links"].values())
