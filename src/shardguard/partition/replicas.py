"""Replicas: copies of each stage on other devices, for failover and voting."""

from __future__ import annotations

from ..errors import PlanningError
from ..platform import Platform
from .build import Planned, check_memory
from .cost import estimate


def add_replicas(planned: Planned, platform: Platform, copies: int) -> Planned:
    """Give every stage ``copies - 1`` replicas on distinct other devices that have room.

    Devices are chosen least-loaded first (memory), then fastest, so replicas spread.
    """
    if copies <= 1:
        return planned
    if copies > len(platform.devices):
        raise PlanningError(f"--replicas {copies} needs at least {copies} devices; "
                            f"platform {platform.name} has {len(platform.devices)}")
    load = {d: 0.0 for d in platform.names}
    for p in planned.compiled.programs:
        load[p.device] += p.memory_bytes
    for seg in planned.plan.segments:
        for stage in seg.stages:
            program = planned.compiled.by_name[stage.name]
            others = [d for d in platform.names if d != stage.device]
            others.sort(key=lambda d: (load[d] / platform.devices[d].memory_bytes,
                                       -platform.devices[d].mac_rate))
            chosen = [d for d in others
                      if load[d] + program.memory_bytes <= platform.devices[d].memory_bytes]
            if len(chosen) < copies - 1:
                raise PlanningError(f"stage {stage.name}: only {len(chosen)} other devices have "
                                    f"room for a replica, {copies - 1} needed")
            stage.replicas = chosen[:copies - 1]
            program.replicas = list(stage.replicas)
            for d in stage.replicas:
                load[d] += program.memory_bytes
    planned.cost = estimate(planned.compiled, platform)
    check_memory(planned)
    return planned
