"""Voting on an int8 plan in the local executor: the copies are the quantized stages' own
outputs (int8 codes), not the float module fed int8 codes."""

from __future__ import annotations

import pytest
import torch

from shardguard.defences.redundancy import Vote
from shardguard.local import LocalExecutor
from shardguard.threats.local import interceptor
from shardguard.threats.spec import parse_threat

from .conftest import PLATFORM


def _int8_lenet_with_replicas(train_split):
    from shardguard import load_model, load_platform, make_plan, trace
    from shardguard.partition import compile_plan
    from shardguard.partition.build import with_precision
    from shardguard.partition.plan import ModelRef
    from shardguard.runtime.quantize import quantize_plan

    graph = trace(load_model("lenet5").module, (1, 28, 28))
    platform = load_platform(PLATFORM)
    base = make_plan(graph, ModelRef(ref="lenet5", input_shape=[1, 28, 28]), platform,
                     devices=2, replicas=2)
    compiled = compile_plan(with_precision(base, graph, platform, "int8").plan, graph)
    quantize_plan(compiled, train_split.tensors(64)[0])
    return compiled


def test_a_vote_on_int8_stages_passes_clean_traffic_and_flags_a_compromised_copy(
        train_split, test_split):
    compiled = _int8_lenet_with_replicas(train_split)
    x = test_split.tensors(50)[0]
    with torch.no_grad():
        clean = LocalExecutor(compiled).run(x)
        vote = Vote(copies=2)
        voted = LocalExecutor(compiled, [vote]).run_outcome(x)
    assert torch.equal(voted.output, clean) and voted.answered.all()
    assert vote.report()["disagreed"] == 0
    device = compiled.programs[0].device
    threat = parse_threat({"id": "D4", "target": device, "mode": "random"})
    vote = Vote(copies=2)
    with torch.no_grad():
        LocalExecutor(compiled, [interceptor(threat, compiled), vote]).run_outcome(x)
    assert vote.report()["disagreed"] == len(x)  # the compromised copy never agrees


def test_freivalds_inside_an_int8_stage_is_refused_in_one_line(train_split, test_split):
    from shardguard.defences.freivalds import Freivalds
    from shardguard.errors import ConfigError

    compiled = _int8_lenet_with_replicas(train_split)
    with pytest.raises(ConfigError, match="quantized plan"):
        LocalExecutor(compiled, [Freivalds(rounds=1)]).run(test_split.tensors(4)[0])
