"""Calibrate the ``host`` profile on this machine, through the workers' own code paths.

    figures = calibrate()              # measure now, write the cache, return the figures
    ensure_calibrated()                # measure only if no calibration of this machine is cached

What is measured (each the median of repeated timings, on one thread as spawned workers run):

* ``stage_s``: one onnxruntime run of a trivial model (the fixed cost of running a stage);
* ``mac_rates``: MAC/s of a 3×3 convolution, a depthwise 3×3 convolution and a fully
  connected layer, each net of ``stage_s`` (``mac_rate`` is the convolution's);
* ``message_s``, ``hop_s``, ``coordinator_s``: from a real run, a spawned worker running
  all of LeNet-5 as one stage: its busy time per request less its stage's compute is two
  messages' (one in, one out); one request alone takes the worker's busy time and two
  hops (the coordinator's framing included); with 32 in flight, the coordinator's
  process time per request is its work on two messages; the same with pass-through relays
  on the links (``emulate_links``) gives what a relay adds to a hop and to the
  coordinator (``relay_cpu_s``; ``relay_hop_s`` from a message through a relay alone:
  the emulator's costs, not the network's;
  not profile figures: ``runtime.fidelity`` adds them to predictions for emulated links);
* ``core_share``: the share of a core a busy thread gets (other processes' load; not a
  profile figure: ``runtime.fidelity`` counts it in a stream's period);
* per protection, the per-byte cost (as cycles per byte at the clock) and the fixed cost of
  sealing or opening a message: a line fitted to the same hop on a link so protected, on
  a few sizes, less the unsealed hop, halved (sealing and opening cost about the same).

The figures are written to ``platform.host.calibration_file()`` with the machine they
hold for (``platform.host.machine()``); ``host_profile`` reads them from there.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from ..platform.host import (
    CALIBRATED,
    cached_calibration,
    calibration_file,
    clock_hz,
    host_profile,
    machine,
)
from ..protections import available
from ..protocol import wire
from .linksec import LinkSecurity

SIZES = (1 << 12, 1 << 16, 1 << 18)  # message payloads the seal line is fitted on (bytes)
SLOW_SIZES = (1 << 10, 1 << 12)  # for a pure-Python cipher (Ascon)
SLOW = {"aead:ascon-128"}


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _session(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as a spawned worker (--threads 1)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _model(op: str, x: tuple[int, ...], w: tuple[int, ...], **attrs: Any) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).random(w, dtype=np.float32), "w")
    inputs = ["x", "w"] if op != "Relu" else ["x"]
    node = helper.make_node(op, inputs, ["y"], **attrs)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [weight] if op != "Relu" else [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


#: layer type → (op, input shape, weight shape, attributes, MACs)
LAYERS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any], int]] = {
    "conv": ("Conv", (1, 32, 28, 28), (32, 32, 3, 3), {"pads": [1, 1, 1, 1]},
             32 * 28 * 28 * 32 * 9),
    "depthwise": ("Conv", (1, 128, 56, 56), (128, 1, 3, 3), {"pads": [1, 1, 1, 1],
                                                             "group": 128}, 128 * 56 * 56 * 9),
    "linear": ("Gemm", (1, 1024), (1024, 1024), {"transB": 1}, 1024 * 1024),
}


def measure_compute() -> tuple[float, dict[str, float]]:
    """The fixed seconds of one onnxruntime run, and each layer type's MAC/s net of it."""
    trivial = _session(_model("Relu", (1, 8), ()))
    feed = {"x": np.ones((1, 8), np.float32)}
    stage_s = _median_s(lambda: trivial.run(None, feed), 200)
    rates = {}
    for kind, (op, x, w, attrs, macs) in LAYERS.items():
        session = _session(_model(op, x, w, **attrs))
        feed = {"x": np.random.default_rng(1).random(x, dtype=np.float32)}
        seconds = _median_s(lambda s=session, f=feed: s.run(None, f), 30)  # type: ignore[misc]
        rates[kind] = macs / max(seconds - stage_s, 1e-9)
    return stage_s, rates


