"""The hooks threats and defences plug into, for both executors.

    LocalExecutor(compiled, [ThreatInterceptor(threat), RangeGuard(bounds)])   # local.py
    DataPlane(name, deployment, ..., hooks=[Clip(guards), Faults(behave, name)])  # a worker

``Interceptor`` sees what the local executor's stages send and its links carry
(torch tensors, batched, differentiable); ``Redundant`` is one that checks a stage
by what several devices send (voting, Freivalds). ``WorkerHook`` is its twin on a
worker (numpy arrays and wire frames): what arrives on a link, what a stage
computed, the frames that leave. This module depends on neither executor, and
loads torch only when a local hook marks samples lost, so it imports on a board
that runs workers without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    import numpy as np
    import torch

    from .partition.compile import StageProgram, Transfer


class Interceptor:
    """Sees, and may change, what stages send and what links carry (threats, defences).

    ``on_stage`` gets a stage's outputs (the tensors its device sends) and returns them,
    changed or not, or ``None`` when the device produced nothing (it crashed).
    ``on_link`` gets one transfer's tensor as it crosses the link and returns it,
    changed or not, or ``None`` when the message was lost. Either may also mark
    single samples lost with ``Traffic.drop``. Both pass values through unchanged
    unless a subclass overrides them.
    """

    def on_stage(self, program: StageProgram, outputs: list[torch.Tensor],
                 traffic: Traffic) -> list[torch.Tensor] | None:
        return outputs

    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor | None:
        return value


class Redundant(Interceptor):
    """Checks chosen stages by what several devices send (M4: voting, Freivalds checks).

    For a stage it ``covers``, the executor calls ``compute`` once (what a device
    sends: the outputs, and for a verified stage its claimed intermediates too), lets
    every other interceptor act as if each of ``devices(program)`` had sent it (so a
    compromised device spoils only its own copy), then calls ``combine`` with the
    copies (``None`` for a copy whose device produced nothing).
    """

    def covers(self, program: StageProgram) -> bool:
        return False

    def compute(self, program: StageProgram, args: list[torch.Tensor]) -> list[torch.Tensor]:
        """What each copy's device sends for the stage (by default, its outputs)."""
        assert program.module is not None
        return list(program.module(*args))

    def devices(self, program: StageProgram) -> list[str]:
        return [program.device]

    def combine(self, program: StageProgram, args: list[torch.Tensor],
                copies: list[list[torch.Tensor] | None],
                traffic: Traffic) -> list[torch.Tensor] | None:
        """The stage's outputs from the copies (and the stage's inputs ``args``)."""
        return next((c for c in copies if c is not None), None)


@dataclass
class Traffic:
    """Per-batch state that interceptors may read and mark: which samples are lost."""

    batch: int
    lost: dict[str, torch.Tensor]  # transfer id → (B,) bool: that sample's piece did not arrive
    notes: dict[object, torch.Tensor] = field(default_factory=dict)  # interceptors' own state

    def drop(self, transfer: Transfer, samples: torch.Tensor) -> None:
        """Mark ``samples`` (a (B,) bool mask) of ``transfer`` as lost."""
        import torch  # a hook that drops samples runs in the local executor, with torch

        none = torch.zeros(self.batch, dtype=torch.bool)
        self.lost[transfer.id] = self.lost.get(transfer.id, none) | samples


class WorkerHook:
    """Sees, and may change, what one worker receives, computes and sends (numpy level).

    ``on_receive`` gets a message's arrays from ``link`` once its header, tag and seal
    are checked, and returns them (changed or not); ``on_stage`` gets what ``stage``
    computed (``elapsed_s``: how long it took) before it is sent; ``on_send`` gets a
    message's frames as they leave, sealed; ``on_load`` the stored stage models, once
    after a deployment (or when the hook is added to a running one). ``counters``
    join the worker's ``stats`` reply. Every method passes values through unless a
    subclass overrides it.
    """

    def on_receive(self, link: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return arrays

    def on_stage(self, stage: str, outputs: list[np.ndarray],
                 elapsed_s: float) -> list[np.ndarray]:
        return outputs

    def on_send(self, frames: list[Any]) -> list[Any]:
        return frames

    def on_load(self, stored: Iterable[bytearray]) -> None:
        return None

    def counters(self) -> dict[str, int]:
        return {}
