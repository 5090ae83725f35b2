"""Threats as interceptors of the local executor: applied to whole batches, seeded.

    outcome = LocalExecutor(compiled, [interceptor(threat, compiled)]).run_outcome(x)

Device threats act on what a device's stages send (D1 crash: nothing; D4:
wrong outputs) or on its stored weights (D5, see ``weight_flips``); link threats
act on each tensor crossing a targeted link, as the on-path attacker would (L1
bit flips, L2 noise, L3 erasure, L4 replay). D2 and D3 change timing, not
values; L5 and L6 need gradients or training and live in ``attacks.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ..hooks import Interceptor, Traffic
from ..partition.compile import CompiledPlan, StageProgram, Transfer
from .bits import bit_positions, flip_at, flip_bits
from .faults import compromise, device_stream
from .spec import BitFlips, Compromised, Crash, Erasure, Noise, Replay, Threat, WeightFlips


def link_matches(target: str, transfer: Transfer) -> bool:
    """Whether ``transfer`` crosses the link ``target`` ("SRC>DST", or "every"): the
    coordinator's hops (``input>S``, ``S>output``) are links like any other."""
    return target == "every" or target == f"{transfer.src}>{transfer.dst}"


def device_matches(target: str, program: StageProgram) -> bool:
    return target in ("every", program.device)


class ThreatInterceptor(Interceptor):
    """One threat, seeded, applied to every batch the executor runs."""

    def __init__(self, threat: Threat) -> None:
        self.threat = threat
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
            return [self._compromise(t, program.device, o) for o in outputs]
        return outputs

    def _compromise(self, t: Compromised, device: str, x: torch.Tensor) -> torch.Tensor:
        """D4, as a compromised worker does it (``faults.compromise``), from the device's
        own stream: a batch of B samples draws what B one-sample messages would."""
        if t.mode == "adversarial":
            raise ValueError("D4 adversarial needs gradients: use attacks.adversarial_device")
        rng = self.streams.setdefault(device, device_stream(t.seed, device))
        wrong = compromise(x.detach().cpu().numpy(), t.mode, t.factor, rng)
        return torch.from_numpy(wrong).to(x.dtype)

    # -- links ------------------------------------------------------------------------------
    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor | None:
        t = self.threat
        if not link_matches(t.target, transfer):
            return value
        if isinstance(t, BitFlips):
            if t.elements is not None:  # chosen flips, the same in every sample
                per_sample = value[0].numel()
                index = torch.tensor([e for e in t.elements if e < per_sample])
                samples = torch.arange(len(value)).repeat_interleave(len(index))
                bits = torch.tensor(bit_positions(t.bits))
                elements = (samples * per_sample + index.repeat(len(value)))
                return flip_at(value.detach().float(), elements.repeat_interleave(len(bits)),
                               bits.repeat(len(elements)))
            return flip_bits(value.detach().float(), t.ber, t.bits, self.rng)
        if isinstance(t, Noise):
            power = value.detach().pow(2).flatten(1).mean(1)  # per sample
            sigma = (power / 10 ** (t.snr_db / 10)).sqrt().view(-1, *[1] * (value.dim() - 1))
            return value + torch.randn(value.shape, generator=self.generator) * sigma
        if isinstance(t, Erasure):
            return self._erase(t, transfer, value, traffic)
        if isinstance(t, Replay):
            return self._replay(t, transfer, value)
        return value

    def _erase(self, t: Erasure, transfer: Transfer, value: torch.Tensor,
               traffic: Traffic) -> torch.Tensor:
        if t.mode == "channels" and t.channels is not None:  # chosen channels, every message
            keep = torch.ones(value.shape[1], dtype=value.dtype)
            keep[[c for c in t.channels if c < value.shape[1]]] = 0
            return value * keep.view(1, -1, *[1] * (value.dim() - 2))
        if t.mode == "message":  # one draw per link and request: its message is lost whole
            key = (id(self), transfer.src, transfer.dst)
            if key not in traffic.notes:
                traffic.notes[key] = torch.rand(len(value), generator=self.generator) < t.rate
            traffic.drop(transfer, traffic.notes[key])
            return value
        shape = (value.shape if t.mode == "elements"
                 else (*value.shape[:2], *[1] * (value.dim() - 2)))  # whole channels
        keep = torch.rand(shape, generator=self.generator) >= t.rate
        return value * keep

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
                if param.dtype == torch.float32:
                    saved.append((param, param.detach().clone()))
                    param.copy_(flip_bits(param.detach(), threat.ber, threat.bits, rng))
    try:
        yield len(saved)
    finally:
        with torch.no_grad():
            for param, original in saved:
                param.copy_(original)
