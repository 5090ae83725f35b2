"""Sealed links in the local executor: what a MAC or AEAD tag check does, per sample.

    sealed = SealedLinks(policy="retry")
    LocalExecutor(compiled, [sealed.sender, threat, sealed.receiver])

A tag over the header and the tensor fails for any change to the bytes (a forgery
passes with probability about 2**-128), so the receiver's check here is exact:
a sample's piece is tampered with when any of its bits differs from what was
sent. The real check is ``seal.py`` on workers (``runtime/linksec.py``); this is
its model, so campaigns can sweep it. ``retry`` models asking again once, with
the retransmission arriving intact; ``drop`` loses the sample. A compromised
sender (D4) seals its wrong values itself: no tag check can see that.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..hooks import Interceptor, Traffic
from ..partition.compile import Transfer

POLICIES = ("retry", "drop")


class SealedLinks:
    """The two ends of every sealed link; put ``sender`` before and ``receiver`` after threats."""

    def __init__(self, policy: str = "retry", only: set[str] | None = None) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"sealed-link policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.only = only  # the sealed links ("src>dst"); None: every link
        self.sent: dict[str, torch.Tensor] = {}
        self.flagged: list[torch.Tensor] = []  # per message: (B,) samples whose piece changed
        self.sender, self.receiver = _Sender(self), _Receiver(self)

    def covers(self, transfer: Transfer) -> bool:
        return self.only is None or f"{transfer.src}>{transfer.dst}" in self.only


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
        bits_sent = sent.contiguous().view(torch.int32) if sent.dtype == torch.float32 else sent
        bits_got = value.detach().contiguous()
        bits_got = bits_got.view(torch.int32) if bits_got.dtype == torch.float32 else bits_got
        changed = (bits_sent != bits_got).flatten(1).any(1)
        self.links.flagged.append(changed)
        if not changed.any():
            return value
        if self.links.policy == "drop":
            traffic.drop(transfer, changed)
            return value
        mask = changed.view(-1, *[1] * (value.dim() - 1))
        return torch.where(mask, sent, value)  # asked again: the retransmission is intact
