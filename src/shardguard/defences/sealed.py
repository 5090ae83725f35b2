"""Sealed links in the local executor: what a MAC or AEAD tag check does, per sample.

    sealed = SealedLinks(policy="retry")
    LocalExecutor(compiled, sealed.around([threat]))    # [sender, threat, receiver]

A tag over the header and the tensor fails for any change to the bytes (a forgery
passes with probability about 2**-128), so the receiver's check here is exact:
a sample's piece is tampered with when any of its bits differs from what was
sent. The real check is ``seal.py`` on workers (``runtime/linksec.py``); this is
its model, so campaigns can sweep it. ``drop`` loses a tampered sample. ``retry``
asks again as the coordinator does (``runtime/_routing.py``): each retransmission
crosses the same attacker (the interceptors ``around`` was given, with their own
random streams, so it is tampered with as often as the first message was), and
after ``attempts`` submissions in all (``protocol.MAX_ATTEMPTS``, the runtime's
default) a sample still tampered with is lost. Only the attacked link is crossed
again here, where the runtime resubmits the whole request: the two agree for an
attacker on one link. A compromised sender (D4) seals its wrong values itself: no
tag check can see that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError
from ..hooks import Interceptor, Traffic
from ..partition.compile import Transfer
from ..protocol.control import MAX_ATTEMPTS

POLICIES = ("retry", "drop")


class SealedLinks:
    """The two ends of every sealed link, around the interceptors that act on the path."""

    def __init__(self, policy: str = "retry", only: set[str] | None = None,
                 attempts: int = MAX_ATTEMPTS) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"sealed-link policy must be one of {POLICIES}, got {policy!r}")
        if attempts < 1:
            raise ConfigError(f"sealed-link attempts must be at least 1, got {attempts}")
        self.policy, self.attempts = policy, attempts
        self.only = only  # the sealed links ("src>dst"); None: every link
        self.sent: dict[str, torch.Tensor] = {}
        self.flagged: list[torch.Tensor] = []  # per message: (B,) samples whose piece changed
        self.path: list[Interceptor] = []  # what a (re)transmission crosses
        self.sender, self.receiver = _Sender(self), _Receiver(self)

    def around(self, path: Sequence[Interceptor]) -> list[Interceptor]:
        """The executor's interceptors: the sender, ``path`` (the threats on the link), the
        receiver, which sends retransmissions through ``path`` again."""
        self.path = list(path)
        return [self.sender, *self.path, self.receiver]

    def covers(self, transfer: Transfer) -> bool:
        return self.only is None or f"{transfer.src}>{transfer.dst}" in self.only

    def resend(self, transfer: Transfer, sent: torch.Tensor) -> torch.Tensor:
        """(B,) which samples of a retransmission of ``sent`` are tampered with or lost."""
        traffic = Traffic(len(sent), {})
        got: torch.Tensor | None = sent
        for hook in self.path:
            assert got is not None
            got = hook.on_link(transfer, got, traffic)
            if got is None:  # lost whole: times out, and is asked again
                return torch.ones(len(sent), dtype=torch.bool)
        assert got is not None
        lost = traffic.lost.get(transfer.id, torch.zeros(len(sent), dtype=torch.bool))
        return _changed(sent, got) | lost


def _bits(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().contiguous()
    return x.view(torch.int32) if x.dtype == torch.float32 else x


def _changed(sent: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    return (_bits(sent) != _bits(got)).flatten(1).any(1)


class _Sender(Interceptor):
    def __init__(self, links: SealedLinks) -> None:
        self.links = links

    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor | None:
        if self.links.covers(transfer):
            self.links.sent[transfer.id] = value.detach().clone()
        return value


class _Receiver(Interceptor):
    def __init__(self, links: SealedLinks) -> None:
        self.links = links

    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor | None:
        if not self.links.covers(transfer):
            return value
        sent = self.links.sent.pop(transfer.id)
        changed = _changed(sent, value)
        self.links.flagged.append(changed)
        if not changed.any():
            return value
        if self.links.policy == "drop":
            traffic.drop(transfer, changed)
            return value
        pending = changed.nonzero().flatten()  # asked again, while attempts are left
        for _ in range(self.links.attempts - 1):
            if not len(pending):
                break
            pending = pending[self.links.resend(transfer, sent[pending])]
        failed = torch.zeros_like(changed)
        failed[pending] = True
        if failed.any():
            traffic.drop(transfer, failed)  # every attempt was tampered with: the request fails
        mask = (changed & ~failed).view(-1, *[1] * (value.dim() - 1))
        return torch.where(mask, sent, value)  # an intact retransmission arrived
