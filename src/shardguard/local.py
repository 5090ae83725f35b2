"""The local executor: a compiled plan run in one process, batched and differentiable.

    ex = LocalExecutor(compiled)
    logits = ex(x)                       # (B, classes), equal to the whole model's output

Stages run in plan order; every transfer between stages passes through the
executor, so threats and defences (``hooks.py``' interceptors) see exactly what a link
would carry, and a stage's outputs exactly what its device would send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from .errors import ConfigError
from .hooks import Interceptor, Redundant, Traffic
from .partition._segment import assemble_tensors
from .partition.compile import OUTPUT, CompiledPlan, StageProgram, Transfer
from .partition.regions import crop, full


def _on_stage(hooks: Sequence[Interceptor], program: StageProgram,
              outputs: list[torch.Tensor] | None, traffic: Traffic) -> list[torch.Tensor] | None:
    for hook in hooks:
        if outputs is None:
            break
        outputs = hook.on_stage(program, outputs, traffic)
    return outputs


def _quantize(x: torch.Tensor, codec: tuple[float, int]) -> torch.Tensor:
    """``x`` as int8 with ``codec`` (scale, zero point), rounding half to even as onnxruntime."""
    scale, zero = codec
    q = torch.round(x.float() / torch.tensor(scale, dtype=torch.float32)) + zero
    return torch.clamp(q, -128, 127).to(torch.int8)


def _zeros(batch: int, t: Transfer, codecs: Mapping[str, object],
           dtype: torch.dtype) -> torch.Tensor:
    """A lost transfer's stand-in: zeros (int8 on an int8 link)."""
    return torch.zeros(batch, *t.shape, dtype=torch.int8 if t.id in codecs else dtype)


def _dequantize(x: torch.Tensor, codec: tuple[float, int]) -> torch.Tensor:
    scale, zero = codec
    return (x.to(torch.int32) - zero).float() * scale


@dataclass
class Outcome:
    """A batch's result: outputs, which samples were answered, which degraded."""

    output: torch.Tensor  # (B, ...) — rows of unanswered samples are NaN
    answered: torch.Tensor  # (B,) bool
    degraded: torch.Tensor  # (B,) bool — answered with a piece of a split tensor missing


