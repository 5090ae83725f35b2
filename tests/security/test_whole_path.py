"""The coordinator's hops are links like any other: planned, protected, costed, attackable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from shardguard import load_platform
from shardguard.analysis.campaign import plan_targets
from shardguard.local import LocalExecutor
from shardguard.partition.cost import estimate
from shardguard.runtime.cluster import Cluster
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import BitFlips

from ..conftest import PLATFORM, planned, run_cli
from .conftest import wrong
from .tools import Tap

pytestmark = pytest.mark.timeout(300)


def test_plan_protection_seals_the_coordinators_hops_too(tmp_path):
    out = tmp_path / "plan.yaml"
    run = run_cli("plan", "resnet-small", "--platform", PLATFORM, "--protection",
                  "aead:chacha20-poly1305", "-o", str(out))
    assert run.code == 0, run.err
    links = yaml.safe_load(out.read_text())["links"]
    ends = [(lk["src"], lk["dst"]) for lk in links]
    assert ends[0][0] == "input" and ends[-1][1] == "output"
    assert {lk["protection"] for lk in links} == {"aead:chacha20-poly1305"}


def test_sealing_a_coordinators_hop_costs_the_device_at_its_other_end():
    of = planned()
    platform = load_platform(PLATFORM)
    first, last = of.compiled.programs[0].device, of.compiled.programs[-1].device
    plain = estimate(of.compiled, platform)
    for hop, device in (("input", first), ("output", last)):
        plan = of.plan.model_copy(deep=True)
        for link in plan.links:
            link.protection = "aead:aes-128-gcm" if hop in (link.src, link.dst) else "none"
        of.compiled.plan = plan
        try:
            sealed = estimate(of.compiled, platform)
        finally:
            of.compiled.plan = of.plan
        more = {d: sealed.devices[d].crypto_j - plain.devices[d].crypto_j for d in sealed.devices}
        assert more[device] > 0
        assert all(v == 0 for d, v in more.items() if d != device)


def test_link_threats_reach_the_coordinators_hops_in_campaigns_and_the_executor(test_split):
    of = planned()
    assert {"input>s0", "s1>output"} <= set(plan_targets(of.plan)["links"])
    x = test_split.tensors(200)[0]
    with torch.no_grad():
        clean = LocalExecutor(of.compiled)(x)
        for hop, ber in (("input>s0", 1e-2), ("s1>output", 0.1)):  # the logits: 10 floats
            hit = LocalExecutor(of.compiled, [ThreatInterceptor(
                BitFlips(target=hop, ber=ber, bits="exponent-high", seed=1))])(x)
            changed = (hit != clean).any(1).float().mean()  # samples whose answer it altered
            assert changed > 0.1, hop


def test_a_one_device_plan_is_no_longer_immune_to_link_attacks(test_split):
    one = planned("lenet5")
    assert len(one.plan.devices_used()) == 1
    x, y = test_split.tensors(300)
    attack = ThreatInterceptor(BitFlips(target="every", ber=1e-2, bits="exponent-high", seed=2))
    with torch.no_grad():
        clean = float((LocalExecutor(one.compiled)(x).argmax(1) == y).float().mean())
        hit = float((LocalExecutor(one.compiled, [attack])(x).argmax(1) == y).float().mean())
    assert hit < clean - 0.3


@pytest.mark.slow
def test_a_sealed_first_hop_carries_no_image_in_the_clear(plans, images):
    bound = plans["aead:chacha20-poly1305"]
    tap = Tap(keep=100)
    with Cluster(bound, spawn_local=True, taps={"input>s0": [tap]}) as c:
        result = c.stream(images[:50], show_progress=False)
    assert not result.errors and wrong(bound, result, images[:50]) == 0
    seen = b"".join(b"".join(m) for m in tap.samples())
    assert len(tap.samples()) == 50
    for image in images[:50]:  # not one row of any image crosses the wire as it is
        for row in image.reshape(28, 28)[10:18]:
            assert row.astype(np.float32).tobytes() not in seen
