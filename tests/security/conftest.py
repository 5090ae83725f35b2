"""Plans and helpers shared by the security suite: real workers on loopback, a plan of two
stages on two devices, sealed or not, and a reference to compare every answer with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from shardguard.partition import bind

from ..conftest import planned, reference, write_plan

PROTECTIONS = ("none", "aead:chacha20-poly1305")


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """resnet-small in two pipeline stages on pi1 and pi2, under each protection."""
    tmp = tmp_path_factory.mktemp("plans")
    out = {p: bind(write_plan(tmp, planned(), p, name=p.replace(":", "-"))) for p in PROTECTIONS}
    out["mac:blake2b"] = bind(write_plan(tmp, planned(), "mac:blake2b", name="mac"))
    return out


@pytest.fixture(scope="module")
def images(test_split: Any) -> np.ndarray:
    return test_split.tensors(300)[0].numpy()


def wrong(bound: Any, result: Any, x: np.ndarray) -> int:
    """Answered requests whose output is not what the plan computes (one image each)."""
    ok = ~np.isnan(result.outputs).any(1)
    ref = reference(bound, x)
    return int((np.abs(result.outputs[ok] - ref[ok]).max(1) > 1e-4).sum())


def push(ctx: zmq.Context[Any], address: str) -> zmq.Socket[Any]:
    """An outsider's socket on a data or result port (PUSH needs no handshake)."""
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.connect(address)
    return sock


def sink_address(cluster: Any) -> str:
    return str(cluster.sink.getsockopt_string(zmq.LAST_ENDPOINT))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
