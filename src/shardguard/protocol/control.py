"""The control plane's messages, typed and validated: what a coordinator and a worker say.

    wire = Deploy(stages=..., devices=..., ...).to_wire()     # a msgpack-able map
    deploy = Deploy.from_wire(msgpack.unpackb(raw))           # MalformedMessage naming the field

Control messages are msgpack maps with a ``kind`` (``hello``, ``deploy``, ``stats``,
``verify``, ``behave``, ``shutdown`` from the coordinator; ``alarm`` from a worker),
sent over the CurveZMQ control socket; each request gets one reply map with ``ok``.
``from_wire`` checks every field (type, range, size) before anything is built from a
message, so a worker can refuse a bad one whole and keep what it runs. Light on
purpose: stdlib, numpy and msgpack only, importable on a board without torch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import MalformedMessage

__all__ = [
    "COORDINATOR", "INPUT", "MAX_ATTEMPTS", "OUTPUT", "POLICIES", "Alarm", "Behave", "Deploy",
    "Port", "StageArtifact", "parse_control",
]

COORDINATOR = "coordinator"  # the device name of the coordinator's end of its hops
INPUT, OUTPUT = "input", "output"  # the stage names of the coordinator's hops
# What happens to a request one of whose sealed messages was rejected: fail it, send it
# again on the same route, send it again avoiding the sender, or (a piece of a split
# tensor) go on with zeros in its place, the answer flagged degraded.
POLICIES = ("drop", "retry", "failover", "degrade")
# Submissions of one request, the first included, before the coordinator fails it: the
# runtime's default, and the sealed-link model's in the local executor (defences/sealed.py).
MAX_ATTEMPTS = 3
CORRUPT_MODES = ("zero", "scale", "sign", "random")

MAX_NAME = 128
MAX_TENSOR_NAME = 256
MAX_ITEMS = 4096  # entries in any map or list of a control message
MAX_ADDRESS = 256

T = TypeVar("T")


def _fail(where: str, what: str) -> MalformedMessage:
    return MalformedMessage(f"{where}: {what}")


def _str(where: str, value: object, longest: int = MAX_NAME) -> str:
    if type(value) is not str or not 1 <= len(value) <= longest:
        raise _fail(where, f"{value!r:.80} is not a string of 1..{longest} characters")
    return value


def _int(where: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _fail(where, f"{value!r:.80} is not an integer in {low}..{high}")
    return value


def _float(where: str, value: object, low: float, high: float) -> float:
    if type(value) not in (int, float) or not low <= float(value) <= high:  # type: ignore[arg-type]
        raise _fail(where, f"{value!r:.80} is not a number in {low}..{high}")
    return float(value)  # type: ignore[arg-type]


def _bytes(where: str, value: object, size: int | None = None) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise _fail(where, "is not " + (f"{size} bytes" if size is not None else "bytes"))
    return value


def _list(where: str, value: object, item: Callable[[str, object], T],
          longest: int = MAX_ITEMS) -> list[T]:
    if not isinstance(value, list) or len(value) > longest:
        raise _fail(where, f"is not a list of at most {longest} items")
    return [item(f"{where}[{i}]", v) for i, v in enumerate(value)]


def _map(where: str, value: object, item: Callable[[str, object], T],
         key: Callable[[str, object], str] = _str) -> dict[str, T]:
    if not isinstance(value, dict) or len(value) > MAX_ITEMS:
        raise _fail(where, f"is not a map of at most {MAX_ITEMS} entries")
    return {key(f"{where} key", k): item(f"{where}[{k!r:.40}]", v) for k, v in value.items()}


def _address(where: str, value: object) -> str:
    text = _str(where, value, MAX_ADDRESS)
    if not text.startswith(("tcp://", "ipc://")):
        raise _fail(where, f"{text!r} is not a tcp:// or ipc:// address")
    return text


def _link(where: str, value: object) -> str:
    text = _str(where, value, 2 * MAX_NAME + 1)
    src, _, dst = text.partition(">")
    if not src or not dst or ">" in dst:
        raise _fail(where, f"{text!r} is not a link 'SRC>DST'")
    return text


def _fields(where: str, m: object, required: Set[str], optional: Set[str] = frozenset()
            ) -> Mapping[str, Any]:
    if not isinstance(m, dict):
        raise _fail(where, "is not a map")
    missing, extra = required - m.keys(), m.keys() - required - optional - {"kind", "id"}
    if missing or extra:
        raise _fail(where, f"missing {sorted(missing)}, unexpected {sorted(map(str, extra))}")
    return m


@dataclass(frozen=True)
class Port:
    """One ONNX input or output of a stage, and the link it comes from or goes to."""

    name: str  # ONNX input/output name
    link: str  # "src>dst"
    tensor: str  # transfer id
    dtype: str  # float32, or int8 (an int8 stage's tensors and what int8 stages receive)
    shape: tuple[int, ...]  # per sample
    scale: float | None = None  # int8: the tensor's scale and zero point
    zero_point: int | None = None

    def to_wire(self) -> dict[str, object]:
        quant = {} if self.dtype == "float32" else {"scale": self.scale,
                                                    "zero_point": self.zero_point}
        return {"name": self.name, "link": self.link, "tensor": self.tensor,
                "dtype": self.dtype, "shape": list(self.shape), **quant}

    @classmethod
    def from_wire(cls, where: str, m: object) -> Port:
        f = _fields(where, m, {"name", "link", "tensor", "dtype", "shape"},
                    {"scale", "zero_point"})
        if f["dtype"] not in ("float32", "int8"):
            raise _fail(f"{where}.dtype", f"{f['dtype']!r:.40} is not float32 or int8")
        if (f["dtype"] == "int8") != ("scale" in f and "zero_point" in f):
            raise _fail(where, "an int8 port, and only one, has a scale and zero_point")
        scale = zero = None
        if f["dtype"] == "int8":
            scale = _float(f"{where}.scale", f["scale"], 0.0, math.inf)
            zero = _int(f"{where}.zero_point", f["zero_point"], -128, 127)
        shape = tuple(_list(f"{where}.shape", f["shape"],
                            lambda w, d: _int(w, d, 1, 2**31 - 1), longest=8))
        if math.prod(shape) > 2**31:
            raise _fail(f"{where}.shape", f"{list(shape)} is too large")
        return cls(_str(f"{where}.name", f["name"], MAX_TENSOR_NAME),
                   _link(f"{where}.link", f["link"]),
                   _str(f"{where}.tensor", f["tensor"], 3 * MAX_TENSOR_NAME), f["dtype"], shape,
                   scale, zero)


@dataclass(frozen=True)
class StageArtifact:
    """One stage as a worker receives it: its ONNX model, ports, and any check it runs."""

    stage: str
    onnx: bytes
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    check: Mapping[str, Any] | None = None  # a Freivalds verifier's pool (``defences/verifier.py``)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.onnx).hexdigest()

    def to_wire(self) -> dict[str, object]:
        """A msgpack-able mapping (what the deploy message carries)."""
        return {"stage": self.stage, "onnx": self.onnx, "sha256": self.digest,
                "inputs": [p.to_wire() for p in self.inputs],
                "outputs": [p.to_wire() for p in self.outputs], "check": self.check}

    @classmethod
    def from_wire(cls, where: str, m: object) -> StageArtifact:
        f = _fields(where, m, {"stage", "onnx", "sha256", "inputs", "outputs"}, {"check"})
        art = cls(_str(f"{where}.stage", f["stage"]), _bytes(f"{where}.onnx", f["onnx"]),
                  tuple(_list(f"{where}.inputs", f["inputs"], Port.from_wire)),
                  tuple(_list(f"{where}.outputs", f["outputs"], Port.from_wire)),
                  f.get("check"))
        if art.digest != f["sha256"]:
            raise _fail(f"{where}.sha256", "does not match the ONNX bytes")
        if not art.inputs or not art.outputs:
            raise _fail(where, "a stage needs inputs and outputs")
        if art.check is not None and not isinstance(art.check, dict):
            raise _fail(f"{where}.check", "is not a map")
        return art


def _bounds(where: str, value: object) -> tuple[list[float], list[float]]:
    pair = _list(where, value, lambda w, v: _list(w, v, lambda w2, x: _float(
        w2, x, -math.inf, math.inf), longest=1 << 16), longest=2)
    if len(pair) != 2 or len(pair[0]) != len(pair[1]):
        raise _fail(where, "is not [low, high] of equal lengths")
    return pair[0], pair[1]


@dataclass(frozen=True)
class Deploy:
    """Everything a worker needs to run its stages of one plan; see ``Worker.deploy``."""

    stages: tuple[StageArtifact, ...]
    devices: Mapping[str, str]  # device -> data address, every member of the plan
    sink: str  # the coordinator's result address
    publics: Mapping[str, bytes]  # member (devices and coordinator) -> X25519 public key
    hosts: Mapping[str, tuple[str, ...]]  # stage -> the devices the plan puts it on
    protection: Mapping[str, str] = field(default_factory=dict)  # link -> protection
    relays: Mapping[str, str] = field(default_factory=dict)  # "link@device" -> relay address
    deadline_s: float = 30.0
    max_batch: int = 1 << 16
    guards: Mapping[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    vote: Mapping[str, int] = field(default_factory=dict)  # stage -> copies that vote
    on_reject: str = "failover"

    def to_wire(self) -> dict[str, object]:
        return {"kind": "deploy", "stages": [s.to_wire() for s in self.stages],
                "devices": dict(self.devices), "sink": self.sink, "publics": dict(self.publics),
                "hosts": {k: list(v) for k, v in self.hosts.items()},
                "protection": dict(self.protection), "relays": dict(self.relays),
                "deadline_s": self.deadline_s, "max_batch": self.max_batch,
                "guards": {k: [list(lo), list(hi)] for k, (lo, hi) in self.guards.items()},
                "vote": dict(self.vote), "on_reject": self.on_reject}

    @classmethod
    def from_wire(cls, m: object) -> Deploy:
        f = _fields("deploy", m, {"stages", "devices", "sink", "publics", "hosts"},
                    {"protection", "relays", "deadline_s", "max_batch", "guards", "vote",
                     "on_reject"})
        on_reject = f.get("on_reject", "failover")
        if on_reject not in POLICIES:
            raise _fail("deploy.on_reject", f"{on_reject!r:.40} is not one of {POLICIES}")
        d = cls(
            tuple(_list("deploy.stages", f["stages"], StageArtifact.from_wire, longest=256)),
            _map("deploy.devices", f["devices"], _address),
            _address("deploy.sink", f["sink"]),
            _map("deploy.publics", f["publics"], lambda w, v: _bytes(w, v, 32)),
            _map("deploy.hosts", f["hosts"], lambda w, v: tuple(_list(w, v, _str, 64))),
            _map("deploy.protection", f.get("protection", {}), _str, key=_link),
            _map("deploy.relays", f.get("relays", {}), _address, key=lambda w, k: _str(
                w, k, 3 * MAX_NAME)),
            _float("deploy.deadline_s", f.get("deadline_s", 30.0), 0.001, 86400.0),
            _int("deploy.max_batch", f.get("max_batch", 1 << 16), 1, 1 << 20),
            _map("deploy.guards", f.get("guards", {}), _bounds, key=lambda w, k: _str(
                w, k, 3 * MAX_TENSOR_NAME)),
            _map("deploy.vote", f.get("vote", {}), lambda w, v: _int(w, v, 1, 3)),
            on_reject)
        names = [s.stage for s in d.stages]
        if len(set(names)) != len(names):
            raise _fail("deploy.stages", "repeat a stage")
        for s in d.stages:
            if s.stage not in d.hosts:
                raise _fail("deploy.hosts", f"name no device for stage {s.stage!r}")
        for stage, devices in d.hosts.items():
            unknown = [x for x in devices if x not in d.devices]
            if unknown:
                raise _fail(f"deploy.hosts[{stage!r}]", f"names unknown devices {unknown}")
        missing = [x for x in [*d.devices, COORDINATOR] if x not in d.publics]
        if missing:
            raise _fail("deploy.publics", f"no key for {missing}")
        return d


@dataclass(frozen=True)
class Behave:
    """Fault injection (threat experiments only; a worker obeys it only when started with
    ``--allow-fault-injection``): slow=k, corrupt=MODE (factor, seed; stages=[...]: only
    in what those of its stages send), flip_stored=n bit flips in each stored stage
    model, garble_wire (one bit of every message's payload flips after sealing)."""

    slow: float = 1.0
    corrupt: str | None = None
    factor: float = 10.0
    seed: int = 0
    stages: tuple[str, ...] | None = None
    flip_stored: int = 0
    garble_wire: bool = False

    def to_wire(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": "behave", "slow": self.slow, "factor": self.factor,
                                  "seed": self.seed, "flip_stored": self.flip_stored,
                                  "garble_wire": self.garble_wire}
        if self.corrupt is not None:
            out["corrupt"] = self.corrupt
        if self.stages is not None:
            out["stages"] = list(self.stages)
        return out

    @classmethod
    def from_wire(cls, m: object) -> Behave:
        f = _fields("behave", m, set(), {"slow", "corrupt", "factor", "seed", "stages",
                                         "flip_stored", "garble_wire"})
        corrupt = f.get("corrupt")
        if corrupt is not None and corrupt not in CORRUPT_MODES:
            raise _fail("behave.corrupt", f"{corrupt!r:.40} is not one of {CORRUPT_MODES}")
        stages = f.get("stages")
        if type(f.get("garble_wire", False)) is not bool:
            raise _fail("behave.garble_wire", "is not a boolean")
        return cls(_float("behave.slow", f.get("slow", 1.0), 1.0, 1e6), corrupt,
                   _float("behave.factor", f.get("factor", 10.0), -1e30, 1e30),
                   _int("behave.seed", f.get("seed", 0), 0, 2**63 - 1),
                   None if stages is None else tuple(_list("behave.stages", stages, _str)),
                   _int("behave.flip_stored", f.get("flip_stored", 0), 0, 1 << 20),
                   bool(f.get("garble_wire", False)))


@dataclass(frozen=True)
class Alarm:
    """A worker's report that a message it received was rejected, or a check failed."""

    req: int
    link: str
    sender: str  # the device the message's route names as its sender; "?" if unknown
    receiver: str
    reason: str

    def to_wire(self) -> dict[str, object]:
        return {"kind": "alarm", "req": self.req, "link": self.link, "sender": self.sender,
                "receiver": self.receiver, "reason": self.reason}

    @classmethod
    def from_wire(cls, m: object) -> Alarm:
        f = _fields("alarm", m, {"req", "link", "sender", "receiver", "reason"})
        return cls(_int("alarm.req", f["req"], 0, 2**63 - 1), _link("alarm.link", f["link"]),
                   _str("alarm.sender", f["sender"]), _str("alarm.receiver", f["receiver"]),
                   _str("alarm.reason", f["reason"], 1024))


KINDS = ("hello", "deploy", "stats", "verify", "behave", "shutdown")


def parse_control(m: object) -> tuple[str, Any]:
    """A coordinator's request: its kind, and the typed message for deploy and behave."""
    if not isinstance(m, dict) or m.get("kind") not in KINDS:
        kind = m.get("kind") if isinstance(m, dict) else None
        raise MalformedMessage(f"control message kind {kind!r:.40} is not one of {KINDS}")
    kind = str(m["kind"])
    if "id" in m and type(m["id"]) is not int:
        raise MalformedMessage("control message id is not an integer")
    if kind == "deploy":
        return kind, Deploy.from_wire(m)
    if kind == "behave":
        return kind, Behave.from_wire(m)
    _fields(kind, m, set())
    return kind, None
