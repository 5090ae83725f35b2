"""The coordinator's workers: keys, processes, control connections, relays, deploy, close.

    fleet = Fleet(bound, compiled, verifiers, security, options, vote)
    fleet.start()                            # keys, spawn, connect, hello, relays, deploy
    fleet.call(device, {"kind": "stats"})    # a control message and its reply
    fleet.take_alarms()                      # rejections the workers reported since
    fleet.close()

Workers are reached over CurveZMQ-authenticated DEALER sockets with ZeroMQ
heartbeats; a socket monitor tells when a device is lost (``watch``). Alarms arrive
on the same connections, between replies, and are kept for the stream to act on.
A relay sits on a link when links are emulated or something listens on it
(an attacker, a tap). With ``network="namespaces"`` the workers and this coordinator
run in network namespaces of their own (``netns.py``): the kernel shapes bandwidth and
drops packets, and relays add only the platform's latency.
"""

from __future__ import annotations

import select
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.utils.monitor

from ..defences.verifier import SUFFIX, Verifier
from ..errors import AuthenticationError, ConfigError, MalformedMessage, TransportError
from ..partition.bind import Bound
from ..partition.compile import INPUT, OUTPUT, CompiledPlan
from ..protocol.control import COORDINATOR, Alarm, Deploy
from . import keys as keyring
from ._options import ClusterOptions
from ._sockets import push_socket
from .export import export_plan
from .linksec import LinkSecurity
from .netns import Namespaces, uniform_link
from .relay import LinkModel, Relay, Tamper

HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 250, 1500


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


