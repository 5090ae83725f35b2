"""The worker: the long-running process on one edge device.

    shardguard worker --bind tcp://0.0.0.0:5555 --name pi1 --keys keys/

It binds a control socket (ZeroMQ ROUTER, CurveZMQ server: only coordinator
keys in ``KEYS/authorized/`` may talk to it) and a data socket (PULL) on the next
port (any free port when the control port is 0); both are on its READY line.
A coordinator deploys stages to it as ONNX models; it runs them with
onnxruntime and sends each stage's outputs straight to the next stage's worker.
Every data message must carry the header tag of a member of the deployed plan
(``linksec.py``); anything else is counted and dropped, and the worker keeps
serving. Imports only numpy, onnx, onnxruntime, pyzmq, msgpack, cryptography: it
runs where torch does not.

Control messages (``protocol/control.py``): ``hello`` (fresh X25519 keys for the next
deployment of the coordinator that asks; the running one is not touched),
``deploy`` (validated whole and built before it replaces the running deployment:
a bad one leaves it serving), ``stats`` (counters since the last deploy), ``verify``
(M7 digests), ``behave`` (fault injection: refused unless the worker was started
with ``--allow-fault-injection``) and ``shutdown``. The worker logs deployments,
refused connections and rejected messages on stderr, one line each.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.auth
import zmq.utils.monitor
from zmq.auth.thread import ThreadAuthenticator

from ..errors import ConfigError, MalformedMessage, ShardGuardError
from ..hooks import WorkerHook
from ..protocol.control import Alarm, Behave, Deploy, parse_control
from ._dataplane import DataPlane
from ._deployment import Deployment, build, fault_injection
from ._sockets import push_socket
from .keys import load_pair
from .linksec import LinkSecurity

MAX_CONTROL_BYTES = 512 * 2**20
MAX_DATA_BYTES = 256 * 2**20
MAX_HELLOS = 8  # coordinators with keys prepared for their next deployment
_REFUSED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


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
                 insecure: bool = False, allow_fault_injection: bool = False) -> None:
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
        self.monitor = self.control.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self.control_address = _bind(self.control, bind)
        self.data = self.ctx.socket(zmq.PULL)
        self.data.setsockopt(zmq.LINGER, 0)
        self.data.setsockopt(zmq.RCVHWM, 10_000)
        self.data.setsockopt(zmq.MAXMSGSIZE, MAX_DATA_BYTES)  # libzmq drops anything larger
        # data on the next port when the control port was chosen, else on any free port
        host, port = self.control_address.rsplit(":", 1)
        explicit = not bind.endswith((":0", ":*"))
        self.data_address = _bind(self.data, f"{host}:{int(port) + 1}" if explicit else f"{host}:*")
        self.hellos: OrderedDict[bytes, LinkSecurity] = OrderedDict()  # keys for next deploy
        self.plane: DataPlane | None = None  # the running deployment's data path
        self.coordinator: bytes | None = None  # control identity that deployed us: alarms go there
        # behave: a hook made from the message, kept across deployments; None: refused
        self.injector = fault_injection() if allow_fault_injection else None
        self.injected: WorkerHook | None = None
        self.out: dict[str, zmq.Socket[Any]] = {}
        self.unplanned = 0  # data messages received with nothing deployed
        self.logged: Counter[str] = Counter()
        self.running = True
        self.parent: int | None = None  # stop when this process is gone (spawned workers)

    def log(self, line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} worker {self.name}: {line}", file=sys.stderr,
              flush=True)

    # -- control plane ----------------------------------------------------------------------
    def handle_control(self, identity: bytes, raw: bytes) -> None:
        message: Any = None
        try:
            message = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            reply = self._control(message, identity)
        except (ShardGuardError, ValueError, TypeError, msgpack.UnpackException) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the device
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        reply["id"] = message.get("id") if isinstance(message, dict) else None
        self.control.send_multipart([identity, msgpack.packb(reply, use_bin_type=True)])

    def _control(self, m: Any, identity: bytes) -> dict[str, Any]:
        kind, typed = parse_control(m)
        if kind == "hello":  # keys for this coordinator's next deployment, not the running one
            security = self.hellos.pop(identity, None) or LinkSecurity(self.name)
            self.hellos[identity] = security
            while len(self.hellos) > MAX_HELLOS:
                self.hellos.popitem(last=False)
            return {"ok": True, "name": self.name, "data": self.data_address,
                    "pid": os.getpid(), "x25519": security.public}
        if kind == "deploy":
            return self.deploy(typed, identity)
        plane = self.plane
        if kind == "stats":
            stats = plane.stats() if plane is not None else {"stages": {}, "rejected": {},
                                                             "tables": {}}
            stats["tables"]["hellos"] = len(self.hellos)
            return {"ok": True, **stats, "unplanned": self.unplanned, "rss": _rss_bytes()}
        if kind == "verify":  # M7 on demand: each stored model against its deployed digest
            return {"ok": True, "stages": plane.d.verify() if plane is not None else {}}
        if kind == "behave":
            return self.behave(typed)
        self.running = False  # shutdown
        return {"ok": True}

    def deploy(self, message: Deploy, identity: bytes) -> dict[str, Any]:
        security = self.hellos.get(identity)
        if security is None:
            raise MalformedMessage("deploy before hello: no keys prepared for this coordinator")
        if self.name not in message.devices:
            raise MalformedMessage(f"deploy.devices: does not name this worker ({self.name})")
        try:
            deployment = build(message, security, self.threads)
            addresses = self._connect(deployment)
        except ShardGuardError as exc:
            self.log(f"refused a deployment, still running the previous one: {exc}")
            raise
        del self.hellos[identity]
        self.plane = DataPlane(self.name, deployment, self.transmit, self.send_alarm,
                               [self.injected] if self.injected is not None else [])
        self.coordinator = identity
        for address in set(self.out) - addresses:  # the previous deployment's peers
            self.out.pop(address).close(linger=0)
        self.logged.clear()
        sealed = sum(p != "none" for p in message.protection.values())
        self.log(f"deployed {', '.join(sorted(deployment.stages)) or 'no stages'} of a plan on "
                 f"{len(message.devices)} device(s), {sealed} sealed link(s)")
        return {"ok": True, "stages": sorted(deployment.stages)}

    def _connect(self, deployment: Deployment) -> set[str]:
        """Connect to every peer now, so the first messages are not dropped while connecting."""
        m = deployment.message
        targets = {*m.devices.values(), *m.relays.values(), m.sink}
        for address in targets:
            self._socket(address)
        end = time.monotonic() + 5.0
        for address in targets:
            self.out[address].poll(max(0, int((end - time.monotonic()) * 1000)), zmq.POLLOUT)
        return targets

    def behave(self, behave: Behave) -> dict[str, Any]:
        if self.injector is None:
            self.log("refused a behave message: started without --allow-fault-injection")
            return {"ok": False, "error": "fault injection is off on this worker (start it "
                                          "with --allow-fault-injection to allow behave)"}
        hook = self.injector(behave, self.name)  # its own noise stream
        if self.plane is not None:
            if self.injected in self.plane.hooks:
                self.plane.hooks.remove(self.injected)
            self.plane.add(hook)
        self.injected = hook
        self.log(f"fault injection: {behave}")
        return {"ok": True}

    def send_alarm(self, alarm: Alarm) -> None:
        """Tell the coordinator a message was rejected or a check failed, so its policy acts."""
        if self.coordinator is None:
            return
        try:
            self.control.send_multipart([self.coordinator, msgpack.packb(alarm.to_wire())],
                                        zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the coordinator is gone or slow: the rejection is still counted

    # -- data plane -------------------------------------------------------------------------
    def handle_data(self, frames: list[zmq.Frame]) -> None:
        if self.plane is None:
            self.unplanned += 1
            return
        self.plane.handle(frames)

    def transmit(self, address: str, frames: list[Any]) -> bool:
        try:
            self._socket(address).send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _socket(self, address: str) -> zmq.Socket[Any]:
        if address not in self.out:
            self.out[address] = push_socket(self.ctx, address)
        return self.out[address]

    # -- loop -------------------------------------------------------------------------------
    def tick(self, now: float, log: bool) -> None:
        """Expire waiting requests and act on suspects; now and then, log what was refused."""
        if self.plane is not None:
            self.plane.expire(now)
        if not log:
            return
        if self.plane is not None and self.plane.d.inbox.rejected != self.logged:
            rejected = self.plane.d.inbox.rejected
            new = {k: n - self.logged[k] for k, n in rejected.items() if n > self.logged[k]}
            self.log("rejected messages: " + ", ".join(f"{k} {n}" for k, n in sorted(new.items())))
            self.logged = Counter(rejected)
        while self.monitor.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(self.monitor)
            if event["event"] in _REFUSED:
                self.log(f"refused a connection on {event['endpoint'].decode(errors='replace')}"
                         ": CurveZMQ handshake failed (key not authorised)")
        if self.parent is not None and os.getppid() != self.parent:
            self.running = False

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.data, zmq.POLLIN)
        last_tick = last_log = time.monotonic()
        while self.running:
            events = dict(poller.poll(50))
            if self.control in events:
                frames = self.control.recv_multipart()
                if len(frames) == 2:
                    self.handle_control(frames[0], frames[1])
            if self.data in events:
                for _ in range(64):  # drain a burst, then look at control again
                    try:
                        parts = self.data.recv_multipart(copy=False, flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self.handle_data(parts)
                    except Exception as exc:  # noqa: BLE001 - a bug must not stop the device
                        if self.plane is not None:
                            self.plane.d.inbox.count("internal-error", None)
                        self.log(f"internal error on a data message: {type(exc).__name__}")
                        traceback.print_exc(file=sys.stderr)
            now = time.monotonic()
            if now - last_tick >= 0.05:
                log = now - last_log >= 1.0
                self.tick(now, log)
                last_tick, last_log = now, now if log else last_log
        self.close()

    def close(self) -> None:
        for sock in [self.control, self.data, self.monitor, *self.out.values()]:
            sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()


def _bind(sock: zmq.Socket[Any], address: str) -> str:
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
    parser.add_argument("--allow-fault-injection", action="store_true",
                        help="obey behave messages (threat experiments); off on real deployments")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this one exits")
    args = parser.parse_args(argv)
    try:
        worker = Worker(args.name, args.bind, args.keys, args.threads, args.insecure,
                        args.allow_fault_injection)
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