def _hop_seconds(protection: str, size: int, repeats: int) -> float:
    """One message of ``size`` payload bytes: encode (and seal), a loopback ZeroMQ hop,
    open (and check), as a worker sends and receives one."""
    sender, receiver = LinkSecurity("a"), LinkSecurity("b")
    publics = {"a": sender.public, "b": receiver.public}
    for end in (sender, receiver):
        end.configure({"x>y": protection}, publics)
    array = np.random.default_rng(0).random(size // 4, dtype=np.float32).reshape(1, -1)
    schema = {"x>y": wire.Expected({"x>y:t": ("float32", array.shape[1:])}, 1,
                                   protection != "none")}
    route = {"x": "a", "y": "b"}
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    try:
        push.connect(f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}")
        seq = iter(range(1, 1 << 30))

        def hop() -> None:
            push.send_multipart(sender.encode(0, next(seq), "x>y", route, [("x>y:t", array)]),
                                copy=False)
            receiver.open(pull.recv_multipart(copy=False), schema)

        return _median_s(hop, repeats)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def _line(protection: str) -> tuple[float, float]:
    """(fixed seconds, seconds per byte) of a hop on a link with ``protection``."""
    sizes = SLOW_SIZES if protection in SLOW else SIZES
    times = [_hop_seconds(protection, n, 5 if protection in SLOW else 40) for n in sizes]
    per_byte, fixed = np.polyfit(np.array(sizes, float), np.array(times), 1)
    return float(fixed), float(per_byte)


def measure_seals(clock_hz: float) -> tuple[dict[str, float], dict[str, float]]:
    """Per protection algorithm, one end's cycles per byte and fixed seconds to seal or
    open a message."""
    base_fixed, base_per_byte = _line("none")
    cpb, fixed = {}, {}
    for name in available():
        f, b = _line(name)
        alg = name.split(":", 1)[1]
        cpb[alg] = max((b - base_per_byte) / 2 * clock_hz, 0.01)
        fixed[alg] = max((f - base_fixed) / 2, 0.0)
    return cpb, fixed


PROBE_REQUESTS = 300
PROBE_ROUNDS = 5


def measure_runtime() -> dict[str, float]:
    """``message_s``, ``hop_s`` and ``coordinator_s`` from a real run (module docstring):
    the median of ``PROBE_ROUNDS`` rounds, each of one request at a time then 32."""
    import tempfile
    from pathlib import Path

    from ..partition import bind, plan
    from .cluster import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        platform = Path(tmp) / "one.yaml"
        platform.write_text("name: probe\nmedium: {bandwidth_bps: 1.0e+10, latency_s: 0.0, "
                            "tx_j_per_byte: 0.0, rx_j_per_byte: 0.0}\n"
                            "devices:\n  - {name: w1, profile: host}\n")
        planned = plan("lenet5", str(platform), devices=1)
        planned.plan.save(Path(tmp) / "plan.yaml")
        bound = bind(Path(tmp) / "plan.yaml")
        x = np.zeros((PROBE_REQUESTS, *bound.graph.input_shape), np.float32)
        rows: dict[str, list[float]] = defaultdict(list)
        for emulated in (False, True):  # without relays, then with (pass-through) relays
            with Cluster(bound, spawn_local=True, window=1, emulate_links=emulated) as c:
                c.stream(x[:20], show_progress=False)  # warm up
                for _ in range(PROBE_ROUNDS):
                    for window in (1, 32):
                        c.options.window = window
                        _probe_round(c, x, window, rows, "relayed " if emulated else "")
    found = {k: statistics.median(v) for k, v in rows.items()}
    return {"message_s": max(found["message_s"], 0.0), "hop_s": max(found["hop_s"], 0.0),
            "coordinator_s": max(found["coordinator_s"], 0.0),
            # the relays (``emulate_links``): a message's added latency, and the
            # coordinator's added process time per message relayed
            "relay_hop_s": measure_relay_hop(),
            "relay_cpu_s": max(found["relayed coordinator_s"] - found["coordinator_s"], 0.0)}


def measure_relay_hop(latency_s: float = 1e-3, repeats: int = 200) -> float:
    """What a relay adds to a message's latency beyond its link model's: a 3 kB message
    through a relay with ``latency_s`` less the same message sent directly (median)."""
    from .relay import LinkModel, Relay

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    direct = ctx.socket(zmq.PUSH)
    payload = bytes(3000)
    try:
        target = f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}"
        direct.connect(target)
        plain = _median_s(lambda: (direct.send(payload), pull.recv()), repeats)
        with Relay("tcp://127.0.0.1:*", target, LinkModel(latency_s=latency_s),
                   context=ctx) as relay:
            push = ctx.socket(zmq.PUSH)
            push.connect(relay.address)
            relayed = _median_s(lambda: (push.send(payload), pull.recv()), repeats)
            push.close(linger=0)
        return max(relayed - latency_s - plain, 0.0)
    finally:
        direct.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def _probe_round(c: Any, x: np.ndarray, window: int, rows: dict[str, list[float]],
                 prefix: str) -> None:
    """One stream of ``x``: the worker's busy and compute CPU time per request, and the
    coordinator's; into ``rows`` (names after ``prefix``) what this window
    measures."""
    before, cpu = c.stats()["w1"], time.process_time()
    result = c.stream(x, show_progress=False)
    cpu = (time.process_time() - cpu) / len(x)
    after = c.stats()["w1"]
    busy = (after["busy_s"] - before["busy_s"]) / len(x)
    compute = sum(after["stages"][k]["cpu_s"] - v["cpu_s"]
                  for k, v in before["stages"].items()) / len(x)
    rows[f"{prefix}message_s"].append((busy - compute) / 2)  # one message in, one out
    if window == 1:
        rows[f"{prefix}hop_s"].append((float(np.median(result.latency_s)) - busy) / 2)
    else:  # the coordinator's process time (its threads') on two messages per request
        rows[f"{prefix}coordinator_s"].append(cpu / 2)


