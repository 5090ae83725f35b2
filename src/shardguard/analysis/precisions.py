"""fp32 vs int8 side by side (issue 15, point 6): ``analyze --precisions fp32,int8``.

The same plan (its segments, devices and links) at each precision, every stage at it
(``partition.build.with_precision``; an int8 plan is quantized as ``runtime.quantize``
does, calibrated on training images). For each precision, on the same images:
* its clean accuracy, energy per device and bytes per link (the cost model's);
* L1 random bit flips on every link, at the same bit-error rates for both precisions
  (a flip hits each transmitted bit with probability ``ber``: 32 bits per fp32 value,
  8 per int8 value), ``bits: all``;
* L1 flips of the most significant bit only, at the same rates: int8 ``bits: msb``
  (bit 7 of the two's-complement code, the sign, weighs 128 codes), and for fp32 the
  class that does the most harm per flip, ``exponent-high`` (bit 30: the exponent's top
  bit, which turns a value below 2 into one near 2^128). That is the matching chosen:
  each precision's worst single bit.
The BER is per bit of the class flipped (``threats.bits.flip_bits``): at the same BER,
random flips hit 32 (fp32) or 8 (int8) bits per value, MSB flips one, so the MSB rows
are fewer flips that each weigh the most; compare them per flip with that in mind.
Each condition pools ``seeds`` seeds with its 95 % interval. Written to
``precisions.csv`` (one row per precision and condition, a ``precision`` column),
``precisions.json`` (accuracy with its interval, energy per device, bytes per link,
per precision) and ``precision_vs_ber.png``; the report shows them side by side.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .metrics import with_interval
from .trials import Trial

PRECISIONS = ("fp32", "int8")
BER = [1e-4, 1e-3, 1e-2]
#: each precision's "most significant bit" class (see the module docstring)
MSB = {"fp32": "exponent-high", "int8": "msb"}


def parse_precisions(text: str) -> list[str]:
    """``fp32,int8`` as a list; an unknown precision refused in one line."""
    items = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise ConfigError(f"--precisions {text!r}: expected a comma-separated list of "
                          "fp32 and int8")
    return list(dict.fromkeys(items))


def plan_files(bound: Any, precisions: list[str], out: Path) -> dict[str, str]:
    """The plan at each precision, saved as ``out/plan-<precision>.yaml``."""
    from ..partition.build import Planned, with_precision

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for p in precisions:
        planned = with_precision(Planned(bound.plan, bound.compiled, bound.cost), bound.graph,
                                 bound.platform, p)  # type: ignore[arg-type]
        path = out / f"plan-{p}.yaml"
        planned.plan.save(path, force=True)
        files[p] = str(path)
    return files


def trials(precisions: list[str], seed: int, seeds: int) -> list[Trial]:
    return [Trial(p, {"id": "L1", "target": "every", "ber": b, "bits": bits, "seed": s}, s)
            for p in precisions for s in range(seed, seed + seeds) for b in BER
            for bits in ("all", MSB[p])]


def compare(bound: Any, precisions: list[str], out: Path, *, samples: int, seed: int,
            seeds: int, processes: int, ray: str | None, data: str | None
            ) -> list[dict[str, Any]]:
    """Run the comparison; its pooled rows (``precisions.csv``), summary and figure."""
    from ..partition import bind
    from .analysis_figures import precision_figure
    from .campaign import execute
    from .metrics import pool
    from .rows import write_csv

    files = plan_files(bound, precisions, out / "precisions")
    rows = execute(trials(precisions, seed, seeds), files, samples, processes,
                   out / "precisions", description="fp32 vs int8", ray=ray, data=data)
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        bits = "msb" if r["param_bits"] == MSB[r["strategy"]] else r["param_bits"]
        groups[(r["strategy"], bits, float(r["param_ber"]))].append(r)
    pooled = [{"precision": p, "flips": bits, "bits": MSB[p] if bits == "msb" else bits,
               "ber": ber, **pool(rs)} for (p, bits, ber), rs in groups.items()]
    write_csv(pooled, out / "precisions.csv")
    summary = {}
    for p in precisions:
        clean = pool([r for r in rows if r["strategy"] == p])
        planned = bind(files[p], build=False)
        summary[p] = {
            "accuracy": clean["clean_accuracy"], "accuracy_low": clean["clean_accuracy_low"],
            "accuracy_high": clean["clean_accuracy_high"],
            "energy_j": {d: c.energy_j for d, c in planned.cost.devices.items()},
            "bytes": {f"{lk.src}>{lk.dst}": lk.bytes for lk in planned.plan.links}}
    (out / "precisions.json").write_text(json.dumps(
        {"msb": MSB, "ber": BER, "precisions": summary}, indent=2) + "\n")
    precision_figure(pooled, out / "precision_vs_ber.png")
    return pooled


def report_table(d: Path) -> dict[str, Any] | None:
    """The report's side-by-side table (one row per precision), from the files ``compare``
    wrote in ``d``; None without them."""
    import csv

    if not (d / "precisions.json").exists() or not (d / "precisions.csv").exists():
        return None
    summary = json.loads((d / "precisions.json").read_text())
    with (d / "precisions.csv").open() as f:
        found = list(csv.DictReader(f))
    rows = []
    for p, s in summary["precisions"].items():
        row: dict[str, Any] = {
            "precision": p, "accuracy (95% interval)": with_interval(
                s["accuracy"], s["accuracy_low"], s["accuracy_high"]),
            "energy per device (mJ)": ", ".join(f"{d} {j * 1e3:.3g}"
                                                for d, j in s["energy_j"].items()),
            "bytes per link": ", ".join(f"{k} {b}" for k, b in s["bytes"].items())}
        for flips in ("all", "msb"):
            for r in sorted((r for r in found if r["precision"] == p and r["flips"] == flips),
                            key=lambda r: float(r["ber"])):
                what = "random bits" if flips == "all" else "MSB"  # bits: the caption
                row[f"lost, {what}, BER {float(r['ber']):g}"] = with_interval(
                    float(r["accuracy_drop"]), r["accuracy_drop_low"], r["accuracy_drop_high"])
        rows.append(row)
    return {"caption": "fp32 vs int8, the same plan: accuracy, energy, bytes per link, and "
                       "accuracy lost under L1 bit flips on every link at the same bit-error "
                       "rate per bit of the class (random: every bit; MSB: int8 bit 7, fp32 "
                       "the exponent's top bit, one bit per value), 95% intervals", "rows": rows}