class Fleet:
    """The workers running one plan for a coordinator; see the module docstring."""

    sink: zmq.Socket[Any]  # the result port, bound by ``start``

    def __init__(self, bound: Bound, compiled: CompiledPlan, verifiers: dict[str, Verifier],
                 security: LinkSecurity, options: ClusterOptions, vote: dict[str, int]) -> None:
        self.bound, self.compiled, self.verifiers = bound, compiled, verifiers
        self.security, self.options, self.vote = security, options, vote
        self.devices = bound.plan.devices_used()
        self.addresses = dict(options.workers or {})
        missing = [d for d in self.devices if not options.spawn_local and d not in self.addresses]
        if missing:
            raise ConfigError(f"no worker address for device(s) {', '.join(missing)}")
        self.attackers = list(options.attackers)  # link threats, acting in relays on their links
        self.taps = dict(options.taps or {})  # link -> on-path hooks in its relays
        self.relay_of: dict[str, str] = {}  # "link@device" -> relay address
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._logs: tempfile.TemporaryDirectory[str] | None = None
        self.keys = options.keys
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.handles: dict[str, Handle] = {}
        self.pushes: dict[str, zmq.Socket[Any]] = {}
        self.relays: list[Relay] = []
        self.alarms: list[dict[str, Any]] = []  # reported, not yet taken by the stream
        self.calls = 0
        self.advertise = options.advertise  # where the workers reach this coordinator
        self.net: Namespaces | None = None
        self._network = ExitStack()  # the namespaces, and this thread inside its own

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        """Keys, workers (spawned if asked), their connections, relays, then the deploy."""
        if self.keys is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="shardguard-keys-")
            self.keys = Path(self._tmp.name)
            keyring.generate(self.keys, self.devices)
        if self.options.network == "namespaces":
            self.net = self._network.enter_context(Namespaces(
                [COORDINATOR, *self.devices], uniform_link(self.bound.platform)))
            self._network.enter_context(self.net.inside(COORDINATOR))  # sockets made there
            self.advertise = self.net.address[COORDINATOR]
        if self.options.spawn_local:
            self._spawn()
        self._connect()
        publics = self._hello()
        self.security.configure(self.security.protection, publics)
        self.sink = self.ctx.socket(zmq.PULL)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.bind(f"tcp://{self.advertise}:*")
        sink_address = self.sink.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.options.emulate_links or self.attackers or self.taps or self.net:
            self.relay_of = self._start_relays(sink_address)
        self._deploy(sink_address, publics)
        for t in self.compiled.input_transfers:  # connect now: the first requests must not
            stage = self.compiled.by_name[t.dst]  # be dropped
            for device in [stage.device, *stage.replicas]:
                self.push(self.input_address(f"{INPUT}>{t.dst}", device)).poll(5000, zmq.POLLOUT)

    def _spawn(self) -> None:
        assert self.keys is not None
        self._logs = tempfile.TemporaryDirectory(prefix="shardguard-workers-")
        for device in self.devices:
            log = open(Path(self._logs.name) / f"{device}.log", "w")  # noqa: SIM115
            flags = ["--allow-fault-injection"] if self.options.fault_injection else []
            host = self.net.address[device] if self.net else "127.0.0.1"
            argv = [sys.executable, "-m", "shardguard.runtime.worker", "--bind",
                    f"tcp://{host}:0", "--name", device, "--keys", str(self.keys),
                    "--threads", str(self.options.threads), "--exit-with-parent", *flags]
            proc = subprocess.Popen(self.net.command(device, argv) if self.net else argv,
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

    def _connect(self) -> None:
        """A control connection to each device, authenticated both ways, with heartbeats."""
        assert self.keys is not None
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
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, self._heartbeat_ms())
            sock.setsockopt(zmq.HEARTBEAT_TTL, self._heartbeat_ms())
            try:
                sock.connect(handle.control)
            except zmq.ZMQError as exc:
                raise ConfigError(f"worker {device}: bad address {handle.control!r} ({exc})") \
                    from exc

    def _heartbeat_ms(self) -> int:
        """How long a control connection may stay silent before its device counts as lost.
        A ping waits behind the deploy on its connection: on a shaped link (namespaces) the
        wait is as long as the most any device's stages take to cross it, twice over."""
        if self.net is None:
            return HEARTBEAT_TIMEOUT_MS
        hosted: dict[str, int] = defaultdict(int)
        for p in self.compiled.programs:
            for device in [p.device, *p.replicas]:
                hosted[device] += p.param_bytes
        crossing = 8 * max(hosted.values(), default=0) / self.bound.platform.medium.bandwidth_bps
        return max(HEARTBEAT_TIMEOUT_MS, int(2000 * crossing) + 1000)

    def _hello(self) -> dict[str, bytes]:
        """Each worker's data address and link key: every member's public key, by name."""
        publics = {COORDINATOR: self.security.public}
        for device, handle in self.handles.items():
            reply = self.call(device, {"kind": "hello"}, timeout=10.0)
            handle.data = _reachable(str(reply["data"]), handle.control)
            publics[device] = bytes(reply["x25519"])
        return publics

    def _deploy(self, sink: str, publics: dict[str, bytes]) -> None:
        """Each device's stages (a verifier stage with its secret pool), and where to send."""
        artifacts = (self.compiled.quantized.artifacts if self.compiled.quantized else
                     export_plan(self.compiled,
                                 {s: len(v.pools) for s, v in self.verifiers.items()}))
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
                sink=sink, publics=publics,
                hosts={p.name: (p.device, *p.replicas) for p in self.compiled.programs},
                protection=self.security.protection, relays=worker_relays,
                deadline_s=self.options.deadline_s, max_batch=1 << 16,
                guards=self.options.guards or {}, vote=self.vote,
                on_reject=self.options.on_reject).to_wire(), timeout=120.0)

    def _start_relays(self, sink: str) -> dict[str, str]:
        """A relay per (link, receiving device), the coordinator's hops included: the
        platform's figures, and any attacker or tap on that link."""
        out: dict[str, str] = {}
        for (src, dst), _ in self.compiled.links().items():
            link, planned = f"{src}>{dst}", planned_link(src, dst)
            hooks: list[Tamper] = [*self.taps.get(link, ())]
            if planned != link:  # a Freivalds verifier's link also carries its stage's taps
                hooks += self.taps.get(planned, ())
            attackers = [t for t in self.attackers if t.target in ("every", link, planned)]
            if attackers:
                from ..threats.distributed import RelayAttacker

                hooks.append(RelayAttacker(attackers))
            src_device = COORDINATOR if src == INPUT else self.compiled.by_name[src].device
            receivers = ([OUTPUT] if dst == OUTPUT else
                         [self.compiled.by_name[dst].device, *self.compiled.by_name[dst].replicas])
            for device in receivers:
                model = self._link_model(src_device, device)
                if not hooks and (device == src_device or model is None):
                    continue  # stages on one device talk in memory; nothing to add here
                out[f"{link}@{device}"] = self._relay(device, model or LinkModel(), hooks, sink)
        return out

    def _link_model(self, src_device: str, device: str) -> LinkModel | None:
        """What a relay from ``src_device`` to ``device`` emulates: the platform's link with
        ``emulate_links``; in namespaces its latency alone (the kernel does the rest)."""
        platform = self.bound.platform
        ends = {src_device, device} & {COORDINATOR, OUTPUT}
        spec = platform.medium if ends else platform.link(src_device, device)
        if self.options.emulate_links:
            return LinkModel.of(spec, self.options.seed)
        if self.net is not None and spec.latency_s > 0:
            return LinkModel(latency_s=spec.latency_s)
        return None

    def _relay(self, device: str, model: LinkModel, hooks: list[Tamper], sink: str) -> str:
        """A started relay to ``device`` (the sink for ``OUTPUT``)."""
        target = sink if device == OUTPUT else self.handles[device].data
        relay = Relay(f"tcp://{self.advertise}:*", target, model, tamper=hooks,
                      context=self.ctx)
        relay.start()
        self.relays.append(relay)
        return relay.address

    # -- close ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers this coordinator started (remote ones keep serving) and relays."""
        for handle in self.handles.values():
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
        for other in [*self.pushes.values(), getattr(self, "sink", None)]:
            if other is not None:
                other.close(linger=0)
        self.ctx.destroy(linger=0)
        self._network.close()  # back to this thread's namespace; then the run's removed
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
            self.watch(handle)
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

    def watch(self, handle: Handle) -> None:
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

    def alarm(self, req: int, link: str, sender: str, reason: str) -> None:
        """A rejection seen at the coordinator's sink: handled like a worker's alarm."""
        self.alarms.append({"kind": "alarm", "req": req, "link": link, "sender": sender,
                            "receiver": COORDINATOR, "reason": reason})

    def take_alarms(self) -> list[dict[str, Any]]:
        """Rejections the workers reported since the last look (control-plane alarms)."""
        for handle in self.handles.values():
            while handle.socket is not None and handle.socket.poll(0):
                self._receive(handle)  # alarms are kept; anything else here is stale
        alarms, self.alarms = self.alarms, []
        return alarms

    # -- data -------------------------------------------------------------------------------
    def push(self, address: str) -> zmq.Socket[Any]:
        if address not in self.pushes:
            self.pushes[address] = push_socket(self.ctx, address, hwm=10_000)
        return self.pushes[address]

    def input_address(self, link: str, device: str) -> str:
        """Where the coordinator sends ``link``'s messages for ``device``: its relay, if any."""
        return self.relay_of.get(f"{link}@{device}", self.handles[device].data)


def planned_link(src: str, dst: str) -> str:
    """The plan's name for a link of the compiled plan: a Freivalds verifier stage
    (``S~check``) sends on its stage's links (``s0~check>s1`` is ``s0>s1``)."""
    return f"{src.removesuffix(SUFFIX)}>{dst.removesuffix(SUFFIX)}"


def _reachable(data: str, control: str) -> str:
    """A worker bound to a wildcard reports 0.0.0.0: reach it on its control host instead."""
    host, _, port = data.rpartition(":")
    if host in ("tcp://0.0.0.0", "tcp://*", "tcp://[::]"):
        return f"{control.rpartition(':')[0]}:{port}"
    return data
