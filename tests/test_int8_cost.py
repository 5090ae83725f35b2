"""Issue 15, points 3 and 4: the cost model knows int8. An int8 stage computes at its
device's int8 MAC rate (each built-in profile has one, with its source), and what leaves it
travels, and is sealed and opened, as 1 byte an element instead of 4."""

from __future__ import annotations

import pytest

from shardguard import trace
from shardguard.partition import ModelRef, compile_plan
from shardguard.partition.build import assemble_plan, whole
from shardguard.partition.cost import estimate
from shardguard.partition.plan import Plan
from shardguard.platform import load_platform
from shardguard.platform._resolve import profiles
from shardguard.zoo import load_model

SEAL = "aead:chacha20-poly1305"


def as_int8(plan: Plan) -> Plan:
    data = plan.model_dump()
    for seg in data["segments"]:
        for st in seg["stages"]:
            st["precision"] = "int8"
    return Plan.model_validate(data)


@pytest.fixture(scope="module")
def pipeline():
    graph = trace(load_model("lenet5").module, (1, 28, 28))
    ref = ModelRef(ref="lenet5", input_shape=[1, 28, 28])
    rpi4 = load_platform("rpi4x4-ethernet")
    n = len(graph.compute_nodes)
    planned = assemble_plan(graph, ref, rpi4, "pipeline", "energy",
                            [whole(graph, 0, n // 2 - 1, "s0", "pi1"),
                             whole(graph, n // 2, n - 1, "s1", "pi2")])
    sealed = planned.plan.with_protection(SEAL)
    return (compile_plan(sealed, graph, build=False),
            compile_plan(as_int8(sealed), graph, build=False), rpi4)


def test_every_builtin_profile_has_an_int8_mac_rate_with_its_source():
    for name, device in profiles().devices.items():
        assert device.int8_mac_rate is not None, name
        assert device.int8_mac_rate.source.startswith(("derived:", "found:", "estimate:")), name
        assert device.int8_mac_rate.value > 0


def test_an_int8_plan_uses_less_energy_per_device_than_the_same_fp32_plan(pipeline):
    fp32, int8, rpi4 = pipeline
    a, b = estimate(fp32, rpi4), estimate(int8, rpi4)
    for name in a.devices:
        assert b.devices[name].active_j < a.devices[name].active_j, name
    assert b.max_active_j < a.max_active_j


def test_int8_stages_compute_at_the_int8_rate(pipeline):
    fp32, int8, rpi4 = pipeline
    a, b = estimate(fp32, rpi4), estimate(int8, rpi4)
    ratio = profiles().devices["raspberry-pi-4"]
    speed = ratio.int8_mac_rate.value / ratio.mac_rate.value  # 1.466, the ncnn resnet18 rows
    for stage, seconds in a.stage_compute_s.items():
        assert b.stage_compute_s[stage] == pytest.approx(seconds / speed)


def test_links_out_of_int8_stages_carry_and_seal_a_quarter_of_the_bytes(pipeline):
    fp32, int8, rpi4 = pipeline
    a, b = estimate(fp32, rpi4), estimate(int8, rpi4)
    by_link = {(t.src, t.dst): t for t in a.transfers}
    for t in b.transfers:
        before = by_link[(t.src, t.dst)].nbytes
        # every stage's output is int8, and the coordinator quantizes the image for an int8
        # first stage (runtime/quantize.py): every hop carries a quarter
        assert t.nbytes == before // 4, (t.src, t.dst)
    pi1 = rpi4.devices["pi1"]
    s0_out = sum(t.nbytes for t in b.transfers if t.src == "s0")
    s0_in = sum(t.nbytes for t in b.transfers if t.dst == "s0")
    crypto = pi1.crypto_seconds("chacha20-poly1305", s0_out) + pi1.crypto_seconds(
        "chacha20-poly1305", s0_in)
    assert b.devices["pi1"].crypto_s == pytest.approx(crypto)
    assert b.devices["pi1"].crypto_s < a.devices["pi1"].crypto_s
