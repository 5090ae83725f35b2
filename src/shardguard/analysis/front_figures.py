"""An exploration's files: the front as a table, a plan per front point, and figures.

    front.csv                     one row per front point (the recommended one marked)
    plans/front-NN.yaml           each front point's plan; plans/recommended.yaml
    front_projections.png         the front in 2-D, every pair of the four objectives (every
                                  evaluated candidate in grey)
    energy_per_device.png         energy per device for the recommended, the most frugal
                                  and the most secure front points
    security_energy.png           per device type: energy per inference against the
                                  protection on every link, for one deployment with
                                  links on as many device types as any evaluated
    explore.json                  the setup, the counts, the recommendation and its reason
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..partition.plan import Plan  # noqa: E402
from .analysis_figures import save  # noqa: E402

if TYPE_CHECKING:
    from .search import Exploration


def write_outputs(result: Exploration, levels: list[dict[str, Any]], platform: Any,
                  out: Path) -> None:
    from .search import OBJECTIVES, labels

    plans = out / "plans"
    plans.mkdir(parents=True, exist_ok=True)
    for old in plans.glob("front-*.yaml"):
        old.unlink()
    rec = result.recommended["key"]
    rows = []
    for i, r in enumerate(result.front):
        path = plans / f"front-{i:02d}.yaml"
        plan = Plan.model_validate(r["plan"])
        # what a plan file does not hold: the guards (and voting, as replicas) chosen
        text = f"# explored deployment: {r['describe']}\n{plan.to_yaml(plans)}"
        path.write_text(text)
        if r["key"] == rec:  # a rerun into this directory recommends anew
            (plans / "recommended.yaml").write_text(text)
        guard = r["candidate"]["guard"]
        rows.append({"point": i, "recommended": r["key"] == rec, "deployment": r["describe"],
                     "guards": guard if guard != "none" else "",
                     "energy_mj": r["energy_j"] * 1e3,
                     "total_energy_mj": r["total_energy_j"] * 1e3,
                     "latency_ms": r["latency_s"] * 1e3,
                     "vulnerability": r["vulnerability"],
                     "vulnerability_low": r.get("vulnerability_low", float("nan")),
                     "vulnerability_high": r.get("vulnerability_high", float("nan")),
                     "energy_per_device_mj": json.dumps(
                         {d: round(j * 1e3, 4) for d, j in r["energy_per_device_j"].items()}),
                     "plan": str(path.relative_to(out))})
    with (out / "front.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    types = {d: platform.devices[d].profile or d for d in platform.names}
    summary = {
        "kind": "exploration", "spec": result.spec.model_dump(mode="json"),
        "method": result.method, "space_size": result.space_size,
        "evaluated": len(result.rows), "evaluated_now": result.evaluated_now,
        "data": result.data, "measure": result.measure,
        "objectives": {o: labels(result.measure)[o] for o in OBJECTIVES}, "front": rows,
        "recommended": {"point": next(r["point"] for r in rows if r["recommended"]),
                        "deployment": result.recommended["describe"],
                        "guards": result.recommended["candidate"]["guard"],
                        "plan": "plans/recommended.yaml", "reason": result.reason},
        "security_levels": levels,
        "device_types": types}
    (out / "explore.json").write_text(json.dumps(summary, indent=2) + "\n")
    _projections(result, out / "front_projections.png")
    _per_device(result, out / "energy_per_device.png")
    _security(levels, types, out / "security_energy.png")


def _projections(result: Exploration, path: Path) -> Path:
    from .search import OBJECTIVES, SCALE, labels

    names = labels(result.measure)
    pairs = [(a, b) for a in range(len(OBJECTIVES)) for b in range(a + 1, len(OBJECTIVES))]
    fig, grid = plt.subplots(2, 3, figsize=(13, 8))
    axes = grid.ravel()
    feasible = [r for r in result.rows if r["feasible"]]
    for ax, (a, b) in zip(axes, pairs):
        oa, ob = OBJECTIVES[a], OBJECTIVES[b]
        ax.scatter([r[oa] * SCALE[oa] for r in feasible], [r[ob] * SCALE[ob] for r in feasible],
                   s=8, color="0.8", label=f"evaluated ({len(feasible)})")
        ax.scatter([r[oa] * SCALE[oa] for r in result.front],
                   [r[ob] * SCALE[ob] for r in result.front], s=22, color="C0",
                   label=f"Pareto front ({len(result.front)})")
        _front_errors(ax, result.front, oa, ob)
        rec = result.recommended
        ax.scatter([rec[oa] * SCALE[oa]], [rec[ob] * SCALE[ob]], marker="*", s=220,
                   color="C3", label="recommended", zorder=3)
        ax.set_xlabel(names[oa])
        ax.set_ylabel(names[ob])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result.spec.model} on {result.spec.platform}: the front, six views")
    return save(fig, path)


def _front_errors(ax: Any, front: list[dict[str, Any]], x: str, y: str) -> None:
    """The front points' 95 % intervals of accuracy lost, as error bars on that axis."""
    from .search import SCALE

    for axis, key in (("x", x), ("y", y)):
        if key != "vulnerability":
            continue
        value = [r[key] for r in front]
        err = [[max(0.0, v - r.get(f"{key}_low", v)) for v, r in zip(value, front)],
               [max(0.0, r.get(f"{key}_high", v) - v) for v, r in zip(value, front)]]
        ax.errorbar([r[x] * SCALE[x] for r in front], [r[y] * SCALE[y] for r in front],
                    fmt="none", ecolor="C0", capsize=2, lw=0.8, **{f"{axis}err": err})


def _per_device(result: Exploration, path: Path) -> Path:
    chosen = {"recommended": result.recommended,
              "least energy": min(result.front, key=lambda r: r["energy_j"]),
              "least vulnerable": min(result.front, key=lambda r: (r["vulnerability"],
                                                                   r["energy_j"]))}
    devices = sorted({d for r in chosen.values() for d in r["energy_per_device_j"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(devices) + 3), 4))
    width = 0.8 / len(chosen)
    for i, (label, r) in enumerate(chosen.items()):
        ax.bar([k + i * width for k in range(len(devices))],
               [r["energy_per_device_j"].get(d, 0.0) * 1e3 for d in devices], width,
               label=f"{label}: {r['describe']}"[:90])
    ax.set_xticks([k + width * (len(chosen) - 1) / 2 for k in range(len(devices))], devices)
    ax.set_ylabel("energy per inference (mJ)")
    ax.set_title("energy per device of chosen front points")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12))
    return save(fig, path)


def _security(levels: list[dict[str, Any]], types: dict[str, str], path: Path) -> Path:
    """Mean energy of the devices of each type that send or receive on a link."""
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [lv["protection"] for lv in levels]
    by_type: dict[str, list[str]] = {}
    for d in levels[0]["energy_per_device_j"] if levels else []:
        by_type.setdefault(types.get(d, d), []).append(d)
    for kind, devices in sorted(by_type.items()):
        ys = [sum(lv["energy_per_device_j"].get(d, 0.0) for d in devices) / len(devices) * 1e3
              for lv in levels]
        ax.plot(range(len(names)), ys, marker="o", label=f"{kind} ({len(devices)})")
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_xlabel("protection on every link")
    ax.set_ylabel("energy per inference per device (mJ)")
    where = levels[0]["deployment"].split(", links")[0] if levels else ""
    ax.set_title(f"what each security level costs each device type\n({where})", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, path)
