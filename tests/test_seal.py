"""Sealed links: a sealed tensor opens to itself; anything altered, moved or replayed is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardguard.defences.seal import (
    ALGORITHMS,
    LinkKeys,
    Opener,
    Sealer,
    link_key,
    shared_secret,
    x25519_pair,
)
from shardguard.errors import ConfigError, IntegrityError


def _pair(algorithm: str, link: str = "s0>s1"):
    a, a_public = x25519_pair()
    b, b_public = x25519_pair()
    secret = shared_secret(a, b_public)
    assert secret == shared_secret(b, a_public)  # both ends derive the same key
    key = link_key(secret, link, algorithm)
    return Sealer(algorithm, key), Opener(algorithm, key)


def _seal(sealer, header, seq, data):
    return [bytes(f) for f in sealer.seal(header, seq, [data])]


def _open(opener, header, seq, frames):
    return [bytes(f) for f in opener.open(header, seq, frames)]


@settings(max_examples=60, deadline=None)
@given(algorithm=st.sampled_from(ALGORITHMS), header=st.binary(max_size=200),
       frames=st.lists(st.binary(max_size=2048), min_size=1, max_size=3),
       seq=st.integers(0, 2**63 - 1))
def test_a_sealed_tensor_opens_to_exactly_itself(algorithm, header, frames, seq):
    sealer, opener = _pair(algorithm)
    assert _open(opener, header, seq, sealer.seal(header, seq, frames)) == frames


def test_the_ends_of_a_link_derive_one_key_and_replicas_another():
    coordinator, pi1, pi2 = LinkKeys("coordinator"), LinkKeys("pi1"), LinkKeys("pi2")
    for keys in (coordinator, pi1, pi2):
        keys.add_peers({k.name: k.public for k in (coordinator, pi1, pi2) if k is not keys})
    alg = "aead:chacha20-poly1305"
    sealed = pi1.sealer("s0>s1", alg, "coordinator").seal(b"h", 1, [b"tensor"])
    assert _open(coordinator.opener("s0>s1", alg, "pi1"), b"h", 1, sealed) == [b"tensor"]
    with pytest.raises(IntegrityError):  # pi2, a replica of s0 on the same link, has its own key
        coordinator.opener("s0>s1", alg, "pi2").open(b"h", 1, sealed)


@settings(max_examples=200, deadline=None)
@given(algorithm=st.sampled_from(ALGORITHMS), data=st.binary(min_size=1, max_size=512),
       where=st.integers(0, 10**6), bit=st.integers(0, 7), part=st.sampled_from(["body", "header"]))
def test_any_altered_bit_is_rejected(algorithm, data, where, bit, part):
    sealer, opener = _pair(algorithm)
    header = b"req=7 link=s0>s1 tensors=x:f32[1,8]"
    frames = [bytearray(f) for f in sealer.seal(header, 1, [data])]
    if part == "body":
        body = frames[where % len(frames)]  # a MAC's tag frame too
        body[where % len(body)] ^= 1 << bit
    else:
        header = bytes(b ^ (1 << bit) if i == where % len(header) else b
                       for i, b in enumerate(header))
    with pytest.raises(IntegrityError):
        opener.open(header, 1, frames)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_replayed_reordered_beyond_the_window_or_moved_messages_are_rejected(algorithm):
    sealer, opener = _pair(algorithm)
    header = b"h"
    bodies = {seq: _seal(sealer, header, seq, b"tensor") for seq in range(1, 2001)}
    assert _open(opener, header, 5, bodies[5]) == [b"tensor"]
    with pytest.raises(IntegrityError, match="replay"):
        opener.open(header, 5, bodies[5])
    assert _open(opener, header, 3, bodies[3]) == [b"tensor"]  # reordered within the window
    assert _open(opener, header, 2000, bodies[2000]) == [b"tensor"]
    with pytest.raises(IntegrityError, match="older than the replay window"):
        opener.open(header, 4, bodies[4])
    with pytest.raises(IntegrityError):  # a message moved under another sequence number
        opener.open(header, 1999, bodies[1998])
    other_sealer, other_opener = _pair(algorithm, link="s1>s2")
    with pytest.raises(IntegrityError):  # moved to another link (another key)
        other_opener.open(header, 10, _seal(sealer, header, 10, b"tensor"))


def test_swapped_tensor_frames_are_rejected():
    for algorithm in ALGORITHMS:
        sealer, opener = _pair(algorithm)
        a, b, *rest = sealer.seal(b"h", 1, [b"first tensor", b"other tensor"])
        with pytest.raises(IntegrityError):
            opener.open(b"h", 1, [b, a, *rest])


def test_an_unknown_algorithm_is_named():
    with pytest.raises(ConfigError, match="unknown protection 'aead:rot13'"):
        Sealer("aead:rot13", b"k" * 32)


def test_an_aead_message_without_frames_is_refused_as_it_authenticates_nothing():
    sealer, opener = _pair("aead:aes-128-gcm")
    with pytest.raises(IntegrityError, match="at least one frame"):
        opener.open(b"h", 1, sealer.seal(b"h", 1, []))


def test_ascon_is_among_the_algorithms_so_no_parametrised_case_drops_it_silently():
    # ALGORITHMS lists aead:ascon-128 only when the `ascon` package imports; the dev
    # environment installs it (pyproject: dev), so every test parametrised over
    # ALGORITHMS covers it.
    assert "aead:ascon-128" in ALGORITHMS
