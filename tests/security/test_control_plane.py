"""The control plane cannot hurt a worker's own state: hello and a bad deploy leave the
running deployment serving, artifacts cannot reach outside themselves, fault injection
needs the worker's consent, and the worker says what it refused."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import onnx
import pytest
import zmq
from onnx import TensorProto

from shardguard.errors import TransportError
from shardguard.runtime import keys as keyring
from shardguard.runtime.cluster import Cluster

from ..conftest import eventually
from .conftest import wrong

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _coordinator(c: Cluster, device: str) -> zmq.Socket[Any]:
    """A second control connection to ``device`` with the coordinator's own (authorised) key:
    another coordinator, or a confused one."""
    sock = c.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_publickey, sock.curve_secretkey = keyring.load_pair(c.keys, "coordinator")
    sock.curve_serverkey = keyring.load_public(c.keys, device)
    sock.connect(c.handles[device].control)
    return sock


def _ask(sock: zmq.Socket[Any], message: dict[str, Any]) -> dict[str, Any]:
    sock.send(msgpack.packb({**message, "id": 10**6}, use_bin_type=True))
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if sock.poll(100):
            reply = msgpack.unpackb(sock.recv(), raw=False)
            if reply.get("kind") != "alarm":
                return dict(reply)
    raise AssertionError(f"no reply to {message['kind']}")


def test_a_second_hello_leaves_a_running_sealed_deployment_serving(plans, images):
    bound = plans["aead:chacha20-poly1305"]
    with Cluster(bound, spawn_local=True) as c:
        for device in c.handles:
            assert _ask(_coordinator(c, device), {"kind": "hello"})["ok"]
        result = c.stream(images[:100], show_progress=False)
    assert not result.errors and wrong(bound, result, images[:100]) == 0


@pytest.mark.parametrize("broken", ["no devices", "bad onnx", "unknown protection"])
def test_a_deploy_that_fails_leaves_the_running_deployment_serving(plans, images, broken):
    bound = plans["aead:chacha20-poly1305"]
    with Cluster(bound, spawn_local=True) as c:
        device = c.compiled.programs[1].device
        other = _coordinator(c, device)
        assert _ask(other, {"kind": "hello"})["ok"]
        message: dict[str, Any] = {"kind": "deploy", "stages": [], "sink": "tcp://127.0.0.1:1",
                                   "devices": {device: "tcp://127.0.0.1:2"},
                                   "publics": {device: b"k" * 32, "coordinator": b"k" * 32},
                                   "hosts": {}}
        if broken == "no devices":
            del message["devices"]
        elif broken == "bad onnx":
            import hashlib

            junk = b"not an onnx model"
            port = {"name": "in0", "link": "s0>s1", "tensor": "s0>s1:x", "dtype": "float32",
                    "shape": [4]}
            message["stages"] = [{"stage": "s1", "onnx": junk,
                                  "sha256": hashlib.sha256(junk).hexdigest(),
                                  "inputs": [port], "outputs": [{**port, "link": "s1>output"}]}]
            message["hosts"] = {"s1": [device]}
        else:
            message["protection"] = {"s0>s1": "aead:rot13"}
        reply = _ask(other, message)
        result = c.stream(images[:100], show_progress=False)
    assert not reply["ok"]
    assert {"no devices": "devices", "bad onnx": "onnx",
            "unknown protection": "rot13"}[broken] in reply["error"]
    assert not result.errors and wrong(bound, result, images[:100]) == 0


def _external(model: bytes, tmp_path: Path) -> bytes:
    """``model`` with its first initializer's data moved to a file outside the message."""
    proto = onnx.load_model_from_string(model)
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "secret"
    return proto.SerializeToString()


def test_an_artifact_that_refers_to_data_outside_the_message_is_refused(plans, tmp_path):
    """onnxruntime would read the file from the worker's working directory: a secret."""
    bound = plans["none"]
    device = bound.compiled.programs[0].device
    from ..harness import Harness  # (imported here: the other tests run on any version)

    (tmp_path / "secret").write_bytes(np.ones(10**6, np.float32).tobytes())
    with Harness(tmp_path, bound, device, cwd=tmp_path) as h:  # the secret is in its directory
        message = h.deploy_message()
        stage = message["stages"][0]
        stage["onnx"] = _external(stage["onnx"], tmp_path)
        stage["sha256"] = hashlib.sha256(stage["onnx"]).hexdigest()
        reply = h.call(message)
    assert not reply["ok"]
    assert "refers to external data 'secret'" in reply["error"]


