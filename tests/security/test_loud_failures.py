"""A run that lost requests says so: the devices that died or were routed around are named,
the command exits non-zero, and the statistics printed are this run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from shardguard.partition import bind
from shardguard.runtime import keys as keyring
from shardguard.runtime.cluster import Cluster

from ..conftest import planned, run_cli, write_plan
from .conftest import wrong

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _workers(tmp_path: Path, devices: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """``shardguard worker`` for each device, as an engineer starts them on boards; their
    logs go to tmp_path/NAME.log."""
    keyring.generate(tmp_path / "keys", devices, force=True)
    procs, addresses = {}, {}
    for d in devices:
        with open(tmp_path / f"{d}.log", "w") as log:
            procs[d] = subprocess.Popen(
                [sys.executable, "-m", "shardguard", "worker", "--bind", "tcp://127.0.0.1:0",
                 "--name", d, "--keys", str(tmp_path / "keys")],
                stdout=subprocess.PIPE, stderr=log, text=True)
        addresses[d] = procs[d].stdout.readline().split()[2]  # type: ignore[union-attr]
    return addresses, procs


def _stop(procs: dict[str, Any]) -> None:
    for proc in procs.values():
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _after_deploy(keys: Path, device: str, address: str, timeout: float = 120.0) -> None:
    """Wait until ``device``'s worker runs a stage: asked over its control port, as the
    coordinator (an authorised key), for its stats."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey = keyring.load_pair(keys, "coordinator")
    sock.curve_serverkey = keyring.load_public(keys, device)
    sock.connect(address)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            sock.send(msgpack.packb({"kind": "stats", "id": 1}))
            if sock.poll(2000):
                stats = msgpack.unpackb(sock.recv(), raw=False)
                if stats.get("stages"):
                    return
            time.sleep(0.02)
        raise AssertionError("the worker was never deployed")
    finally:
        ctx.destroy(linger=0)


def test_run_exits_non_zero_and_names_the_device_when_requests_fail(tmp_path):
    plan = write_plan(tmp_path, planned(), name="plan")
    devices = planned().plan.devices_used()
    addresses, procs = _workers(tmp_path, devices)
    victim = devices[1]
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "shardguard", "run", str(plan), "--keys",
             str(tmp_path / "keys"), "--deadline", "1", "-n", "300", "--workers",
             ",".join(f"{d}={a}" for d, a in addresses.items())],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SHARDGUARD_QUIET": "1"})
        _after_deploy(tmp_path / "keys", victim, addresses[victim])
        os.kill(procs[victim].pid, signal.SIGSTOP)  # it stops answering for good
        out, err = run.communicate(timeout=200)
    finally:
        os.kill(procs[victim].pid, signal.SIGCONT)
        _stop(procs)
    assert run.returncode == 1, (out, err)
    assert f"{victim}: FAILED during the run" in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "requests failed" in last and victim in last


def test_a_run_that_fails_over_answers_everything_and_names_who_it_lost(tmp_path, test_split):
    bound = bind(write_plan(tmp_path, planned(replicas=2)))
    x = test_split.tensors(200)[0].numpy()
    victim = bound.compiled.programs[0].device
    with Cluster(bound, spawn_local=True) as c:
        pid = c.handles[victim].process.pid  # type: ignore[union-attr]
        result = c.stream(x, show_progress=False,
                          on_request=lambda i: i == 50 and os.kill(pid, signal.SIGKILL))
    assert not result.errors and wrong(bound, result, x) == 0
    assert result.failed_devices == [victim]


def test_run_prints_this_runs_statistics_not_the_workers_totals(tmp_path):
    plan = write_plan(tmp_path, planned(), name="plan")
    devices = planned().plan.devices_used()
    addresses, procs = _workers(tmp_path, devices)
    workers = ",".join(f"{d}={a}" for d, a in addresses.items())
    try:
        runs = [run_cli("run", str(plan), "--keys", str(tmp_path / "keys"), "-n", str(n),
                        "--workers", workers) for n in (120, 30)]
    finally:
        _stop(procs)
    for run, n in zip(runs, (120, 30)):
        assert run.code == 0, run.err
        assert f"received input>s0 {n * 28 * 28 * 4 / 1e6:.2f} MB" in run.out
