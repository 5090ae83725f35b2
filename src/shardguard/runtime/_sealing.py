"""Sealing on the data plane: which links are protected, and who is at each end.

Worker and coordinator share this. The sender of a message on link ``a>b`` is the
device its route gives for stage ``a`` (the coordinator for ``input``), the
receiver the one for ``b`` (the coordinator for ``output``); the route is in the
header, which is the associated data, so a message cannot claim another sender.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..defences.seal import LinkKeys, check_algorithm
from ..errors import IntegrityError
from . import wire

COORDINATOR = "coordinator"
INPUT, OUTPUT = "input", "output"


def _end(stage: str, route: Mapping[str, str]) -> str:
    if stage in (INPUT, OUTPUT):
        return COORDINATOR
    device = route.get(stage)
    if device is None:
        raise IntegrityError(f"route names no device for stage {stage!r}")
    return device


class Sealing:
    """One endpoint's link keys and the plan's protection per link (absent: ``none``)."""

    def __init__(self, name: str, protection: Mapping[str, str] | None = None) -> None:
        self.keys = LinkKeys(name)
        self.protection: dict[str, str] = {}
        self.configure(protection or {}, {})

    @property
    def public(self) -> bytes:
        return self.keys.public

    def configure(self, protection: Mapping[str, str], publics: Mapping[str, bytes]) -> None:
        """Set each link's protection (checked: a worker without a cipher says so at
        deployment, not at the first message) and the peers' X25519 public keys."""
        for algorithm in set(protection.values()) - {"none"}:
            check_algorithm(str(algorithm))
        self.protection = {str(k): str(v) for k, v in protection.items() if v != "none"}
        self.keys.add_peers({str(k): bytes(v) for k, v in publics.items()})

    def sealed(self, link: str) -> bool:
        return link in self.protection

    def encode(self, req: int, seq: int, link: str, route: Mapping[str, str],
               arrays: Sequence[tuple[str, Any]], flags: int = 0,
               receiver: str | None = None) -> list[Any]:
        """``wire.encode``, sealed when the link is protected (for ``receiver``: by default
        the device the route gives the link's destination; a voted stage's copies differ)."""
        algorithm = self.protection.get(link)
        if algorithm is None:
            return wire.encode(req, seq, link, route, arrays, flags)
        frames = wire.encode(req, seq, link, route, arrays, flags | wire.FLAG_SEALED)
        receiver = receiver or _end(link.split(">", 1)[1], route)
        header = bytes(frames[0])
        return [header, *self.keys.sealer(link, algorithm, receiver).seal(header, seq, frames[1:])]

    def unseal(self, header: wire.Header, raw_header: memoryview,
               frames: Sequence[Any]) -> Sequence[Any]:
        """Opens a message's frames (``wire.Unseal``); ``IntegrityError`` if tampered."""
        algorithm = self.protection.get(header.link)
        if algorithm is None:
            raise IntegrityError(f"link {header.link!r} has no key here")
        sender = _end(header.link.split(">", 1)[0], header.route)
        views = [wire.frame_view(f) for f in frames]
        return self.keys.opener(header.link, algorithm, sender).open(
            bytes(raw_header), header.seq, views, tensors=len(header.tensors))
