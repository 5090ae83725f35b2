"""The worker: the long-running process on one edge device.

    shardguard worker --bind tcp://0.0.0.0:5555 --name pi1 --keys keys/

It binds a control socket (ZeroMQ ROUTER, CurveZMQ server: only coordinator
keys in ``KEYS/authorized/`` may talk to it) and a data socket (PULL) on the next
port (any free port when the control port is 0); both are on its READY line.
A coordinator deploys stages to it as ONNX models; it runs them with
onnxruntime and sends each stage's outputs straight to the next stage's worker.
Every message is validated (``wire.py``); a bad one is counted and dropped, and
the worker keeps serving. Imports only numpy, onnxruntime, pyzmq, msgpack: it
runs where torch does not.

Control messages are msgpack maps with a ``kind``: ``hello``, ``deploy``,
``stats``, ``behave`` (fault injection, used by threat experiments) and
``shutdown``; each gets one reply map with ``ok`` and either results or
``error``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
import traceback
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..errors import ConfigError, IntegrityError, MalformedMessage, ShardGuardError
from . import wire
from ._freivalds import Verifier
from ._sealing import Sealing
from ._sockets import push_socket
from ._voting import Ballots, VoteFailed, copy_link, copy_of, role
from .keys import load_pair

DONE_MEMORY = 8192  # (request, stage) pairs remembered to drop duplicates
MAX_CONTROL_BYTES = 512 * 2**20
MAX_DATA_BYTES = 256 * 2**20
MAX_PENDING = 4096  # requests waiting for more pieces


@dataclass
class Stage:
    name: str
    session: Any  # onnxruntime.InferenceSession
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    links: set[str]
    stored: bytearray = field(default_factory=bytearray)  # the ONNX model as deployed (M7)
    sha256: str = ""
    check: Verifier | None = None  # a Freivalds verifier stage (M4): its secret pool
    compute_s: float = 0.0
    runs: int = 0


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    duplicates: int = 0
    expired: int = 0
    send_failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    clipped: int = 0  # values the range guards clipped (M5)
    flagged: int = 0  # samples with a clipped value
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_per_link: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Worker:
    def __init__(self, name: str, bind: str, keys: Path | None, threads: int = 1,
                 insecure: bool = False) -> None:
        self.name, self.threads = name, threads
        self.ctx = zmq.Context()
        self.auth: ThreadAuthenticator | None = None
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)
        if not insecure:
            if keys is None:
                raise ConfigError("a worker needs --keys DIR (or --insecure for tests)")
            authorized = keys / "authorized"
            if not authorized.is_dir():
                raise ConfigError(f"{keys}: needs authorized/ with the coordinator's public key "
                                  f"(make it with: shardguard keys generate {keys})")
            public, private = load_pair(keys, name)
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(authorized))
            self.control.curve_server = True
            self.control.curve_publickey = public
            self.control.curve_secretkey = private
        self.control_address = _bind(self.control, bind)
        self.data = self.ctx.socket(zmq.PULL)
        self.data.setsockopt(zmq.LINGER, 0)
        self.data.setsockopt(zmq.RCVHWM, 10_000)
        self.data.setsockopt(zmq.MAXMSGSIZE, MAX_DATA_BYTES)  # libzmq drops anything larger
        # data on the next port when the control port was chosen, else on any free port
        host, port = self.control_address.rsplit(":", 1)
        explicit = not bind.endswith((":0", ":*"))
        self.data_address = _bind(self.data, f"{host}:{int(port) + 1}" if explicit else f"{host}:*")
        self.stages: dict[str, Stage] = {}
        self.by_link: dict[str, Stage] = {}
        self.schema: dict[str, wire.Expected] = {}
        self.peers: dict[str, str] = {}  # device → data address
        self.relays: dict[str, str] = {}  # "link@device" → relay address on that link
        self.sink = ""  # coordinator's data address
        self.out: dict[str, zmq.Socket] = {}
        # (request, stage) → (first piece's arrival, pieces so far, route)
        self.pending: dict[tuple[int, str], tuple[float, dict[str, np.ndarray],
                                                  dict[str, str]]] = {}
        self.done: OrderedDict[tuple[int, str], None] = OrderedDict()
        self.deadline_s = 30.0
        self.seq: dict[str, int] = defaultdict(int)
        self.counters = Counters()
        self.behaviour: dict[str, Any] = {}  # fault injection: slow, corrupt
        self.sealing = Sealing(name)  # new X25519 keys at every hello
        self.guards: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # tensor → per-channel range
        self.vote: dict[str, int] = {}  # M4: stage → copies that vote
        self.hosts: dict[str, set[str]] = {}  # stage → the devices the plan puts it on
        self.on_reject = "failover"  # "degrade": a rejected piece of a split tensor is zeros
        self.degraded: OrderedDict[int, None] = OrderedDict()  # requests answered degraded
        self.ballots = Ballots({})  # the copies of voted stages' outputs, per request
        self.rng = np.random.default_rng()  # a verifier's draws from its pool: unpredictable
        self.coordinator: bytes | None = None  # control identity that deployed us: alarms go there
        self.running = True
        self.parent: int | None = None  # stop when this process is gone (spawned workers)

    # -- control plane ----------------------------------------------------------------------
    def handle_control(self, identity: bytes, raw: bytes) -> None:
        message: Any = None
        try:
            message = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
                raise MalformedMessage("control message is not a map with a kind")
            reply = {**self._control(message, identity), "id": message.get("id")}
        except Exception as exc:  # bad input, or onnxruntime's own types: answer, keep serving
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if isinstance(message, dict) and "id" not in reply:
            reply["id"] = message.get("id")
        self.control.send_multipart([identity, msgpack.packb(reply, use_bin_type=True)])

    def _control(self, m: dict[str, Any], identity: bytes) -> dict[str, Any]:
        kind = m["kind"]
        if kind == "hello":
            self.sealing = Sealing(self.name)
            return {"ok": True, "name": self.name, "data": self.data_address, "pid": os.getpid(),
                    "x25519": self.sealing.public}
        if kind == "deploy":
            self._deploy(m)
            self.coordinator = identity
            return {"ok": True, "stages": sorted(self.stages)}
        if kind == "stats":
            c = self.counters
            return {"ok": True, "received": c.received, "processed": c.processed,
                    "duplicates": c.duplicates, "expired": c.expired,
                    "send_failed": c.send_failed, "rejected": dict(c.rejected),
                    "clipped": c.clipped, "flagged": c.flagged,
                    "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
                    "bytes_per_link": dict(c.bytes_per_link), "pending": len(self.pending),
                    "rss": _rss_bytes(),
                    "stages": {s.name: {"runs": s.runs, "compute_s": s.compute_s}
                               for s in self.stages.values()}}
        if kind == "behave":
            self.behaviour = dict(m.get("behaviour") or {})
            flips = int(self.behaviour.pop("flip_stored", 0))
            if flips:  # D5 at rest: bits flip in the stored models, seen at the next load
                rng = np.random.default_rng(int(self.behaviour.get("seed", 0)))
                for stage in self.stages.values():
                    where = rng.integers(0, len(stage.stored) * 8, flips)
                    for bit in where:
                        stage.stored[bit // 8] ^= 1 << (bit % 8)
            return {"ok": True}
        if kind == "verify":  # M7 on demand: each stored model against its deployed digest
            return {"ok": True, "stages": {
                s.name: hashlib.sha256(s.stored).hexdigest() == s.sha256
                for s in self.stages.values()}}
        if kind == "shutdown":
            self.running = False
            return {"ok": True}
        raise MalformedMessage(f"unknown control kind {kind!r}")

    def _deploy(self, m: dict[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        stages: dict[str, Stage] = {}
        for art in m["stages"]:
            model = bytes(art["onnx"])
            if hashlib.sha256(model).hexdigest() != art["sha256"]:
                raise MalformedMessage(f"stage {art['stage']}: ONNX bytes do not match sha256")
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            links = {p["link"] for p in art["inputs"]}
            check = Verifier.from_wire(art["check"]) if art.get("check") else None
            stages[art["stage"]] = Stage(art["stage"], session, art["inputs"], art["outputs"],
                                         links, bytearray(model), art["sha256"], check)
        self.stages = stages
        self.vote = {str(k): int(v) for k, v in (m.get("vote") or {}).items()}
        self.on_reject = str(m.get("on_reject", "failover"))
        # which devices may run each stage: a route naming any other is refused
        self.hosts = {str(k): {str(d) for d in v} for k, v in (m.get("hosts") or {}).items()}
        self.ballots = Ballots(self.vote)
        self.by_link = {link: s for s in stages.values() for link in s.links}
        schema: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = defaultdict(dict)
        for s in stages.values():
            for p in s.inputs:
                schema[p["link"]][p["tensor"]] = (p["dtype"], tuple(p["shape"]))
        for link in list(schema):  # a voted stage's copies send on links of their own
            for j in range(1, self.vote.get(link.split(">", 1)[0], 1)):
                schema[copy_link(link, j)] = schema[link]
        max_batch = int(m.get("max_batch", 1024))
        self.sealing.configure(m.get("protection") or {}, m.get("publics") or {})
        self.guards = {str(name): (np.asarray(b[0], np.float32), np.asarray(b[1], np.float32))
                       for name, b in (m.get("guards") or {}).items()}
        self.schema = {link: wire.Expected(t, max_batch, self.sealing.sealed(link))
                       for link, t in schema.items()}
        # sequence numbers are nonces: they only grow, whatever the keys (never reset)
        self.peers = {str(k): str(v) for k, v in m["devices"].items()}
        self.relays = {str(k): str(v) for k, v in (m.get("relays") or {}).items()}
        self.sink = str(m["sink"])
        self.deadline_s = float(m.get("deadline_s", 30.0))
        self.pending.clear()
        self.done.clear()
        for sock in self.out.values():  # the previous deployment's peers
            sock.close(linger=0)
        self.out.clear()
        # connect to every peer now, so the first messages are not dropped while connecting
        targets = [*self.peers.values(), *self.relays.values(), self.sink]
        for address in targets:
            self._socket(address)
        end = time.monotonic() + 5.0
        for address in targets:
            self.out[address].poll(max(0, int((end - time.monotonic()) * 1000)), zmq.POLLOUT)

    # -- data plane -------------------------------------------------------------------------
    def handle_data(self, frames: list[zmq.Frame]) -> None:
        self.counters.received += 1
        try:
            header, arrays = wire.decode(frames, self.schema, unseal=self.sealing.unseal)
        except MalformedMessage as exc:
            reason = str(exc).split(":", 1)[0][:60]
            self.counters.rejected[reason] += 1
            return
        except IntegrityError as exc:
            self.counters.rejected[f"integrity: {str(exc)[:60]}"] += 1
            self._alarm(frames, str(exc))
            if self.on_reject == "degrade":
                self._degrade(frames)
            return
        if header.flags & wire.FLAG_DEGRADED:
            self._mark_degraded(header.req)
        if self.hosts and not self._route_ok(header):
            self.counters.rejected["route names a device the plan does not"] += 1
            return
        size = sum(a.nbytes for a in arrays.values())
        if self.guards:
            arrays = {name: self._guard(name, a) for name, a in arrays.items()}
        self.counters.bytes_in += size
        self.counters.bytes_per_link[header.link] += size
        self.receive(header.req, header.link, arrays, dict(header.route))

    def _degrade(self, frames: list[zmq.Frame]) -> None:
        """M6: a rejected piece of a split tensor becomes zeros; the request goes on, degraded.

        The header was checked against what this link carries (only its tensors failed
        their tags), so the zeros have the expected shapes. A whole (unsplit) tensor is
        not filled: without it the stage has nothing to compute on.
        """
        header = wire.parse_header(frames[0].buffer)
        stage = self.by_link.get(header.link)
        if stage is None or not all(self._is_piece(stage, t.name) for t in header.tensors):
            return
        key = (header.req, stage.name)
        have = self.pending.get(key, (0.0, {}, {}))[1]
        zeros = {t.name: np.zeros(t.shape, np.float32) for t in header.tensors
                 if t.name not in have}  # never over a piece that did arrive
        self._mark_degraded(header.req)
        self.deliver(header.req, header.link, zeros, dict(header.route))

    @staticmethod
    def _is_piece(stage: Stage, tensor: str) -> bool:
        node = tensor.rsplit(":", 1)[-1]
        return sum(p["tensor"].rsplit(":", 1)[-1] == node for p in stage.inputs) > 1

    def _mark_degraded(self, req: int) -> None:
        self.degraded[req] = None
        if len(self.degraded) > DONE_MEMORY:
            self.degraded.popitem(last=False)

    def _route_ok(self, header: wire.Header) -> bool:
        """Every stage in the route on one of its plan's devices, and this device a receiver.

        On a sealed link the route is authenticated, so a device holding keys still
        cannot claim a stage the plan did not give it.
        """
        for stage, device in header.route.items():
            base = copy_of(stage)[0]
            if base == "output":
                if device != "coordinator":
                    return False
            elif device not in self.hosts.get(base, ()):
                return False
        dst = header.link.split(">", 1)[1]
        receivers = [header.route.get(dst)] + [header.route.get(f"{dst}@{j}")
                                               for j in range(1, self.vote.get(dst, 1))]
        return self.name in receivers

    def _guard(self, name: str, x: np.ndarray) -> np.ndarray:
        """M5: clip to the clean per-channel range; count what was out of it."""
        bounds = self.guards.get(name)
        if bounds is None or x.ndim < 2 or bounds[0].shape != (x.shape[1],):
            return x
        shape = (1, -1, *[1] * (x.ndim - 2))
        low, high = bounds[0].reshape(shape), bounds[1].reshape(shape)
        bad = ~np.isfinite(x) | (x < low) | (x > high)
        if not bad.any():
            return x
        self.counters.clipped += int(bad.sum())
        self.counters.flagged += int(bad.reshape(len(x), -1).any(1).sum())
        return np.clip(np.nan_to_num(x, nan=0.0), low, high)

    def _alarm(self, frames: list[zmq.Frame], reason: str) -> None:
        """Tell the coordinator a sealed message was rejected, so its policy can act."""
        if self.coordinator is None:
            return
        header = wire.parse_header(frames[0].buffer)  # decode parsed it before unsealing
        sender = header.route.get(header.link.split(">", 1)[0], "coordinator")
        self._send_alarm(header.req, header.link, sender, reason)

    def _send_alarm(self, req: int, link: str, sender: str, reason: str) -> None:
        if self.coordinator is None:
            return
        alarm = {"kind": "alarm", "req": req, "link": link, "sender": sender,
                 "receiver": self.name, "reason": reason}
        try:
            self.control.send_multipart([self.coordinator, msgpack.packb(alarm)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the coordinator is gone or slow: the rejection is still counted

    def deliver(self, req: int, link: str, arrays: dict[str, np.ndarray],
                route: dict[str, str]) -> None:
        stage = self.by_link[link]
        key = (req, stage.name)
        if key in self.done:
            self.counters.duplicates += 1
            return
        first, have, _ = self.pending.get(key, (time.monotonic(), {}, route))
        batches = {a.shape[0] for a in [*have.values(), *arrays.values()]}
        if len(batches) > 1:  # pieces of one request must agree on its batch
            self.counters.rejected["pieces disagree on the batch size"] += 1
            return
        if key not in self.pending and len(self.pending) >= MAX_PENDING:
            self.counters.rejected["too many incomplete requests"] += 1
            return
        have.update(arrays)
        wanted = [p["tensor"] for p in stage.inputs]
        if not all(t in have for t in wanted):
            self.pending[key] = (first, have, route)
            return
        self.pending.pop(key, None)
        self.done[key] = None
        if len(self.done) > DONE_MEMORY:
            self.done.popitem(last=False)
        self.run(stage, req, [have[t] for t in wanted], route)

    def run(self, stage: Stage, req: int, inputs: list[np.ndarray], route: dict[str, str]) -> None:
        start = time.perf_counter()
        feeds = {p["name"]: x for p, x in zip(stage.inputs, inputs)}
        try:
            outputs = stage.session.run(None, feeds)
        except Exception as exc:  # onnxruntime's own error types; the worker keeps serving
            self.counters.rejected[f"stage {stage.name} failed: {type(exc).__name__}"] += 1
            return
        slow = float(self.behaviour.get("slow", 1.0))
        elapsed = time.perf_counter() - start
        if slow > 1.0:  # a straggler: k× slower
            time.sleep(elapsed * (slow - 1.0))
        stage.compute_s += time.perf_counter() - start
        stage.runs += 1
        self.counters.processed += 1
        if stage.check is not None and not self._verified(stage, stage.check, req, feeds,
                                                            outputs, route):
            return
        outputs = [self._misbehave(stage.name, np.asarray(o, dtype=np.float32))
                   for o in outputs]
        groups: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
        for port, value in zip(stage.outputs, outputs):
            groups[port["link"]].append((port["tensor"], value))
        me = role(stage.name, self.name, route, self.vote.get(stage.name, 1)) or 0
        for base, arrays in groups.items():
            link = copy_link(base, me)  # a voted stage's copy j sends on "S@j>T"
            dst = base.split(">", 1)[1]
            copies = [route.get(dst, "")] + [route.get(f"{dst}@{j}", "")
                                             for j in range(1, self.vote.get(dst, 1))]
            for device in copies:
                relayed = f"{base}@{device}" in self.relays  # an attacker or emulator is there
                if device == self.name and link in self.schema and not relayed:  # here too
                    self.receive(req, link, dict(arrays), route)
                    continue
                if dst == "output":
                    address = self.relays.get(f"{base}@output", self.sink)
                else:  # through the link's relay when the coordinator put one there
                    address = self.relays.get(f"{base}@{device}", self.peers.get(device, ""))
                self.send(address, req, link, route, arrays, device)

    def _verified(self, stage: Stage, check: Verifier, req: int, feeds: dict[str, np.ndarray],
                  outputs: list[Any], route: dict[str, str]) -> bool:
        """M4: check the prover's claims; on a failure nothing is sent on (fail closed)."""
        start, n = time.perf_counter(), len(stage.outputs)
        zs = [np.asarray(z, dtype=np.float32) for z in outputs[n:]]
        del outputs[n:]  # what is sent: the stage's outputs, not the affine inputs
        bad = check.bad(feeds, zs, self.rng)
        stage.compute_s += time.perf_counter() - start  # the check is the verifier's work
        if not bad.any():
            return True
        self.counters.rejected["freivalds: a claim failed its check"] += 1
        self._send_alarm(req, check.link, route.get(check.stage, "?"),
                         f"Freivalds check failed on {int(bad.sum())} of {len(bad)} sample(s)")
        return False

    def _misbehave(self, stage: str, x: np.ndarray) -> np.ndarray:
        mode = self.behaviour.get("corrupt")
        only = self.behaviour.get("stages")  # a selective liar: only what these stages send
        if not mode or (isinstance(only, list) and stage not in set(map(str, only))):
            return x
        if mode == "zero":
            return np.zeros_like(x)
        if mode == "scale":
            return x * float(self.behaviour.get("factor", 10.0))
        if mode == "sign":
            return -x
        if mode == "random":
            rng = np.random.default_rng(int(self.behaviour.get("seed", 0)))
            return rng.standard_normal(x.shape).astype(np.float32) * (float(x.std()) or 1.0)
        return x

    def receive(self, req: int, link: str, arrays: dict[str, np.ndarray],
                route: dict[str, str]) -> None:
        """A checked message, off the wire or from a stage on this device: a voted stage's
        copies are voted on first (the sender of a failed vote is unknown: "?")."""
        if self.ballots.voted(link):
            try:
                decided = self.ballots.cast(req, link, arrays)
            except VoteFailed as exc:
                self.counters.rejected["vote: copies disagree"] += 1
                self._send_alarm(req, link, "?", f"vote failed: {exc}")
                return
            if decided is None:
                return  # more copies to come
            link, arrays = decided
        self.deliver(req, link, arrays, route)

    def send(self, address: str, req: int, link: str, route: dict[str, str],
             arrays: list[tuple[str, np.ndarray]], receiver: str | None = None) -> None:
        if not address:
            self.counters.send_failed += 1
            return
        sock = self._socket(address)
        self.seq[link] += 1
        flags = wire.FLAG_DEGRADED if req in self.degraded else 0
        frames = self.sealing.encode(req, self.seq[link], link, route, arrays, flags,
                                     receiver=None if receiver == "output" else receiver)
        if self.behaviour.get("garble_wire") and len(frames) > 1:  # a faulty link segment
            last = bytearray(frames[-1])
            last[len(last) // 2] ^= 0x10
            frames[-1] = last
        try:
            sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counters.send_failed += 1
            return
        self.counters.bytes_out += sum(a.nbytes for _, a in arrays)

    def _socket(self, address: str) -> zmq.Socket:
        if address not in self.out:
            self.out[address] = push_socket(self.ctx, address)
        return self.out[address]

    def expire(self) -> None:
        cutoff = time.monotonic() - self.deadline_s
        for key in [k for k, (t, _, _) in self.pending.items() if t < cutoff]:
            del self.pending[key]
            self.counters.expired += 1

    # -- loop -------------------------------------------------------------------------------
    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.data, zmq.POLLIN)
        last_expiry = time.monotonic()
        while self.running:
            events = dict(poller.poll(200))
            if self.control in events:
                frames = self.control.recv_multipart()
                if len(frames) == 2:
                    self.handle_control(frames[0], frames[1])
            if self.data in events:
                for _ in range(64):  # drain a burst, then look at control again
                    try:
                        frames = self.data.recv_multipart(copy=False, flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self.handle_data(frames)
                    except Exception as exc:  # noqa: BLE001 - a bug must not stop the device
                        self.counters.rejected[f"internal error: {type(exc).__name__}"] += 1
                        traceback.print_exc(file=sys.stderr)  # the worker's log shows it
            if time.monotonic() - last_expiry > 1.0:
                self.expire()
                last_expiry = time.monotonic()
                if self.parent is not None and os.getppid() != self.parent:
                    self.running = False
        self.close()

    def close(self) -> None:
        for sock in [self.control, self.data, *self.out.values()]:
            sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()


def _bind(sock: zmq.Socket, address: str) -> str:
    try:
        if address.endswith(":0"):
            address = address[:-2] + ":*"
        sock.bind(address)
    except zmq.ZMQError as exc:
        raise ConfigError(f"cannot bind {address}: {exc}") from exc
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shardguard worker", description="Run stages for one device "
        "(example: shardguard worker --bind tcp://0.0.0.0:5555 --name pi1 --keys keys/).")
    parser.add_argument("--bind", required=True, help="control address, e.g. tcp://0.0.0.0:5555 "
                        "(data binds port + 1); port 0 picks free ports")
    parser.add_argument("--name", required=True, help="this device's name in the platform")
    parser.add_argument("--keys", type=Path, help="key directory (shardguard keys generate)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    parser.add_argument("--insecure", action="store_true",
                        help="no CurveZMQ on the control plane (tests only)")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this one exits")
    args = parser.parse_args(argv)
    try:
        worker = Worker(args.name, args.bind, args.keys, args.threads, args.insecure)
    except ShardGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: setattr(worker, "running", False))
    if args.exit_with_parent:
        worker.parent = os.getppid()
    print(f"READY {worker.name} {worker.control_address} {worker.data_address}", flush=True)
    try:
        worker.serve()
    except KeyboardInterrupt:
        worker.close()
    return 0


def main_exit() -> None:  # the light console script ``shardguard-worker``
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
