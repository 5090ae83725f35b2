"""The data-plane wire format: one msgpack header frame, then one raw frame per tensor.

    frames = encode(req=7, seq=0, link="s0>s1", route={"s1": "pi-2"}, arrays=[("x", x)])
    socket.send_multipart(frames, copy=False)
    schema = {"s0>s1": Expected({"x": ("float32", (16, 14, 14))})}
    header, tensors = decode(socket.recv_multipart(copy=False), schema)
    tensors["x"].shape                   # (B, 16, 14, 14), a read-only view of the frame

Frame 0 is a msgpack map with exactly the keys v, kind, req, seq, link, route,
tensors and flags; frame i (i >= 1) is tensor i-1's C-contiguous little-endian
bytes (sealed, on a protected link: ``linksec.py``, which also appends the header
tag every message carries as its last frame). An int8 tensor's spec also carries its
``scale`` and ``zero_point`` (``runtime/quantize.py``); the header is authenticated
(and a sealed link's associated data), so they cannot be altered on the way, and the
receiver accepts only the pair its stage was quantized for. Everything that arrives is hostile
until ``decode`` has checked it against what the receiver expects on that link, and
a failed check is always a
``MalformedMessage``. Light on purpose: stdlib, numpy and msgpack only (edge
workers have no torch), and nothing is ever unpickled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import msgpack
import numpy as np
import numpy.typing as npt

from ..errors import MalformedMessage

__all__ = [
    "DTYPES", "FLAG_DEGRADED", "FLAG_SEALED", "MAX_HEADER_BYTES", "WIRE_VERSION",
    "MAX_PAYLOAD_BYTES", "Expected", "Header", "TensorSpec", "Unseal", "check", "decode",
    "encode", "frame_nbytes", "frame_view", "parse_header", "tensors",
]

WIRE_VERSION = 2  # 2: every message ends with a header tag (linksec.py)
MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 256 * 2**20
DTYPES = {"float32", "float16", "int64", "int32", "uint8", "int8", "bool"}

FLAG_DEGRADED = 1 << 0  # the sender ran with a stage missing or replaced
FLAG_SEALED = 1 << 1    # the tensor frames are AEAD-sealed / MAC-tagged
_KNOWN_FLAGS = FLAG_DEGRADED | FLAG_SEALED

MAX_NAME_LEN = 128         # stage and device names (characters)
MAX_TENSOR_NAME_LEN = 256  # tensor names can be long ONNX value names
MAX_ROUTE = 256
MAX_TENSORS = 64
MAX_DIMS = 8
MAX_DIM = 2**31 - 1
_MAX_ID = 2**63 - 1

_KEYS = frozenset({"v", "kind", "req", "seq", "link", "route", "tensors", "flags"})
_SPEC_KEYS = frozenset({"name", "dtype", "shape"})
_INT8_KEYS = _SPEC_KEYS | {"scale", "zero_point"}  # an int8 tensor's spec
Codec = tuple[float, int]  # an int8 tensor's (scale, zero point)
# Fixed byte order on the wire, whatever the host's.
_WIRE_DTYPE = {name: np.dtype(name).newbyteorder("<") for name in DTYPES}
# dtype -> its name, for the hot path (``dtype.name`` costs microseconds per call)
_ORDERS: tuple[Literal["<", ">", "="], ...] = ("<", ">", "=")
_NAME_OF = {np.dtype(name).newbyteorder(order): name for name in DTYPES for order in _ORDERS}


class _HasBuffer(Protocol):
    """A zmq.Frame, without importing zmq."""

    @property
    def buffer(self) -> memoryview: ...


Frame = bytes | bytearray | memoryview | _HasBuffer


class TensorSpec(NamedTuple):
    """One tensor frame's description in the header."""

    name: str
    dtype: str
    shape: tuple[int, ...]  # full shape, batch dimension first
    scale: float | None = None  # int8 only
    zero_point: int | None = None


class Header(NamedTuple):
    """A validated frame 0. ``route`` maps stage name -> device name.

    Named tuples, not frozen dataclasses: as immutable, and built several times faster,
    which counts on a path every message takes.
    """

    req: int
    seq: int
    link: str
    route: Mapping[str, str]
    tensors: tuple[TensorSpec, ...]
    flags: int = 0

    def to_bytes(self) -> bytes:
        """The msgpack encoding of this header (frame 0)."""
        return msgpack.packb({  # type: ignore[no-any-return]
            "v": WIRE_VERSION, "kind": "data", "req": self.req, "seq": self.seq,
            "link": self.link, "route": dict(self.route), "flags": self.flags,
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                         **_codec_keys(t.dtype, t.scale, t.zero_point)}
                        for t in self.tensors],
        }, use_bin_type=True)


