"""Issue 14, point 5: where range guards run (none, links, activations inside the stages,
both) is a decision variable of ``explore``: both search encodings reach each placement, a
candidate is attacked with its guards where it places them and pays that placement's
energy, and an int8 stage's activation guards make the candidate infeasible, not a crash."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict

import pytest

from shardguard.analysis import explore
from shardguard.analysis.explore import Candidate, ExploreSpec, Space
from shardguard.defences.catalogue import parse_defence

from .conftest import explore_inputs, explore_refusal, run_cli, succeeded

pytestmark = pytest.mark.timeout(900)

BASE = {"model": "lenet5", "platform": "rpi4x4-ethernet",
        "threats": [{"id": "L1", "target": "links", "ber": 1e-3, "bits": "exponent-high"}]}


def test_both_search_encodings_reach_each_guard_placement_of_the_spec():
    spec = ExploreSpec.model_validate({**BASE, "guards": ["none", "activations"]})
    assert spec.guards == ["none", "activations"]
    space = Space(("pipeline",), ("a", "b"), 2, (1, 2), ("none",), (1,), tuple(spec.guards))
    candidates = space.candidates()  # exhaustive
    assert space.size() == len(candidates)
    assert {c.guard for c in candidates} == {"none", "activations"}
    assert sum(c.guard == "activations" for c in candidates) == len(candidates) // 2
    low, high = space.bounds()  # NSGA-II: the guard variable follows ends and copies
    assert high[-1] == 1
    x = [0, 1, 0, 0, 0, 0, 0, 1]
    assert space.decode(x).guard == "activations" and space.decode(x[:-1] + [0]).guard == "none"
    assert "guard:activations" in space.decode(x).describe()


def test_booleans_still_read_and_keep_the_journal_keys_they_had():
    spec = ExploreSpec.model_validate({**BASE, "guards": [False, True]})
    assert spec.guards == ["none", "links"]
    for old, now in ((False, "none"), (True, "links")):
        c = Candidate("pipeline", ("a", "b"), (1,), ("none",), 1, old)
        assert c.guard == now and Candidate(**{**asdict(c), "guard": now}) == c
        fields = {**asdict(c), "guard": old}
        del fields["precision"]  # as keys were made before guard placements (and precision)
        assert c.key == hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]
    keys = {Candidate("pipeline", ("a", "b"), (1,), ("none",), 1, g).key
            for g in ("none", "links", "activations", "both")}
    assert len(keys) == 4


@pytest.fixture(scope="module")
def state():
    spec = ExploreSpec.model_validate({**BASE, "samples": 200, "seeds": 2,
                                       "guards": ["none", "links", "activations"]})
    explore.init(spec.model_dump_json(), 2)
    return explore._STATE


def _row(state, guard, copies=1, precision=()):
    space = explore.make_space(state["spec"], state["graph"], state["platform"])
    c = space.candidate("pipeline", ("pi1", "pi2"), (space.cut_points[-1],), ("none",),
                        copies, guard, "none", precision)
    return c, explore.evaluate(c)


@pytest.mark.parametrize("copies", [1, 3])
def test_an_activation_guard_candidate_pays_that_defences_energy_and_its_guards_act(
        state, copies):
    c, guarded = _row(state, "activations", copies)
    _, bare = _row(state, "none", copies)
    _, linked = _row(state, "links", copies)
    # energy: exactly guard:activations' energy_j, on every device (the voting copies too)
    compiled = explore.build(c).compiled
    charged = parse_defence("guard:activations").energy_j(compiled, state["platform"],
                                                           copies=copies)
    used = compiled.plan.devices_used()  # pi1, pi2 and, voting, the copies' devices
    assert len(used) == (2 if copies == 1 else 4)
    assert {d for d, j in charged.items() if j > 0} == set(used)
    for device, joules in guarded["energy_per_device_j"].items():
        assert joules == pytest.approx(bare["energy_per_device_j"][device] + charged[device],
                                       rel=1e-12, abs=1e-15)
    assert guarded["total_energy_j"] == pytest.approx(
        bare["total_energy_j"] + sum(charged.values()), rel=1e-12)
    assert guarded["energy_j"] > bare["energy_j"]
    # the attack ran against activation guards: exponent flips on the link lose far less
    # than with no guard, and less than with link guards (the intervals apart, not only
    # the means), with voting copies computing through the guards as well
    assert guarded["vulnerability_high"] < linked["vulnerability_low"]
    assert linked["vulnerability_high"] < bare["vulnerability_low"]
    assert "guard:activations" in guarded["describe"]


def test_activation_guards_in_an_int8_stage_make_the_candidate_infeasible_with_the_reason(
        state):
    _, row = _row(state, "activations", precision=("int8", "fp32"))
    assert row["feasible"] is False and row["energy_j"] == float("inf")
    assert row["why"].startswith("guard:activations clips activations inside the stages; "
                                 "int8 stage s0")


@pytest.mark.slow
def test_cli_explore_searches_guard_placements_and_names_them(tmp_path):
    threats, platform = explore_inputs(tmp_path, "raspberry-pi-4", "raspberry-pi-3b")
    out = tmp_path / "out"
    result = succeeded(run_cli(
        "explore", "lenet5", "-p", str(platform), "-t", str(threats), "--method",
        "exhaustive", "--max-devices", "1", "--protections", "none", "--ends", "none",
        "--copies", "1", "--guards", "none,activations", "--precisions", "fp32,int8",
        "--seeds", "1", "-n", "100", "--processes", "1", "-o", str(out)), "explore")
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(rows) == 8  # 2 devices x 2 precisions x 2 placements, each evaluated
    by = {(r["candidate"]["guard"], bool(r["candidate"]["precision"])): r for r in rows}
    assert all(r["feasible"] for (g, int8), r in by.items() if not (g == "activations" and int8))
    assert not by[("activations", True)]["feasible"]
    assert "int8 stage" in by[("activations", True)]["why"]
    with (out / "front.csv").open() as fh:
        front = list(csv.DictReader(fh))
    assert {r["guards"] for r in front} <= {"", "activations"}
    assert all(("guard:activations" in r["deployment"]) == (r["guards"] == "activations")
               for r in front)
    recommended = json.loads((out / "explore.json").read_text())["recommended"]
    plan_head = (out / "plans" / "recommended.yaml").read_text().splitlines()[0]
    assert plan_head == f"# explored deployment: {recommended['deployment']}"
    assert recommended["deployment"] in result.out


def test_cli_explore_names_a_bad_guard_placement_in_one_line(tmp_path):
    line = explore_refusal(tmp_path, "{id: L1, target: links}", "--guards", "none,edges")
    assert line.startswith("error: explore: guards.1: unknown guard placement 'edges'")
    assert not (tmp_path / "out").exists()


def test_a_voting_guarded_row_journaled_before_placements_is_costed_anew(tmp_path):
    """Before placements a voting copy's guards cost nothing; such a row, resumed, keeps its
    key but is evaluated again (its copies now pay). Rows the change did not touch are
    reused."""
    from shardguard.analysis.backend import Journal
    from shardguard.analysis.search import OBJECTIVES, Evaluations

    voted, single = (Candidate("pipeline", ("a", "b"), (1,), ("none",), k, True)
                     for k in (3, 1))
    journal = Journal(tmp_path / "evaluations.jsonl", "key")
    for c in (voted, single):  # as an older version wrote them: the guard a boolean
        journal.add({"key": c.key, "candidate": {**asdict(c), "guard": True},
                     "describe": "old", **dict.fromkeys(OBJECTIVES, 0.0)})

    class Backend:
        asked: list[Candidate] = []

        def map(self, fn, items):
            self.asked += items
            return [(c, {"key": c.key, "candidate": asdict(c), "describe": c.describe(),
                         **dict.fromkeys(OBJECTIVES, 1.0)}) for c in items]

    class Bar:
        def update(self, *args, **kwargs):
            pass

    backend = Backend()
    rows = Evaluations(Journal(journal.path, "key"), backend, Bar(), 0)([voted, single])
    assert backend.asked == [voted]
    assert rows[0]["energy_j"] == 1.0 and rows[1]["energy_j"] == 0.0


def test_cli_explore_says_what_the_old_guards_both_now_means(tmp_path):
    """``--guards both`` once meant "with and without guards" (the default); it is now one
    placement. An old invocation is told so on stderr, and the spec holds that placement."""
    threats = tmp_path / "threats.yaml"
    threats.write_text("threats:\n  - {id: L1, target: links}\n")
    told = run_cli("explore", "lenet5", "-p", "rpi4x4-ethernet", "-t", str(threats),
                   "--guards", "both", "--copies", "9", "-o", str(tmp_path / "out"))
    assert told.code == 1 and "copies" in told.err  # stopped before any work
    assert "note: --guards both is the placement links and activations" in told.err
    assert "--guards none,links" in told.err
    quiet = run_cli("explore", "lenet5", "-p", "rpi4x4-ethernet", "-t", str(threats),
                    "--guards", "none,both", "--copies", "9", "-o", str(tmp_path / "out"))
    assert quiet.code == 1 and "note:" not in quiet.err
