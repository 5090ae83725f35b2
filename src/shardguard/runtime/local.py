"""The local executor: a compiled plan run in one process, batched and differentiable.

    ex = LocalExecutor(compiled)
    logits = ex(x)                       # (B, classes), equal to the whole model's output

Stages run in plan order; every transfer between stages passes through the
executor, so threats and defences (issues' interceptors) see exactly what a link
would carry, and a stage's outputs exactly what its device would send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..partition._segment import assemble_tensors
from ..partition.compile import INPUT, OUTPUT, CompiledPlan, StageProgram, Transfer
from ..partition.regions import full


class Interceptor(Protocol):
    """Sees and may change what stages send (``on_stage``) and what links carry (``on_link``)."""

    def on_stage(self, program: StageProgram, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        ...

    def on_link(self, transfer: Transfer, value: torch.Tensor) -> torch.Tensor:
        ...


class LocalExecutor:
    def __init__(self, compiled: CompiledPlan, interceptors: Sequence[Interceptor] = ()) -> None:
        self.compiled = compiled.build()
        self.interceptors = list(interceptors)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Run a batch ``x`` (B, C, H, W) through every stage; return the model's output."""
        graph = self.compiled.graph
        sent: dict[str, torch.Tensor] = {}
        for t in self.compiled.input_transfers:
            sent[t.id] = self._link(t, _cut(x, full(x.shape[1:]), t.region))
        results: list[tuple[torch.Tensor, tuple[tuple[int, int], ...]]] = []
        for program in self.compiled.programs:
            outputs = list(program.module(*[sent[t.id] for t in program.inputs]))
            for hook in self.interceptors:
                outputs = hook.on_stage(program, outputs)
            for t, value in zip(program.outputs, outputs):
                value = self._link(t, value)
                if t.dst == OUTPUT:
                    results.append((value, t.region))
                else:
                    sent[t.id] = value
        target = full(graph.output_shape[1:])
        return assemble_tensors(results, target)

    def _link(self, transfer: Transfer, value: torch.Tensor) -> torch.Tensor:
        if transfer.src == INPUT or transfer.dst == OUTPUT:
            return value
        for hook in self.interceptors:
            value = hook.on_link(transfer, value)
        return value


def _cut(x: torch.Tensor, have: tuple[tuple[int, int], ...],
         want: tuple[tuple[int, int], ...]) -> torch.Tensor:
    if have == want:
        return x
    return x[(slice(None), *[slice(a, b) for a, b in want])]


@dataclass
class CheckResult:
    """How a partitioned run compares with the whole model on the same inputs."""

    samples: int
    max_abs_diff: float
    output_range: float
    same_class: int

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.output_range if self.output_range > 0 else 0.0

    def ok(self, tolerance: float = 1e-5) -> bool:
        return self.relative <= tolerance and self.same_class == self.samples


@torch.no_grad()
def check(executor: LocalExecutor, whole: torch.nn.Module, x: torch.Tensor,
          batch_size: int = 500) -> CheckResult:
    """Run ``x`` through the partitioned plan and through ``whole``; compare."""
    diff, lo, hi, same = 0.0, float("inf"), float("-inf"), 0
    for chunk in x.split(batch_size):
        ref = whole(chunk)
        got = executor(chunk)
        diff = max(diff, float((got - ref).abs().max()))
        lo, hi = min(lo, float(ref.min())), max(hi, float(ref.max()))
        same += int((got.argmax(1) == ref.argmax(1)).sum())
    return CheckResult(len(x), diff, hi - lo, same)
