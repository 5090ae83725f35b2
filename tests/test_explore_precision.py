"""Issue 15, point 5: precision per stage is a decision variable of ``explore``: the space
encodes and decodes it, int8 candidates cost less energy, and the Pareto front holds both
precisions where both are non-dominated."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest

from shardguard.analysis.explore import Candidate, Space
from shardguard.analysis.search import objectives
from shardguard.partition import bind

from .conftest import explore_inputs, explore_refusal, run_cli, succeeded

SPACE = Space(("pipeline", "spatial"), ("a", "b", "c"), 2, (1, 2), ("none", "mac:blake2b"),
              (1,), (False,), ("none",), ("fp32", "int8"))


def test_the_space_has_a_precision_variable_per_stage_and_decodes_it():
    low, high = SPACE.bounds()
    fp32_only = Space(*[getattr(SPACE, f) for f in ("strategies", "devices", "max_devices",
                                                     "cut_points", "protections", "copies",
                                                     "guards", "ends")])
    assert len(high) == len(fp32_only.bounds()[1]) + SPACE.max_devices  # one per stage slot
    assert high[-SPACE.max_devices:] == [1, 1]
    # pipeline (0), two devices (1), the first ordering, cut 0, link mac, ends, copies,
    # guards, then the stages' precisions: int8 then fp32
    c = SPACE.decode([0, 1, 0, 0, 1, 0, 0, 0, 1, 0])
    assert c.strategy == "pipeline" and len(c.devices) == 2 and c.precision == ("int8", "fp32")
    assert SPACE.decode([0, 1, 0, 0, 1, 0, 0, 0, 0, 0]).precision == ()  # fp32: ()
    candidates = SPACE.candidates()
    assert SPACE.size() == len(candidates) == len({c.key for c in candidates})
    assert {c.precision for c in candidates} == {(), ("int8",), ("int8", "fp32"),
                                                 ("fp32", "int8"), ("int8", "int8")}
    # two devices: 2^2 precisions; the whole model on one of the 3 devices: 2, not 4
    assert SPACE.size() == 4 * fp32_only.size() - 3 * (4 - 2)


def test_fp32_candidates_keep_the_keys_their_journals_were_written_with():
    c = Candidate("pipeline", ("a", "b"), (1,), ("none",), 1, False, "none")
    fields = {**asdict(c), "guard": False}  # journals were written with boolean guards
    del fields["precision"]
    assert c.key == hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]
    assert Candidate("pipeline", ("a", "b"), (1,), ("none",), 1, False, "none",
                     ("int8", "fp32")).key != c.key


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_explore_with_precision_fronts_both_precisions_where_both_are_non_dominated(
        tmp_path):
    # Raspberry Pi 3B boards: their int8 kernels are slower than float (profiles.yaml, from
    # ncnn's Cortex-A53 rows): int8 is not free there, and both precisions reach the front
    threats, platform = explore_inputs(tmp_path, "raspberry-pi-3b", "raspberry-pi-3b")
    out = tmp_path / "out"
    succeeded(run_cli("explore", "lenet5", "-p", str(platform), "-t", str(threats),
                      "--method", "exhaustive", "--budget", "1000", "--strategies",
                      "pipeline", "--max-devices", "2", "--protections", "none", "--ends",
                      "none", "--copies", "1", "--guards", "off", "--precisions",
                      "fp32,int8", "--seeds", "1", "-n", "200", "--processes", "1",
                      "-o", str(out)), "explore")
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    by = {json.dumps({**r["candidate"], "precision": []}): {} for r in rows}
    for r in rows:
        by[json.dumps({**r["candidate"], "precision": []})][
            tuple(r["candidate"]["precision"])] = r
    for variants in by.values():  # the same layout: int8 everywhere loses less to flips
        if () in variants and variants.keys() - {()}:
            everywhere = max(variants, key=lambda p: p.count("int8"))
            assert variants[everywhere]["vulnerability"] < variants[()]["vulnerability"]
    f = np.array([objectives(r) for r in rows])
    non_dominated = [r for r, a in zip(rows, f)
                     if not any(np.all(b <= a) and np.any(b < a) for b in f)]
    with (out / "front.csv").open() as fh:
        front = list(csv.DictReader(fh))
    kinds = {bool(r["candidate"]["precision"]) for r in non_dominated}
    assert kinds == {True, False}  # this scenario has both on the front
    assert len(front) == len({tuple(objectives(r)) for r in non_dominated})
    int8_plans = [bind(out / r["plan"]) for r in front if "int8" in r["deployment"]]
    assert int8_plans and all(any(st.precision == "int8" for st in p.plan.stages)
                              for p in int8_plans)


def test_cli_explore_names_a_float_bit_class_when_int8_is_a_choice(tmp_path):
    line = explore_refusal(tmp_path, "{id: L1, target: links, bits: exponent}",
                           "--precisions", "fp32,int8")
    assert line.startswith("error: threats.0: bit class 'exponent' is for float32")
