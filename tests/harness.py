"""One real worker process, deployed by the test, which plays the coordinator and every
other member of the plan: it can send the worker authentic messages as any member, and
forged, replayed or malformed ones as anybody, and reads what the worker sends.

    with Harness(tmp_path, bound, "pi2") as h:
        frames = h.encode("pi1", req=1, seq=1, link="s0>s1", arrays=[(tensor_id, x)])
        h.send(frames)                               # to the worker's data port
        h.results("output")                          # what it sent to the coordinator
        h.call({"kind": "stats"})
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from shardguard.protocol.control import COORDINATOR, INPUT, OUTPUT, Deploy
from shardguard.runtime import keys as keyring
from shardguard.runtime.export import export_plan
from shardguard.runtime.linksec import LinkSecurity


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Harness:
    def __init__(self, tmp_path: Path, bound: Any, device: str, *, protection: str = "none",
                 fault_injection: bool = False, cwd: Path | None = None,
                 deadline_s: float = 5.0) -> None:
        self.bound, self.device, self.protection = bound, device, protection
        self.deadline_s = deadline_s
        self.compiled = bound.compiled
        self.keys = tmp_path / "harness-keys"
        keyring.generate(self.keys, [device], force=True)
        flags = ["--allow-fault-injection"] if fault_injection else []
        self.stderr = tmp_path / f"worker-{device}.log"
        with open(self.stderr, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shardguard.runtime.worker", "--bind",
                 "tcp://127.0.0.1:0", "--name", device, "--keys", str(self.keys), *flags],
                stdout=subprocess.PIPE, stderr=log, text=True, cwd=cwd)
        ready = self.proc.stdout.readline().split()  # type: ignore[union-attr]
        assert ready and ready[0] == "READY", ready
        self.control_address, self.data_address = ready[2], ready[3]
        self.ctx = zmq.Context()
        self.control = self._dealer(self.keys)
        self.sink = self.ctx.socket(zmq.PULL)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.bind("tcp://127.0.0.1:*")
        self.members: dict[str, LinkSecurity] = {}  # every member but the worker: ours
        self.peers: dict[str, zmq.Socket[Any]] = {}  # their data ports (what the worker sends)
        self.data = self.ctx.socket(zmq.PUSH)
        self.data.setsockopt(zmq.LINGER, 0)
        self.data.setsockopt(zmq.SNDHWM, 100_000)
        self.data.connect(self.data_address)
        self.seq = 0
        self.calls = 0

    def _dealer(self, keys: Path) -> zmq.Socket[Any]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_publickey, sock.curve_secretkey = keyring.load_pair(keys, COORDINATOR)
        sock.curve_serverkey = keyring.load_public(self.keys, self.device)
        sock.connect(self.control_address)
        return sock

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control plane ----------------------------------------------------------------------
    def call(self, message: dict[str, Any], sock: zmq.Socket[Any] | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Send a control message and return the worker's reply (alarms are skipped)."""
        sock = sock or self.control
        self.calls += 1
        sock.send(msgpack.packb({**message, "id": self.calls}, use_bin_type=True))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sock.poll(50):
                reply = msgpack.unpackb(sock.recv(), raw=False)
                if reply.get("kind") == "alarm":
                    continue
                assert reply.get("id") == self.calls, reply
                return reply
        raise AssertionError(f"no reply to {message.get('kind')!r} within {timeout} s")

    def deploy_message(self, stages: list[str] | None = None) -> dict[str, Any]:
        """The deploy message for the worker's stages (as the coordinator would make it)."""
        hello = self.call({"kind": "hello"})
        devices = self.bound.plan.devices_used()
        publics = {self.device: bytes(hello["x25519"])}
        for member in [COORDINATOR, *devices]:
            if member != self.device:
                self.members.setdefault(member, LinkSecurity(member))
                publics[member] = self.members[member].public
        addresses = {}
        for d in devices:
            if d == self.device:
                addresses[d] = self.data_address
                continue
            if d not in self.peers:
                pull = self.ctx.socket(zmq.PULL)
                pull.setsockopt(zmq.LINGER, 0)
                pull.bind("tcp://127.0.0.1:*")
                self.peers[d] = pull
            addresses[d] = self.peers[d].getsockopt_string(zmq.LAST_ENDPOINT)
        protection = {f"{s}>{d}": self.protection for s, d in self.compiled.links()}
        for sec in self.members.values():
            sec.configure(protection, publics)
        programs = self.compiled.programs
        mine = stages or [p.name for p in programs if self.device in (p.device, *p.replicas)]
        artifacts = export_plan(self.compiled)
        return Deploy(
            stages=tuple(artifacts[s] for s in mine), devices=addresses,
            sink=self.sink.getsockopt_string(zmq.LAST_ENDPOINT), publics=publics,
            hosts={p.name: (p.device, *p.replicas) for p in programs},
            protection=protection, deadline_s=self.deadline_s).to_wire()

    def deploy(self, stages: list[str] | None = None) -> dict[str, Any]:
        reply = self.call(self.deploy_message(stages))
        assert reply["ok"], reply
        return reply

    # -- data plane -------------------------------------------------------------------------
    def route(self) -> dict[str, str]:
        return {**{p.name: p.device for p in self.compiled.programs}, OUTPUT: COORDINATOR}

    def encode(self, sender: str, req: int, link: str, arrays: list[tuple[str, np.ndarray]],
               seq: int | None = None, route: dict[str, str] | None = None) -> list[Any]:
        """An authentic message from member ``sender`` (the coordinator for ``input>S``)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.members[sender].encode(req, seq, link, route or self.route(), arrays,
                                           receiver=self.device)

    def inputs(self, stage: str, batch: int = 1, seed: int = 0
               ) -> dict[str, list[tuple[str, np.ndarray]]]:
        """Random tensors for every link into ``stage``: link -> [(tensor id, array)]."""
        rng = np.random.default_rng(seed)
        out: dict[str, list[tuple[str, np.ndarray]]] = {}
        for t in self.compiled.by_name[stage].inputs:
            x = rng.random((batch, *t.shape), dtype=np.float32)
            out.setdefault(f"{t.src}>{t.dst}", []).append((t.id, x))
        return out

    def feed(self, stage: str, req: int, batch: int = 1, seed: int = 0) -> None:
        """Send ``stage`` all its inputs for request ``req``, each from its true sender; an
        input from a stage on the worker itself is made by feeding that stage instead."""
        route = self.route()
        for link, arrays in self.inputs(stage, batch, seed).items():
            src = link.split(">")[0]
            sender = COORDINATOR if src == INPUT else route[src]
            if sender == self.device:
                self.feed(src, req, batch, seed)
            else:
                self.send(self.encode(sender, req, link, arrays))

    def send(self, frames: list[Any]) -> None:
        self.data.send_multipart([bytes(getattr(f, "buffer", f)) for f in frames])

    def received(self, where: str, timeout: float = 5.0, expect: int = 1) -> list[list[bytes]]:
        """Messages the worker sent to ``where`` (``output``: the coordinator; a device)."""
        sock = self.sink if where == OUTPUT else self.peers[where]
        out: list[list[bytes]] = []
        end = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < end:
            if sock.poll(20):
                out.append(sock.recv_multipart())
        while sock.poll(100):
            out.append(sock.recv_multipart())
        return out

    def stats(self) -> dict[str, Any]:
        return self.call({"kind": "stats"})

    def rss(self) -> int:
        return rss(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call({"kind": "shutdown"}, timeout=5.0)
            except AssertionError:
                pass
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.ctx.destroy(linger=0)

    def log(self) -> str:
        """What the worker wrote on stderr so far."""
        return self.stderr.read_text()
