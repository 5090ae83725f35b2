"""L5: adversarial perturbation of the tensor on a link, white-box on the downstream stages.

The attacker on the link sees the tensor and knows the stages after it. FGSM
takes one step of size ε·range along the sign of the loss gradient; PGD takes
``steps`` steps of 2.5·ε·range/steps, projected back into the ε·range ball
(range: the clean tensor's max − min, so ε is relative). Untargeted attacks
raise the cross-entropy of the true class; targeted ones lower it for
``target_class``. Simulation only: it needs gradients, which a light worker
does not have (results say ``execution: local``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..hooks import Interceptor, Traffic
from ..local import LocalExecutor, Outcome
from ..partition.compile import CompiledPlan, StageProgram, Transfer
from .local import device_matches, link_matches
from .spec import Adversarial, Compromised


class _Perturb(Interceptor):
    """Adds a (learnable) perturbation to the tensors on a link, or to a device's outputs."""

    def __init__(self, link: str | None = None, device: str | None = None) -> None:
        self.link, self.device = link, device
        self.delta: dict[str, torch.Tensor] = {}
        self.clean: dict[str, torch.Tensor] = {}

    def _apply(self, key: str, value: torch.Tensor) -> torch.Tensor:
        self.clean[key] = value.detach()
        delta = self.delta.get(key)
        return value if delta is None else value + delta

    def on_stage(self, program: StageProgram, outputs: list[torch.Tensor],
                 traffic: Traffic) -> list[torch.Tensor]:
        if self.device is None or not device_matches(self.device, program):
            return outputs
        return [self._apply(t.id, v) for t, v in zip(program.outputs, outputs)]

    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor:
        if self.link is None or not link_matches(self.link, transfer):
            return value
        return self._apply(transfer.id, value)


@contextlib.contextmanager
def _frozen(compiled: CompiledPlan) -> Iterator[None]:
    """No gradients for the weights: only the perturbation is optimised."""
    params = [p for prog in compiled.build().programs if prog.module is not None
              for p in prog.module.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def adversarial_link(compiled: CompiledPlan, threat: Adversarial, x: torch.Tensor,
                     y: torch.Tensor) -> Outcome:
    """The outcome of ``x`` when the attacker perturbs the link ``threat.target``."""
    return _attack(compiled, _Perturb(link=threat.target), threat, x, y)


def adversarial_device(compiled: CompiledPlan, threat: Compromised, x: torch.Tensor,
                       y: torch.Tensor, epsilon: float = 0.05, steps: int = 10) -> Outcome:
    """D4 ``adversarial``: the device sends PGD-perturbed outputs (ε relative to range)."""
    attack = Adversarial(target=threat.target, seed=threat.seed, method="pgd",
                         epsilon=epsilon, steps=steps)
    return _attack(compiled, _Perturb(device=threat.target), attack, x, y)


def _attack(compiled: CompiledPlan, perturb: _Perturb, threat: Adversarial, x: torch.Tensor,
            y: torch.Tensor) -> Outcome:
    executor = LocalExecutor(compiled, [perturb])
    loss_fn = nn.CrossEntropyLoss()
    goal = None if threat.target_class is None else torch.full_like(y, threat.target_class)
    with _frozen(compiled):
        with torch.no_grad():
            executor.run(x)  # the clean tensors on the link: shapes and ranges
        if not perturb.clean:
            raise ValueError(f"nothing to perturb at {threat.target!r}")
        bound = {k: threat.epsilon * float(v.max() - v.min()) for k, v in perturb.clean.items()}
        steps = 1 if threat.method == "fgsm" else threat.steps
        step = {k: b if threat.method == "fgsm" else 2.5 * b / steps for k, b in bound.items()}
        perturb.delta = {k: torch.zeros_like(v, requires_grad=True)
                         for k, v in perturb.clean.items()}
        for _ in range(steps):
            logits = executor.run(x)
            loss = loss_fn(logits, y) if goal is None else -loss_fn(logits, goal)
            grads = torch.autograd.grad(loss, list(perturb.delta.values()))
            with torch.no_grad():
                for (k, d), g in zip(perturb.delta.items(), grads):
                    d += step[k] * g.sign()
                    d.clamp_(-bound[k], bound[k])
        with torch.no_grad():
            return executor.run_outcome(x)
