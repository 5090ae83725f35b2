"""The security suite's own tools: a fuzzer, an on-path attacker, a tap and an injector.

They know the wire format only as an attacker would (msgpack header, raw frames, a
last frame that is some tag), and use no ShardGuard code to build what they send.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np

Frames = list[bytes]


def header_of(frames: Frames) -> dict[str, Any] | None:
    try:
        header = msgpack.unpackb(frames[0], raw=False)
    except Exception:  # noqa: BLE001 - not a header: not a data message
        return None
    return header if isinstance(header, dict) else None


def fuzz(samples: list[Frames], count: int, seed: int = 0) -> Iterator[Frames]:
    """``count`` malformed or forged messages, made from real ones seen on the wire:
    random bytes, cut or extra frames, headers with fields changed, wrong types or sizes,
    flipped bits anywhere, tags made up, huge shapes, nested junk."""
    rng = np.random.default_rng(seed)
    junk: list[Any] = [None, -1, 2**64 - 1, 1.5, "x" * 300, b"\x00", [], {}, [[[]]], True,
                       {"a": {"b": {"c": 1}}}, "s0>s1" * 60]
    for i in range(count):
        frames = [bytes(f) for f in samples[i % len(samples)]]
        op = int(rng.integers(12))
        if op == 0:  # random bytes
            yield [rng.bytes(int(rng.integers(0, 200))) for _ in range(int(rng.integers(1, 5)))]
            continue
        if op == 1:  # fewer or more frames
            yield frames[:int(rng.integers(0, len(frames)))] + [rng.bytes(8)] * int(
                rng.integers(0, 3))
            continue
        if op == 2:  # a flipped bit anywhere (header, payload or tag)
            k = int(rng.integers(len(frames)))
            if frames[k]:
                b = bytearray(frames[k])
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
                frames[k] = bytes(b)
            yield frames
            continue
        if op == 3:  # a made-up tag
            yield [*frames[:-1], rng.bytes(len(frames[-1]))]
            continue
        if op == 4:  # a cut frame
            k = int(rng.integers(len(frames)))
            yield [*frames[:k], frames[k][:int(rng.integers(0, max(1, len(frames[k]))))],
                   *frames[k + 1:]]
            continue
        header = header_of(frames) or {}
        if op == 5:  # a field changed to junk
            if header:
                header[str(rng.choice(sorted(header)))] = junk[int(rng.integers(len(junk)))]
        elif op == 6:  # a field dropped or an unknown one added
            if header and rng.random() < 0.5:
                header.pop(str(rng.choice(sorted(header))))
            else:
                header["extra"] = 1
        elif op == 7:  # another request id or sequence number (what an injector would try)
            header[str(rng.choice(["req", "seq"]))] = int(rng.integers(0, 2**62))
        elif op == 8:  # a route naming outsiders or other devices
            header["route"] = {str(k): f"evil{int(rng.integers(9))}"
                               for k in header.get("route", {"s0": 0})}
        elif op == 9:  # huge or negative shapes
            for t in header.get("tensors", []):
                if isinstance(t, dict):
                    t["shape"] = [2**31 - 1, 2**31 - 1, int(rng.integers(-5, 5))]
        elif op == 10:  # another link, as long as allowed
            header["link"] = "".join(rng.choice(list("abc>@~:")) for _ in range(40))
        else:  # not msgpack at all, but close
            yield [b"\x8f" + frames[0][1:], *frames[1:]]
            continue
        try:
            frames[0] = msgpack.packb(header, use_bin_type=True)
        except Exception:  # noqa: BLE001 - junk msgpack cannot carry: send garbage instead
            frames[0] = rng.bytes(32)
        yield frames


class Tap:
    """A relay hook that forwards everything and keeps copies (what a sniffer would see)."""

    def __init__(self, keep: int = 256) -> None:
        self.seen: deque[Frames] = deque(maxlen=keep)
        self.reqs: deque[int] = deque(maxlen=4096)
        self.lock = threading.Lock()

    def __call__(self, frames: Frames) -> list[Frames]:
        header = header_of(frames)
        with self.lock:
            self.seen.append([bytes(f) for f in frames])
            if header is not None and type(header.get("req")) is int:
                self.reqs.append(header["req"])
        return [frames]

    def samples(self) -> list[Frames]:
        with self.lock:
            return list(self.seen)


OPS = ("flip", "swap", "replay", "reorder", "truncate", "drop", "duplicate")


class OnPath:
    """A man in the middle on one hop: on a share ``rate`` of the messages it applies one
    of ``OPS`` (chosen at random, seeded), and counts what it did."""

    def __init__(self, rate: float = 0.2, seed: int = 0, ops: tuple[str, ...] = OPS) -> None:
        self.rate, self.ops = rate, ops
        self.rng = np.random.default_rng(seed)
        self.done: dict[str, int] = dict.fromkeys(ops, 0)
        self.held: tuple[str, Frames] | None = None  # a swap or reorder waiting for the next
        self.history: deque[Frames] = deque(maxlen=8)

    def __call__(self, frames: Frames) -> list[Frames] | None:
        frames = [bytes(f) for f in frames]
        out: list[Frames]
        if self.held is not None:  # finish a swap or reorder with this message
            (op, held), self.held = self.held, None
            if op == "reorder":
                out = [frames, held]  # the later message first
            else:
                if len(held) == len(frames) and len(held) > 2:
                    held[1:-1], frames[1:-1] = frames[1:-1], held[1:-1]  # payloads swapped
                out = [held, frames]
        elif self.rng.random() >= self.rate:
            out = [frames]
        else:
            out = self._attack(frames)
        self.history.extend(m for m in out if m)
        return out or None

    def _attack(self, frames: Frames) -> list[Frames]:
        op = str(self.rng.choice(self.ops))
        self.done[op] += 1
        if op == "flip":
            k = int(self.rng.integers(len(frames)))
            b = bytearray(frames[k])
            if b:
                b[int(self.rng.integers(len(b)))] ^= 1 << int(self.rng.integers(8))
            frames[k] = bytes(b)
            return [frames]
        if op in ("swap", "reorder"):
            self.held = (op, frames)
            return []
        if op == "replay":
            if not self.history:
                return [frames]
            old = self.history[int(self.rng.integers(len(self.history)))]
            if len(old) == len(frames) and self.rng.random() < 0.5:
                return [[frames[0], *old[1:-1], frames[-1]]]  # an earlier payload, this header
            return [frames, old]  # an earlier message again, whole
        if op == "truncate":
            k = int(self.rng.integers(len(frames)))
            if self.rng.random() < 0.3:
                return [frames[:k] + frames[k + 1:]] if len(frames) > 1 else []
            frames[k] = frames[k][:len(frames[k]) // 2]
            return [frames]
        if op == "drop":
            return []
        return [frames, list(frames)]  # duplicate
