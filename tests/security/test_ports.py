"""Every port takes messages only from the plan's members: a fuzzer, an outsider posing
as a member, an injector that knows the request ids, and a flood of link names.

Each asserts that no wrong answer is accepted, that no outsider moves traffic (no
alarm, no resubmission, no failover), and that the workers keep serving. The attackers
speak the wire version they attack (``WIRE_VERSION``; version 1 had no header tag),
and the helpers read what each version reports, so the tests also run against the
code before the header tag, where they show the breaks it closes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from shardguard.protocol.wire import WIRE_VERSION
from shardguard.runtime.cluster import Cluster

from ..conftest import eventually
from .conftest import PROTECTIONS, push, sink_address, wrong
from .tools import Tap, fuzz

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LINKS = ("input>s0", "s0>s1", "s1>output")


def _ports(c: Cluster) -> dict[str, str]:
    """The port each link's messages arrive at: a worker's data port, or the result port."""
    first, second = (p.device for p in c.compiled.programs)
    return {"input>s0": c.handles[first].data, "s0>s1": c.handles[second].data,
            "s1>output": sink_address(c)}


def _rejected(c: Cluster) -> dict[str, int]:
    """Messages each port refused: the workers' counts and the coordinator's."""
    stats = c.stats()
    out = {d: sum(s["rejected"].values()) for d, s in stats.items()}
    inbox = getattr(c, "inbox", None)  # version 1 did not count what its result port refused
    out["coordinator"] = sum(inbox.rejected.values()) if inbox is not None else 0
    return out


def _quiet(result: Any) -> None:
    """Nothing an outsider did moved traffic: no alarm, no retry, no failover, no failure."""
    assert not result.errors
    assert (len(result.rejected), result.resubmitted) == (0, 0)
    assert getattr(result, "routed_around", []) == []


@pytest.mark.parametrize("protection", PROTECTIONS)
def test_every_port_refuses_2000_malformed_messages_while_it_serves(plans, images, protection):
    bound = plans[protection]
    taps = {link: Tap() for link in LINKS}
    with Cluster(bound, spawn_local=True, taps={k: [v] for k, v in taps.items()}) as c:
        c.stream(images[:40], show_progress=False)  # genuine traffic for the fuzzer to start from
        ports = _ports(c)
        ctx = zmq.Context()

        def fuzzer() -> None:
            for i, (link, address) in enumerate(ports.items()):
                sock = push(ctx, address)
                for frames in fuzz(taps[link].samples(), 2000, seed=i):
                    sock.send_multipart(frames or [b""])
                sock.close(linger=-1)

        thread = threading.Thread(target=fuzzer)
        thread.start()
        result = c.stream(images, show_progress=False)  # served while the fuzzer runs
        thread.join()
        again = c.stream(images[:50], show_progress=False)
        end = time.monotonic() + 30
        while min(_rejected(c).values()) < 2000 and time.monotonic() < end:
            c.stream(images[:5], show_progress=False)  # the result port is read while streaming
        rejected = _rejected(c)
        ctx.destroy(linger=0)
    assert rejected == dict.fromkeys(rejected, 2000)  # every one refused, nothing genuine
    _quiet(result)
    _quiet(again)
    assert wrong(bound, result, images) == 0 and wrong(bound, again, images[:50]) == 0


@pytest.mark.parametrize("protection", PROTECTIONS)
def test_an_outsider_posing_as_a_member_with_keys_of_its_own_is_refused(plans, images,
                                                                        protection):
    bound = plans[protection]
    with Cluster(bound, spawn_local=True) as c:
        first, second = (p.device for p in c.compiled.programs)
        route = {"s0": first, "s1": second, "output": "coordinator"}
        ports = _ports(c)
        ctx = zmq.Context()
        x = {"input>s0": images[:1]}
        shapes = {t.id: t.shape for p in c.compiled.programs for t in [*p.inputs, *p.outputs]}
        from shardguard.runtime.linksec import LinkSecurity

        for link, address in ports.items():
            src, dst = link.split(">")
            me = LinkSecurity("coordinator" if src == "input" else route[src])  # its own keys
            peer = LinkSecurity("coordinator" if dst == "output" else route[dst])
            me.configure(dict.fromkeys(LINKS, protection),
                         {me.name: me.public, peer.name: peer.public})
            sock = push(ctx, address)
            tensors = [(t, x.get(link, np.ones((1, *s), np.float32)).astype(np.float32))
                       for t, s in shapes.items() if t.startswith(f"{link}:")]
            for i in range(300):
                sock.send_multipart(me.encode(c.next_req + i, 10**6 + i, link, route, tensors))
            sock.close(linger=-1)
        result = c.stream(images[:100], show_progress=False)
        rejected = eventually(lambda: _rejected(c), lambda r: min(r.values()) >= 300, timeout=10)
        refused = [c.stats()[d]["rejected"] for d in (first, second)] + [dict(c.inbox.rejected)]
        ctx.destroy(linger=0)
    _quiet(result)
    assert wrong(bound, result, images[:100]) == 0
    assert rejected == dict.fromkeys(rejected, 300)
    assert refused == [{"unauthenticated": 300}] * 3


def _forge(req: int, link: str, route: dict[str, str], tensors: list[tuple[str, np.ndarray]],
           protection: str) -> list[bytes]:
    """A message an injector makes: a header it writes itself, the tensors it wants
    accepted, and a made-up tag (it holds no key)."""
    header = {"v": WIRE_VERSION, "kind": "data", "req": req, "seq": req, "link": link,
              "route": route,
              "flags": 2 if protection != "none" else 0,
              "tensors": [{"name": n, "dtype": "float32", "shape": list(a.shape)}
                          for n, a in tensors]}
    tag = np.random.default_rng(req).bytes(16)
    body = [a.tobytes() + (tag if protection.startswith("aead") else b"") for _, a in tensors]
    return [msgpack.packb(header), *body, *([tag] if WIRE_VERSION >= 2 else [])]


@pytest.mark.parametrize("protection", PROTECTIONS)
def test_an_injector_that_knows_the_request_ids_gets_nothing_accepted(plans, images, protection):
    """It writes tensors and results for every request id before the genuine ones are sent
    (ids are consecutive from the coordinator's next one), on a stage's data port and on
    the coordinator's result port: none may take a request's slot or move traffic."""
    bound = plans[protection]
    n = 200
    with Cluster(bound, spawn_local=True) as c:
        first, second = (p.device for p in c.compiled.programs)
        route = {"s0": first, "s1": second, "output": "coordinator"}
        shapes = {t.id: t.shape for p in c.compiled.programs for t in [*p.inputs, *p.outputs]}
        ports = _ports(c)
        ctx = zmq.Context()
        for link in ("s0>s1", "s1>output"):
            sock = push(ctx, ports[link])
            for req in range(c.next_req, c.next_req + n):
                lie = [(t, np.full((1, *s), 7.0, np.float32)) for t, s in shapes.items()
                       if t.startswith(f"{link}:")]
                sock.send_multipart(_forge(req, link, route, lie, protection))
            sock.close(linger=-1)
        eventually(lambda: sum(c.stats()[second]["rejected"].values()),  # the forgeries
                   lambda n_rejected: n_rejected >= n, timeout=10)  # arrive first
        result = c.stream(images[:n], show_progress=False)
        rejected = _rejected(c)
        ctx.destroy(linger=0)
    _quiet(result)
    assert wrong(bound, result, images[:n]) == 0
    assert rejected[second] == n and rejected["coordinator"] == n


def test_a_flood_of_distinct_link_names_leaves_the_worker_small(plans):
    """200 000 messages, each naming a link of its own: counted under one reason, the
    stats reply stays small, and the worker's memory does not grow with them."""
    bound = plans["none"]
    with Cluster(bound, spawn_local=True) as c:
        device = c.compiled.programs[0].device
        before = c.stats()[device]["rss"]
        ctx = zmq.Context()
        sock = push(ctx, c.handles[device].data)
        header = {"v": WIRE_VERSION, "kind": "data", "req": 1, "seq": 1, "route": {},
                  "flags": 0, "tensors": []}
        for i in range(200_000):
            sock.send_multipart([msgpack.packb({**header, "link": f"evil{i}>s{i}"}),
                                 *([b"t" * 16] if WIRE_VERSION >= 2 else [])])
        sock.close(linger=-1)  # returns once every message has been handed over
        end = time.monotonic() + 60
        while time.monotonic() < end:
            stats = c.stats()[device]
            if sum(stats["rejected"].values()) >= 200_000:
                break
            time.sleep(0.1)
        reply = msgpack.packb(stats)
        result = c.stream(np.zeros((20, 1, 28, 28), np.float32), show_progress=False)
        ctx.destroy(linger=0)
    assert len(stats["rejected"]) <= 2  # reasons, not names
    assert len(reply) < 8192, len(reply)
    assert stats["rss"] - before < 8 * 2**20, (before, stats["rss"])
    assert sum(stats["rejected"].values()) == 200_000
    assert not result.errors