@dataclass(frozen=True)
class Expected:
    """What a receiver accepts on one link: tensor name -> (dtype, per-sample shape, no batch)."""

    tensors: Mapping[str, tuple[str, tuple[int, ...]]]
    max_batch: int = 1024
    sealed: bool = False  # the link is MAC- or AEAD-protected: frames must carry FLAG_SEALED
    codecs: Mapping[str, Codec] | None = None  # int8 tensor name → the only codec accepted


class Unseal(Protocol):
    """Checks and opens a sealed message's frames (``runtime/linksec.py``); raises
    ``IntegrityError`` if they are not what the sender sealed under this header."""

    def __call__(self, header: Header, raw_header: memoryview,
                 frames: Sequence[Frame]) -> Sequence[Frame]: ...


def frame_nbytes(frame: Frame) -> int:
    """Byte length of a frame (bytes, memoryview, or anything with ``.buffer`` like zmq.Frame)."""
    return _view(frame).nbytes


def encode(req: int, seq: int, link: str, route: Mapping[str, str],
           arrays: Sequence[tuple[str, npt.NDArray[Any]]], flags: int = 0,
           codecs: Mapping[str, Codec] | None = None) -> list[bytes | bytearray | memoryview]:
    """Frames for one message: header bytes, then a memoryview of each array
    (``codecs``: each int8 array's scale and zero point, by name).

    An array is copied only if it is not already C-contiguous little-endian; otherwise
    its frame is a view of its own buffer. This is the hot path of every hop, so it
    checks only what the receiver cannot (the arrays' types); the receiver validates
    everything else.
    """
    specs = []
    # bytearray too: a sealing layer may replace the tensor frames with its own buffers
    frames: list[bytes | bytearray | memoryview] = [b""]
    for name, array in arrays:
        dtype = getattr(array, "dtype", None)
        kind = _NAME_OF.get(array.dtype) if isinstance(array, np.ndarray) else None
        if kind is None:
            raise MalformedMessage(f"tensor {name!r}: not an ndarray of {sorted(DTYPES)}")
        if not array.flags.c_contiguous or dtype != _WIRE_DTYPE[kind]:
            array = np.ascontiguousarray(array, dtype=_WIRE_DTYPE[kind])
        codec = (codecs or {}).get(name) if kind == "int8" else None
        if kind == "int8" and codec is None:
            raise MalformedMessage(f"tensor {name!r}: int8 without its scale and zero point")
        specs.append({"name": name, "dtype": kind, "shape": list(array.shape),
                      **_codec_keys(kind, *(codec or (None, None)))})
        frames.append(array.reshape(-1).view(np.uint8).data)
    try:
        frames[0] = msgpack.packb({"v": WIRE_VERSION, "kind": "data", "req": req, "seq": seq,
                                   "link": link, "route": route, "tensors": specs,
                                   "flags": flags}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # a field msgpack cannot carry
        raise MalformedMessage(f"header cannot be encoded: {exc}") from exc
    return frames


def parse_header(raw: bytes | memoryview) -> Header:
    """Validate frame 0 strictly; raise ``MalformedMessage`` on anything unexpected."""
    size = memoryview(raw).nbytes
    if size > MAX_HEADER_BYTES:  # checked before unpacking: rejecting is cheap
        raise MalformedMessage(f"header is {size} bytes, over the {MAX_HEADER_BYTES}-byte limit")
    try:
        obj = msgpack.unpackb(
            raw, raw=False, strict_map_key=True,
            max_bin_len=0, max_ext_len=0, max_str_len=4 * MAX_TENSOR_NAME_LEN,
            max_array_len=max(MAX_TENSORS, MAX_DIMS), max_map_len=MAX_ROUTE)
    except Exception as exc:  # msgpack raises many types on hostile input; all mean the same
        raise MalformedMessage(f"header is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedMessage(f"header is a {type(obj).__name__}, not a map")
    if obj.keys() != _KEYS:
        missing, extra = sorted(_KEYS - obj.keys()), sorted(map(repr, obj.keys() - _KEYS))
        raise MalformedMessage(f"header keys: missing {missing}, unexpected {extra}")
    if obj["v"] != WIRE_VERSION or type(obj["v"]) is not int:
        raise MalformedMessage(f"header 'v': unsupported version {obj['v']!r}")
    if obj["kind"] != "data" or type(obj["kind"]) is not str:
        raise MalformedMessage(f"header 'kind': {obj['kind']!r} is not 'data'")
    flags = _int("flags", obj["flags"], 2**32 - 1)
    if flags & ~_KNOWN_FLAGS:
        raise MalformedMessage(f"header 'flags': unknown bits in {flags:#x}")
    link = _name("link", obj["link"], 2 * MAX_NAME_LEN + 1)
    src, _, dst = link.partition(">")
    if not src or not dst or ">" in dst or len(src) > MAX_NAME_LEN or len(dst) > MAX_NAME_LEN:
        raise MalformedMessage(f"header 'link': {link!r} is not 'SRC>DST'")
    route = obj["route"]
    if not isinstance(route, dict):
        raise MalformedMessage("header 'route' is not a map")
    for stage, device in route.items():
        _name("route key", stage, MAX_NAME_LEN)
        _name(f"route[{stage!r}]", device, MAX_NAME_LEN)
    tensors = obj["tensors"]
    if not isinstance(tensors, list):
        raise MalformedMessage("header 'tensors' is not a list")
    specs = tuple(_spec(i, t) for i, t in enumerate(tensors))
    if len({s.name for s in specs}) != len(specs):
        raise MalformedMessage("header 'tensors': duplicate tensor names")
    return Header(_int("req", obj["req"], _MAX_ID), _int("seq", obj["seq"], _MAX_ID),
                  link, route, specs, flags)


def decode(frames: Sequence[Frame], schema: Mapping[str, Expected],
           max_bytes: int = MAX_PAYLOAD_BYTES, unseal: Unseal | None = None
           ) -> tuple[Header, dict[str, npt.NDArray[Any]]]:
    """Parse and validate a whole message against ``schema`` (link name -> Expected).

    Returns the header and read-only numpy views onto the frame buffers, in the
    order sent. Raises ``MalformedMessage`` naming the field at fault; on a sealed
    link, ``unseal`` opens the frames and raises ``IntegrityError`` if they were altered.
    (The runtime receives through ``linksec.LinkSecurity.open``, which also checks the
    header tag every message ends with; this is the same minus that frame.)
    """
    if not frames:
        raise MalformedMessage("empty message")
    raw_header = _view(frames[0])
    header = parse_header(raw_header)
    expected = schema.get(header.link)
    if expected is None:
        raise MalformedMessage(f"link {header.link!r} is not expected here")
    check(header, expected, max_bytes)
    body = frames[1:]
    if expected.sealed:  # after the cheap checks: a forged header costs no cipher work
        if unseal is None:
            raise MalformedMessage(f"link {header.link!r} is sealed and no keys are set")
        body = unseal(header, raw_header, body)
    return header, tensors(header, body)


def check(header: Header, expected: Expected, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
    """Raise ``MalformedMessage`` unless ``header`` announces what ``expected`` allows."""
    if bool(header.flags & FLAG_SEALED) != expected.sealed:
        raise MalformedMessage(f"link {header.link!r} is "
                               f"{'sealed; message is not' if expected.sealed else 'not sealed'}")
    names = [t.name for t in header.tensors]
    if set(names) != set(expected.tensors):
        raise MalformedMessage(f"link {header.link!r}: tensors {sorted(names)} "
                               f"do not match expected {sorted(expected.tensors)}")
    batch = header.tensors[0].shape[0] if header.tensors else 1
    total = 0
    for t in header.tensors:
        dtype, per_sample = expected.tensors[t.name]
        if t.dtype != dtype:
            raise MalformedMessage(f"tensor {t.name!r}: dtype {t.dtype} is not {dtype}")
        codec = (expected.codecs or {}).get(t.name)
        if codec is not None and (t.scale, t.zero_point) != codec:
            raise MalformedMessage(f"tensor {t.name!r}: scale {t.scale} and zero point "
                                   f"{t.zero_point} are not the stage's {codec[0]}, {codec[1]}")
        if t.shape[1:] != tuple(per_sample):
            dims = ", ".join(["batch", *map(str, per_sample)])
            raise MalformedMessage(
                f"tensor {t.name!r}: shape {list(t.shape)} does not match expected ({dims})")
        if not 1 <= t.shape[0] <= expected.max_batch:
            raise MalformedMessage(
                f"tensor {t.name!r}: batch {t.shape[0]} is not in 1..{expected.max_batch}")
        if t.shape[0] != batch:
            raise MalformedMessage(f"tensor {t.name!r}: batch {t.shape[0]} is not {batch}")
        total += math.prod(t.shape) * _WIRE_DTYPE[t.dtype].itemsize
    if total > max_bytes:
        raise MalformedMessage(f"payload of {total} bytes is over the {max_bytes}-byte limit")


def tensors(header: Header, body: Sequence[Frame]) -> dict[str, npt.NDArray[Any]]:
    """Read-only arrays over the tensor frames ``body`` (opened, if sealed), as announced."""
    if len(body) != len(header.tensors):
        raise MalformedMessage(f"{len(body) + 1} frames for {len(header.tensors)} tensors")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for i, (t, frame) in enumerate(zip(header.tensors, body), start=1):
        view = _view(frame)
        want = math.prod(t.shape) * _WIRE_DTYPE[t.dtype].itemsize
        if view.nbytes != want:
            raise MalformedMessage(f"tensor {t.name!r}: frame {i} is {view.nbytes} bytes, "
                                   f"shape {list(t.shape)} needs {want}")
        arrays[t.name] = np.frombuffer(view, dtype=_WIRE_DTYPE[t.dtype]).reshape(t.shape)
    return arrays


def _view(frame: Frame) -> memoryview:
    """A read-only, C-contiguous memoryview of a frame; no copy."""
    source: Any = getattr(frame, "buffer", frame)  # zmq.Frame keeps its bytes in .buffer
    try:
        view = memoryview(source)
    except TypeError as exc:
        raise MalformedMessage(f"frame is a {type(frame).__name__}, not a buffer") from exc
    if not view.c_contiguous:
        raise MalformedMessage("frame buffer is not contiguous")
    return view.toreadonly()


frame_view = _view  # for the sealing layer, which opens frames before ``decode`` reads them


def _int(field: str, value: object, top: int) -> int:
    if type(value) is not int or not 0 <= value <= top:  # bool is not an int here
        raise MalformedMessage(f"header {field!r}: {value!r} is not an int in 0..{top}")
    return value


def _name(field: str, value: object, longest: int) -> str:
    if type(value) is not str or not 1 <= len(value) <= longest:
        raise MalformedMessage(f"header {field}: {value!r} is not a string of 1..{longest} chars")
    return value


def _codec_keys(dtype: str, scale: float | None, zero_point: int | None) -> dict[str, Any]:
    return {"scale": scale, "zero_point": zero_point} if dtype == "int8" else {}


def _spec(i: int, t: object) -> TensorSpec:
    keys = _INT8_KEYS if isinstance(t, dict) and t.get("dtype") == "int8" else _SPEC_KEYS
    if not isinstance(t, dict) or t.keys() != keys:
        raise MalformedMessage(f"header tensors[{i}] is not a map of {sorted(keys)}")
    name = _name(f"tensors[{i}].name", t["name"], MAX_TENSOR_NAME_LEN)
    if type(t["dtype"]) is not str or t["dtype"] not in DTYPES:
        raise MalformedMessage(f"tensor {name!r}: unknown dtype {t['dtype']!r}")
    shape = t["shape"]
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS
            or any(type(d) is not int or not 0 <= d <= MAX_DIM for d in shape)):
        raise MalformedMessage(f"tensor {name!r}: shape {shape!r} is not 1..{MAX_DIMS} "
                               f"dims in 0..{MAX_DIM}")
    if keys is _SPEC_KEYS:
        return TensorSpec(name, t["dtype"], tuple(shape))
    scale, zero = t["scale"], t["zero_point"]
    if type(scale) is not float or not 0.0 < scale < math.inf:
        raise MalformedMessage(f"tensor {name!r}: scale {scale!r} is not a positive float")
    if type(zero) is not int or not -128 <= zero <= 127:
        raise MalformedMessage(f"tensor {name!r}: zero point {zero!r} is not in -128..127")
    return TensorSpec(name, "int8", tuple(shape), scale, zero)
