"""Link security on the data plane: who may send, what is sealed, and why a message is refused.

    sec = LinkSecurity("pi2", {"s0>s1": "aead:chacha20-poly1305"})
    sec.configure(protection, publics)          # from the deploy message (X25519 keys)
    frames = sec.encode(req, seq, "s1>output", route, [("y", y)])
    header, arrays = sec.open(frames, schema)   # or raise Rejected(reason, link, ...)

Every data message ends with a *header tag*: keyed BLAKE2b-128 over its header,
under a key for (link, sender, receiver) from the X25519 keys the coordinator
distributes over the authenticated control plane (``defences/seal.py``). The sender
of link ``a>b`` is the device the header's route gives stage ``a`` (the coordinator
for ``input``), the receiver the one it gives ``b`` (the coordinator for ``output``).
So a data or result port accepts messages only from members of the plan, each
speaking for itself, on every hop, the coordinator's included; a protected link
(``mac:...``, ``aead:...``) also seals the tensor frames, with the header as
associated data.

Receiving checks, cheapest first, and a refusal names one of ``REASONS``:

* ``malformed`` / ``unknown-link``: not a message of the protocol, or not for here;
* ``unauthenticated``: the header tag fails: an outsider's message. Dropped and
  counted, never an alarm, so nobody outside the plan can move traffic;
* ``replayed``: the (link, sender) already delivered that sequence number;
* ``tampered``: an authentic header whose payload fails its seal: altered on the path.

A sequence number is accepted only once the whole message has verified, so a
forgery cannot take the genuine message's number (or its (request, stage) slot).
A tampered message is a *suspect* for a short grace: if the genuine message with
its number arrives meanwhile, the suspect was a copy someone made with another
payload, and nothing is raised; otherwise (``Inbox.due``) it was altered on the
path, and the receiver raises the alarm its policy acts on.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..defences.seal import HEADER_TAG_BYTES, LinkKeys, ReplayWindow, check_algorithm
from ..errors import ConfigError, IntegrityError, MalformedMessage
from ..protocol import wire
from ..protocol.control import COORDINATOR, INPUT, OUTPUT

REASONS = {
    "malformed": "not a message of the protocol (header, frames, shapes)",
    "unknown-link": "for a link this endpoint does not receive",
    "unauthenticated": "header tag does not verify: not from a member of the plan",
    "replayed": "a sequence number its link and sender already delivered",
    "tampered": "authentic header, payload fails its seal: altered on the path",
    "misrouted": "its route puts a stage on a device the plan does not",
    "batch-mismatch": "pieces of one request disagree on the batch size",
    "overloaded": "too many requests waiting for pieces",
    "stage-failed": "onnxruntime raised running the stage",
    "vote-failed": "copies of a voted stage disagree",
    "check-failed": "a Freivalds claim failed its check",
    "internal-error": "a bug in this endpoint (logged)",
}
GRACE_S = 0.2  # how long a tampered message waits for the genuine one before an alarm
MAX_SUSPECTS = 4096


class Rejected(Exception):
    """A data message refused, for one of ``REASONS``."""

    def __init__(self, reason: str, link: str | None, detail: str,
                 suspect: Suspect | None = None) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.link, self.detail, self.suspect = reason, link, detail, suspect


@dataclass(frozen=True)
class Suspect:
    """A tampered message with an authentic header, waiting out the grace."""

    link: str
    sender: str
    seq: int
    header: wire.Header
    detail: str
    since: float


def end(stage: str, route: Mapping[str, str]) -> str:
    """The device at one end of a link: the route's for a stage, the coordinator's for its hops."""
    if stage in (INPUT, OUTPUT):
        return COORDINATOR
    device = route.get(stage)
    if device is None:
        raise IntegrityError(f"route names no device for stage {stage!r}")
    return device


class LinkSecurity:
    """One endpoint's keys, the plan's protection per link (absent: ``none``), and the
    replay windows of what it received."""

    def __init__(self, name: str, protection: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.keys = LinkKeys(name)
        self.protection: dict[str, str] = {}
        self.windows: dict[tuple[str, str], ReplayWindow] = {}
        self.configure(protection or {}, {})

    @property
    def public(self) -> bytes:
        return self.keys.public

    def configure(self, protection: Mapping[str, str], publics: Mapping[str, bytes]) -> None:
        """Set each link's protection (checked: a worker without a cipher says so at
        deployment, not at the first message) and the peers' X25519 public keys."""
        for algorithm in set(protection.values()) - {"none"}:
            try:
                check_algorithm(str(algorithm))
            except ConfigError as exc:
                raise MalformedMessage(str(exc)) from exc
        self.protection = {str(k): str(v) for k, v in protection.items() if v != "none"}
        self.keys.add_peers({str(k): bytes(v) for k, v in publics.items()})

    def sealed(self, link: str) -> bool:
        return link in self.protection

    # -- sending --------------------------------------------------------------------------
    def encode(self, req: int, seq: int, link: str, route: Mapping[str, str],
               arrays: Sequence[tuple[str, Any]], flags: int = 0,
               receiver: str | None = None,
               codecs: Mapping[str, wire.Codec] | None = None) -> list[Any]:
        """A message's frames: header, tensor frames (sealed when the link is protected)
        and the header tag, for ``receiver`` (by default the device the route gives the
        link's destination; a voted stage's copies differ)."""
        algorithm = self.protection.get(link)
        receiver = receiver or end(link.split(">", 1)[1], route)
        sealed = wire.FLAG_SEALED if algorithm is not None else 0
        frames = wire.encode(req, seq, link, route, arrays, flags | sealed, codecs)
        header = cast(bytes, frames[0])  # wire.encode puts the msgpack header first, as bytes
        if algorithm is not None:
            frames[1:] = self.keys.sealer(link, algorithm, receiver).seal(header, seq, frames[1:])
        frames.append(self.keys.header_auth(link, self.name, receiver).tag(header))
        return frames

    # -- receiving ------------------------------------------------------------------------
    def open(self, frames: Sequence[Any], schema: Mapping[str, wire.Expected],
             max_bytes: int = wire.MAX_PAYLOAD_BYTES
             ) -> tuple[wire.Header, dict[str, np.ndarray]]:
        """Check a message against ``schema`` and the keys; its header and read-only
        tensors, or ``Rejected`` with the reason (see the module docstring)."""
        if len(frames) < 2:
            raise Rejected("malformed", None, f"{len(frames)} frame(s): no header tag")
        try:
            raw = wire.frame_view(frames[0])
            header = wire.parse_header(raw)
        except MalformedMessage as exc:
            raise Rejected("malformed", None, str(exc)) from None
        link = header.link
        expected = schema.get(link)
        if expected is None:
            raise Rejected("unknown-link", None, f"{link[:80]!r} is not received here")
        sender = self._authenticate(header, raw, frames[-1])
        window = self.windows.setdefault((link, sender), ReplayWindow())
        try:
            window.check(header.seq)
            wire.check(header, expected, max_bytes)
        except IntegrityError as exc:
            raise Rejected("replayed", link, str(exc)) from None
        except MalformedMessage as exc:
            raise Rejected("malformed", link, str(exc)) from None
        body = frames[1:-1]
        if expected.sealed:
            try:
                opener = self.keys.opener(link, self.protection[link], sender)
                body = opener.open(bytes(raw), header.seq, [wire.frame_view(f) for f in body],
                                   tensors=len(header.tensors))
            except (IntegrityError, MalformedMessage) as exc:
                suspect = Suspect(link, sender, header.seq, header, str(exc), time.monotonic())
                raise Rejected("tampered", link, str(exc), suspect) from None
        try:
            arrays = wire.tensors(header, body)
        except MalformedMessage as exc:
            raise Rejected("malformed", link, str(exc)) from None
        window.accept(header.seq)
        return header, arrays

    def _authenticate(self, header: wire.Header, raw: memoryview, tag: Any) -> str:
        """The sender, if the header tag is its own for this receiver; else ``Rejected``."""
        src = header.link.split(">", 1)[0]
        try:
            sender = end(src, header.route)
            auth = self.keys.header_auth(header.link, sender, self.name)
        except IntegrityError:  # the route names nobody this endpoint has a key with
            raise Rejected("unauthenticated", header.link, "sender is not a member") from None
        view = wire.frame_view(tag)
        if view.nbytes != HEADER_TAG_BYTES or not auth.verify(raw, view):
            raise Rejected("unauthenticated", header.link, f"header tag from {sender!r} fails")
        return sender

    def accepted(self, link: str, sender: str, seq: int) -> bool:
        window = self.windows.get((link, sender))
        return window is not None and window.accepted(seq)


