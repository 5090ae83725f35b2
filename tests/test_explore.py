"""Design-space exploration: a front of non-dominated deployments, found the same way by
exhaustive search and NSGA-II, resumable, with energy per device that follows protection."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from shardguard.analysis.explore import ExploreSpec
from shardguard.analysis.search import objectives, run_exploration
from shardguard.errors import ConfigError
from shardguard.partition import bind

from .conftest import run_cli

pytestmark = pytest.mark.timeout(900)
#: The tests that read the exhaustive search run on one xdist worker (make test runs
#: ``--dist loadgroup``), which makes it once.
EXHAUSTIVE = pytest.mark.xdist_group("explore-exhaustive")

# Small enough to enumerate (196 candidates), rich enough for a front of several points:
# splitting resnet-small lowers the busiest device's energy but adds latency and a link
# that L1 can attack, unless the link is sealed, which costs energy on both its ends.
SMALL = {"model": "resnet-small", "platform": "rpi4x4-ethernet", "strategies": ["pipeline"],
         "max_devices": 2, "protections": ["none", "aead:chacha20-poly1305"],
         "ends": ["aead:chacha20-poly1305"], "copies": [1],
         "guards": [False], "samples": 100,
         "threats": [{"id": "L1", "target": "links", "ber": 1e-3, "bits": "exponent-high"}]}


@pytest.fixture(scope="module")
def exhaustive(tmp_path_factory):
    out = tmp_path_factory.mktemp("exhaustive")
    return out, run_exploration(ExploreSpec.model_validate(SMALL), out, budget=1000,
                                method="exhaustive", processes=2)


def _points(front):
    return sorted(tuple(round(v, 9) for v in objectives(r)) for r in front)


@EXHAUSTIVE
def test_the_front_is_mutually_non_dominated_and_dominates_every_other_candidate(exhaustive):
    _, result = exhaustive
    assert result.space_size == len(result.rows) == 196  # every candidate, once
    front = np.array([objectives(r) for r in result.front])
    assert len(front) >= 4
    for i, a in enumerate(front):
        for j, b in enumerate(front):
            assert i == j or not (np.all(b <= a) and np.any(b < a)), (i, j)
    for r in result.rows:  # everything off the front is dominated by (or equal to) a point
        f = np.array(objectives(r))
        assert np.any(np.all(front <= f, axis=1)), r["describe"]


@EXHAUSTIVE
def test_nsga2_finds_the_same_front_as_exhaustive_search(exhaustive, tmp_path):
    _, full = exhaustive
    searched = run_exploration(ExploreSpec.model_validate(SMALL), tmp_path, budget=300,
                               method="nsga2", processes=2)
    assert _points(searched.front) == _points(full.front)
    assert len(searched.rows) < len(full.rows)  # it did not simply enumerate the space


@EXHAUSTIVE
def test_energy_per_device_rises_with_the_protection_on_its_links(exhaustive):
    _, result = exhaustive
    for r in result.front:
        sealed_devices = set()
        plan = r["plan"]
        device_of = {s["name"]: s["device"] for seg in plan["segments"] for s in seg["stages"]}
        device_of.update(input="coordinator", output="coordinator")  # not a platform device
        for link, protection in r["links"].items():
            if protection != "none":
                sealed_devices |= {device_of[end] for end in link.split(">")}
        for device, crypto in r["crypto_per_device_j"].items():
            assert (crypto > 0) == (device in sealed_devices), (r["describe"], device)
    # the same partition with every link at each level: sealing costs each end energy
    out, _ = exhaustive
    levels = json.loads((out / "explore.json").read_text())["security_levels"]
    plain, sealed = levels[0]["energy_per_device_j"], levels[1]["energy_per_device_j"]
    assert levels[0]["protection"] == "none" and plain.keys() == sealed.keys()
    assert all(sealed[d] > plain[d] for d in plain)


@EXHAUSTIVE
def test_an_interrupted_exploration_resumes_and_front_plans_are_valid(exhaustive, tmp_path):
    out, full = exhaustive
    journal = (out / "evaluations.jsonl").read_text().splitlines()
    # killed while writing row 101: 100 whole rows and half a line
    (tmp_path / "evaluations.jsonl").write_text("\n".join(journal[:100]) + "\n"
                                                + journal[100][:500])
    resumed = run_exploration(ExploreSpec.model_validate(SMALL), tmp_path, budget=1000,
                              method="exhaustive", processes=1)
    assert resumed.evaluated_now == len(journal) - 100
    assert _points(resumed.front) == _points(full.front)
    again = run_exploration(ExploreSpec.model_validate(SMALL), tmp_path, budget=1000,
                            method="exhaustive", processes=1)  # the same command, once more
    assert again.evaluated_now == 0 and _points(again.front) == _points(full.front)
    with (tmp_path / "front.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(full.front) and sum(r["recommended"] == "True" for r in table) == 1
    for row in table:
        bound = bind(tmp_path / row["plan"])  # each front point is a plan that binds
        assert bound.cost.max_active_j > 0
    for figure in ("front_projections.png", "energy_per_device.png", "security_energy.png"):
        assert (tmp_path / figure).stat().st_size > 10_000
    with pytest.raises(ConfigError, match="holds results made with another samples"):
        run_exploration(ExploreSpec.model_validate({**SMALL, "samples": 50}), tmp_path)


def test_cli_explore_prints_the_front_and_names_bad_input(tmp_path):
    threats = tmp_path / "threats.yaml"
    threats.write_text("threats:\n  - {id: D4, target: devices, mode: random}\n")
    result = run_cli("explore", "lenet5", "-p", "rpi4x4-ethernet", "-t", str(threats),
                     "--budget", "30", "--max-devices", "2", "--copies", "1,3",
                     "--guards", "off", "-n", "100", "-o", str(tmp_path / "out"))
    assert result.code == 0, result.err[-2000:]
    assert "Pareto front" in result.out and "recommended" in result.out
    assert "total energy (mJ)" in result.out  # the platform's, idle boards included
    with (tmp_path / "out" / "front.csv").open() as f:
        assert all(float(r["total_energy_mj"]) > float(r["energy_mj"]) for r in csv.DictReader(f))
    assert (tmp_path / "out" / "plans" / "recommended.yaml").exists()
    bad = run_cli("explore", "lenet5", "-p", "rpi4x4-ethernet", "-t", str(threats),
                  "--protections", "none,rot13", "-o", str(tmp_path / "bad"))
    assert bad.code == 1 and bad.err.strip().startswith("error: protections: unknown 'rot13'")
    threats.write_text("threats:\n  - {id: L6, target: links}\n")
    bad = run_cli("explore", "lenet5", "-p", "rpi4x4-ethernet", "-t", str(threats),
                  "-o", str(tmp_path / "bad2"))
    assert bad.code == 1 and "not available in explorations" in bad.err


@EXHAUSTIVE
def test_a_rerun_with_other_choices_in_the_same_directory_fronts_only_its_own_space(
        exhaustive, tmp_path):
    out, _ = exhaustive
    (tmp_path / "evaluations.jsonl").write_text((out / "evaluations.jsonl").read_text())
    sealed_only = {**SMALL, "protections": ["aead:chacha20-poly1305"]}
    result = run_exploration(ExploreSpec.model_validate(sealed_only), tmp_path, budget=1000,
                             method="exhaustive", processes=1)
    assert result.evaluated_now == 0  # every candidate of this space is in the journal
    assert len(result.rows) == result.space_size < 196
    assert all(set(r["links"].values()) <= {"aead:chacha20-poly1305"} for r in result.rows)


TIGHT = """name: tight
description: four Pi 4s with 200 kB for the model each; lenet5 needs 0.3 MB
medium: ethernet-100m
devices:
""" + "".join(f"  - {{name: {d}, profile: raspberry-pi-4, memory_bytes: 2.0e+5}}\n"
              for d in "abcd")


def test_on_boards_too_small_for_the_model_a_tiny_budget_still_finds_a_fit(tmp_path):
    (tmp_path / "tight.yaml").write_text(TIGHT)
    (tmp_path / "threats.yaml").write_text("threats:\n  - {id: L4, target: links, rate: 0.3}\n")
    result = run_cli("explore", "lenet5", "-p", str(tmp_path / "tight.yaml"), "-t",
                     str(tmp_path / "threats.yaml"), "-n", "10", "--budget", "3",
                     "--strategies", "pipeline", "--max-devices", "4", "--protections", "none",
                     "--copies", "1", "--guards", "off", "-o", str(tmp_path / "out"))
    assert result.code == 0, result.err[-2000:]  # was: no candidate fits the devices' memory
    recommended = bind(tmp_path / "out" / "plans" / "recommended.yaml")
    assert len(recommended.plan.segments) >= 2 and not recommended.cost.overflows()
