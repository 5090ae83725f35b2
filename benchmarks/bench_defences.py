"""Defence costs per device per inference: crypto for every protection, and every defence
of the catalogue (seal, vote, Freivalds, guards, digest), on every built-in platform.

Cost-model figures (``partition/cost.py``) from each device's sourced cycles per
byte (``platform/profiles.yaml``): nothing here is timed, so no target; the rows
are recorded so a change in the model or the figures shows up in review.
"""

from __future__ import annotations

from typing import Any

from shardguard import load_model, load_platform, make_plan, trace
from shardguard.defences.seal import ALGORITHMS
from shardguard.errors import ConfigError
from shardguard.partition import compile_plan
from shardguard.partition.cost import estimate
from shardguard.partition.plan import ModelRef
from shardguard.platform import builtin_platforms

MODEL = "resnet-small"


def crypto_energy_per_device() -> list[dict[str, Any]]:
    """µJ per inference each device spends sealing and opening, per protection and platform."""
    graph = trace(load_model(MODEL).module, (1, 28, 28))
    rows = []
    for name in sorted(builtin_platforms()):
        target = load_platform(name)
        planned = make_plan(graph, ModelRef(ref=MODEL, input_shape=[1, 28, 28]), target,
                            strategy="spatial", objective="throughput")
        for protection in ALGORITHMS:
            try:
                cost = estimate(compile_plan(planned.plan.with_protection(protection), graph,
                                             build=False), target)
            except ConfigError as exc:  # a device with no sourced figure for this cipher
                rows.append({"name": f"crypto_energy[{name}, {protection}]",
                             "note": f"not estimated: {exc}"})
                continue
            per_device = {d: c.crypto_j * 1e6 for d, c in cost.devices.items()}
            share = max(c.crypto_j / max(c.compute_j + c.crypto_j + c.radio_j, 1e-30)
                        for c in cost.devices.values())
            rows.append({
                "name": f"crypto_energy[{name}, {protection}]",
                "value": max(per_device.values()), "unit": "µJ/inference (busiest device)",
                "note": f"{MODEL} spatial; largest share of a device's active energy "
                        f"{share:.1%}; " + ", ".join(f"{d} {v:.1f}"
                                                    for d, v in per_device.items())})
    return rows


DEFENCES = ["seal:aead:chacha20-poly1305", "seal:aead:aes-128-gcm", "vote:2", "vote:3",
            "freivalds", "guard", "digest"]


def defence_energy_per_device() -> list[dict[str, Any]]:
    """µJ per inference each defence adds on each device (the campaign's figure), on a
    pipeline plan with 3 devices per stage where the platform has them (for votes)."""
    import torch

    from shardguard.data import load_split
    from shardguard.defences.catalogue import parse_defence
    from shardguard.defences.guards import profile_guards
    from shardguard.errors import PlanningError
    from shardguard.local import LocalExecutor

    graph = trace(load_model(MODEL).module, (1, 28, 28))
    x = load_split("test").tensors(16)[0]
    rows = []
    for name in sorted(builtin_platforms()):
        target = load_platform(name)
        try:
            planned = make_plan(graph, ModelRef(ref=MODEL, input_shape=[1, 28, 28]), target,
                                strategy="pipeline", objective="throughput", replicas=3)
        except (ConfigError, PlanningError) as exc:
            rows.append({"name": f"defence_energy[{name}]", "note": f"not planned: {exc}"})
            continue
        compiled = compile_plan(planned.plan, graph)
        bounds = profile_guards(compiled, load_split("train").tensors(500)[0])
        for spec in DEFENCES:
            defence = parse_defence(spec)
            hooks = defence.hooks(compiled, [], bounds=bounds)
            with torch.no_grad():  # a short run: the Freivalds check's claim sizes and work
                LocalExecutor(compiled, hooks).run_outcome(x)
            per_device = {d: j * 1e6 for d, j in defence.energy_j(compiled, target).items()}
            rows.append({
                "name": f"defence_energy[{name}, {spec}]",
                "value": max(per_device.values(), default=0.0),
                "unit": "µJ/inference (busiest device)",
                "note": f"{MODEL} pipeline, {len(compiled.programs)} stages; " + ", ".join(
                    f"{d} {v:.1f}" for d, v in per_device.items())})
    return rows


BENCHMARKS = [crypto_energy_per_device, defence_energy_per_device]
