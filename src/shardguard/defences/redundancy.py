"""Computation integrity by redundancy (M4): duplicate or triplicate a stage and vote.

    vote = Vote(copies=3)                                # stages with >= 2 replicas
    LocalExecutor(compiled, [ThreatInterceptor(Compromised(target="pi2")), vote])
    vote.report()      # {"checked": ..., "disagreed": ..., "masked": ..., "failed": ...}

Each covered stage runs on its device and its first ``copies - 1`` replicas (distinct
devices, from the plan). Per sample, copies agree when every output differs by at
most ``tolerance`` times the largest magnitude among them (float results of one
program on different CPUs differ in the last bits, so exact equality is an option,
``tolerance=0``, not the default).

* Triplication masks one compromised device: the sample takes the value two copies
  agree on. If no two agree, the sample fails (it is not answered) rather than pass
  a value nobody vouches for.
* Duplication detects: copies that disagree fail the sample, and it is counted.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..hooks import Redundant, Traffic
from ..partition.compile import StageProgram
from .ballots import samples_agree


class Vote(Redundant):
    """Runs stages on ``copies`` distinct devices and votes per sample; see the module doc."""

    def __init__(self, copies: int = 3, tolerance: float = 1e-4,
                 stages: list[str] | None = None) -> None:
        if copies not in (2, 3):
            raise ConfigError(f"vote copies must be 2 (detect) or 3 (mask), got {copies}")
        if tolerance < 0:
            raise ConfigError(f"vote tolerance must be >= 0, got {tolerance}")
        self.copies, self.tolerance, self.stages = copies, tolerance, stages
        self.checked = self.disagreed = self.masked = self.failed = 0
        self.flagged: list[torch.Tensor] = []  # per batch and stage: (B,) samples that disagreed

    def covers(self, program: StageProgram) -> bool:
        return self.stages is None or program.name in self.stages

    def devices(self, program: StageProgram) -> list[str]:
        devices = [program.device, *program.replicas]
        if len(devices) < self.copies:
            raise ConfigError(f"stage {program.name}: voting with {self.copies} copies needs "
                              f"{self.copies - 1} replica(s) on other devices, the plan has "
                              f"{len(program.replicas)} (plan with --replicas {self.copies})")
        return devices[:self.copies]

    def combine(self, program: StageProgram, args: list[torch.Tensor],
                copies: list[list[torch.Tensor] | None],
                traffic: Traffic) -> list[torch.Tensor] | None:
        present = [c for c in copies if c is not None]
        if not present:
            return None
        batch = present[0][0].shape[0]
        n = len(copies)
        agree = torch.zeros(n, n, batch, dtype=torch.bool)
        for i in range(n):
            for j in range(n):
                agree[i, j] = self._agree(copies[i], copies[j], batch)
        unanimous = agree.all(0).all(0)
        # per sample, the first copy that another copy agrees with (a majority of 2 of 3)
        backed = (agree.sum(1) >= 2) if n == 3 else agree.all(1)  # (n, B)
        has_majority = backed.any(0)
        choice = backed.float().argmax(0)  # first backed copy; 0 where none
        ok = has_majority if n == 3 else unanimous
        failed = ~ok
        self.checked += batch
        self.disagreed += int((~unanimous).sum())
        self.masked += int((~unanimous & ok).sum())
        self.failed += int(failed.sum())
        self.flagged.append(~unanimous)
        for t in program.outputs:
            if failed.any():
                traffic.drop(t, failed)
        reference = present[0]
        outputs = []
        for k, value in enumerate(reference):
            stacked = torch.stack([c[k] if c is not None else torch.zeros_like(value)
                                   for c in copies])  # (n, B, ...)
            outputs.append(stacked[choice, torch.arange(batch)])
        return outputs

    def _agree(self, a: list[torch.Tensor] | None, b: list[torch.Tensor] | None,
               batch: int) -> torch.Tensor:
        if a is None or b is None:
            return torch.zeros(batch, dtype=torch.bool)
        same = torch.ones(batch, dtype=torch.bool)
        for x, y in zip(a, b):
            same &= torch.from_numpy(samples_agree(x.detach().numpy(), y.detach().numpy(),
                                                   self.tolerance))
        return same

    def report(self) -> dict[str, int]:
        return {"checked": self.checked, "disagreed": self.disagreed, "masked": self.masked,
                "failed": self.failed}
