"""The user-space link relay: pass-through, delay, bandwidth, loss, tampering, clean stop.

Real sockets on 127.0.0.1 and a real relay thread; every wait is bounded.
Timing assertions are lower bounds (the relay must never be early) with loose
upper bounds, because the machine is shared.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from shardguard.errors import ConfigError
from shardguard.runtime.relay import LinkModel, Relay, RelayStats

pytestmark = pytest.mark.timeout(60)

RECV_TIMEOUT_MS = 5000


@pytest.fixture
def ctx(zmq_context: zmq.Context[Any]) -> zmq.Context[Any]:
    return zmq_context  # fails the test if a socket was left open


class Endpoints:
    """A receiver (PULL, bound) and a sender (PUSH) connected through a relay."""

    def __init__(self, ctx: zmq.Context[Any], model: LinkModel, tamper: list[Any] | None = None):
        self.receiver = ctx.socket(zmq.PULL)
        self.receiver.setsockopt(zmq.LINGER, 0)
        self.receiver.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
        self.receiver.bind("tcp://127.0.0.1:*")
        downstream = self.receiver.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.relay = Relay("tcp://127.0.0.1:*", downstream, model, tamper or (), context=ctx)
        self.relay.start()
        self.sender = ctx.socket(zmq.PUSH)
        self.sender.setsockopt(zmq.LINGER, 0)
        self.sender.connect(self.relay.address)

    def close(self) -> None:
        self.relay.stop()
        self.sender.close(linger=0)
        self.receiver.close(linger=0)

    def recv(self) -> list[bytes]:
        return self.receiver.recv_multipart()

    def settle(self, sent: int, timeout: float = 10.0) -> RelayStats:
        """Wait until the relay has read ``sent`` messages and emptied its link."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.relay.stats
            if s.messages_in == sent and s.messages_out + s.dropped == sent:
                return s
            time.sleep(0.005)
        raise AssertionError(f"relay did not settle: {self.relay.stats}")


@pytest.fixture
def link(ctx: zmq.Context[Any]) -> Iterator[Any]:
    opened: list[Endpoints] = []

    def make(model: LinkModel = LinkModel(), tamper: list[Any] | None = None) -> Endpoints:
        opened.append(Endpoints(ctx, model, tamper))
        return opened[-1]

    yield make
    for e in opened:
        e.close()


def message(i: int, nbytes: int = 64) -> list[bytes]:
    """A message shaped like the data plane's: msgpack header + raw tensor frames."""
    header = msgpack.packb({"request": i, "seq": i, "tensors": ["a", "b"]})
    payload = bytes((i * 31 + k) % 256 for k in range(nbytes))
    return [header, payload, bytes(range(256)) + i.to_bytes(4, "little")]


def test_messages_pass_through_unchanged_and_in_order(link: Any) -> None:
    e = link()
    sent = [message(i, nbytes=1 + i % 300) for i in range(1000)]
    for m in sent:
        e.sender.send_multipart(m)
    received = [e.recv() for _ in sent]
    assert received == sent
    stats = e.settle(1000)
    assert stats.dropped == 0
    assert stats.bytes_in == stats.bytes_out == sum(len(f) for m in sent for f in m)


def test_no_message_arrives_before_the_link_latency(link: Any) -> None:
    latency = 0.05
    e = link(LinkModel(latency_s=latency))
    delays = []
    for i in range(10):
        t0 = time.monotonic()
        e.sender.send_multipart(message(i))
        e.recv()
        delays.append(time.monotonic() - t0)
    assert min(delays) >= 0.9 * latency
    assert max(delays) <= latency + 1.0


def test_bandwidth_bounds_the_time_to_carry_the_bytes(link: Any) -> None:
    bandwidth = 80e6                          # 80 Mbit/s
    chunk, count = 100_000, 20                # 2 MB in all
    e = link(LinkModel(bandwidth_bps=bandwidth))
    t0 = time.monotonic()
    for i in range(count):
        e.sender.send_multipart([b"h", bytes(chunk)])
    for _ in range(count):
        e.recv()
    elapsed = time.monotonic() - t0
    expected = 8 * (chunk + 1) * count / bandwidth  # ~0.2 s
    assert 0.9 * expected <= elapsed <= expected + 1.0
    assert e.relay.stats.max_queue > 1       # the burst queued behind the link


def test_latency_adds_to_serialisation(link: Any) -> None:
    e = link(LinkModel(bandwidth_bps=8e6, latency_s=0.05))  # 100 kB -> 0.1 s on the wire
    t0 = time.monotonic()
    e.sender.send_multipart([b"h", bytes(100_000)])
    e.recv()
    elapsed = time.monotonic() - t0
    assert 0.9 * 0.15 <= elapsed <= 0.15 + 1.0


def delivered_indices(link: Any, model: LinkModel, n: int) -> list[int]:
    e = link(model)
    for i in range(n):
        e.sender.send_multipart([i.to_bytes(4, "little"), b"x" * 16])
    stats = e.settle(n)
    got = [int.from_bytes(e.recv()[0], "little") for _ in range(stats.messages_out)]
    assert stats.messages_out + stats.dropped == n
    return got