class LocalExecutor:
    def __init__(self, compiled: CompiledPlan, interceptors: Sequence[Interceptor] = ()) -> None:
        self.compiled = compiled.build()
        int8 = [p.name for p in compiled.programs if p.precision == "int8"]
        if int8 and compiled.quantized is None:
            raise ConfigError(f"stage {int8[0]} is int8: quantize the plan first "
                              "(runtime.quantize.quantize_plan, on calibration images)")
        self.interceptors = list(interceptors)
        # how many pieces each stage receives per tensor: a lost piece of a split tensor is
        # filled with zeros (degraded); a lost whole tensor means the stage cannot run
        self.pieces: dict[tuple[str, str], int] = {}
        for p in self.compiled.programs:
            for t in p.inputs:
                self.pieces[(p.name, t.tensor)] = self.pieces.get((p.name, t.tensor), 0) + 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Run a batch ``x`` (B, C, H, W) through every stage; return the model's output."""
        return self.run_outcome(x).output

    def run_outcome(self, x: torch.Tensor) -> Outcome:
        """Run a batch, with interceptors, tracking lost and degraded samples."""
        batch = len(x)
        none = torch.zeros(batch, dtype=torch.bool)
        traffic = Traffic(batch, {})
        sent: dict[str, torch.Tensor] = {}
        missing: dict[str, torch.Tensor] = {}  # transfer id → (B,) samples without it
        degraded = none.clone()
        codecs = self.compiled.quantized.codecs if self.compiled.quantized else {}
        for t in self.compiled.input_transfers:  # the coordinator's hops are links too
            piece = crop(x, full(x.shape[1:]), t.region)  # quantized for an int8 stage
            piece = _quantize(piece, codecs[t.id]) if t.id in codecs else piece
            delivered = self._link(t, piece, traffic)
            if delivered is not None:
                sent[t.id] = delivered
            missing[t.id] = traffic.lost.pop(t.id, none) | (~none if delivered is None else none)
        results: list[tuple[torch.Tensor, tuple[tuple[int, int], ...]]] = []
        failed = none.clone()
        for program in self.compiled.programs:
            args, absent = [], none.clone()
            for t in program.inputs:
                gone = missing.get(t.id, none)
                value = sent.get(t.id)
                if value is None:
                    gone = ~none
                    value = _zeros(batch, t, codecs, x.dtype)
                if gone.any():
                    if self.pieces[(program.name, t.tensor)] > 1:  # fill the hole, go on
                        value = torch.where(gone.view(-1, *[1] * len(t.shape)),
                                            torch.zeros_like(value), value)
                        degraded |= gone
                    else:
                        absent |= gone
                args.append(value)
            outputs: list[torch.Tensor] | None = self._stage(program, args, traffic)
            if outputs is None:  # the device produced nothing
                outputs = [_zeros(batch, t, codecs, x.dtype) for t in program.outputs]
                absent = ~none
            for t, value in zip(program.outputs, outputs):
                delivered = self._link(t, value, traffic)
                lost = absent | traffic.lost.pop(t.id, none)
                if delivered is None:
                    delivered, lost = torch.zeros_like(value), ~none
                if t.dst == OUTPUT:  # from an int8 stage: the coordinator dequantizes
                    results.append((_dequantize(delivered, codecs[t.id]) if t.id in codecs
                                    else delivered, t.region))
                    failed |= lost
                else:
                    sent[t.id] = delivered
                    missing[t.id] = lost
        target = full(self.compiled.graph.output_shape[1:])
        output = assemble_tensors(results, target)
        if failed.any():
            output = torch.where(failed.view(-1, *[1] * (output.dim() - 1)),
                                 torch.full_like(output, float("nan")), output)
        return Outcome(output, ~failed, degraded & ~failed)

    def _stage(self, program: StageProgram, args: list[torch.Tensor],
               traffic: Traffic) -> list[torch.Tensor] | None:
        """What the stage's device sends: its outputs, after every interceptor."""
        redundant = next((h for h in self.interceptors
                          if isinstance(h, Redundant) and h.covers(program)), None)
        assert program.module is not None  # __init__ built every stage
        quantized = self.compiled.quantized
        run = (quantized.runners[program.name] if quantized is not None
               else lambda a: list(program.module(*a)))
        if redundant is None:
            return _on_stage(self.interceptors, program, list(run(args)), traffic)
        if quantized is not None and type(redundant).compute is Redundant.compute:
            computed = list(run(args))  # copies of what the stage sends (voting)
        elif quantized is None or program.precision != "int8":
            computed = redundant.compute(program, args)
        else:  # it recomputes inside the float module (Freivalds, activation guards)
            raise ConfigError(f"{type(redundant).__name__} checks inside a stage are not "
                              f"available on a quantized plan (stage {program.name})")
        others = [h for h in self.interceptors if h is not redundant]
        copies = [_on_stage(others, replace(program, device=device, replicas=[]),
                            list(computed), traffic)
                  for device in redundant.devices(program)]
        return redundant.combine(program, args, copies, traffic)

    def _link(self, transfer: Transfer, value: torch.Tensor,
              traffic: Traffic) -> torch.Tensor | None:
        """What arrives of ``transfer``: every link, the coordinator's hops too."""
        for hook in self.interceptors:
            result = hook.on_link(transfer, value, traffic)
            if result is None:
                return None
            value = result
        return value


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
def check(executor: LocalExecutor, whole: Callable[[torch.Tensor], torch.Tensor],
          x: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 500) -> CheckResult:
    """Run ``x`` (one tensor, or batches as a dataset streams them) through the
    partitioned plan and through ``whole`` (the whole model, or any reference such as
    onnxruntime running the original file); compare."""
    diff, lo, hi, same, samples = 0.0, float("inf"), float("-inf"), 0, 0
    for chunk in (torch.split(x, batch_size) if isinstance(x, torch.Tensor) else x):
        samples += len(chunk)
        ref = whole(chunk)
        got = executor(chunk)
        gap = (got - ref).abs().max()
        diff = max(diff, float("inf") if torch.isnan(gap) else float(gap))  # NaN: a failure
        lo, hi = min(lo, float(ref.min())), max(hi, float(ref.max()))
        same += int((got.argmax(1) == ref.argmax(1)).sum())
    return CheckResult(samples, diff, hi - lo, same)
