"""The cost model against the runtime: measured / predicted latency and throughput.

LeNet-5, resnet-small and EfficientNet-Lite0 at 224×224 (``efficientnet-lite0-fmnist``,
the real-data model), each planned by pipeline and by spatial onto two workers of a
host-calibrated platform (``profile: host``, ``runtime.calibrate``; the calibration is
cached per machine) joined by 10 Mbit/s and 100 Mbit/s links with 1 ms latency, run by
spawned workers. Latency: the median of requests sent one at a time; throughput: a
stream with ``WINDOW`` requests in flight, against the model's Little's-law figure for
that window (``runtime.fidelity.predicted``), for the run on this machine
(``runtime.fidelity.estimate_run``: the relays' own cost on emulated links, and the
share of the cores the machine's other load leaves, measured again before each row).
Two workers on this 2-core machine: at most as many busy workers as cores; the model
adds the coordinator, and all of them share the cores.

The links: ``Cluster(..., network="namespaces")`` (a network namespace per worker,
shaped in the kernel) when that option exists and this process is root; else the
user-space relays over loopback (``emulate_links``). Each row's note says which.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import shardguard as sg
from shardguard.partition import bind
from shardguard.runtime.calibrate import calibrate, refresh_core_share
from shardguard.runtime.cluster import Cluster, ClusterOptions
from shardguard.runtime.fidelity import estimate_run, measured, predicted

TARGET = [0.8, 1.25]
WINDOW = 32
LATENCY_S = 1e-3
#: model → (images timed one at a time, images streamed WINDOW at a time)
MODELS = {"lenet5": (60, 400), "resnet-small": (40, 200), "efficientnet-lite0-fmnist": (4, 12)}
STRATEGIES = ("pipeline", "spatial")
MBITS = (10, 100)


def network() -> tuple[dict[str, Any], str]:
    """The Cluster keywords for shaped links, and a note naming them (module docstring)."""
    fields = {f.name for f in dataclasses.fields(ClusterOptions)}
    if "network" in fields and hasattr(os, "geteuid") and os.geteuid() == 0:
        return {"network": "namespaces"}, "network namespaces, links shaped in the kernel"
    why = ("no network option in this build" if "network" not in fields
           else "not root")
    return {"emulate_links": True}, f"user-space relays over loopback ({why})"


def _platform(directory: Path, mbit: int) -> Path:
    path = directory / f"host2-{mbit}m.yaml"
    path.write_text(f"name: host2-{mbit}m\ndescription: two workers on this host\n"
                    f"medium: {{bandwidth_bps: {mbit * 1e6:.1e}, latency_s: {LATENCY_S:.1e}, "
                    "tx_j_per_byte: 0.0, rx_j_per_byte: 0.0, shared: false}\n"
                    "devices:\n  - {name: w1, profile: host}\n  - {name: w2, profile: host}\n")
    return path


def _measure(bound: Any, keywords: dict[str, Any], alone: int, streamed: int
             ) -> tuple[float, dict[str, Any]]:
    """(median latency one request at a time, ``fidelity.measured`` with WINDOW in flight)."""
    x = np.random.default_rng(0).random((streamed, *bound.graph.input_shape), np.float32)
    with Cluster(bound, spawn_local=True, window=1, deadline_s=60.0, **keywords) as c:
        c.stream(x[:2], show_progress=False)  # warm up: sessions, connections
        one = c.stream(x[:alone], show_progress=False)
        c.options.window = WINDOW
        before = c.stats()
        many = c.stream(x, show_progress=False)
        stream = measured(many, c.stats(), before)
    if one.errors or many.errors:
        raise RuntimeError(f"{len(one.errors) + len(many.errors)} requests failed")
    return float(np.median(one.latency_s)), stream


def _rows(model: str, strategy: str, mbit: int, directory: Path, keywords: dict[str, Any],
          note: str) -> list[dict[str, Any]]:
    plan_file = directory / f"{model}-{strategy}-{mbit}.yaml"
    sg.plan(model, str(_platform(directory, mbit)), strategy=strategy,  # type: ignore[arg-type]
            devices=2).plan.save(plan_file)
    bound = bind(plan_file)
    alone, streamed = MODELS[model]
    share = refresh_core_share()  # the others' load, as near to this run as it can be
    latency, stream = _measure(bound, keywords, alone, streamed)
    throughput = stream["throughput"]
    # relays on every link either way (in namespaces, for the latency): their costs count
    expect = predicted(estimate_run(bound, emulated=bool(keywords)), WINDOW,
                       images=streamed)
    where = f"{model}, {strategy}, {mbit} Mbit/s"
    busy = ", ".join(f"{d} {stream['busy_s'].get(d, 0) * 1e3:.2f}/{v * 1e3:.2f}"
                     for d, v in expect["busy_s"].items())
    note = (f"{note}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus, "
            f"a lone busy thread had {share:.2f} of a core")
    return [
        {"name": f"fidelity_latency[{where}]", "value": latency * 1e3, "unit": "ms",
         "ratio": latency / expect["latency_s"], "target": TARGET,
         "note": f"measured / predicted {expect['latency_s'] * 1e3:.2f} ms, one request at a "
                 f"time ({alone}); {note}"},
        {"name": f"fidelity_throughput[{where}]", "value": throughput, "unit": "images/s",
         "ratio": throughput / expect["throughput"], "target": TARGET,
         "note": f"measured / predicted {expect['throughput']:.1f} images/s, {WINDOW} in "
                 f"flight ({streamed}); busy ms/image measured/predicted {busy}, coordinator "
                 f"{expect['coordinator_busy_s'] * 1e3:.2f}; {note}"}]


def model_fidelity() -> list[dict[str, Any]]:
    """Measured / predicted latency and throughput of each model, strategy and link rate."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    calibrate()  # this machine now, as loaded as the runs below will find it
    keywords, note = network()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            for strategy in STRATEGIES:
                for mbit in MBITS:
                    start = time.perf_counter()
                    try:
                        rows += _rows(model, strategy, mbit, Path(tmp), keywords, note)
                    except Exception as exc:  # noqa: BLE001 - recorded, the others still run
                        rows.append({"name": f"fidelity[{model}, {strategy}, {mbit} Mbit/s]",
                                     "error": f"{type(exc).__name__}: {exc}"})
                    print(f"  {model} {strategy} {mbit} Mbit/s: "
                          f"{time.perf_counter() - start:.1f} s", flush=True)
    return rows


BENCHMARKS = [model_fidelity]
