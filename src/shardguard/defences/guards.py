"""Range guards (M5), as in Ranger: clip activations to bounds seen on clean data.

    bounds = profile_bounds(compiled, train_x)                # link tensors, per channel
    acts = profile_activations(compiled, train_x)             # every ReLU-family activation
    guard = RangeGuard(bounds, acts)                          # placement "both"
    LocalExecutor(compiled, [threat, guard])                  # the guard acts after the attacker

Ranger (Chen et al., "A Low-cost Fault Corrector for Deep Neural Networks through
Range Restriction", DSN 2021) bounds the output of every activation layer by the
range profiled on clean inputs, so that a fault anywhere in a layer (a flipped
weight bit, D5, included) cannot push values far outside what training saw.
Here a guard can sit on the links between stages (``bounds``), on every
ReLU-family activation inside the stages (``activations``: ReLU, ReLU6,
LeakyReLU, Hardtanh, ELU, GELU, SiLU, Hardswish, as modules or functions), or both.
Bounds are per channel (dim 1). Values outside them, or not finite, are clipped
(NaN to 0 first) and counted; a sample with any such value is flagged. An int8 link
tensor (out of an int8 stage) is clipped in the quantized domain: its float bounds mapped
to codes through its scale and zero point (``quant``, by link tensor id;
``clipping.quantized_bounds``).

Cost (``GUARD_OPS_PER_ELEMENT``): a guarded element costs a comparison and a clamp,
counted as 2 operations, each priced as one MAC at the device's MAC rate. This is
an assumption, not a measured figure: on a NEON core a max/min issues at about the
rate of a fused multiply-add, and the clamp's result gives the out-of-range test.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from ..hooks import Interceptor, Redundant, Traffic
from ..local import LocalExecutor
from ..partition.compile import INPUT, OUTPUT, CompiledPlan, StageProgram, Transfer
from .clipping import quantized_bounds

Bounds = dict[str, tuple[torch.Tensor, torch.Tensor]]  # tensor id → (low, high) per channel
ActivationBounds = dict[str, Bounds]  # stage → activation node → (low, high) per channel
PLACEMENTS = ("links", "activations", "both")
GUARD_OPS_PER_ELEMENT = 2  # a comparison and a clamp (see the module docstring)

_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.ELU, nn.GELU, nn.SiLU,
            nn.Hardswish)
_FUNCTIONS = {torch.relu, torch.relu_, F.relu, F.relu6, F.leaky_relu, F.hardtanh, F.elu,
              F.gelu, F.silu, F.hardswish}
_METHODS = {"relu", "relu_"}


def activation_nodes(module: fx.GraphModule) -> list[str]:
    """Names of the ReLU-family activation nodes of a stage's graph."""
    modules = dict(module.named_modules())
    return [n.name for n in module.graph.nodes
            if (n.op == "call_module" and isinstance(modules.get(str(n.target)), _MODULES))
            or (n.op == "call_function" and n.target in _FUNCTIONS)
            or (n.op == "call_method" and n.target in _METHODS)]


def _extend(seen: Bounds, key: str, value: torch.Tensor) -> None:
    """Widen ``seen[key]`` to cover ``value``'s per-channel minimum and maximum."""
    dims = [d for d in range(value.dim()) if d != 1]  # keep channels (dim 1)
    low, high = value.amin(dim=dims), value.amax(dim=dims)
    if key in seen:
        low, high = torch.minimum(low, seen[key][0]), torch.maximum(high, seen[key][1])
    seen[key] = (low, high)