def measure_core_share(seconds: float = 0.5) -> float:
    """The share of a core a busy process gets now (1.0 on an idle machine): CPU time
    over wall time of a thread that only computes, for ``seconds``."""
    wall, cpu = time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall < seconds:
        sum(range(10_000))
    return min(1.0, (time.thread_time() - cpu) / (time.perf_counter() - wall))


def calibrate() -> dict[str, Any]:
    """Measure this machine now, cache the figures (with the machine) and return them."""
    clock, _ = clock_hz()
    stage_s, rates = measure_compute()
    cpb, fixed = measure_seals(clock)
    run = measure_runtime()
    share = statistics.median(measure_core_share() for _ in range(3))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    src = f"{CALIBRATED} {when} ({calibration_file()})"
    hop = "encode, loopback ZeroMQ hop, open"
    probe = f"a spawned worker running LeNet-5, {PROBE_REQUESTS} requests"

    def fig(value: float, how: str) -> dict[str, Any]:
        return {"value": value, "source": f"{src}: {how}"}

    figures = {
        "clock_hz": fig(clock, "/proc/cpuinfo cpu MHz (the clock the cycles are counted at)"),
        "mac_rate": fig(rates["conv"], "onnxruntime, 1 thread: 3x3 convolution 32x28x28"),
        "mac_rates": {k: fig(v, f"onnxruntime, 1 thread: {LAYERS[k][0]} {LAYERS[k][1]}, net "
                                "of stage_s") for k, v in rates.items()},
        "stage_s": fig(stage_s, "onnxruntime, 1 thread: one run of a trivial model"),
        "message_s": fig(run["message_s"], f"{probe}: the worker's busy time per request "
                                           "less its stage's, over its two messages"),
        "hop_s": fig(run["hop_s"], f"{probe}: half of one request's latency less the "
                                   "worker's busy time"),
        "coordinator_s": fig(run["coordinator_s"], f"{probe}: half the coordinator's "
                                                   "process time per request, 32 in flight"),
        "relay_hop_s": fig(run["relay_hop_s"], "a 3 kB message through a relay with 1 ms "
                                               "latency, less 1 ms and a direct hop"),
        "relay_cpu_s": fig(run["relay_cpu_s"], f"{probe}: coordinator_s with pass-through "
                                               "relays less without"),
        "core_share": fig(share, "CPU over wall time of a thread that only computes: the "
                                 "share of a core other processes left it"),
        "crypto_cycles_per_byte": {a: fig(v, f"line fitted to sealed hops ({hop}) less the "
                                             "unsealed, halved") for a, v in cpb.items()},
        "crypto_fixed_s": {a: fig(v, f"line fitted to sealed hops ({hop}) less the unsealed, "
                                     "halved") for a, v in fixed.items()},
    }
    path = calibration_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")  # whole or not at all
    partial.write_text(json.dumps({"machine": machine(), "measured": when,
                                   "figures": figures}, indent=2) + "\n")
    partial.replace(path)
    host_profile.cache_clear()
    return figures


def refresh_core_share() -> float:
    """Measure ``core_share`` again into the cached calibration (the others' load
    changes by the minute on a shared machine); the share."""
    path = calibration_file()
    saved = json.loads(path.read_text())
    share = statistics.median(measure_core_share() for _ in range(3))
    saved["figures"]["core_share"]["value"] = share
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(saved, indent=2) + "\n")
    partial.replace(path)
    return share


def ensure_calibrated(force: bool = False) -> bool:
    """Calibrate unless this machine's calibration is cached (``force``: always); whether
    it measured."""
    if not force and cached_calibration() is not None:
        return False
    calibrate()
    return True
