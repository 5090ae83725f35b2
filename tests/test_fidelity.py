"""Measured against predicted (issue 16, points 2 and 3): the host profile calibrated on
this machine, ``run`` reporting measurement beside prediction, and a prediction on the
calibrated host within a loose factor of what the workers do.

The calibration goes to a file of the test's own (``SHARDGUARD_CALIBRATION``), never to
the user's cache.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_cli, succeeded

#: loose enough not to flake on a loaded 2-core machine, tight enough to catch a model
#: off by an order of magnitude (before calibration, LeNet-5's stream here was predicted
#: about 7 times faster than it ran)
FACTOR = 4.0
HOST2 = ("name: host2\nmedium: {bandwidth_bps: 1.0e+10, latency_s: 0.0, tx_j_per_byte: 0.0, "
         "rx_j_per_byte: 0.0}\ndevices:\n  - {name: w1, profile: host}\n"
         "  - {name: w2, profile: host}\n")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This machine calibrated into a file of the module's own, in use while it runs."""
    from shardguard.platform.host import CALIBRATION_ENV, host_profile
    from shardguard.runtime.calibrate import calibrate

    path = tmp_path_factory.mktemp("calibration") / "host.json"
    old = os.environ.get(CALIBRATION_ENV)
    os.environ[CALIBRATION_ENV] = str(path)
    host_profile.cache_clear()
    calibrate()
    yield path
    if old is None:
        del os.environ[CALIBRATION_ENV]
    else:
        os.environ[CALIBRATION_ENV] = old
    host_profile.cache_clear()


def test_compute_and_sealing_calibration_gives_sane_positive_figures() -> None:
    from shardguard.platform.host import clock_hz
    from shardguard.protections import available
    from shardguard.runtime.calibrate import measure_compute, measure_seals

    stage_s, rates = measure_compute()
    assert 0 < stage_s < 0.01  # one onnxruntime run of a trivial model
    assert set(rates) == {"conv", "depthwise", "linear"}
    assert all(1e7 < r < 1e13 for r in rates.values()), rates  # MAC/s of one core
    cpb, fixed = measure_seals(clock_hz()[0])
    assert set(cpb) == {name.split(":", 1)[1] for name in available()}
    fast = {a: v for a, v in cpb.items() if a != "ascon-128"}  # Ascon is pure Python
    assert all(0 < v < 200 for v in fast.values()), cpb  # cycles per byte
    assert cpb["aes-128-gcm"] < cpb["hmac-sha256"] * 10  # both are library code
    assert all(0 <= v < 0.01 for v in fixed.values()), fixed


def test_the_calibration_is_cached_with_its_machine_and_the_host_profile_uses_it(
        calibrated: Path) -> None:
    from shardguard.platform import load_platform
    from shardguard.platform.host import machine

    saved = json.loads(calibrated.read_text())
    assert saved["machine"] == machine() and saved["machine"]["cores"] >= 1
    figures = saved["figures"]
    for name in ("stage_s", "message_s", "coordinator_s"):
        assert 0 < figures[name]["value"] < 0.05, (name, figures[name])
    assert figures["hop_s"]["value"] >= 0
    assert 0 < figures["core_share"]["value"] <= 1  # of a core, other processes' load left
    device = load_platform("localhost").devices["w1"]
    assert device.message_s == figures["message_s"]["value"]
    assert device.rate_for("depthwise") == pytest.approx(figures["mac_rates"]["depthwise"]["value"])
    assert str(calibrated) in device.sources["message_s"]
    saved["machine"]["cpu"] = "another machine"  # not this machine's: not used
    calibrated.write_text(json.dumps(saved))
    from shardguard.platform.host import cached_calibration

    assert cached_calibration() is None
    calibrated.write_text(json.dumps({**saved, "machine": machine()}))


def _stream(bound, window: int, n: int):  # type: ignore[no-untyped-def]
    from shardguard.runtime.cluster import Cluster

    x = np.random.default_rng(0).random((n, *bound.graph.input_shape), np.float32)
    with Cluster(bound, spawn_local=True, window=window) as c:
        c.stream(x[:10], show_progress=False)  # warm up
        return c.stream(x, show_progress=False)


def test_the_prediction_on_the_calibrated_host_is_within_a_loose_factor_of_the_run(
        calibrated: Path, tmp_path: Path) -> None:
    import shardguard as sg
    from shardguard.partition import bind
    from shardguard.runtime.fidelity import estimate_run, predicted

    platform = tmp_path / "host2.yaml"
    platform.write_text(HOST2)
    sg.plan("lenet5", str(platform), devices=2).plan.save(tmp_path / "plan.yaml")
    bound = bind(tmp_path / "plan.yaml")
    one, many = _stream(bound, 1, 100), _stream(bound, 32, 400)
    cost = estimate_run(bound)  # on this machine as loaded as the calibration found it
    latency = float(np.median(one.latency_s)) / predicted(cost, 1)["latency_s"]
    throughput = many.throughput / predicted(cost, 32, images=400)["throughput"]
    assert 1 / FACTOR < latency < FACTOR, f"latency measured / predicted {latency:.2f}"
    assert 1 / FACTOR < throughput < FACTOR, f"throughput measured / predicted {throughput:.2f}"


def test_run_json_reports_measured_and_predicted_latency_throughput_and_busy_per_device(
        tmp_path: Path) -> None:
    """A fresh process, on a host platform with no calibration yet: it calibrates first."""
    platform = tmp_path / "host2.yaml"
    platform.write_text(HOST2)
    env = {"SHARDGUARD_CALIBRATION": str(tmp_path / "cal.json"), "OMP_NUM_THREADS": "1"}
    succeeded(run_cli("plan", "lenet5", "-p", str(platform), "--devices", "2", "-o",
                      str(tmp_path / "plan.yaml"), env=env), "plan")
    report = tmp_path / "run.json"
    result = succeeded(run_cli("run", str(tmp_path / "plan.yaml"), "--spawn-local", "-n", "200",
                               "--json", str(report), env=env), "run")
    assert "calibrated this machine for the host profile" in result.out
    assert "measured vs predicted" in result.out and "w2 busy" in result.out
    fid = json.loads(report.read_text())
    for side in ("measured", "predicted"):
        assert fid[side]["latency_s"] > 0 and fid[side]["throughput"] > 0, side
        assert set(fid[side]["busy_s"]) == {"w1", "w2"}, side
        assert all(v > 0 for v in fid[side]["busy_s"].values()), side
    assert all(math.isfinite(v) and v > 0 for v in fid["ratio"]["busy_s"].values())
    assert fid["window"] == 32 and fid["images"] == 200
    assert {"message_s", "stage_s", "mac_rate"} <= set(fid["calibrated"]["w1"])
    assert (tmp_path / "cal.json").is_file()
