"""Simulation agrees with reality on an int8 plan: the local executor (the quantized stages,
each int8 link tensor's zero point from their codecs) and real workers (the zero point from
the authenticated header) under the same deterministic threat on an int8 link."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shardguard.local import LocalExecutor
from shardguard.partition import bind
from shardguard.runtime.quantize import quantize_plan
from shardguard.runtime.threatened import run_under_threat
from shardguard.threats.local import interceptor
from shardguard.threats.spec import parse_threat

from .conftest import PLATFORM, run_cli, succeeded

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SAMPLES = 300


@pytest.fixture(scope="module")
def bound(tmp_path_factory, train_split):
    path = tmp_path_factory.mktemp("plan") / "lenet5-int8.yaml"
    succeeded(run_cli("plan", "lenet5", "-p", PLATFORM, "--stages", "3", "--precision", "int8",
                      "-o", str(path)), "plan lenet5 int8")
    bound = bind(path)
    quantize_plan(bound.compiled, train_split.tensors(256)[0])
    return bound


@pytest.mark.parametrize("spec", [
    {"id": "L1", "target": "s0>s1", "bits": "msb", "elements": list(range(0, 84, 9))},
    # s1>s2 leaves a ReLU (zero point -128): an erased element reads 0.0 only if it is set
    # to the zero point; the code 0 would read 128 * scale
    {"id": "L3", "target": "s1>s2", "mode": "channels", "channels": list(range(0, 84, 3))},
])
def test_deterministic_threats_on_an_int8_link_give_the_same_predictions_for_real(
        bound, test_split, spec):
    x = test_split.tensors(SAMPLES)[0]
    threat = parse_threat(spec)
    link = [t.id for p in bound.compiled.programs for t in p.inputs
            if f"{t.src}>{t.dst}" == spec["target"]]
    assert link and all(i in bound.compiled.quantized.codecs for i in link)  # int8 on the way
    with torch.no_grad():
        local = LocalExecutor(bound.compiled, [interceptor(threat, bound.compiled)]).run(x)
        clean = LocalExecutor(bound.compiled).run(x).argmax(1).numpy()
    real = run_under_threat(bound, threat, x.numpy())
    assert not real.errors
    assert np.array_equal(real.outputs.argmax(1), local.argmax(1).numpy())
    assert (local.argmax(1).numpy() != clean).any()  # the threat did change something