def test_loss_drops_a_binomial_share_reproducibly_per_seed(link: Any) -> None:
    n, p = 2000, 0.3
    first = delivered_indices(link, LinkModel(loss=p, seed=7), n)
    mean, sigma = n * (1 - p), math.sqrt(n * p * (1 - p))
    assert abs(len(first) - mean) <= 5 * sigma
    assert first == sorted(first)             # survivors keep their order
    assert delivered_indices(link, LinkModel(loss=p, seed=7), n) == first
    assert delivered_indices(link, LinkModel(loss=p, seed=8), n) != first


def test_tamper_bit_flip_changes_exactly_that_bit(link: Any) -> None:
    byte, bit = 17, 6

    def flip(frames: list[bytes]) -> list[list[bytes]]:
        body = bytearray(frames[1])
        body[byte] ^= 1 << bit
        return [[frames[0], bytes(body), *frames[2:]]]

    e = link(tamper=[flip])
    sent = message(3, nbytes=100)
    e.sender.send_multipart(sent)
    got = e.recv()
    assert got[0] == sent[0] and got[2:] == sent[2:]
    diff = [a ^ b for a, b in zip(got[1], sent[1])]
    assert len(got[1]) == len(sent[1])
    assert [i for i, d in enumerate(diff) if d] == [byte] and diff[byte] == 1 << bit


def test_tamper_returning_none_drops_the_message(link: Any) -> None:
    e = link(tamper=[lambda frames: None if frames[0] == b"drop" else [frames]])
    for head in (b"keep-1", b"drop", b"keep-2"):
        e.sender.send_multipart([head, b"payload"])
    assert [e.recv()[0], e.recv()[0]] == [b"keep-1", b"keep-2"]
    e.receiver.setsockopt(zmq.RCVTIMEO, 200)
    with pytest.raises(zmq.Again):
        e.recv()


def test_tamper_returning_two_messages_delivers_both(link: Any) -> None:
    seen: list[list[bytes]] = []

    def replay_first(frames: list[bytes]) -> list[list[bytes]]:
        seen.append(frames)
        return [frames, seen[0]]              # each message, then a replay of the first

    e = link(tamper=[replay_first])
    e.sender.send_multipart([b"r1", b"a"])
    e.sender.send_multipart([b"r2", b"b"])
    got = [e.recv() for _ in range(4)]
    assert got == [[b"r1", b"a"], [b"r1", b"a"], [b"r2", b"b"], [b"r1", b"a"]]
    assert e.relay.stats.messages_in == 2 and e.relay.stats.messages_out == 4


def test_a_failing_tamper_hook_surfaces_at_stop(ctx: zmq.Context[Any]) -> None:
    def broken(frames: list[bytes]) -> list[bytes]:
        return frames                          # wrong: one message must be [frames]

    e = Endpoints(ctx, LinkModel(), tamper=[broken])
    e.sender.send_multipart([b"h", b"x"])
    deadline = time.monotonic() + 5
    while e.relay.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not e.relay.running
    with pytest.raises(TypeError, match="list of messages"):
        e.close()
    e.sender.close(linger=0)
    e.receiver.close(linger=0)


def test_stop_is_clean_thread_joined_and_sockets_closed(ctx: zmq.Context[Any], link: Any) -> None:
    before = set(threading.enumerate())
    e = link(LinkModel(latency_s=5.0))
    address = e.relay.address
    e.sender.send_multipart([b"in flight", b"x"])  # still on the link when we stop
    deadline = time.monotonic() + 5.0
    while e.relay.stats.messages_in < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert e.relay.stats.messages_in == 1 and e.relay.stats.messages_out == 0
    assert e.relay.running
    t0 = time.monotonic()
    e.close()
    assert time.monotonic() - t0 < 2.5       # did not wait for the in-flight message
    assert not e.relay.running
    assert set(threading.enumerate()) <= before
    e.relay.stop()                            # idempotent
    # The port is free again: the relay's PULL was closed with linger 0. libzmq's I/O
    # thread unbinds after close() returns, so the port may take a moment to come free.
    probe = ctx.socket(zmq.PULL)
    try:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                probe.bind(address)
                break
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        probe.close(linger=0)
    # The ctx fixture fails the test if any socket was left open.


def test_context_manager_starts_and_stops(ctx: zmq.Context[Any]) -> None:
    with Relay("tcp://127.0.0.1:*", "tcp://127.0.0.1:9", LinkModel(), context=ctx) as relay:
        assert relay.running and relay.address.startswith("tcp://127.0.0.1:")
    assert not relay.running


@pytest.mark.parametrize("field, value", [("bandwidth_bps", 0.0), ("latency_s", -1.0),
                                          ("loss", 1.5), ("bandwidth_bps", float("nan"))])
def test_invalid_link_figures_are_rejected_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        LinkModel(**{field: value})


def test_link_model_takes_a_platform_links_figures() -> None:
    from shardguard.platform import load_platform

    platform = load_platform("rpi4x4-ethernet")
    a, b = platform.names[:2]
    figures = platform.link(a, b)
    model = LinkModel.of(figures, seed=3)
    assert (model.bandwidth_bps, model.latency_s, model.loss, model.seed) == (
        figures.bandwidth_bps, figures.latency_s, figures.loss, 3)
