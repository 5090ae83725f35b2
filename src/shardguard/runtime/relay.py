"""A user-space link emulator (and attacker's seat) between two ZeroMQ endpoints.

    model = LinkModel(bandwidth_bps=8e7, latency_s=0.05, loss=0.01, seed=1)
    with Relay("tcp://127.0.0.1:*", "tcp://10.0.0.2:5555", model) as relay:
        sender.connect(relay.address)        # instead of the receiver's own address
        ...
    relay.stats                              # RelayStats(messages_in=..., dropped=..., ...)

This kernel has no netem, so delay, bandwidth and loss are emulated here: the
relay binds a PULL socket where the sender's PUSH connects, holds each multipart
message for as long as the modelled link would, and forwards it from a PUSH
socket connected to the receiver. The link is one FIFO pipe:

    start       = max(arrival, link_free_at)     # queue behind earlier messages
    link_free_at = start + 8 * bytes / bandwidth  # serialisation
    due         = link_free_at + latency          # propagation

so order is preserved and ``due`` never decreases. A message is forwarded within a
fraction of a millisecond of its ``due`` (the last millisecond is slept, not polled:
a message arriving meanwhile is read up to that much later). ``bytes`` is the sum of the
message's frame lengths (ZMTP framing overhead, a few bytes per frame, is not
counted). An on-path attacker lives in the ``tamper`` hooks: they see the frames
exactly as they cross the wire, before loss and delay, and may alter, drop or
multiply messages.

Imports stay light (stdlib + pyzmq) so the relay runs on any board.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import zmq

from ..errors import ConfigError, TransportError

__all__ = ["LinkModel", "Relay", "RelayStats", "Tamper"]

Frames = list[bytes]  # one multipart message: frame 0 the msgpack header, 1.. raw tensors


@dataclass(frozen=True)
class LinkModel:
    """What the emulated link does to traffic. The defaults are a perfect pass-through."""

    bandwidth_bps: float = float("inf")
    """Serialisation rate: a message of B bytes occupies the link for 8*B/bandwidth s."""
    latency_s: float = 0.0
    """One-way propagation delay, added after serialisation."""
    loss: float = 0.0
    """Probability that a whole message is dropped (one independent draw per message)."""
    seed: int = 0
    """Seed of the loss draws: the same seed and the same traffic drop the same messages."""

    def __post_init__(self) -> None:
        if not self.bandwidth_bps > 0:  # also rejects NaN
            raise ConfigError(f"link bandwidth_bps must be > 0, got {self.bandwidth_bps}")
        if not 0 <= self.latency_s < math.inf:
            raise ConfigError(f"link latency_s must be finite and >= 0, got {self.latency_s}")
        if not 0 <= self.loss <= 1:
            raise ConfigError(f"link loss must be in [0, 1], got {self.loss}")

    @classmethod
    def of(cls, link: _LinkFigures, seed: int = 0) -> LinkModel:
        """The model of a platform link, e.g. ``LinkModel.of(platform.link("pi1", "pi2"))``."""
        return cls(link.bandwidth_bps, link.latency_s, link.loss, seed)

    def serialisation_s(self, nbytes: int) -> float:
        """Seconds a message of ``nbytes`` occupies the link."""
        return 0.0 if math.isinf(self.bandwidth_bps) else 8 * nbytes / self.bandwidth_bps


class _LinkFigures(Protocol):
    """Anything with a link's figures (``shardguard.platform.Link`` is one)."""

    @property
    def bandwidth_bps(self) -> float: ...
    @property
    def latency_s(self) -> float: ...
    @property
    def loss(self) -> float: ...


class Tamper(Protocol):
    """An on-path attacker's hook, called on every message in arrival order.

    It receives the message's frames and returns the messages to forward in
    their place: ``[frames]`` passes it on (possibly modified), ``[]`` or
    ``None`` drops it, ``[frames, old]`` injects a replay after it. Hooks run in
    sequence, each on every message the previous one returned. A hook that
    raises stops the relay; ``Relay.stop()`` then re-raises the exception.
    """

    def __call__(self, frames: Frames) -> Sequence[Sequence[bytes]] | None: ...


