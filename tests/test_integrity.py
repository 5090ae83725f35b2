"""Weight integrity (M7): bit flips in stored weights (D5) are detected."""

from __future__ import annotations

import pytest

from shardguard.defences.integrity import digests, verify
from shardguard.errors import IntegrityError
from shardguard.graph import trace
from shardguard.partition import ModelRef, make_plan
from shardguard.platform import load_platform
from shardguard.threats.local import weight_flips
from shardguard.threats.spec import parse_threat
from shardguard.zoo import load_model


def test_weight_flips_on_one_device_are_detected_on_its_stages_only():
    graph = trace(load_model("lenet5").module, (1, 28, 28))
    planned = make_plan(graph, ModelRef(ref="lenet5", input_shape=[1, 28, 28]),
                        load_platform("rpi4x4-ethernet"), strategy="pipeline",
                        objective="energy")
    expected = digests(planned.compiled)
    assert verify(planned.compiled, expected) == []
    device = planned.compiled.programs[0].device
    on_device = {p.name for p in planned.compiled.programs if p.device == device}
    threat = parse_threat({"id": "D5", "target": device, "ber": 1e-3, "bits": "all", "seed": 2})
    with weight_flips(planned.compiled, threat):
        assert set(verify(planned.compiled, expected)) == on_device
        with pytest.raises(IntegrityError, match="weights changed"):
            verify(planned.compiled, expected, strict=True)
    assert verify(planned.compiled, expected) == []  # restored
