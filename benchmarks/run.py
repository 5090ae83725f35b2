"""Run ShardGuard's benchmarks: ``make bench`` (or ``python benchmarks/run.py [NAME ...]``).

Each ``bench_*.py`` module beside this file defines ``BENCHMARKS``: a list of
functions returning a dict with ``value``, ``unit`` and, for targets, ``ratio``
(measured against a baseline in the same run, since shared machines are noisy)
and ``target`` (the ratio it must not exceed or fall below, see ``better``; or a
``[low, high]`` range it must fall within).
Results go to ``benchmarks/results/latest.json`` and a readable ``latest.md``.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def _modules() -> list[Any]:
    mods = []
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods


def _verdict(row: dict[str, Any]) -> str:
    if "target" not in row or "ratio" not in row:
        return "recorded"
    if isinstance(row["target"], list):  # [low, high]: the ratio must fall within
        return "met" if row["target"][0] <= row["ratio"] <= row["target"][1] else "MISSED"
    better = row.get("better", "lower")
    ok = row["ratio"] <= row["target"] if better == "lower" else row["ratio"] >= row["target"]
    return "met" if ok else "MISSED"


def main(selected: list[str]) -> int:
    import torch

    rows: list[dict[str, Any]] = []
    for mod in _modules():
        for fn in mod.BENCHMARKS:
            if selected and fn.__name__ not in selected:
                continue
            print(f"· {fn.__name__} …", flush=True)
            start = time.perf_counter()
            try:
                results = fn()
            except Exception:  # a failing benchmark is recorded, the others still run
                traceback.print_exc()
                results = [{"name": fn.__name__, "error": traceback.format_exc(limit=2)}]
            for row in results if isinstance(results, list) else [results]:
                row.setdefault("name", fn.__name__)
                row["bench"] = fn.__name__
                row["seconds"] = round(time.perf_counter() - start, 2)
                row["verdict"] = "error" if "error" in row else _verdict(row)
                rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    if selected and (RESULTS / "latest.json").is_file():  # keep the other benchmarks' rows
        earlier = json.loads((RESULTS / "latest.json").read_text())["results"]
        names = {r["name"] for r in rows}
        rows = [r for r in earlier
                if r.get("bench") not in selected and r["name"] not in names] + rows
    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpus": torch.get_num_threads(), "platform": platform.platform()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": rows}
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| benchmark | value | ratio | target | verdict | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        value = f"{r['value']:.4g} {r.get('unit', '')}" if "value" in r else ""
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else ""
        target = ("" if "target" not in r else
                  "{}–{}".format(*r["target"]) if isinstance(r["target"], list) else
                  ("≤ " if r.get("better", "lower") == "lower" else "≥ ") + str(r["target"]))
        lines.append(f"| {r['name']} | {value} | {ratio} | {target} | {r['verdict']} | "
                     f"{r.get('note', '')} |")
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(r["verdict"] in ("MISSED", "error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
