"""What comes back to the coordinator: results opened, voted, held to witnesses, assembled.

    collector = Collector(compiled, verifiers, vote, security, output_shape, fleet.alarm)
    collector.drain(sink, flight)     # every result waiting at the sink, into ``flight``
    collector.suspects()              # tampered results whose grace ran out: alarms

A result counts only if it opens (its link's protection, the request's batch),
came from the device its request was routed to (when a Freivalds verifier could
pose as its prover), and, for a voted last stage, once its copies agree. A request
is answered when every output piece is in; a checked last stage's pieces must then
match its prover's own copies (the witnesses), else nothing is answered and an
alarm is raised. Problems found here become alarms like the workers' own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from ..defences.ballots import Ballots, VoteFailed, copy_link, samples_agree
from ..defences.verifier import SUFFIX, Verifier
from ..partition.compile import OUTPUT, CompiledPlan
from ..partition.regions import crop, full
from ..protocol import wire
from ._routing import Flight, Request
from .linksec import Inbox, LinkSecurity
from .quantize import dequantize

WITNESS_TOLERANCE = 1e-4  # a verified output against its prover's (as votes compare copies)


class Collector:
    """Results at the coordinator's sink, into a stream's ``Flight``; see the module docstring."""

    def __init__(self, compiled: CompiledPlan, verifiers: dict[str, Verifier],
                 vote: dict[str, int], security: LinkSecurity, output_shape: tuple[int, ...],
                 alarm: Callable[[int, str, str, str], None]) -> None:
        self.ballots = Ballots(vote)  # M4: whoever receives a voted stage's outputs votes
        self.inbox = Inbox(security)  # the result port's checks
        self.output_shape, self.alarm = output_shape, alarm
        # Freivalds: a checked stage's prover sends its outputs here too (``checked_plan``),
        # to be compared with what its verifier forwards: witness id → verified id
        provers = {v.stage for v in verifiers.values()}
        self.witnesses = {t.id: f"{t.src}{SUFFIX}>{t.dst}:{t.tensor}"
                          for t in compiled.output_transfers if t.src in provers}
        self.output_transfers = [t for t in compiled.output_transfers
                                 if t.id not in self.witnesses]
        self.codecs = compiled.quantized.codecs if compiled.quantized else {}
        self.schema = {
            copy_link(link, j): wire.Expected(
                {t.id: ("int8" if t.id in self.codecs else "float32", t.shape) for t in group},
                1 << 16, security.sealed(link), {t.id: self.codecs[t.id] for t in group
                                                 if t.id in self.codecs})
            for (src, dst), group in compiled.links().items() if dst == OUTPUT
            for link in [f"{src}>{dst}"] for j in range(vote.get(src, 1))}

    def drain(self, sink: zmq.Socket[Any], flight: Flight) -> None:
        """Every message waiting at ``sink``: each opened and taken, or refused and counted."""
        while True:
            try:
                frames = sink.recv_multipart(copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            opened = self.inbox.open(frames, self.schema)
            if opened is None:
                continue  # refused and counted; a tampered one alarms after grace
            header, arrays = opened
            self._take(header, arrays, flight)

    def suspects(self) -> None:
        """Results tampered with on the way here (never resent): alarms, after their grace."""
        for suspect in self.inbox.due():
            h = suspect.header
            self.alarm(h.req, h.link, suspect.sender, suspect.detail)

    def _take(self, header: wire.Header, arrays: dict[str, np.ndarray], flight: Flight) -> None:
        """One opened result: a piece of its request's answer, if it is one."""
        r = flight.inflight.get(header.req)
        if r is None:
            if not self.ballots.voted(header.link):  # not a late copy
                flight.duplicates += 1
            return
        src = header.link.split(">", 1)[0]
        if self.witnesses and header.route.get(src) != r.route.get(src):
            return  # not from the device this request went through
        if self.ballots.voted(header.link):
            try:
                decided = self.ballots.cast(header.req, header.link, arrays)
            except VoteFailed as exc:
                self.alarm(header.req, header.link, "?", f"vote failed: {exc}")
                return
            if decided is None:
                return
            arrays = decided[1]
        if any(a.shape[0] != len(r.x) for a in arrays.values()):
            return  # not this request's answer
        r.pieces.update(arrays)
        if header.flags & wire.FLAG_DEGRADED:
            flight.degraded[r.index] = True
        if len(r.pieces) == len(self.output_transfers) + len(self.witnesses):
            self._complete(r, flight)

    def _complete(self, r: Request, flight: Flight) -> None:
        """Every piece of ``r`` is in: answer it, unless a verifier forwarded a forgery."""
        forged = self._unwitnessed(r.pieces)
        if forged:  # the verifier forwarded what the prover did not
            r.pieces.clear()
            self.alarm(r.req, forged, "?", "Freivalds: the verified outputs differ from the "
                       "prover's")
            return
        flight.answer(r, self._assemble(r.pieces))

    def _unwitnessed(self, pieces: dict[str, np.ndarray]) -> str | None:
        """The link of the first verified output its prover's own does not match, if any."""
        for witness, verified in self.witnesses.items():
            if not samples_agree(pieces[witness], pieces[verified], WITNESS_TOLERANCE).all():
                return verified.split(":", 1)[0]
        return None

    def _assemble(self, pieces: dict[str, np.ndarray]) -> np.ndarray:
        from ..partition._segment import assemble

        parts = [(dequantize(pieces[t.id], self.codecs[t.id]) if t.id in self.codecs
                  else pieces[t.id], t.region) for t in self.output_transfers]
        target = full(self.output_shape)
        return assemble(parts, target, lambda ps, dim: np.concatenate(ps, axis=dim), crop)
