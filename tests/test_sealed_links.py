"""Sealed links on real sockets: tampering at the relay is always caught, clean traffic never is.

A sender seals with one endpoint's keys, an on-path attacker in the link's relay
applies L1–L4 (the same hook the runtime's attackers use), and the receiver
decodes and opens exactly as a worker does. Whether a message was tampered with
is judged by the relay's own bytes in and out, not by the defence.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import zmq

from shardguard.defences.seal import ALGORITHMS, Opener, Sealer
from shardguard.protocol import wire
from shardguard.runtime.linksec import LinkSecurity, Rejected
from shardguard.runtime.relay import LinkModel, Relay
from shardguard.threats.distributed import RelayAttacker
from shardguard.threats.spec import BitFlips, Erasure, Noise, Replay

pytestmark = pytest.mark.timeout(300)

LINK, ROUTE = "s0>s1", {"s0": "pi1", "s1": "pi2", "output": "coordinator"}
SHAPE = (4, 6, 6)  # one sample's tensor: 576 bytes


class Witness:
    """A relay hook that records, per message, whether the attacker changed what crossed."""

    def __init__(self, attacker: Any) -> None:
        self.attacker, self.tampered, self.dropped = attacker, 0, 0

    def __call__(self, frames: list[bytes]) -> Any:
        out = self.attacker(frames) if self.attacker else [frames]
        if out is None:
            self.dropped += 1
            return None
        self.tampered += sum(1 for m in out if [bytes(f) for f in m] != frames)
        return out


def _ends(algorithm: str) -> tuple[LinkSecurity, LinkSecurity]:
    sender, receiver = LinkSecurity("pi1"), LinkSecurity("pi2")
    publics = {"pi1": sender.public, "pi2": receiver.public}
    for end in (sender, receiver):
        end.configure({LINK: algorithm}, publics)
    return sender, receiver


def _run(ctx: zmq.Context[Any], algorithm: str, attacker: Any, messages: int,
         seed: int = 0) -> tuple[Witness, int, int, int]:
    """Send ``messages`` sealed tensors through an attacked relay; count what the receiver did."""
    witness = Witness(attacker)
    sender, receiver = _ends(algorithm)
    schema = {LINK: wire.Expected({"x": ("float32", SHAPE)}, 16, sealed=True)}
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.RCVTIMEO, 5000)
    pull.bind("tcp://127.0.0.1:*")
    relay = Relay("tcp://127.0.0.1:*", pull.getsockopt_string(zmq.LAST_ENDPOINT), LinkModel(),
                  tamper=[witness], context=ctx).start()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(relay.address)
    rng = np.random.default_rng(seed)
    sent: dict[int, np.ndarray] = {}
    accepted = rejected = wrong = 0
    try:
        for seq in range(1, messages + 1):
            x = rng.standard_normal((1, *SHAPE)).astype(np.float32)
            sent[seq] = x
            push.send_multipart(sender.encode(seq, seq, LINK, ROUTE, [("x", x)]), copy=False)
            if seq % 200 == 0 or seq == messages:  # keep the link's queue short
                accepted, rejected, wrong = _drain(pull, relay, witness, seq, schema, receiver,
                                                   sent, accepted, rejected, wrong)
    finally:
        relay.stop()
        push.close(linger=0)
        pull.close(linger=0)
    return witness, accepted, rejected, wrong


def _drain(pull: Any, relay: Relay, witness: Witness, sent_so_far: int, schema: Any,
           receiver: LinkSecurity, sent: dict[int, np.ndarray], accepted: int, rejected: int,
           wrong: int) -> tuple[int, int, int]:
    """Receive until the relay has read all that was sent and all it forwarded has arrived."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        stats = relay.stats
        if stats.messages_in == sent_so_far and accepted + rejected == stats.messages_out \
                and not pull.poll(20):
            return accepted, rejected, wrong
        if not pull.poll(20):
            continue
        frames = pull.recv_multipart(copy=False)
        try:
            header, arrays = receiver.open(frames, schema)
        except Rejected:
            rejected += 1
            continue
        accepted += 1
        wrong += not np.array_equal(arrays["x"], sent[header.req])
    raise AssertionError(f"messages did not all arrive: {relay.stats}, "
                         f"{accepted} accepted, {rejected} rejected")


