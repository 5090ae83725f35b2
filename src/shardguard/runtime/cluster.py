"""The coordinator: deploy a plan to workers, stream requests through them, fail over.

    with shardguard.cluster("plan.yaml", spawn_local=True) as c:
        y = c.infer(x)                         # one request
        result = c.stream(x_all, labels=y_all)  # many in flight, with failover

Workers are reached over CurveZMQ-authenticated control sockets. Each request
carries its route (stage → device); when a device fails (ZeroMQ heartbeats and
connection events tell), requests in flight through it are resubmitted along a
route through the stage's replicas, and results are deduplicated by request id.
Every request ends as a result or an explicit error, within its deadline.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.utils.monitor

from .._progress import progress
from ..errors import AuthenticationError, ConfigError, MalformedMessage, TransportError
from ..partition.bind import Bound
from ..partition.compile import INPUT, OUTPUT, CompiledPlan
from ..partition.regions import crop, full
from . import keys as keyring
from . import wire
from ._freivalds import SUFFIX, Verifier
from ._sockets import push_socket
from ._voting import Ballots, VoteFailed, copy_link, samples_agree
from .export import export_plan
from .linksec import Inbox, LinkSecurity
from .protocol import COORDINATOR, POLICIES, Alarm, Behave, Deploy
from .relay import LinkModel, Relay, Tamper

HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 250, 1500
MAX_ALARMS_KEPT = 10_000  # alarms a stream keeps in its result (the rest are only counted)
DISTRUST_S = 30.0  # how long failover avoids a sender named by a rejected message
WITNESS_TOLERANCE = 1e-4  # a verified output against its prover's (as votes compare copies)


@dataclass
class Handle:
    device: str
    control: str
    socket: zmq.Socket[Any]
    monitor: zmq.Socket[Any]
    data: str = ""
    process: subprocess.Popen[str] | None = None
    alive: bool = True
    auth_failed: bool = False


@dataclass
class _Request:
    req: int
    index: int
    x: np.ndarray
    deadline: float
    started: float
    attempts: int = 1
    route: dict[str, str] = field(default_factory=dict)
    pieces: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class StreamResult:
    """What came back from a stream: one row per request."""

    outputs: np.ndarray  # (N, ...) — NaN rows where a request failed
    errors: dict[int, str]  # request index → why it failed
    latency_s: np.ndarray  # per request (NaN when failed)
    ended_s: np.ndarray  # per request: time from first submission to its result or error
    accepted: np.ndarray  # per request: how many results were accepted (1, or 0 if failed)
    elapsed_s: float
    samples: int
    resubmitted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # sealed messages refused
    degraded: np.ndarray | None = None  # per request: answered with a piece missing
    worker_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_devices: list[str] = field(default_factory=list)  # lost while streaming
    routed_around: list[str] = field(default_factory=list)  # distrusted: traffic moved away
    alarms: int = 0  # alarms acted on (``rejected`` keeps the first MAX_ALARMS_KEPT)

    @property
    def answered(self) -> int:
        return len(self.latency_s) - len(self.errors)

    def percentiles(self) -> dict[str, float]:
        ok = self.latency_s[~np.isnan(self.latency_s)]
        if not len(ok):
            return {}
        return {f"p{q}": float(np.percentile(ok, q)) for q in (50, 95, 99)}

    @property
    def throughput(self) -> float:
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Cluster:
    """Workers running one plan; see the module docstring."""

    def __init__(self, bound: Bound, *, workers: dict[str, str] | None = None,
                 spawn_local: bool = False, keys: Path | None = None, window: int = 32,
                 deadline_s: float = 10.0, max_attempts: int = 3, emulate_links: bool = False,
                 threads: int = 1, advertise: str = "127.0.0.1", seed: int = 0,
                 attackers: Sequence[Any] = (), on_reject: str = "failover",
                 guards: dict[str, tuple[Any, Any]] | None = None, vote: int = 1,
                 freivalds: int = 0, taps: dict[str, Sequence[Tamper]] | None = None,
                 fault_injection: bool = False) -> None:
        if not spawn_local and not workers:
            raise ConfigError("give worker addresses (--workers) or spawn them locally")
        if on_reject not in POLICIES:
            raise ConfigError(f"on_reject must be one of {', '.join(POLICIES)}, got {on_reject!r}")
        self.on_reject = on_reject
        # M5: per-channel clean ranges of link tensors (defences.guards.profile_bounds)
        self.guards = {name: (np.asarray(low, np.float32).tolist(),
                              np.asarray(high, np.float32).tolist())
                       for name, (low, high) in (guards or {}).items()}
        if vote not in (1, 2, 3):
            raise ConfigError(f"vote must be 1 (off), 2 (detect) or 3 (mask), got {vote}")
        if freivalds and vote > 1:
            raise ConfigError("voting and Freivalds checks both guard against a compromised "
                              "device: choose one")
        # M4 by Freivalds: each stage proves its affine layers to a verifier stage elsewhere
        self.compiled: CompiledPlan = bound.compiled
        self.verifiers: dict[str, Verifier] = {}
        if freivalds:
            from ..defences.freivalds import checked_plan

            self.compiled, self.verifiers = checked_plan(bound.compiled, rounds=freivalds)
        short = [p.name for p in bound.compiled.programs if len(p.replicas) < vote - 1]
        if short:
            raise ConfigError(f"voting with {vote} copies needs {vote - 1} replica(s) of every "
                              f"stage; {', '.join(short)} lack them (plan with --replicas {vote})")
        # M4: every stage runs on ``vote`` devices; whoever receives its outputs votes
        self.vote = {p.name: vote for p in bound.compiled.programs} if vote > 1 else {}
        self.ballots = Ballots(self.vote)
        protection = _protection(bound.plan.links, self.compiled)
        for link, p in list(protection.items()):  # the copies' own links, as protected
            for j in range(1, self.vote.get(link.split(">", 1)[0], 1)):
                protection[copy_link(link, j)] = p
        self.security = LinkSecurity(COORDINATOR, protection)
        self.inbox = Inbox(self.security)  # the result port's checks
        self.distrusted: dict[str, float] = {}  # sender → until when (failover), monotonic s
        self.alarms: list[dict[str, Any]] = []
        self.link_seq: dict[str, int] = defaultdict(int)
        self.bound, self.window, self.deadline_s = bound, window, deadline_s
        self.max_attempts, self.threads, self.seed = max_attempts, threads, seed
        self.devices = bound.plan.devices_used()
        self.addresses = dict(workers or {})
        missing = [d for d in self.devices if not spawn_local and d not in self.addresses]
        if missing:
            raise ConfigError(f"no worker address for device(s) {', '.join(missing)}")
        self.spawn_local, self.emulate_links, self.advertise = spawn_local, emulate_links, advertise
        self.attackers = list(attackers)  # link threats, acting in relays on their links
        self.taps = dict(taps or {})  # link -> on-path hooks in its relays (tests, red teams)
        self.fault_injection = fault_injection  # workers obey behave (threat experiments)
        self.relay_of: dict[str, str] = {}  # "link@device" -> relay address
        self.failed: dict[str, None] = {}  # devices lost, in order
        self.avoided: dict[str, None] = {}  # devices traffic was moved away from
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._logs: tempfile.TemporaryDirectory[str] | None = None
        self.keys = keys
        self.ctx = zmq.Context()
        self.handles: dict[str, Handle] = {}
        self.pushes: dict[str, zmq.Socket[Any]] = {}
        self.relays: list[Relay] = []
        # request ids start at a random point: a forger cannot guess live ones
        self.next_req = int.from_bytes(os.urandom(6), "big")
        self.calls = 0
        compiled = self.compiled
        self.input_transfers = compiled.input_transfers
        # Freivalds: a checked stage's prover sends its outputs here too (``checked_plan``),
        # to be compared with what its verifier forwards: witness id → verified id
        provers = {v.stage for v in self.verifiers.values()}
        self.witnesses = {t.id: f"{t.src}{SUFFIX}>{t.dst}:{t.tensor}"
                          for t in compiled.output_transfers if t.src in provers}
        self.output_transfers = [t for t in compiled.output_transfers
                                 if t.id not in self.witnesses]
        self.output_schema = {
            copy_link(link, j): wire.Expected({t.id: ("float32", t.shape) for t in group},
                                              1 << 16, self.security.sealed(link))
            for (src, dst), group in compiled.links().items() if dst == OUTPUT
            for link in [f"{src}>{dst}"] for j in range(self.vote.get(src, 1))}

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.keys is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="shardguard-keys-")
            self.keys = Path(self._tmp.name)
            keyring.generate(self.keys, self.devices)
        if self.spawn_local:
            self._spawn()
        public, secret = keyring.load_pair(self.keys, keyring.COORDINATOR)
        for device in self.devices:
            handle = self.handles.setdefault(device, Handle(device, self.addresses[device],
                                                            None, None))  # type: ignore[arg-type]
            handle.control = self.addresses[device]
            handle.socket = sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            handle.monitor = sock.get_monitor_socket()
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.curve_serverkey = keyring.load_public(self.keys, device)
            sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
            try:
                sock.connect(handle.control)
            except zmq.ZMQError as exc:
                raise ConfigError(f"worker {device}: bad address {handle.control!r} ({exc})") \
                    from exc
        publics = {COORDINATOR: self.security.public}
        for device, handle in self.handles.items():
            reply = self.call(device, {"kind": "hello"}, timeout=10.0)
            handle.data = _reachable(str(reply["data"]), handle.control)
            publics[device] = bytes(reply["x25519"])
        self.security.configure(self.security.protection, publics)
        self.sink = self.ctx.socket(zmq.PULL)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.bind(f"tcp://{self.advertise}:*")
        sink_address = self.sink.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.emulate_links or self.attackers or self.taps:
            self.relay_of = self._start_relays(sink_address)
        artifacts = export_plan(self.compiled, {s: len(v.pools) for s, v in self.verifiers.items()})
        hosted: dict[str, list[str]] = defaultdict(list)
        for p in self.compiled.programs:
            for device in [p.device, *p.replicas]:
                hosted[device].append(p.name)
        worker_relays = {k: v for k, v in self.relay_of.items()  # the coordinator's own hops
                         if not k.startswith(f"{INPUT}>")}       # are its business
        for device in self.devices:
            stages = tuple(replace(artifacts[s], check=self.verifiers[s].to_wire()
                                   if s in self.verifiers else None) for s in hosted[device])
            self.call(device, Deploy(
                stages=stages, devices={d: h.data for d, h in self.handles.items()},
                sink=sink_address, publics=publics,
                hosts={p.name: (p.device, *p.replicas) for p in self.compiled.programs},
                protection=self.security.protection, relays=worker_relays,
                deadline_s=self.deadline_s, max_batch=1 << 16, guards=self.guards,
                vote=self.vote, on_reject=self.on_reject).to_wire(), timeout=120.0)
        for t in self.input_transfers:  # connect now: the first requests must not be dropped
            for device in [self.compiled.by_name[t.dst].device,
                           *self.compiled.by_name[t.dst].replicas]:
                self._push(self._input_address(f"{INPUT}>{t.dst}", device)).poll(
                    5000, zmq.POLLOUT)

    def _input_address(self, link: str, device: str) -> str:
        """Where the coordinator sends ``link``'s messages for ``device``: its relay, if any."""
        return self.relay_of.get(f"{link}@{device}", self.handles[device].data)

    def _spawn(self) -> None:
        assert self.keys is not None
        self._logs = tempfile.TemporaryDirectory(prefix="shardguard-workers-")
        for device in self.devices:
            log = open(Path(self._logs.name) / f"{device}.log", "w")  # noqa: SIM115
            flags = ["--allow-fault-injection"] if self.fault_injection else []
            proc = subprocess.Popen(
                [sys.executable, "-m", "shardguard.runtime.worker", "--bind", "tcp://127.0.0.1:0",
                 "--name", device, "--keys", str(self.keys), "--threads", str(self.threads),
                 "--exit-with-parent", *flags],
                stdout=subprocess.PIPE, stderr=log, text=True)
            log.close()  # the child holds its own descriptor
            self.handles[device] = Handle(device, "", None, None, process=proc)  # type: ignore[arg-type]
        for device, handle in self.handles.items():
            assert handle.process is not None and handle.process.stdout is not None
            ready, _, _ = select.select([handle.process.stdout], [], [], 60.0)
            line = handle.process.stdout.readline() if ready else ""
            if not line.startswith("READY"):
                handle.process.kill()
                err = (Path(self._logs.name) / f"{device}.log").read_text().strip()
                raise TransportError(f"worker {device} did not start: "
                                     f"{(line.strip() + ' ' + err)[-300:]}")
            self.addresses[device] = line.split()[2]

    def _start_relays(self, sink: str) -> dict[str, str]:
        """A relay per (link, receiving device), the coordinator's hops included: the
        platform's figures, and any attacker or tap on that link."""
        out: dict[str, str] = {}
        platform = self.bound.platform
        for (src, dst), _ in self.compiled.links().items():
            link, planned = f"{src}>{dst}", _planned_link(src, dst)
            hooks: list[Tamper] = [*self.taps.get(link, ())]
            if planned != link:  # a Freivalds verifier's link also carries its stage's taps
                hooks += self.taps.get(planned, ())
            attackers = [t for t in self.attackers if t.target in ("every", link, planned)]
            if attackers:
                from ..threats.distributed import RelayAttacker

                hooks.append(RelayAttacker(attackers))
            if not hooks and not self.emulate_links:
                continue
            src_device = COORDINATOR if src == INPUT else self.compiled.by_name[src].device
            receivers = ([OUTPUT] if dst == OUTPUT else
                         [self.compiled.by_name[dst].device, *self.compiled.by_name[dst].replicas])
            for device in receivers:
                if device == src_device and not hooks:
                    continue  # stages on one device talk in memory
                ends = {src_device, device} & {COORDINATOR, OUTPUT}
                spec = platform.medium if ends else platform.link(src_device, device)
                model = LinkModel.of(spec, self.seed) if self.emulate_links else LinkModel()
                target = sink if device == OUTPUT else self.handles[device].data
                relay = Relay("tcp://127.0.0.1:*", target, model, tamper=hooks, context=self.ctx)
                relay.start()
                self.relays.append(relay)
                out[f"{link}@{device}"] = relay.address
        return out

    def close(self) -> None:
        for handle in self.handles.values():  # workers we started; remote ones keep serving
            if handle.process is not None and handle.alive and handle.socket is not None:
                try:
                    handle.socket.send(msgpack.packb({"kind": "shutdown"}), flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        for relay in self.relays:
            try:
                relay.stop()
            except Exception:  # noqa: BLE001 - a relay's failure must not block the cleanup
                pass
        deadline = time.monotonic() + 3.0
        sock: zmq.Socket[Any] | None
        for handle in self.handles.values():
            if handle.process is not None:
                try:
                    handle.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    handle.process.kill()
                    handle.process.wait()
                if handle.process.stdout is not None:
                    handle.process.stdout.close()
            for sock in (handle.socket, handle.monitor):
                if sock is not None:
                    sock.close(linger=0)
        for sock in [*self.pushes.values(), getattr(self, "sink", None)]:
            if sock is not None:
                sock.close(linger=0)
        self.ctx.destroy(linger=0)
        for tmp in (self._tmp, self._logs):
            if tmp is not None:
                tmp.cleanup()

    # -- control ----------------------------------------------------------------------------
    def call(self, device: str, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a control message to ``device`` and wait for its reply (matched by id)."""
        handle = self.handles[device]
        self.calls += 1
        handle.socket.send(msgpack.packb({**message, "id": self.calls}, use_bin_type=True))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._watch(handle)
            if handle.auth_failed:
                raise AuthenticationError(f"worker {device} ({handle.control}) refused this "
                                          "coordinator's key (CurveZMQ handshake failed)")
            if handle.socket.poll(50):
                reply = self._receive(handle)
                if reply is None or reply.get("id") != self.calls:
                    continue  # an alarm, garbage, or a late reply to an earlier call
                if not reply.get("ok"):
                    raise TransportError(f"worker {device}: {reply.get('error')}")
                return dict(reply)
        raise TransportError(f"worker {device} ({handle.control}) did not answer "
                             f"{message['kind']!r} within {timeout:.0f} s")

    def _watch(self, handle: Handle) -> None:
        """Read connection events: a lost connection (heartbeat or reset) marks a device failed."""
        while handle.monitor is not None and handle.monitor.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(handle.monitor)
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                handle.auth_failed = True
            elif kind in (zmq.EVENT_DISCONNECTED, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                          zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                handle.alive = False
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                handle.alive = True

    def stats(self) -> dict[str, dict[str, Any]]:
        return {d: self.call(d, {"kind": "stats"}) for d, h in self.handles.items() if h.alive}

    def verify(self) -> dict[str, dict[str, bool]]:
        """M7 on demand: per live device, whether each stored stage still matches its digest."""
        return {d: dict(self.call(d, {"kind": "verify"})["stages"])
                for d, h in self.handles.items() if h.alive}

    def behave(self, device: str, **behaviour: Any) -> None:
        """Make a worker misbehave (threat experiments; needs ``fault_injection=True``, which
        starts spawned workers with ``--allow-fault-injection``): slow=k,
        corrupt=zero|scale|sign|random (stages=[...]: only in what those of its stages send),
        flip_stored=n (D5 at rest: n bit flips in each stored stage model), garble_wire=True
        (one bit of every message it sends flips after sealing, as on a faulty link)."""
        fields: dict[str, Any] = {k: tuple(v) if k == "stages" else v
                                  for k, v in behaviour.items()}
        message = Behave(**fields)
        self.call(device, message.to_wire())

    # -- data -------------------------------------------------------------------------------
    def _push(self, address: str) -> zmq.Socket[Any]:
        if address not in self.pushes:
            self.pushes[address] = push_socket(self.ctx, address, hwm=10_000)
        return self.pushes[address]

    def _receive(self, handle: Handle) -> dict[str, Any] | None:
        """One control message: an alarm is kept for the stream; a reply is returned.

        Alarms come over the worker's authenticated control connection; one that is
        malformed, or that speaks for another receiver, is a bug or a lie: ignored.
        """
        try:
            message = msgpack.unpackb(handle.socket.recv(), raw=False)
        except (ValueError, msgpack.UnpackException):
            return None
        if not isinstance(message, dict):
            return None
        if message.get("kind") == "alarm":
            try:
                alarm = Alarm.from_wire(message)
            except MalformedMessage:
                return None
            if alarm.receiver == handle.device:
                self.alarms.append(alarm.to_wire())
            return None
        return message

    def _alarm(self, req: int, link: str, sender: str, reason: str) -> None:
        """A rejection seen here, at the sink: handled like a worker's alarm."""
        self.alarms.append({"kind": "alarm", "req": req, "link": link, "sender": sender,
                            "receiver": COORDINATOR, "reason": reason})

    def _alarms(self) -> list[dict[str, Any]]:
        """Rejections the workers reported since the last look (control-plane alarms)."""
        for handle in self.handles.values():
            while handle.socket is not None and handle.socket.poll(0):
                self._receive(handle)  # alarms are kept; anything else here is stale
        alarms, self.alarms = self.alarms, []
        return alarms

    def _route(self) -> tuple[dict[str, str], str | None]:
        route: dict[str, str] = {}
        for p in self.compiled.programs:
            live = [d for d in [p.device, *p.replicas] if self.handles[d].alive]
            # a device whose messages were rejected goes last: used only if nothing else is
            now = time.monotonic()
            live = sorted(live, key=lambda d: self.distrusted.get(d, 0.0) > now)
            if not live:
                failed = ", ".join([p.device, *p.replicas])
                return route, (f"stage {p.name} has no live device ({failed} failed"
                               f"{'' if p.replicas else '; no replica'})")
            route[p.name] = live[0]
            copies = self.vote.get(p.name, 1)
            if len(live) < copies:
                return route, (f"stage {p.name} has {len(live)} live device(s) for "
                               f"{copies} voting copies")
            for j in range(1, copies):
                route[f"{p.name}@{j}"] = live[j]
        route[OUTPUT] = "coordinator"
        return route, None

    def _submit(self, r: _Request) -> str | None:
        route, error = self._route()
        if error:
            return error
        r.route, r.pieces = route, {}
        for t in self.input_transfers:
            piece = np.ascontiguousarray(crop(r.x, full(r.x.shape[1:]), t.region))
            link = f"{INPUT}>{t.dst}"
            for j in range(self.vote.get(t.dst, 1)):  # every copy of a voted stage
                device = route[t.dst if j == 0 else f"{t.dst}@{j}"]
                self.link_seq[link] += 1
                frames = self.security.encode(r.req, self.link_seq[link], link, route,
                                              [(t.id, piece)], receiver=device)
                try:
                    self._push(self._input_address(link, device)).send_multipart(
                        frames, copy=False, flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass  # the device is unreachable: the deadline will resubmit
        return None

    def infer(self, x: np.ndarray | Any) -> np.ndarray:
        """Run one request (a batch) through the cluster; raise if it fails."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        result = self.stream(x, batch=len(x), show_progress=False)
        if result.errors:
            raise TransportError(next(iter(result.errors.values())))
        return result.outputs

    def stream(self, x: np.ndarray | Any, *, batch: int = 1, show_progress: bool = True,
               on_request: Any = None) -> StreamResult:
        """Stream ``x`` (N, C, H, W) in requests of ``batch`` samples, ``window`` in flight."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        n = len(x)
        starts = list(range(0, n, batch))
        out_shape = self.bound.graph.output_shape[1:]
        outputs = np.full((n, *out_shape), np.nan, dtype=np.float32)
        latency = np.full(len(starts), np.nan)
        ended = np.full(len(starts), np.nan)
        accepted = np.zeros(len(starts), dtype=np.int64)
        degraded = np.zeros(len(starts), dtype=bool)
        first_submit: dict[int, float] = {}
        errors: dict[int, str] = {}
        inflight: dict[int, _Request] = {}
        r: _Request | None  # a request being sent, or the one a message answers (if in flight)
        finished: set[int] = set()
        resubmitted = duplicates = alarms = 0
        rejected: list[dict[str, Any]] = []
        self.failed.clear()
        self.avoided.clear()
        next_index = 0
        poller = zmq.Poller()
        poller.register(self.sink, zmq.POLLIN)
        began = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("streaming", total=len(starts), info="")
            if not show_progress:
                bar.update(task, visible=False)
            while len(finished) + len(errors) < len(starts):
                while len(inflight) < self.window and next_index < len(starts):
                    s = starts[next_index]
                    now = time.monotonic()
                    r = _Request(self.next_req, next_index, x[s:s + batch], now + self.deadline_s,
                                 time.perf_counter())
                    first_submit[r.index] = r.started
                    self.next_req += 1
                    next_index += 1
                    error = self._submit(r)
                    if error:
                        errors[r.index] = error
                        bar.advance(task)
                    else:
                        inflight[r.req] = r
                    if on_request is not None:
                        on_request(r.index)
                for handle in self.handles.values():
                    was = handle.alive
                    self._watch(handle)
                    if was and not handle.alive:  # fail over what was going through it
                        self.failed[handle.device] = None
                        for r in [r for r in inflight.values()
                                  if handle.device in r.route.values()]:
                            resubmitted += self._retry(r, inflight, errors, bar, task,
                                                       f"device {handle.device} failed")
                if poller.poll(20):
                    while True:
                        try:
                            frames = self.sink.recv_multipart(copy=False, flags=zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        opened = self.inbox.open(frames, self.output_schema)
                        if opened is None:
                            continue  # refused and counted; a tampered one alarms after grace
                        header, arrays = opened
                        r = inflight.get(header.req)
                        if r is None:
                            if not self.ballots.voted(header.link):  # not a late copy
                                duplicates += 1
                            continue
                        src = header.link.split(">", 1)[0]
                        if self.witnesses and header.route.get(src) != r.route.get(src):
                            continue  # not from the device this request went through
                        if self.ballots.voted(header.link):
                            try:
                                decided = self.ballots.cast(header.req, header.link, arrays)
                            except VoteFailed as exc:
                                self._alarm(header.req, header.link, "?", f"vote failed: {exc}")
                                continue
                            if decided is None:
                                continue
                            arrays = decided[1]
                        if any(a.shape[0] != len(r.x) for a in arrays.values()):
                            continue  # not this request's answer
                        r.pieces.update(arrays)
                        if header.flags & wire.FLAG_DEGRADED:
                            degraded[r.index] = True
                        if len(r.pieces) == len(self.output_transfers) + len(self.witnesses):
                            forged = self._unwitnessed(r.pieces)
                            if forged:  # the verifier forwarded what the prover did not
                                r.pieces.clear()
                                self._alarm(r.req, forged, "?", "Freivalds: the verified "
                                            "outputs differ from the prover's")
                                continue
                            del inflight[r.req]
                            finished.add(r.index)
                            s = starts[r.index]
                            outputs[s:s + len(r.x)] = self._assemble(r.pieces)
                            latency[r.index] = time.perf_counter() - r.started
                            accepted[r.index] += 1
                            bar.advance(task)
                for suspect in self.inbox.due():  # tampered on the way here, never resent
                    h = suspect.header
                    self._alarm(h.req, h.link, suspect.sender, suspect.detail)
                for alarm in self._alarms():
                    alarms += 1
                    if len(rejected) < MAX_ALARMS_KEPT:
                        rejected.append(alarm)
                    r = inflight.get(alarm["req"])
                    if r is None:
                        continue  # already answered, or a forged request id
                    src = alarm["link"].split(">", 1)[0]
                    if src != INPUT and r.route.get(src) != alarm["sender"] and \
                            alarm["sender"] != "?":
                        continue  # names a sender this request did not use: forged
                    why = f"message on {alarm['link']} rejected: {alarm['reason']}"
                    if self.on_reject == "degrade":
                        continue  # the receiving worker filled the piece, or it times out
                    if self.on_reject == "drop":
                        del inflight[r.req]
                        errors[r.index] = why
                        bar.advance(task)
                        continue
                    if self.on_reject == "failover" and alarm["sender"] in self.handles:
                        # the header named it, so it may be innocent: distrusted for a while
                        self.distrusted[alarm["sender"]] = time.monotonic() + DISTRUST_S
                        self.avoided[alarm["sender"]] = None
                    resubmitted += self._retry(r, inflight, errors, bar, task, why)
                now = time.monotonic()
                for r in [r for r in inflight.values() if r.deadline < now]:
                    resubmitted += self._retry(r, inflight, errors, bar, task,
                                               f"no answer within {self.deadline_s:.1f} s")
                for index in [i for i in first_submit if i in finished or i in errors]:
                    ended[index] = time.perf_counter() - first_submit.pop(index)
        elapsed = time.perf_counter() - began
        return StreamResult(outputs, errors, latency, ended, accepted, elapsed, n, resubmitted,
                            duplicates, rejected, degraded, failed_devices=list(self.failed),
                            routed_around=[d for d in self.avoided if d not in self.failed],
                            alarms=alarms)

    def _retry(self, r: _Request, inflight: dict[int, _Request], errors: dict[int, str],
               bar: Any, task: Any, why: str) -> int:
        """Resubmit ``r`` under a new request id along a live route, or fail it explicitly."""
        del inflight[r.req]
        if r.attempts >= self.max_attempts:
            errors[r.index] = f"{why}; gave up after {r.attempts} attempts"
            bar.advance(task)
            return 0
        r.req, self.next_req = self.next_req, self.next_req + 1
        r.attempts += 1
        r.deadline = time.monotonic() + self.deadline_s
        error = self._submit(r)
        if error:
            errors[r.index] = f"{why}; {error}"
            bar.advance(task)
            return 0
        inflight[r.req] = r
        return 1

    def _unwitnessed(self, pieces: dict[str, np.ndarray]) -> str | None:
        """The link of the first verified output its prover's own does not match, if any."""
        for witness, verified in self.witnesses.items():
            if not samples_agree(pieces[witness], pieces[verified], WITNESS_TOLERANCE).all():
                return verified.split(":", 1)[0]
        return None

    def _assemble(self, pieces: dict[str, np.ndarray]) -> np.ndarray:
        from ..partition._segment import assemble

        parts = [(pieces[t.id], t.region) for t in self.output_transfers]
        target = full(self.bound.graph.output_shape[1:])
        return assemble(parts, target, lambda ps, dim: np.concatenate(ps, axis=dim), crop)


def _planned_link(src: str, dst: str) -> str:
    """The plan's name for a link of the compiled plan: a Freivalds verifier stage
    (``S~check``) sends on its stage's links (``s0~check>s1`` is ``s0>s1``)."""
    return f"{src.removesuffix(SUFFIX)}>{dst.removesuffix(SUFFIX)}"


def _protection(links: Sequence[Any], compiled: CompiledPlan) -> dict[str, str]:
    """Each link's protection from the plan, for the links ``compiled`` has.

    A Freivalds prover's claims (``S>S~check``: its affine layers' outputs, as revealing
    as any activation) are sealed with the strongest protection of the stage's own links,
    outgoing first, then incoming (a last stage sends only to the coordinator), then of
    the whole plan: an AEAD over a MAC over none. A checked last stage's outputs, from
    its prover and its verifier, with the plan's strongest: the coordinator must know
    which device sent each copy it compares.
    """
    planned = {f"{link.src}>{link.dst}": link.protection for link in links}

    def strongest(found: list[str]) -> str:
        return max(found, key=lambda p: p.startswith("aead:") * 2 + p.startswith("mac:"),
                   default="none")

    checked = {p.name.removesuffix(SUFFIX) for p in compiled.programs if p.name.endswith(SUFFIX)}
    out = {}
    for src, dst in compiled.links():
        link = _planned_link(src, dst)
        stage, _, other = link.partition(">")
        if other == OUTPUT and stage in checked:  # both copies the coordinator compares:
            out[f"{src}>{dst}"] = strongest(list(planned.values()))  # authenticated
            continue
        if stage != other:
            out[f"{src}>{dst}"] = planned.get(link, "none")
            continue
        outgoing = strongest([p for k, p in planned.items() if k.startswith(f"{stage}>")])
        incoming = strongest([p for k, p in planned.items() if k.endswith(f">{stage}")])
        out[f"{src}>{dst}"] = next((p for p in (outgoing, incoming) if p != "none"),
                                   strongest(list(planned.values())))
    return out


def _reachable(data: str, control: str) -> str:
    """A worker bound to a wildcard reports 0.0.0.0: reach it on its control host instead."""
    host, _, port = data.rpartition(":")
    if host in ("tcp://0.0.0.0", "tcp://*", "tcp://[::]"):
        return f"{control.rpartition(':')[0]}:{port}"
    return data


def cluster(plan: Bound | Any, **options: Any) -> Cluster:
    """A ``Cluster`` for ``plan`` (a plan file, a ``Plan`` or a bound plan), for a ``with`` block.

        with shardguard.cluster("plan.yaml", spawn_local=True) as c:
            logits = c.infer(images)        # (B, 1, 28, 28) float32 → (B, 10)
    """
    if not isinstance(plan, Bound):
        from ..partition.bind import bind

        plan = bind(plan)
    return Cluster(plan, **options)
