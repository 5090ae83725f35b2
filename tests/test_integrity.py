"""Weight integrity (M7): bit flips in stored weights (D5) are detected."""

from __future__ import annotations

import pytest

from shardguard.defences.integrity import digests, verify
from shardguard.errors import IntegrityError
from shardguard.threats.local import weight_flips
from shardguard.threats.spec import parse_threat

from .conftest import planned


def test_weight_flips_on_one_device_are_detected_on_its_stages_only():
    compiled = planned("lenet5", objective="energy").compiled
    expected = digests(compiled)
    assert verify(compiled, expected) == []
    device = compiled.programs[0].device
    on_device = {p.name for p in compiled.programs if p.device == device}
    threat = parse_threat({"id": "D5", "target": device, "ber": 1e-3, "bits": "all", "seed": 2})
    with weight_flips(compiled, threat):
        assert set(verify(compiled, expected)) == on_device
        with pytest.raises(IntegrityError, match="weights changed"):
            verify(compiled, expected, strict=True)
    assert verify(compiled, expected) == []  # restored