def test_fault_injection_needs_the_workers_consent(plans, images, tmp_path):
    bound = plans["none"]
    first = bound.compiled.programs[0]
    with Cluster(bound, spawn_local=True) as c:  # started as on a real deployment
        with pytest.raises(TransportError, match="fault injection is off"):
            c.behave(first.device, corrupt="zero")
        clean = c.stream(images[:50], show_progress=False)
    assert not clean.errors and wrong(bound, clean, images[:50]) == 0
    with Cluster(bound, spawn_local=True, fault_injection=True) as c:  # a threat experiment
        c.behave(first.device, corrupt="zero")
        lied = c.stream(images[:50], show_progress=False)
    assert wrong(bound, lied, images[:50]) > 40  # it obeyed: its outputs are zeros


def test_the_worker_logs_deployments_refusals_and_rejections_one_line_each(plans, tmp_path):
    from ..harness import Harness

    bound = plans["none"]
    device = bound.compiled.programs[0].device
    with Harness(tmp_path, bound, device) as h:
        h.deploy()
        assert not h.call({"kind": "behave", "corrupt": "zero"})["ok"]
        bad = h.deploy_message()
        bad["protection"] = {"input>s0": "aead:rot13"}
        assert not h.call(bad)["ok"]
        intruder = tmp_path / "intruder"
        keyring.generate(intruder, [device])
        sock = h.ctx.socket(zmq.DEALER)  # an unauthorised coordinator
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_publickey, sock.curve_secretkey = keyring.load_pair(intruder, "coordinator")
        sock.curve_serverkey = keyring.load_public(h.keys, device)
        sock.connect(h.control_address)
        sock.send(msgpack.packb({"kind": "stats", "id": 1}))
        for i in range(50):
            h.send([msgpack.packb({"v": 2, "kind": "data"}), b"x"])
        eventually(h.log, lambda text: "refused a connection" in text  # logged once a second
                   and sum(map(int, re.findall(r"malformed (\d+)", text))) >= 50)
        assert not sock.poll(200)  # never answered
        h.stats()
    log = h.log().splitlines()
    assert sum("deployed s0 of a plan on 2 device(s)" in line for line in log) == 1
    assert sum("refused a behave message" in line for line in log) == 1
    assert sum("refused a deployment" in line and "rot13" in line for line in log) == 1
    assert any("refused a connection" in line and "CurveZMQ" in line for line in log)
    malformed = [int(n) for line in log for n in re.findall(r"malformed (\d+)", line)]
    assert sum(malformed) == 50


def test_the_worker_command_refuses_behave_unless_started_with_the_flag(plans, tmp_path):
    """As an engineer starts workers on boards: ``shardguard worker``, with or without the flag."""
    bound = plans["none"]
    devices = bound.plan.devices_used()
    keyring.generate(tmp_path / "keys", devices)
    for flags, obeys in (([], False), (["--allow-fault-injection"], True)):
        procs = [subprocess.Popen([sys.executable, "-m", "shardguard", "worker", "--bind",
                                   "tcp://127.0.0.1:0", "--name", d, "--keys",
                                   str(tmp_path / "keys"), *flags],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for d in devices]
        try:
            workers = {d: p.stdout.readline().split()[2]  # type: ignore[union-attr]
                       for d, p in zip(devices, procs)}
            with Cluster(bound, workers=workers, keys=tmp_path / "keys") as c:
                if obeys:
                    c.behave(devices[0], slow=2.0)
                else:
                    with pytest.raises(TransportError, match="fault injection is off"):
                        c.behave(devices[0], slow=2.0)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
                proc.stdout.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("flag", [False, True])
def test_without_the_flag_no_fault_injection_code_is_loaded(flag):
    """Not just refused: the code that corrupts outputs is not in a worker started without it."""
    code = ("import os, sys; from shardguard.runtime.worker import Worker; "
            f"Worker('pi1', 'tcp://127.0.0.1:0', None, insecure=True, "
            f"allow_fault_injection={flag}); "
            "print(sorted(m for m in sys.modules if m.startswith('shardguard.threats'))); "
            "sys.stdout.flush(); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == ("['shardguard.threats', 'shardguard.threats.faults']" if flag
                           else "[]")
