"""The distributed runtime, with real worker processes on real sockets."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardguard.errors import AuthenticationError
from shardguard.partition import bind
from shardguard.runtime import keys as keyring
from shardguard.runtime.cluster import Cluster

from .conftest import eventually, planned, reference, write_plan
from .harness import Harness

pytestmark = pytest.mark.slow


def _bound(name, strategy, tmp_path, replicas=1, objective="throughput"):
    of = planned(name, strategy, objective=objective, replicas=replicas)
    return bind(write_plan(tmp_path, of, name=f"{name}-{strategy}"))


@pytest.mark.parametrize("name, strategy", [("resnet-small", "pipeline"),
                                            ("resnet-small", "spatial"),
                                            ("lenet5", "channel")])
def test_distributed_output_equals_the_local_executor(name, strategy, tmp_path, test_split):
    bound = _bound(name, strategy, tmp_path)
    assert len({p.device for p in bound.compiled.programs}) > 1
    x = test_split.tensors(2000)[0].numpy()
    with Cluster(bound, spawn_local=True) as c:
        result = c.stream(x, batch=4, show_progress=False)
    ref = reference(bound, x)
    assert not result.errors
    scale = float(ref.max() - ref.min())
    assert float(np.abs(result.outputs - ref).max()) <= 1e-4 * scale
    assert (result.outputs.argmax(1) == ref.argmax(1)).all()


def _kill_at(cluster, device, index):
    pid = cluster.handles[device].process.pid

    def hook(i):
        if i == index:
            os.kill(pid, signal.SIGKILL)
    return hook


def test_a_killed_worker_fails_over_to_its_replica(tmp_path, test_split):
    bound = _bound("resnet-small", "pipeline", tmp_path, replicas=2)
    victim = bound.compiled.programs[-1].device
    x = test_split.tensors(2000)[0].numpy()
    with Cluster(bound, spawn_local=True, deadline_s=5.0) as c:
        result = c.stream(x, show_progress=False, on_request=_kill_at(c, victim, 500))
        assert not c.handles[victim].alive
    assert not result.errors
    assert (result.accepted == 1).all()  # every request answered exactly once
    assert result.resubmitted > 0
    assert (result.outputs.argmax(1) == reference(bound, x).argmax(1)).all()


def test_without_a_replica_every_request_is_answered_or_failed_within_its_deadline(
        tmp_path, test_split):
    bound = _bound("resnet-small", "pipeline", tmp_path)
    victim = bound.compiled.programs[-1].device
    x = test_split.tensors(2000)[0].numpy()
    deadline = 3.0
    with Cluster(bound, spawn_local=True, deadline_s=deadline, max_attempts=1) as c:
        result = c.stream(x, show_progress=False, on_request=_kill_at(c, victim, 500))
    assert result.answered + len(result.errors) == 2000
    assert result.errors and all("failed" in e or "no answer" in e
                                 for e in result.errors.values())
    assert np.nanmax(result.ended_s) <= deadline + 1.0
    answered = np.flatnonzero(result.accepted == 1)
    ref = reference(bound, x)
    assert (result.outputs[answered].argmax(1) == ref[answered].argmax(1)).all()


VALID_HEADER = {"v": 1, "kind": "data", "req": 1, "seq": 1, "link": "input>s0",
                "route": {"s0": "pi1"}, "flags": 0,
                "tensors": [{"name": "input>s0:x", "dtype": "float32", "shape": [1, 1, 28, 28]}]}
PAYLOAD = 28 * 28 * 4


def _header(**changes):
    return msgpack.packb({**VALID_HEADER, **changes}, use_bin_type=True)


def _tensor(**changes):
    return [{**VALID_HEADER["tensors"][0], **changes}]


def _malformed_messages():
    """Messages that break exactly one rule of the wire format (each must be rejected)."""
    good = _header()
    return st.one_of(
        st.binary(max_size=300).filter(lambda b: b != good).map(lambda b: [b]),
        st.binary(max_size=300).map(lambda b: [b, b"\0" * PAYLOAD]),
        st.integers(1, PAYLOAD).map(lambda k: [good, b"\0" * (PAYLOAD - k)]),
        st.integers(1, 4096).map(lambda k: [good, b"\0" * (PAYLOAD + k)]),
        st.integers(1, 4).map(lambda k: [good, *[b"\0" * PAYLOAD] * (k + 1)]),
        st.just([good]),
        st.text(max_size=40).filter(lambda t: t != "input>s0").map(
            lambda link: [_header(link=link), b"\0" * PAYLOAD]),
        st.sampled_from(["float64", "int8", "complex64", "", "x" * 300]).map(
            lambda dt: [_header(tensors=_tensor(dtype=dt)), b"\0" * PAYLOAD]),
        st.lists(st.integers(-3, 2**40), min_size=0, max_size=6).filter(
            lambda shape: shape != [1, 1, 28, 28]).map(
            lambda shape: [_header(tensors=_tensor(shape=shape)), b"\0" * 64]),
        st.sampled_from(sorted(VALID_HEADER)).map(
            lambda key: [msgpack.packb({k: v for k, v in VALID_HEADER.items() if k != key}),
                         b"\0" * PAYLOAD]),
        st.tuples(st.text(min_size=1, max_size=10).filter(lambda k: k not in VALID_HEADER),
                  st.integers(-2**63, 2**64 - 1)).map(
            lambda kv: [_header(**{kv[0]: kv[1]}), b"\0" * PAYLOAD]),
        st.sampled_from([-1, 2**64 - 1, "1", None, 1.5]).map(
            lambda req: [_header(req=req), b"\0" * PAYLOAD]),
    )


def test_a_worker_rejects_malformed_messages_and_keeps_serving(tmp_path, test_split,
                                                              zmq_context):
    bound = _bound("resnet-small", "pipeline", tmp_path)
    first = bound.compiled.programs[0]
    assert first.name == "s0"
    x = test_split.tensors(64)[0].numpy()
    import zmq

    context = zmq_context
    with Cluster(bound, spawn_local=True) as c:
        sender = context.socket(zmq.PUSH)
        sender.setsockopt(zmq.LINGER, 0)
        sender.setsockopt(zmq.SNDTIMEO, 5000)
        sender.connect(c.handles[first.device].data)
        sent = []

        @settings(max_examples=1000, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(frames=_malformed_messages())
        def send(frames):
            sender.send_multipart([bytes(f) for f in frames])
            sent.append(1)

        send()
        stats = eventually(lambda: c.call(first.device, {"kind": "stats"}),
                           lambda s: sum(s["rejected"].values()) >= len(sent))
        assert len(sent) >= 1000
        assert sum(stats["rejected"].values()) == len(sent)
        assert stats["processed"] == 0
        result = c.stream(x, show_progress=False)
        sender.close()
    assert not result.errors
    assert (result.outputs.argmax(1) == reference(bound, x).argmax(1)).all()


def test_pieces_of_one_request_with_different_batches_are_rejected(tmp_path):
    bound = _bound("resnet-small", "spatial", tmp_path)
    route = {p.name: p.device for p in bound.compiled.programs}
    gather = next(p for p in bound.compiled.programs  # tiles from two other devices
                  if len({route[t.src] for t in p.inputs if t.src != "input"} - {p.device}) > 1)
    with Harness(tmp_path, bound, gather.device) as h:
        h.deploy()
        links = [(link, arrays) for link, arrays in h.inputs(gather.name).items()
                 if route[link.split(">")[0]] != gather.device]
        for batch, (link, arrays) in zip((1, 2), links[:2]):
            resized = [(name, np.zeros((batch, *x.shape[1:]), np.float32)) for name, x in arrays]
            h.send(h.encode(route[link.split(">")[0]], 7, link, resized))
        h.feed(gather.name, req=8)  # a whole request after them is still answered
        assert len(h.received("output")) == 1
        assert h.stats()["rejected"] == {"batch-mismatch": 1}


def test_a_coordinator_whose_key_is_not_allowed_cannot_deploy(tmp_path):
    bound = _bound("lenet5", "pipeline", tmp_path, objective="latency")
    device = bound.compiled.programs[0].device
    trusted, intruder = tmp_path / "trusted", tmp_path / "intruder"
    keyring.generate(trusted, [device])
    keyring.generate(intruder, [device])
    for suffix in (".key", ".key_secret"):  # the intruder knows the worker's public key
        shutil.copy(trusted / f"{device}{suffix}", intruder / f"{device}{suffix}")
    proc = subprocess.Popen([sys.executable, "-m", "shardguard.runtime.worker", "--bind",
                             "tcp://127.0.0.1:0", "--name", device, "--keys", str(trusted)],
                            stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().split()[2]
        with pytest.raises(AuthenticationError, match="refused this coordinator's key"):
            with Cluster(bound, workers={device: address}, keys=intruder):
                pass
        with Cluster(bound, workers={device: address}, keys=trusted) as c:  # the real one can
            assert c.handles[device].alive
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_long_stream_keeps_worker_memory_flat(tmp_path, test_split):
    bound = _bound("lenet5", "pipeline", tmp_path)
    x = test_split.tensors(10_000)[0].numpy()
    with Cluster(bound, spawn_local=True) as c:
        c.stream(x[:1000], show_progress=False)
        before = {d: s["rss"] for d, s in c.stats().items()}
        result = c.stream(x, show_progress=False)
        after = {d: s["rss"] for d, s in c.stats().items()}
    assert not result.errors
    for device in before:
        assert after[device] - before[device] < 16 * 2**20, (device, before, after)


def test_the_worker_runs_where_torch_cannot_be_imported(tmp_path, test_split):
    bound = _bound("lenet5", "pipeline", tmp_path, objective="latency")
    device = bound.compiled.programs[0].device
    keys = tmp_path / "keys"
    keyring.generate(keys, [device])
    code = ("import sys; sys.modules['torch'] = None; "
            "from shardguard.runtime.worker import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "--bind", "tcp://127.0.0.1:0",
                             "--name", device, "--keys", str(keys)], stdout=subprocess.PIPE,
                            text=True)
    try:
        address = proc.stdout.readline().split()[2]
        x = test_split.tensors(32)[0].numpy()
        with Cluster(bound, workers={device: address}, keys=keys) as c:
            y = c.infer(x)
        assert (y.argmax(1) == reference(bound, x).argmax(1)).all()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("strategy", ["pipeline", "spatial", "channel"])
def test_cli_run_spawn_local_check_works_for_every_strategy(strategy, tmp_path):
    from .conftest import run_cli

    plan = tmp_path / "plan.yaml"
    made = run_cli("plan", "lenet5", "-p", "rpi4x4-ethernet", "--strategy", strategy,
                   "--objective", "throughput", "-o", str(plan))
    assert made.code == 0, made.err
    result = run_cli("run", str(plan), "--spawn-local", "--check", "-n", "300", "--batch", "3")
    assert result.code == 0, result.err[-2000:]
    assert "100/100 requests answered" in result.out
    assert "distributed run matches the local executor" in result.out
