"""The accuracy of an int8 candidate, ESTIMATED in the float executor until the int8
executor lands (issue 15, points 1-2: quantized ONNX stages run by onnxruntime).

    with int8_emulation(planned.compiled, calibration) as em:
        hooks = [em.quantize, *threats_with(em.zero_points), em.dequantize]
        LocalExecutor(planned.compiled, hooks).run_outcome(x)

What it emulates, per stage of precision int8:
- its weights, fake-quantized per output channel, symmetric, to int8 (codes −127..127,
  scale max|w| / 127), as post-training quantization stores them;
- its output link tensors, quantized per tensor, asymmetric, to int8 codes (scale and
  zero point from the min and max on ``calibration`` images, 0 included), so that they
  *travel as int8*: the threats and guards between ``quantize`` and ``dequantize`` see
  int8 codes, and the next stage receives (q − zero point) · scale.
What it does not: the activations inside a stage stay float32, and nothing rounds as an
int8 kernel's int32 accumulator and requantization do. So the accuracy of an int8
candidate here is an estimate of the quantized model's; the merge replaces
``int8_emulation`` with the real int8 stages where they exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..hooks import Interceptor, Traffic
from ..partition.compile import CompiledPlan, Transfer


def int8_stages(compiled: CompiledPlan) -> set[str]:
    return {st.name for st in compiled.plan.stages if st.precision == "int8"}


@dataclass
class Int8Emulation:
    """Per int8 link tensor (by ``Transfer.id``): its scale and zero point."""

    quant: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def zero_points(self) -> dict[str, int]:
        return {k: zp for k, (_, zp) in self.quant.items()}

    @property
    def quantize(self) -> Interceptor:
        return _Quantize(self.quant)

    @property
    def dequantize(self) -> Interceptor:
        return _Dequantize(self.quant)


class _Quantize(Interceptor):
    def __init__(self, quant: dict[str, tuple[float, int]]) -> None:
        self.quant = quant

    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor:
        if transfer.id not in self.quant or value.dtype != torch.float32:
            return value
        scale, zp = self.quant[transfer.id]
        codes = torch.round(torch.nan_to_num(value) / scale) + zp
        return codes.clamp(-128, 127).to(torch.int8)


class _Dequantize(_Quantize):
    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor:
        if transfer.id not in self.quant or value.dtype != torch.int8:
            return value
        scale, zp = self.quant[transfer.id]
        return (value.float() - zp) * scale


def link_quantization(low: float, high: float) -> tuple[float, int]:
    """Asymmetric int8 parameters covering [low, high] (0 included): scale, zero point."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 or 1.0
    return scale, int(round(-128 - low / scale))


@contextlib.contextmanager
def int8_emulation(compiled: CompiledPlan, calibration: torch.Tensor) -> Iterator[Int8Emulation]:
    """The int8 stages of ``compiled`` emulated (module docstring): their weights
    fake-quantized while the context lasts, and their link tensors' int8 parameters."""
    int8 = int8_stages(compiled)
    emulation = Int8Emulation()
    if not int8:
        yield emulation
        return
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    compiled.build()
    with torch.no_grad():
        for program in compiled.programs:
            if program.name not in int8 or program.module is None:
                continue
            for layer in program.module.modules():
                if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                    w = layer.weight
                    saved.append((w, w.detach().clone()))
                    dims = tuple(range(1, w.dim()))
                    scale = (w.abs().amax(dim=dims, keepdim=True) / 127).clamp_min(1e-12)
                    w.copy_(torch.round(w / scale).clamp(-127, 127) * scale)
        # calibrated on the fake-quantized weights, as a post-training quantizer does
        emulation.quant = _calibrate(compiled, int8, calibration)
    try:
        yield emulation
    finally:
        with torch.no_grad():
            for param, original in saved:
                param.copy_(original)


def _calibrate(compiled: CompiledPlan, int8: set[str], x: torch.Tensor
               ) -> dict[str, tuple[float, int]]:
    """Int8 parameters of every tensor an int8 stage sends, from its range on ``x``."""
    from ..local import LocalExecutor

    ranges: dict[str, tuple[float, float]] = {}

    class Look(Interceptor):
        def on_link(self, transfer: Transfer, value: torch.Tensor,
                    traffic: Traffic) -> torch.Tensor:
            if transfer.src in int8:
                low, high = ranges.get(transfer.id, (0.0, 0.0))
                ranges[transfer.id] = (min(low, float(value.min())),
                                       max(high, float(value.max())))
            return value

    executor = LocalExecutor(compiled, [Look()])
    for chunk in torch.split(x, 1000):
        executor.run(chunk)
    return {k: link_quantization(*r) for k, r in ranges.items()}