THREATS = [BitFlips(target=LINK, ber=1e-3, seed=1), Noise(target=LINK, snr_db=30.0, seed=2),
           Erasure(target=LINK, mode="elements", rate=0.01, seed=3),
           Replay(target=LINK, rate=1.0, lag=1, seed=4)]


@pytest.mark.parametrize("algorithm", ["mac:hmac-sha256", "aead:aes-128-gcm",
                                       "aead:chacha20-poly1305"])
def test_every_tampered_message_is_detected_over_10000_trials_of_l1_to_l4(zmq_context,
                                                                            algorithm):
    tampered = detected = 0
    for threat in THREATS:
        witness, accepted, rejected, wrong = _run(zmq_context, algorithm, RelayAttacker([threat]),
                                                  2500)
        assert wrong == 0, f"{threat.id}: {wrong} altered tensors were accepted"
        assert rejected == witness.tampered, f"{threat.id}: {witness.tampered} tampered, " \
                                             f"{rejected} rejected"
        tampered += witness.tampered
        detected += rejected
    assert tampered >= 9000  # nearly every message was tampered with (first replays are not)
    assert detected == tampered


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_no_false_positive_over_10000_clean_messages(zmq_context, algorithm):
    messages = 10_000 if algorithm != "aead:ascon-128" else 300  # pure-Python Ascon is slow
    witness, accepted, rejected, wrong = _run(zmq_context, algorithm, None, messages)
    assert (accepted, rejected, wrong, witness.tampered) == (messages, 0, 0, 0)


def test_a_whole_message_replayed_by_the_relay_is_rejected(zmq_context):
    class Duplicate:
        def __call__(self, frames: list[bytes]) -> list[list[bytes]]:
            return [frames, frames]

    witness, accepted, rejected, wrong = _run(zmq_context, "aead:chacha20-poly1305",
                                              Duplicate(), 500)
    assert (accepted, rejected, wrong) == (500, 500, 0)


def test_an_unsealed_message_on_a_sealed_link_is_refused(zmq_context):
    sender, receiver = _ends("aead:aes-128-gcm")
    sender.configure({}, {})  # the sender leaves the link unsealed; its header is its own
    schema = {LINK: wire.Expected({"x": ("float32", SHAPE)}, 16, sealed=True)}
    frames = sender.encode(1, 1, LINK, ROUTE, [("x", np.zeros((1, *SHAPE), np.float32))])
    with pytest.raises(Rejected, match="malformed: .*sealed; message is not"):
        receiver.open(frames, schema)


def test_a_forged_header_without_frames_cannot_poison_the_replay_window():
    sender, receiver = _ends("aead:chacha20-poly1305")
    schema = {LINK: wire.Expected({"x": ("float32", SHAPE)}, 16, sealed=True)}
    x = np.ones((1, *SHAPE), np.float32)
    for seq in (10_000, 2**63 - 1):  # far ahead, and as far as a header can say
        frames = sender.encode(1, seq, LINK, ROUTE, [("x", x)])
        forged = [frames[0], frames[-1]]  # the header and its tag alone
        with pytest.raises(Rejected, match="tampered: 0 sealed frames for 1 tensor"):
            receiver.open(forged, schema)
    header, arrays = receiver.open(sender.encode(2, 2, LINK, ROUTE, [("x", x)]),
                                   schema)  # the real next message still opens
    assert header.req == 2 and np.array_equal(arrays["x"], x)


def test_a_sequence_number_far_ahead_resets_the_window_without_a_huge_bitmap():
    key = bytes(32)
    s, o = Sealer("mac:blake2b", key), Opener("mac:blake2b", key)
    assert o.open(b"h", 2**63 - 1, s.seal(b"h", 2**63 - 1, [b"x"])) == [b"x"]
    assert o.window.seen == 1