@dataclass(frozen=True)
class RelayStats:
    """A snapshot of a relay's counters."""

    messages_in: int = 0   # received from the sender
    messages_out: int = 0  # handed to the receiver's socket (replays count, drops do not)
    dropped: int = 0       # lost by the loss model (tamper drops are the hook's business)
    bytes_in: int = 0
    bytes_out: int = 0
    max_queue: int = 0     # most messages ever held on the emulated link at once


class Relay:
    """Emulates one link between a sender (PUSH) and a receiver (PULL) in a background thread.

    ``upstream_bind`` is where the relay's PULL binds (``"tcp://127.0.0.1:*"``
    picks a free port; read the result from ``address`` after ``start()``);
    ``downstream`` is the receiver's bound address. ``queue_limit`` is how many
    messages the link holds: when full, the relay stops reading and the sender
    blocks at its high-water mark, as TCP flow control would. If the receiver
    cannot take more, the relay likewise waits instead of dropping.
    """

    def __init__(self, upstream_bind: str, downstream: str, model: LinkModel,
                 tamper: Sequence[Tamper] = (), context: zmq.Context[Any] | None = None,
                 queue_limit: int = 1000) -> None:
        if queue_limit < 1:
            raise ConfigError(f"relay queue_limit must be >= 1, got {queue_limit}")
        self.upstream_bind = upstream_bind
        self.downstream = downstream
        self.model = model
        self.tamper = list(tamper)
        self.queue_limit = queue_limit
        self._context = context if context is not None else zmq.Context.instance()
        self._address: str | None = None
        self._thread: threading.Thread | None = None
        self._wake: zmq.Socket[Any] | None = None  # our end of the inproc PAIR that stops the loop
        self._lock = threading.Lock()
        self._stats = RelayStats()
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address the sender must connect to (the bound port filled in)."""
        if self._address is None:
            raise TransportError(f"relay {self.upstream_bind} -> {self.downstream}: not started")
        return self._address

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> RelayStats:
        with self._lock:
            return self._stats

    def start(self) -> Relay:
        """Bind, connect and start forwarding; returns ``self``."""
        if self._thread is not None:
            raise TransportError(f"relay {self.upstream_bind} -> {self.downstream}: "
                                 "already started")
        ctx = self._context
        wake_addr = f"inproc://shardguard-relay-{uuid.uuid4().hex}"
        sockets: list[zmq.Socket[Any]] = []
        try:
            pull = _socket(ctx, zmq.PULL, sockets)
            push = _socket(ctx, zmq.PUSH, sockets)
            wake = _socket(ctx, zmq.PAIR, sockets)
            inner = _socket(ctx, zmq.PAIR, sockets)
            pull.bind(self.upstream_bind)
            push.connect(self.downstream)
            wake.bind(wake_addr)
            inner.connect(wake_addr)
            self._address = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            for s in sockets:
                s.close(linger=0)
            raise TransportError(f"relay {self.upstream_bind} -> {self.downstream}: "
                                 f"cannot open sockets: {exc}") from exc
        self._wake = wake
        # The sockets migrate to the relay thread; Thread.start() is the memory barrier
        # ZeroMQ asks for, and the thread alone uses (and closes) them from here on.
        self._thread = threading.Thread(target=self._run, args=(pull, push, inner),
                                        name=f"shardguard-relay {self._address}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop forwarding, join the thread, close every socket (linger 0); idempotent.

        Messages still on the emulated link are discarded. If the relay thread
        failed (a tamper hook raised, a socket error), that error is raised here.
        """
        thread, wake = self._thread, self._wake
        if wake is not None:
            try:
                wake.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the thread already ended and closed its end
            if thread is not None:
                thread.join()
            wake.close(linger=0)
            self._wake = None
        error, self._error = self._error, None
        if error is not None:
            if isinstance(error, zmq.ZMQError):
                raise TransportError(
                    f"relay {self._address} -> {self.downstream}: {error}") from error
            raise error

    def __enter__(self) -> Relay:
        return self if self._thread is not None else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the loop (relay thread only) ------------------------------------------------------

    def _run(self, pull: zmq.Socket[Any], push: zmq.Socket[Any], wake: zmq.Socket[Any]) -> None:
        model = self.model
        rng = random.Random(model.seed)
        link: deque[tuple[float, list[Any], int]] = deque()  # (due, frames, nbytes); due ascending
        link_free_at = 0.0
        blocked = False  # the head is due but the receiver's pipe is full
        poller = zmq.Poller()
        poller.register(wake, zmq.POLLIN)
        try:
            while True:
                # Forward every message that is due, oldest first.
                now = time.monotonic()
                blocked = False
                while link and link[0][0] <= now:
                    _, frames, nbytes = link[0]
                    try:
                        push.send_multipart(frames, zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        blocked = True
                        break
                    link.popleft()
                    self._count(messages_out=1, bytes_out=nbytes)

                poller.register(pull, zmq.POLLIN if len(link) < self.queue_limit else 0)
                poller.register(push, zmq.POLLOUT if blocked else 0)
                timeout: int | None = None
                if link and not blocked:
                    wait = link[0][0] - time.monotonic()
                    if 0 < wait < 1e-3:  # poll counts whole ms: sleep the rest precisely
                        time.sleep(wait)
                        continue
                    timeout = max(0, math.floor(wait * 1000))
                events = dict(poller.poll(timeout))
                if wake in events:
                    return

                # Take what has arrived, up to the link's capacity; each message's
                # arrival time is when the relay reads it.
                while pull in events and len(link) < self.queue_limit:
                    try:
                        received = pull.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    now = time.monotonic()
                    nbytes = sum(len(f) for f in received)
                    self._count(messages_in=1, bytes_in=nbytes)
                    for frames in self._tampered(received):
                        size = sum(len(f) for f in frames)
                        if model.loss > 0 and rng.random() < model.loss:
                            self._count(dropped=1)
                            continue
                        start = max(now, link_free_at)
                        link_free_at = start + model.serialisation_s(size)
                        link.append((link_free_at + model.latency_s, frames, size))
                    self._count(queue=len(link))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of stop()
            self._error = exc
        finally:
            for s in (pull, push, wake):
                s.close(linger=0)

    def _tampered(self, received: list[zmq.Frame]) -> list[list[Any]]:
        """The messages to put on the link in place of ``received`` (itself, without hooks)."""
        if not self.tamper:
            return [list(received)]  # zero-copy: the frames go out as they came in
        messages: list[list[Any]] = [[f.bytes for f in received]]
        for hook in self.tamper:
            out: list[list[Any]] = []
            for frames in messages:
                result = hook(list(frames))
                if result is None:
                    continue
                if not isinstance(result, (list, tuple)) or not all(
                        isinstance(m, (list, tuple)) and m for m in result):
                    raise TypeError(f"tamper hook {hook!r} must return a list of messages, each "
                                    "a non-empty list of frames, or None; got "
                                    f"{type(result).__name__} (to forward one, return [frames])")
                out.extend(list(m) for m in result)
            messages = out
        return messages

    def _count(self, messages_in: int = 0, messages_out: int = 0, dropped: int = 0,
               bytes_in: int = 0, bytes_out: int = 0, queue: int = 0) -> None:
        with self._lock:
            s = self._stats
            self._stats = RelayStats(
                s.messages_in + messages_in, s.messages_out + messages_out, s.dropped + dropped,
                s.bytes_in + bytes_in, s.bytes_out + bytes_out, max(s.max_queue, queue))


def _socket(ctx: zmq.Context[Any], kind: int, opened: list[zmq.Socket[Any]]) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    opened.append(sock)
    return sock
