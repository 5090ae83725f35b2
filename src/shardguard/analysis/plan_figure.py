"""A picture of a plan: which device computes which part, and a timeline of one request."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..partition.build import Planned  # noqa: E402


def draw_plan(planned: Planned, path: Path, title: str = "") -> Path:
    """Two panels: MACs along the graph coloured by device; a Gantt chart of one inference."""
    compiled, cost = planned.compiled, planned.cost
    devices = list(cost.devices)
    colours = {d: plt.cm.tab10(i % 10) for i, d in enumerate(devices)}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), height_ratios=(1, 1.4))

    # top: each segment as a block as wide as its MACs; split segments stacked by stage
    x = 0.0
    total = max(1, sum(p.macs for p in compiled.programs))
    for seg_index in sorted({p.segment for p in compiled.programs}):
        stages = [p for p in compiled.programs if p.segment == seg_index]
        seg_macs = max(1, sum(p.macs for p in stages))
        width = max(seg_macs / total, 0.004)
        y = 0.0
        for p in stages:  # heights: each stage's share of the segment's work
            height = p.macs / seg_macs if len(stages) > 1 else 1.0
            top.barh(y + height / 2, width, height=height, left=x, color=colours[p.device],
                     edgecolor="white", linewidth=0.5)
            if width > 0.06 and height > 0.12:
                top.text(x + width / 2, y + height / 2, f"{p.name}\n{p.device}",
                         ha="center", va="center", fontsize=7)
            y += height
        x += width
    top.set_xlim(0, x)
    top.set_ylim(0, 1)
    top.set_yticks([])
    top.set_xlabel("share of the model's MACs, in graph order (stacked: split across devices)")
    top.set_title(title or f"{planned.plan.model.ref} on {planned.plan.platform} — "
                  f"{planned.plan.strategy}, {planned.plan.objective}")

    # bottom: one request's timeline per device, transfers as arrows
    row = {d: i for i, d in enumerate(devices)}
    for p in compiled.programs:
        start, end = cost.stage_start_s[p.name], cost.stage_finish_s[p.name]
        bottom.barh(row[p.device], (end - start) * 1e3, left=start * 1e3,
                    color=colours[p.device], edgecolor="black", linewidth=0.4)
    for tc in cost.transfers:
        if tc.src_device in row and tc.dst_device in row and tc.src_device != tc.dst_device:
            t0 = cost.stage_finish_s[tc.src] * 1e3
            bottom.annotate("", xy=(t0 + tc.seconds * 1e3, row[tc.dst_device]),
                            xytext=(t0, row[tc.src_device]),
                            arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.6})
    bottom.set_xlim(0, cost.latency_s * 1e3)
    bottom.set_yticks(range(len(devices)), devices)
    bottom.invert_yaxis()
    bottom.set_xlabel("time within one inference (ms)")
    bottom.set_title(f"latency {cost.latency_s * 1e3:.2f} ms, period {cost.period_s * 1e3:.2f} ms "
                     f"({cost.throughput:.1f} inferences/s), max active energy "
                     f"{cost.max_active_j * 1e3:.2f} mJ per device")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

