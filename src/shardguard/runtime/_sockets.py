"""Socket helpers shared by the coordinator and the workers (pyzmq only)."""

from __future__ import annotations

from typing import Any

import zmq


def push_socket(ctx: zmq.Context[Any], address: str, hwm: int = 1000) -> zmq.Socket[Any]:
    """A PUSH socket to ``address`` that never queues for a peer that is not connected.

    With IMMEDIATE, a send to a dead or not-yet-connected peer fails at once
    (``zmq.Again`` with NOBLOCK) instead of piling up: the caller counts it, and the
    coordinator's deadline resubmits the request.
    """
    sock: zmq.Socket[Any] = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.connect(address)
    return sock
