"""A new link defence from one module and one catalogue line: check:crc32, local and on workers.

``defences/crc32.py`` and its line in ``protections.py`` are all it took: plans, the
cost model, the local executor's sealed-link model, and the workers' and the
coordinator's sealing pick it up from the catalogue.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shardguard import bind, load_platform
from shardguard.defences.catalogue import parse_defence
from shardguard.defences.crc32 import tag
from shardguard.errors import ConfigError
from shardguard.local import LocalExecutor
from shardguard.runtime.cluster import Cluster
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import BitFlips

from .conftest import planned, reference, run_cli

pytestmark = pytest.mark.timeout(300)

# Not a sourced figure: no built-in profile prices CRC-32, so this platform gives its own.
PLATFORM = """\
name: rpi4x4-crc32
description: rpi4x4-ethernet with a given CRC-32 cost (1.0 cycle/byte, hypothetical)
medium: ethernet-100m
devices:
""" + "".join(f"  - {{name: pi{i}, profile: raspberry-pi-4, "
              "crypto_cycles_per_byte: {crc32: 1.0}}\n" for i in range(1, 5))


def _bound(tmp_path, replicas=1):
    (tmp_path / "crc.yaml").write_text(PLATFORM)
    platform = str(tmp_path / "crc.yaml")
    plan = planned(replicas=replicas).plan.model_copy(update={"platform": platform})
    plan.with_protection("check:crc32").save(tmp_path / "plan.yaml")
    bound = bind(tmp_path / "plan.yaml")
    assert {link.protection for link in bound.plan.links} == {"check:crc32"}
    return bound


def test_the_tag_changes_with_any_flipped_bit_and_needs_no_key():
    frames = [np.arange(64, dtype=np.float32).tobytes(), b"\x01\x02"]
    clean = tag(b"", b"header", 7, frames)
    assert len(clean) == 4 and tag(b"", b"header", 7, frames) == clean
    for i in range(0, 8 * len(frames[0]), 97):  # a spread of single-bit flips
        flipped = bytearray(frames[0])
        flipped[i // 8] ^= 1 << (i % 8)
        assert tag(b"", b"header", 7, [bytes(flipped), frames[1]]) != clean
    assert tag(b"", b"header", 8, frames) != clean  # bound to the sequence number


def test_locally_the_check_catches_flipped_bits_and_every_answer_that_arrives_is_right(
        tmp_path, test_split):
    bound = _bound(tmp_path)
    x = test_split.tensors(200)[0]
    link = next(f"{t.src}>{t.dst}" for p in bound.compiled.programs for t in p.outputs
                if t.dst != "output")
    # about one sample in four gets a flip on each crossing, its retransmissions too
    flips = ThreatInterceptor(BitFlips(target=link, ber=3e-6, seed=1))
    defence = parse_defence("seal:check:crc32")
    with torch.no_grad():
        attacked = LocalExecutor(bound.compiled, [flips]).run(x)
        flips = ThreatInterceptor(BitFlips(target=link, ber=3e-6, seed=1))
        defended = LocalExecutor(bound.compiled, defence.hooks(bound.compiled, [flips])).run(x)
    clean = reference(bound, x.numpy())
    assert not np.array_equal(attacked.numpy(), clean)  # the flips did change answers
    flagged = defence.flagged(len(x))
    answered = ~torch.isnan(defended).any(1)
    assert flagged.sum() > 0 and answered.sum() > flagged.sum() // 2  # asked again, mostly fine
    assert (flagged | answered).all()  # only a tampered sample can fail
    np.testing.assert_array_equal(defended.numpy()[answered], clean[answered.numpy()])


def test_its_cost_is_what_the_platform_gives_and_a_platform_without_a_figure_is_refused(
        tmp_path):
    bound = _bound(tmp_path)
    energy = parse_defence("seal:check:crc32").energy_j(bound.compiled, bound.platform)
    assert sum(energy.values()) > 0
    builtin = load_platform("rpi4x4-ethernet")
    with pytest.raises(ConfigError, match="no crypto figure for 'crc32'"):
        parse_defence("seal:check:crc32").energy_j(bound.compiled, builtin)


def test_on_workers_clean_traffic_passes_and_a_garbling_sender_is_caught_and_routed_around(
        tmp_path, test_split):
    bound = _bound(tmp_path, replicas=2)
    first = bound.compiled.programs[0]
    x = test_split.tensors(100)[0].numpy()
    with Cluster(bound, spawn_local=True, fault_injection=True, on_reject="failover",
                 deadline_s=5.0) as c:
        clean = c.stream(x, show_progress=False)
        c.behave(first.device, garble_wire=True)  # a bit flips in everything it sends
        garbled = c.stream(x, show_progress=False)
        stats = c.stats()
    assert not clean.errors and not clean.rejected
    np.testing.assert_allclose(clean.outputs, reference(bound, x), rtol=0, atol=1e-5)
    assert not garbled.errors and garbled.rejected
    assert {a["sender"] for a in garbled.rejected} == {first.device}
    np.testing.assert_allclose(garbled.outputs, reference(bound, x), rtol=0, atol=1e-5)
    assert sum(s["rejected"].get("tampered", 0) for s in stats.values()) == len(garbled.rejected)


def test_plan_with_crc32_names_a_missing_figure_in_one_line_and_plans_where_one_is_given(
        tmp_path):
    """As a user plans: a fresh process, from another directory, every strategy."""
    (tmp_path / "crc.yaml").write_text(PLATFORM)
    for strategy in ("pipeline", "spatial", "channel"):
        refused = run_cli("plan", "lenet5", "-p", "rpi4x4-ethernet", "--strategy", strategy,
                          "--protection", "check:crc32", "-o", "p.yaml", cwd=tmp_path)
        lines = [line for line in refused.err.splitlines() if line.strip()]
        assert refused.code == 1 and lines == ["error: device pi1: no crypto figure for 'crc32'"]
    planned_ok = run_cli("plan", "lenet5", "-p", "crc.yaml", "--protection", "check:crc32",
                         "-o", "p.yaml", cwd=tmp_path)
    assert planned_ok.code == 0, planned_ok.err
    assert "check:crc32" in (tmp_path / "p.yaml").read_text()
