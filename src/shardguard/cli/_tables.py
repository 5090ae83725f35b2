"""Rich tables for plans and costs (presentation only)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..graph.report import si
from ..partition.build import Planned


def stage_table(planned: Planned) -> Table:
    cost = planned.cost
    sent: dict[str, int] = {}
    for tc in cost.transfers:
        sent[tc.src] = sent.get(tc.src, 0) + tc.nbytes
    table = Table(title=f"{planned.plan.strategy} plan, objective {planned.plan.objective}")
    for col in ("stage", "device", "replicas", "nodes", "MACs", "memory", "time ms",
                "energy mJ", "bytes sent"):
        table.add_column(col, justify="right" if col not in ("stage", "device", "nodes",
                                                             "replicas") else "left")
    for p in planned.compiled.programs:
        spec = planned.plan.stage(p.name)
        piece = ""
        if spec.rows is not None and spec.cols is not None:
            piece = f" tile r{spec.rows[0]}:{spec.rows[1]} c{spec.cols[0]}:{spec.cols[1]}"
        elif spec.channels is not None:
            piece = f" ch{spec.channels[0]}:{spec.channels[1]}"
        nodes = f"{p.nodes[0]}..{p.nodes[-1]} ({len(p.nodes)}){piece}"
        seconds = cost.stage_compute_s[p.name]
        power = cost.devices[p.device]
        energy = power.compute_j * seconds / power.compute_s if power.compute_s else 0.0
        table.add_row(p.name, p.device, ",".join(p.replicas) or "-", nodes, si(p.macs),
                      si(p.memory_bytes, "B"), f"{seconds * 1e3:.3f}", f"{energy * 1e3:.3f}",
                      si(sent.get(p.name, 0), "B"))
    return table


def device_table(planned: Planned) -> Table:
    cost = planned.cost
    table = Table(title="cost per device and inference")
    for col in ("device", "stages", "compute ms", "crypto ms", "sent", "received",
                "memory / limit", "compute mJ", "crypto mJ", "radio mJ", "idle mJ", "total mJ"):
        table.add_column(col, justify="left" if col in ("device", "stages") else "right")
    for d in cost.devices.values():
        stages = ",".join(d.stages) + (f" (+{','.join(d.replicas)})" if d.replicas else "")
        table.add_row(d.device, stages or "-", f"{d.compute_s * 1e3:.3f}",
                      f"{d.crypto_s * 1e3:.3f}",
                      si(d.bytes_sent, "B"), si(d.bytes_received, "B"),
                      f"{si(d.memory_bytes, 'B')} / {si(d.memory_limit, 'B')}",
                      f"{d.compute_j * 1e3:.3f}", f"{d.crypto_j * 1e3:.3f}",
                      f"{d.radio_j * 1e3:.3f}", f"{d.idle_j * 1e3:.3f}", f"{d.energy_j * 1e3:.3f}")
    return table


def summary_line(planned: Planned) -> str:
    c = planned.cost
    return (f"latency {c.latency_s * 1e3:.3f} ms · throughput {c.throughput:.1f}/s · "
            f"max active energy {c.max_active_j * 1e3:.3f} mJ/device · "
            f"total energy {c.total_energy_j * 1e3:.3f} mJ/inference"
            + (f" ({len(c.idle_boards)} unused board(s) idle: "
               f"{sum(c.idle_boards.values()) * 1e3:.3f} mJ)" if c.idle_boards else ""))


def show(*tables: Table) -> None:
    console = Console(width=160)
    for t in tables:
        console.print(t)
