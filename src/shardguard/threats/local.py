"""Threats as interceptors of the local executor: applied to whole batches, seeded.

    outcome = LocalExecutor(compiled, [interceptor(threat, compiled)]).run_outcome(x)

Device threats act on what a device's stages send (D1 crash: nothing; D4:
wrong outputs) or on its stored weights (D5, see ``weight_flips``); link threats
act on each tensor crossing a targeted link, as the on-path attacker would (L1
bit flips, L2 noise, L3 erasure, L4 replay). D2 and D3 change timing, not
values; L5 and L6 need gradients or training and live in ``attacks.py``.

A tensor out of an int8 stage travels as int8 codes q (value (q − zero point) · scale)
and stays int8: L1 flips its 8 bits, L2 adds noise at the SNR of q − zero point, L3 sets
erased elements to the zero point (the code of 0.0, so an erased element means what it
means in float32, where it is 0.0; the code 0 would mean −zero point · scale), L4 replays
codes, D4 acts on q − zero point; results saturate to [−128, 127]. Zero points come per
link tensor (``zero_points``, by ``Transfer.id``); without one, 0 (symmetric quantization).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from ..hooks import Interceptor, Traffic
from ..partition.compile import CompiledPlan, StageProgram, Transfer
from .bits import bit_positions, dtype_name, flip_at, flip_bits
from .faults import compromise, device_stream, saturate
from .spec import BitFlips, Compromised, Crash, Erasure, Noise, Replay, Threat, WeightFlips


def interceptor(threat: Threat, compiled: CompiledPlan) -> ThreatInterceptor:
    """``threat`` for ``compiled``'s executor, with its int8 link tensors' zero points
    (from the quantized stages' codecs; none for an fp32 plan)."""
    codecs = compiled.quantized.codecs if compiled.quantized else {}
    return ThreatInterceptor(threat, {tid: zero for tid, (_, zero) in codecs.items()})


def link_matches(target: str, transfer: Transfer) -> bool:
    """Whether ``transfer`` crosses the link ``target`` ("SRC>DST", or "every"): the
    coordinator's hops (``input>S``, ``S>output``) are links like any other."""
    return target == "every" or target == f"{transfer.src}>{transfer.dst}"


def device_matches(target: str, program: StageProgram) -> bool:
    return target in ("every", program.device)


class ThreatInterceptor(Interceptor):
    """One threat, seeded, applied to every batch the executor runs."""

    def __init__(self, threat: Threat, zero_points: Mapping[str, int] | None = None) -> None:
        self.threat = threat
        self.zero_points = dict(zero_points or {})  # int8 link tensors' zero points, by id
        self.rng = np.random.default_rng(threat.seed)
        self.generator = torch.Generator().manual_seed(threat.seed)
        self.history: dict[str, torch.Tensor] = {}  # replay: each link's last tensors
        self.streams: dict[str, np.random.Generator] = {}  # D4 random: each device's own

    # -- devices ----------------------------------------------------------------------------
    def on_stage(self, program: StageProgram, outputs: list[torch.Tensor],
                 traffic: Traffic) -> list[torch.Tensor] | None:
        t = self.threat
        if not device_matches(t.target, program):
            return outputs
        if isinstance(t, Crash):
            return None
        if isinstance(t, Compromised):
            ids = [s.id for s in program.outputs]
            return [self._compromise(t, program.device, o,
                                     self.zero_points.get(ids[i], 0) if i < len(ids) else 0)
                    for i, o in enumerate(outputs)]
        return outputs

    def _compromise(self, t: Compromised, device: str, x: torch.Tensor,
                    zero_point: int = 0) -> torch.Tensor:
        """D4, as a compromised worker does it (``faults.compromise``), from the device's
        own stream: a batch of B samples draws what B one-sample messages would."""
        if t.mode == "adversarial":
            raise ValueError("D4 adversarial needs gradients: use attacks.adversarial_device")
        rng = self.streams.setdefault(device, device_stream(t.seed, device))
        wrong = compromise(x.detach().cpu().numpy(), t.mode, t.factor, rng, zero_point)
        return torch.from_numpy(wrong).to(x.dtype)

    # -- links ------------------------------------------------------------------------------
    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor | None:
        t = self.threat
        if not link_matches(t.target, transfer):
            return value
        if isinstance(t, BitFlips):
            x = value.detach() if value.dtype == torch.int8 else value.detach().float()
            if t.elements is not None:  # chosen flips, the same in every sample
                per_sample = value[0].numel()
                index = torch.tensor([e for e in t.elements if e < per_sample])
                samples = torch.arange(len(value)).repeat_interleave(len(index))
                bits = torch.tensor(bit_positions(t.bits, dtype_name(x)))
                elements = (samples * per_sample + index.repeat(len(value)))
                return flip_at(x, elements.repeat_interleave(len(bits)),
                               bits.repeat(len(elements)))
            return flip_bits(x, t.ber, t.bits, self.rng)
        if isinstance(t, Noise):
            if value.dtype != torch.int8:
                return self._noise(t, value)
            zp = self.zero_points.get(transfer.id, 0)
            return torch.from_numpy(saturate((self._noise(t, value.float() - zp) + zp).numpy()))
        if isinstance(t, Erasure):
            return self._erase(t, transfer, value, traffic)
        if isinstance(t, Replay):
            return self._replay(t, transfer, value)
        return value

    def _noise(self, t: Noise, value: torch.Tensor) -> torch.Tensor:
        power = value.detach().pow(2).flatten(1).mean(1)  # per sample
        sigma = (power / 10 ** (t.snr_db / 10)).sqrt().view(-1, *[1] * (value.dim() - 1))
        return value + torch.randn(value.shape, generator=self.generator) * sigma

    def _erase(self, t: Erasure, transfer: Transfer, value: torch.Tensor,
               traffic: Traffic) -> torch.Tensor:
        if t.mode == "channels" and t.channels is not None:  # chosen channels, every message
            keep = torch.ones(value.shape[1], dtype=value.dtype)
            keep[[c for c in t.channels if c < value.shape[1]]] = 0
            return self._zeroed(transfer, value, keep.view(1, -1, *[1] * (value.dim() - 2)))
        if t.mode == "message":  # one draw per link and request: its message is lost whole
            key = (id(self), transfer.src, transfer.dst)
            if key not in traffic.notes:
                traffic.notes[key] = torch.rand(len(value), generator=self.generator) < t.rate
            traffic.drop(transfer, traffic.notes[key])
            return value
        shape = (value.shape if t.mode == "elements"
                 else (*value.shape[:2], *[1] * (value.dim() - 2)))  # whole channels
        keep = torch.rand(shape, generator=self.generator) >= t.rate
        return self._zeroed(transfer, value, keep)

    def _zeroed(self, transfer: Transfer, value: torch.Tensor,
                keep: torch.Tensor) -> torch.Tensor:
        """``value`` where ``keep`` (broadcast), erased elsewhere: 0.0, or an int8 tensor's
        zero point."""
        if value.dtype != torch.int8:
            return value * keep
        zp = torch.tensor(self.zero_points.get(transfer.id, 0), dtype=torch.int8)
        return torch.where(keep.bool(), value, zp)

    def _replay(self, t: Replay, transfer: Transfer, value: torch.Tensor) -> torch.Tensor:
        """Sample i gets the tensor that crossed this link ``lag`` requests earlier."""
        earlier = torch.cat([self.history.get(transfer.id, value[:0]), value.detach()])
        self.history[transfer.id] = earlier[-t.lag:]
        source = torch.arange(len(value)) + len(earlier) - len(value) - t.lag
        chosen = (torch.rand(len(value), generator=self.generator) < t.rate) & (source >= 0)
        out = value.clone()
        out[chosen] = earlier[source[chosen]]
        return out


@contextlib.contextmanager
def weight_flips(compiled: CompiledPlan, threat: WeightFlips) -> Iterator[int]:
    """D5: flip bits in the stored weights of the target device's stages, restore after.

    Yields the number of parameter tensors touched.
    """
    rng = np.random.default_rng(threat.seed)
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    compiled.build()
    with torch.no_grad():
        for program in compiled.programs:
            if not device_matches(threat.target, program) or program.module is None:
                continue
            for param in [*program.module.parameters(), *program.module.buffers()]:
                if param.dtype in (torch.float32, torch.int8):  # int8: quantized weights
                    saved.append((param, param.detach().clone()))
                    param.copy_(flip_bits(param.detach(), threat.ber, threat.bits, rng))
    try:
        yield len(saved)
    finally:
        with torch.no_grad():
            for param, original in saved:
                param.copy_(original)
