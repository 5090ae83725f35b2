"""The data-plane wire format: valid messages round-trip without copies; anything else is
rejected with MalformedMessage, and nothing else.

    /tmp/devvenv/bin/python -m pytest -q tests/test_wire.py
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardguard.errors import MalformedMessage
from shardguard.protocol import wire
from shardguard.protocol.wire import (
    DTYPES,
    FLAG_DEGRADED,
    FLAG_SEALED,
    MAX_HEADER_BYTES,
    WIRE_VERSION,
    Expected,
    Header,
    TensorSpec,
    decode,
    encode,
    parse_header,
)

MAX_BATCH = 8
# Every dtype appears; every per-sample shape holds at least one element, so a frame's
# length pins its batch and a changed shape can never go unnoticed.
SCHEMA = {
    "s0>s1": Expected({"s0>s1:add": ("float32", (4, 3, 3))}, max_batch=MAX_BATCH),
    "s1>s2": Expected({"a": ("float16", (5,)), "b": ("int64", ()), "mask": ("bool", (2, 2))},
                      max_batch=MAX_BATCH),
    "s2>s3": Expected({"ids": ("int32", (3,)), "img": ("uint8", (2, 3))}, max_batch=MAX_BATCH),
}
ROUTE = {"s0": "pi-1", "s1": "pi-2", "s2": "jetson", "s3": "pi-1"}
TOP_ID = 2**63 - 1


def _arrays(link: str, batch: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for name, (dtype, per_sample) in SCHEMA[link].tensors.items():
        shape = (batch, *per_sample)
        if dtype == "bool":
            a = rng.random(shape) > 0.5
        elif dtype.startswith("float"):
            a = rng.standard_normal(shape).astype(dtype)
        else:
            a = rng.integers(0, 100, shape).astype(dtype)
        out.append((name, a))
    return out


def _message(link: str = "s1>s2", batch: int = 2, seed: int = 0) -> list[Any]:
    return encode(req=5, seq=9, link=link, route=ROUTE, arrays=_arrays(link, batch, seed))


# --- valid messages ----------------------------------------------------------------------

names = st.text(min_size=1, max_size=128)


@settings(max_examples=200, deadline=None)
@given(link=st.sampled_from(sorted(SCHEMA)), batch=st.integers(1, MAX_BATCH),
       seed=st.integers(0, 2**32), req=st.integers(0, TOP_ID), seq=st.integers(0, TOP_ID),
       route=st.dictionaries(names, names, max_size=8),
       flags=st.sampled_from([0, FLAG_DEGRADED]))  # sealed messages: test_sealed_links.py
def test_a_message_round_trips(link: str, batch: int, seed: int, req: int, seq: int,
                               route: dict[str, str], flags: int) -> None:
    arrays = _arrays(link, batch, seed)
    frames = encode(req, seq, link, route, arrays, flags=flags)
    header, decoded = decode([bytes(f) for f in frames], SCHEMA)
    specs = tuple(TensorSpec(n, a.dtype.name, a.shape) for n, a in arrays)
    assert header == Header(req, seq, link, route, specs, flags)
    assert list(decoded) == [n for n, _ in arrays]
    for name, a in arrays:
        assert decoded[name].dtype == a.dtype and np.array_equal(decoded[name], a)


def test_decode_returns_read_only_views_of_the_frames() -> None:
    frames = [bytearray(f) for f in _message()]  # writable buffers, still read-only views
    _, decoded = decode(frames, SCHEMA)
    for frame, array in zip(frames[1:], decoded.values()):
        assert np.shares_memory(array, np.frombuffer(frame, np.uint8))
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array.flags.writeable = True


def test_encode_does_not_copy_a_c_contiguous_array() -> None:
    x = np.arange(2 * 4 * 3 * 3, dtype=np.float32).reshape(2, 4, 3, 3)
    frames = encode(1, 0, "s0>s1", {}, [("s0>s1:add", x)])
    assert isinstance(frames[1], memoryview)
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), x)
    x[0, 0, 0, 0] = 42.0
    assert decode(frames, SCHEMA)[1]["s0>s1:add"][0, 0, 0, 0] == 42.0


def test_a_non_contiguous_or_big_endian_array_is_sent_as_c_contiguous_little_endian() -> None:
    base = np.arange(2 * 4 * 3 * 6, dtype=np.float32).reshape(2, 4, 3, 6)
    for x in (base[..., ::2], base[..., ::2].astype(">f4")):
        frames = encode(1, 0, "s0>s1", {}, [("s0>s1:add", x)])
        assert bytes(frames[1]) == np.ascontiguousarray(x, dtype="<f4").tobytes()
        assert np.array_equal(decode(frames, SCHEMA)[1]["s0>s1:add"], x)


def test_a_message_crosses_a_zmq_socket_without_copies() -> None:
    import zmq

    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://wire-test")
        b.connect("inproc://wire-test")
        arrays = _arrays("s2>s3", 3, 1)
        a.send_multipart(encode(3, 4, "s2>s3", ROUTE, arrays), copy=False)
        header, decoded = decode(b.recv_multipart(copy=False), SCHEMA)
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()
    assert (header.req, header.seq, header.link) == (3, 4, "s2>s3")
    for name, x in arrays:
        assert np.array_equal(decoded[name], x)


def test_encode_refuses_what_it_cannot_put_on_the_wire() -> None:
    # encode is the hot path: it checks the arrays and what msgpack cannot carry; everything
    # else about a header is the receiver's to check (see the malformed-message tests)
    x = np.zeros((1, 4, 3, 3), np.float32)
    bad: list[Callable[[], object]] = [
        lambda: encode(0, 0, "s0>s1", {}, [("x", x.astype(np.float64))]),  # dtype off the list
        lambda: encode(0, 0, "s0>s1", {}, [("x", np.float32(1.0))]),       # not an ndarray
        lambda: encode(0, 2**64, "s0>s1", {}, [("x", x)]),                  # too big for msgpack
    ]
    for make in bad:
        with pytest.raises(MalformedMessage):
            make()


def test_a_shape_error_names_the_tensor_and_the_expected_shape() -> None:
    frames = encode(0, 0, "s0>s1", {}, [("s0>s1:add", np.zeros((1, 3), np.float32))])
    with pytest.raises(MalformedMessage, match=r"tensor 's0>s1:add': shape \[1, 3\] does "
                                               r"not match expected \(batch, 4, 3, 3\)"):
        decode(frames, SCHEMA)


# --- oversized headers -------------------------------------------------------------------

def test_a_header_over_the_limit_is_rejected_without_being_unpacked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    header = msgpack.unpackb(_message()[0])
    header["route"] = {f"s{i}": "€" * 128 for i in range(256)}  # legal fields, too many bytes
    raw = msgpack.packb(header, use_bin_type=True)
    assert len(raw) > MAX_HEADER_BYTES
    calls: list[int] = []
    unpackb = msgpack.unpackb
    monkeypatch.setattr(wire.msgpack, "unpackb", lambda buf, **kw: calls.append(1) or
                        unpackb(buf, **kw))
    with pytest.raises(MalformedMessage, match="over the 65536-byte limit"):
        parse_header(raw)
    assert calls == []
    with pytest.raises(MalformedMessage, match="not valid msgpack"):
        parse_header(b"\xc0" * MAX_HEADER_BYTES)  # at the limit: unpacked, then rejected
    assert calls == [1]


# --- malformed messages ------------------------------------------------------------------
# Each mutation takes a valid message apart (header map, payload frames) and breaks one
# rule of the protocol or of the receiver's schema, so the result is malformed by
# construction. Every one must raise MalformedMessage: never another exception, never accepted.

@dataclass
class Message:
    header: dict[str, Any]
    payloads: list[bytes]
    raw_header: bytes | None = None  # set to send these exact bytes as frame 0
    max_bytes: int = 256 * 2**20

    def frames(self) -> list[bytes]:
        raw = self.raw_header
        if raw is None:
            raw = msgpack.packb(self.header, use_bin_type=True)
        return [raw, *self.payloads]


junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=8),
    st.binary(max_size=8), st.lists(st.integers(0, 9), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=3))
bad_id = st.one_of(junk.filter(lambda x: type(x) is not int), st.integers(-(2**63), -1),
                   st.integers(2**63, 2**64 - 1))
MAP_MARKERS = {*range(0x80, 0x90), 0xDE, 0xDF}  # every msgpack map starts with one of these
Mutation = Callable[[st.DataObject, Message], None]


def _spec_index(data: st.DataObject, m: Message) -> int:
    return data.draw(st.integers(0, len(m.header["tensors"]) - 1), label="tensor")


def garbage_header(data: st.DataObject, m: Message) -> None:
    m.raw_header = data.draw(st.binary(max_size=64).filter(
        lambda b: not b or b[0] not in MAP_MARKERS))


def trailing_bytes_after_header(data: st.DataObject, m: Message) -> None:
    m.raw_header = msgpack.packb(m.header) + data.draw(st.binary(min_size=1, max_size=16))


def truncated_header(data: st.DataObject, m: Message) -> None:
    raw = msgpack.packb(m.header)
    m.raw_header = raw[:data.draw(st.integers(0, len(raw) - 1))]


def header_not_a_map(data: st.DataObject, m: Message) -> None:
    m.raw_header = msgpack.packb(data.draw(junk.filter(lambda x: not isinstance(x, dict))))


def missing_key(data: st.DataObject, m: Message) -> None:
    del m.header[data.draw(st.sampled_from(sorted(m.header)))]


def unknown_key(data: st.DataObject, m: Message) -> None:
    key = data.draw(st.one_of(st.text(max_size=8), st.integers(0, 9)).filter(
        lambda k: k not in m.header))
    m.header[key] = data.draw(junk)


def wrong_version_or_kind(data: st.DataObject, m: Message) -> None:
    if data.draw(st.booleans()):
        m.header["v"] = data.draw(junk.filter(lambda x: not (type(x) is int and x == WIRE_VERSION)))
    else:
        m.header["kind"] = data.draw(junk.filter(lambda x: x != "data"))


def bad_request_or_sequence_id(data: st.DataObject, m: Message) -> None:
    m.header[data.draw(st.sampled_from(["req", "seq"]))] = data.draw(bad_id)


def bad_flags(data: st.DataObject, m: Message) -> None:
    unknown_bits = st.integers(0, 2**64 - 1).filter(lambda f: f & ~(FLAG_DEGRADED | FLAG_SEALED))
    m.header["flags"] = data.draw(st.one_of(bad_id, unknown_bits))


def unknown_link(data: st.DataObject, m: Message) -> None:
    m.header["link"] = data.draw(st.one_of(junk, st.text(max_size=8).map(lambda s: s + ">s1"))
                                 .filter(lambda x: not (isinstance(x, str) and x in SCHEMA)))


def bad_route(data: st.DataObject, m: Message) -> None:
    long_name = st.text(min_size=129, max_size=140)
    m.header["route"] = data.draw(st.one_of(
        junk.filter(lambda x: not isinstance(x, dict)),
        st.dictionaries(st.text(max_size=4), junk.filter(lambda x: type(x) is not str),
                        min_size=1, max_size=3),
        st.dictionaries(long_name, st.just("pi"), min_size=1, max_size=2),
        st.dictionaries(st.just("s0"), long_name, min_size=1, max_size=1),
        st.just({f"s{i}": "pi" for i in range(257)})))


def bad_tensor_list(data: st.DataObject, m: Message) -> None:
    spec = m.header["tensors"][0]
    m.header["tensors"] = data.draw(st.one_of(
        junk.filter(lambda x: not isinstance(x, list)), st.just([spec] * 65)))


def tensor_spec_not_a_map_or_wrong_keys(data: st.DataObject, m: Message) -> None:
    i = _spec_index(data, m)
    spec = m.header["tensors"][i]
    choice = data.draw(st.sampled_from(["junk", "missing", "extra"]))
    if choice == "junk":
        m.header["tensors"][i] = data.draw(junk.filter(lambda x: not isinstance(x, dict)))
    elif choice == "missing":
        del spec[data.draw(st.sampled_from(sorted(spec)))]
    else:
        spec[data.draw(st.text(max_size=6).filter(lambda k: k not in spec))] = data.draw(junk)


def renamed_tensor(data: st.DataObject, m: Message) -> None:
    spec = m.header["tensors"][_spec_index(data, m)]
    others = sorted(n for e in SCHEMA.values() for n in e.tensors)
    spec["name"] = data.draw(st.one_of(junk, st.sampled_from(others), st.text(min_size=257))
                             .filter(lambda x: x != spec["name"]))


def changed_dtype(data: st.DataObject, m: Message) -> None:
    spec = m.header["tensors"][_spec_index(data, m)]
    other = st.sampled_from(sorted(DTYPES | {"float64", "int8"}))
    spec["dtype"] = data.draw(data.draw(st.sampled_from([other, junk])).filter(
        lambda x: x != spec["dtype"]))


def changed_shape(data: st.DataObject, m: Message) -> None:
    spec = m.header["tensors"][_spec_index(data, m)]
    shape = spec["shape"]
    k = data.draw(st.integers(0, len(shape) - 1))
    candidates = data.draw(st.sampled_from([
        junk,                                                           # not a list
        st.lists(st.one_of(st.integers(-(2**63), 2**64 - 1), junk), max_size=10),
        st.lists(st.integers(0, 12), min_size=1, max_size=10),          # plausible, but wrong
        st.integers(-(2**31), 2**40).map(lambda d: [*shape[:k], d, *shape[k + 1:]]),
        st.integers(1, MAX_BATCH).map(lambda b: [b, *shape[1:]]),       # batch of one tensor
    ]))
    # msgpack carries tuples as lists; compare what the receiver would see.
    spec["shape"] = data.draw(candidates.filter(
        lambda s: msgpack.unpackb(msgpack.packb(s)) != shape))


def batch_out_of_range(data: st.DataObject, m: Message) -> None:
    batch = data.draw(st.one_of(st.just(0), st.integers(MAX_BATCH + 1, 2**31 - 1)))
    for spec in m.header["tensors"]:  # consistent across tensors: only the range is wrong
        spec["shape"][0] = batch


def dropped_or_duplicated_tensor(data: st.DataObject, m: Message) -> None:
    i = _spec_index(data, m)
    choice = data.draw(st.sampled_from(["drop spec", "drop both", "duplicate both"]))
    if choice == "drop spec":
        del m.header["tensors"][i]
    elif choice == "drop both":
        del m.header["tensors"][i], m.payloads[i]
    else:
        m.header["tensors"].append(copy.deepcopy(m.header["tensors"][i]))
        m.payloads.append(m.payloads[i])


def resized_frame(data: st.DataObject, m: Message) -> None:
    i = data.draw(st.integers(0, len(m.payloads) - 1))
    if data.draw(st.booleans()):
        m.payloads[i] = m.payloads[i][:data.draw(st.integers(0, len(m.payloads[i]) - 1))]
    else:
        m.payloads[i] += data.draw(st.binary(min_size=1, max_size=64))


def wrong_frame_count(data: st.DataObject, m: Message) -> None:
    choice = data.draw(st.sampled_from(["drop", "add", "none"]))
    if choice == "drop":
        del m.payloads[data.draw(st.integers(0, len(m.payloads) - 1))]
    elif choice == "add":
        m.payloads.insert(data.draw(st.integers(0, len(m.payloads))),
                          data.draw(st.binary(max_size=64)))
    else:
        m.payloads.clear()


def payload_over_max_bytes(data: st.DataObject, m: Message) -> None:
    m.max_bytes = data.draw(st.integers(0, sum(map(len, m.payloads)) - 1))


MUTATIONS: list[Mutation] = [
    garbage_header, trailing_bytes_after_header, truncated_header, header_not_a_map,
    missing_key, unknown_key, wrong_version_or_kind, bad_request_or_sequence_id, bad_flags,
    unknown_link, bad_route, bad_tensor_list, tensor_spec_not_a_map_or_wrong_keys,
    renamed_tensor, changed_dtype, changed_shape, batch_out_of_range,
    dropped_or_duplicated_tensor, resized_frame, wrong_frame_count, payload_over_max_bytes,
]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(link=st.sampled_from(sorted(SCHEMA)), batch=st.integers(1, MAX_BATCH),
       mutate=st.sampled_from(MUTATIONS), data=st.data())
def test_every_malformed_message_is_rejected(link: str, batch: int, mutate: Mutation,
                                              data: st.DataObject) -> None:
    frames = _message(link, batch)
    m = Message(msgpack.unpackb(frames[0]), [bytes(f) for f in frames[1:]])
    decode(m.frames(), SCHEMA)  # the unmutated message is valid
    mutate(data, m)
    with pytest.raises(MalformedMessage):
        decode(m.frames(), SCHEMA, max_bytes=m.max_bytes)


def test_an_empty_message_or_a_non_buffer_frame_is_rejected() -> None:
    with pytest.raises(MalformedMessage):
        decode([], SCHEMA)
    frames: list[Any] = _message()
    frames[1] = 12345
    with pytest.raises(MalformedMessage):
        decode(frames, SCHEMA)