def _clip(value: torch.Tensor, low: torch.Tensor, high: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``value`` clipped to per-channel bounds, and (B, ...) which elements were out."""
    shape = (1, -1, *[1] * (value.dim() - 2))
    low, high = low.view(shape), high.view(shape)
    if not value.is_floating_point():  # int8 codes: always finite
        bad = (value < low) | (value > high)
        return torch.minimum(torch.maximum(value, low), high), bad
    bad = ~torch.isfinite(value) | (value < low) | (value > high)
    return torch.minimum(torch.maximum(torch.nan_to_num(value, nan=0.0), low), high), bad


class _Run(fx.Interpreter):
    """Runs a stage, recording (``bounds is None``) or clipping each guarded activation."""

    def __init__(self, module: fx.GraphModule, nodes: set[str], bounds: Bounds | None) -> None:
        super().__init__(module)
        self.nodes, self.bounds = nodes, bounds
        self.seen: Bounds = {}
        self.bad: torch.Tensor | None = None  # (B,) samples with a clipped value
        self.clipped = self.elements = 0  # values clipped; values guarded per sample

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n.name not in self.nodes or not isinstance(value, torch.Tensor) or value.dim() < 2:
            return value
        self.elements += value[0].numel()
        if self.bounds is None:
            _extend(self.seen, n.name, value.detach())
            return value
        if n.name not in self.bounds:
            return value
        value, bad = _clip(value, *self.bounds[n.name])
        self.clipped += int(bad.sum())
        flagged = bad.flatten(1).any(1)
        self.bad = flagged if self.bad is None else self.bad | flagged
        return value


class _Recorder(Interceptor):
    def __init__(self, codecs: dict[str, tuple[float, int]] | None = None) -> None:
        self.seen: Bounds = {}
        self.codecs = codecs or {}  # int8 link tensors: their float values are recorded

    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor:
        if transfer.src == INPUT or transfer.dst == OUTPUT:
            return value  # guards bound activations between stages, not inputs or logits
        if value.dtype == torch.int8:  # the float values its codes stand for
            scale, zero = self.codecs[transfer.id]
            _extend(self.seen, transfer.id, (value.float() - zero) * scale)
        else:
            _extend(self.seen, transfer.id, value)
        return value


@torch.no_grad()
def profile_bounds(compiled: CompiledPlan, x: torch.Tensor) -> Bounds:
    """Per-channel min and max of every link tensor over clean inputs ``x`` (in float, for
    an int8 link tensor too: ``RangeGuard`` maps them to codes)."""
    recorder = _Recorder(compiled.quantized.codecs if compiled.quantized else None)
    executor = LocalExecutor(compiled, [recorder])
    for chunk in torch.split(x, 1000):
        executor.run(chunk)
    return recorder.seen


@torch.no_grad()
def profile_activations(compiled: CompiledPlan, x: torch.Tensor) -> ActivationBounds:
    """Per stage, the per-channel min and max of every ReLU-family activation over ``x``;
    none inside an int8 stage of a quantized plan (its activations live in onnxruntime)."""
    compiled.build()
    seen: ActivationBounds = {p.name: {} for p in compiled.programs}

    class Inside(Redundant):
        def covers(self, program: StageProgram) -> bool:
            return compiled.quantized is None or program.precision != "int8"

        def compute(self, program: StageProgram, args: list[torch.Tensor]) -> list[torch.Tensor]:
            assert program.module is not None
            run = _Run(program.module, set(activation_nodes(program.module)), None)
            run.seen = seen[program.name]
            return list(run.run(*args))

    executor = LocalExecutor(compiled, [Inside()])
    for chunk in torch.split(x, 1000):
        executor.run(chunk)
    return seen


def guarded_elements(compiled: CompiledPlan, placement: str) -> dict[str, int]:
    """Per stage, the values one sample's guards check: the activations inside it
    (``activations``, ``both``) and the link tensors it receives (``links``, ``both``)."""
    compiled.build()
    out: dict[str, int] = {}
    for p in compiled.programs:
        assert p.module is not None
        count = 0
        if placement in ("links", "both"):
            count += sum(t.nbytes // t.itemsize for t in p.inputs if t.src != INPUT)
        if placement in ("activations", "both"):
            nodes = set(activation_nodes(p.module))
            count += sum(compiled.graph.by_name[n].out_bytes // 4 for n in nodes
                         if n in compiled.graph.by_name)
        out[p.name] = count
    return out


class RangeGuard(Redundant):
    """Clips link tensors (``bounds``) and, when given ``activations``, every guarded
    activation inside the stages to its clean bounds; counts and flags what it clipped."""

    def __init__(self, bounds: Bounds | None, activations: ActivationBounds | None = None,
                 quant: dict[str, tuple[float, int]] | None = None) -> None:
        self.bounds = bounds or {}
        self.quant = quant or {}  # int8 link tensor id → (scale, zero point)
        self.activations = activations or {}
        self.clipped = 0
        self.flagged: list[torch.Tensor] = []  # per batch and place: (B,) samples clipped

    def covers(self, program: StageProgram) -> bool:
        return bool(self.activations.get(program.name))

    def compute(self, program: StageProgram, args: list[torch.Tensor]) -> list[torch.Tensor]:
        """The stage's outputs as its device computes them, each activation clipped."""
        assert program.module is not None
        bounds = self.activations[program.name]
        run = _Run(program.module, set(bounds), bounds)
        outputs = list(run.run(*args))
        self.clipped += run.clipped
        if run.bad is not None:
            self.flagged.append(run.bad)
        return outputs

    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor:
        if transfer.id not in self.bounds:
            return value
        low, high = self.bounds[transfer.id]
        if value.dtype == torch.int8:  # in the quantized domain
            if transfer.id not in self.quant:
                raise ValueError(f"int8 link tensor {transfer.id}: no scale and zero point "
                                 "to map its float bounds to codes")
            low, high = (torch.from_numpy(b) for b in quantized_bounds(
                low.numpy(), high.numpy(), *self.quant[transfer.id]))
        value, bad = _clip(value, low, high)
        self.clipped += int(bad.sum())
        self.flagged.append(bad.flatten(1).any(1))
        return value


def profile_guards(compiled: CompiledPlan, x: torch.Tensor) -> tuple[Bounds, ActivationBounds]:
    """Both kinds of bounds over clean inputs ``x``: what ``Defence.hooks`` takes."""
    return profile_bounds(compiled, x), profile_activations(compiled, x)
