"""Human-readable tables of a profiled graph."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ._types import Graph


def si(value: float, unit: str = "") -> str:
    """``1.82e9`` → ``'1.82 G'``."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def profile_table(graph: Graph, title: str = "") -> Table:
    measured = any(n.latency_s is not None for n in graph.nodes)
    table = Table(title=title, show_footer=True)
    table.add_column("node", footer="total")
    table.add_column("kind")
    table.add_column("output shape")
    table.add_column("MACs", justify="right", footer=si(graph.total_macs))
    table.add_column("params", justify="right", footer=si(graph.total_params))
    table.add_column("out bytes", justify="right",
                     footer=si(max((n.out_bytes for n in graph.nodes), default=0), "B") + " max")
    if measured:
        total = sum(n.latency_s or 0 for n in graph.nodes)
        table.add_column("host ms", justify="right", footer=f"{total * 1e3:.2f}")
    for n in graph.nodes:
        row = [n.name, n.kind, "×".join(map(str, n.shape[1:])) or "-",
               si(n.macs) if n.macs else "", si(n.params) if n.params else "", si(n.out_bytes, "B")]
        if measured:
            row.append(f"{(n.latency_s or 0) * 1e3:.3f}")
        table.add_row(*row)
    return table


def print_profile(graph: Graph, title: str = "") -> None:
    Console().print(profile_table(graph, title))
    print(f"total: {graph.total_macs / 1e9:.3f} GMACs, {graph.total_params / 1e6:.3f} M params, "
          f"{len(graph.compute_nodes)} nodes")