class Inbox:
    """An endpoint's receiving side: ``LinkSecurity.open`` with bounded bookkeeping.

    Rejections are counted by reason (a fixed set) and, for links the deployment
    knows, by link; tampered messages wait out ``grace_s`` as suspects (at most
    ``MAX_SUSPECTS``, the oldest given up first).
    """

    def __init__(self, security: LinkSecurity, grace_s: float = GRACE_S) -> None:
        self.security, self.grace_s = security, grace_s
        self.rejected: Counter[str] = Counter()
        self.rejected_by_link: dict[str, Counter[str]] = {}
        self.suspects: OrderedDict[tuple[str, str, int], Suspect] = OrderedDict()

    def open(self, frames: Sequence[Any], schema: Mapping[str, wire.Expected]
             ) -> tuple[wire.Header, dict[str, np.ndarray]] | None:
        """The message's header and tensors, or None when it was refused (and counted)."""
        try:
            return self.security.open(frames, schema)
        except Rejected as r:
            self.count(r.reason, r.link, schema)
            if r.suspect is not None:
                s = r.suspect
                self.suspects[(s.link, s.sender, s.seq)] = s
                if len(self.suspects) > MAX_SUSPECTS:
                    self.suspects.popitem(last=False)
            return None

    def count(self, reason: str, link: str | None, known: Iterable[str] = ()) -> None:
        assert reason in REASONS, reason
        self.rejected[reason] += 1
        if link is not None and link in known:
            self.rejected_by_link.setdefault(link, Counter())[reason] += 1

    def due(self, now: float | None = None) -> list[Suspect]:
        """Suspects whose grace is over and whose genuine message never came: tampering."""
        now = time.monotonic() if now is None else now
        out = []
        while self.suspects:
            key, s = next(iter(self.suspects.items()))
            if now - s.since < self.grace_s:
                break
            del self.suspects[key]
            if not self.security.accepted(s.link, s.sender, s.seq):
                out.append(s)
        return out

    def reset(self) -> None:
        self.rejected.clear()
        self.rejected_by_link.clear()
        self.suspects.clear()
