"""The report: one self-contained HTML page for a results directory.

    shardguard report out/demo -o out/demo/report.html

It recognises what a directory (and each directory in it) holds and gives each a
section: a demo (``summary.json``), an exploration (``explore.json``), a
vulnerability analysis (``ranking.json``) or a campaign (``results.jsonl``), with
the ``plan.yaml`` beside it. Figures are embedded as data URIs, so the page is one file
that can be mailed or archived. Tables are the files' own numbers; nothing is
recomputed here.
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError
from .metrics import LOSSES, MEASURES, with_interval
from .precisions import report_table

ANALYSIS_FIGURES = ("criticality.png", "accuracy_vs_ber.png", "accuracy_vs_snr.png",
                    "accuracy_vs_epsilon.png", "reconstruction_by_depth.png",
                    "precision_vs_ber.png")
EXPLORE_FIGURES = ("front_projections.png", "energy_per_device.png", "security_energy.png")
FIGURE_NOTES = {
    "plan.png": "Which device runs which share of the model's work, and when each stage "
                "runs within one inference (cost model).",
    "criticality.png": "Accuracy lost when each device or link is attacked (worst first).",
    "accuracy_vs_ber.png": "Accuracy against the bit-error rate on the links, by which bits "
                           "flip: exponent bits are catastrophic, mantissa bits harmless.",
    "accuracy_vs_snr.png": "Accuracy against Gaussian noise on the links (signal-to-noise).",
    "accuracy_vs_epsilon.png": "Accuracy against the size of an adversarial perturbation "
                               "injected on each link.",
    "reconstruction_by_depth.png": "How well an eavesdropper rebuilds the input from a link, "
                                   "by how deep in the model the link is.",
    "precision_vs_ber.png": "Accuracy lost against the bit-error rate on every link, fp32 vs "
                            "int8 (solid: random bits; dashed: the most significant bit).",
    "front_projections.png": "The Pareto front in three 2-D views; grey: every candidate "
                             "evaluated; star: the recommended deployment.",
    "energy_per_device.png": "Energy per inference on each device for three front points.",
    "security_energy.png": "Energy per device, by device type, as every link's protection "
                           "rises: what security costs each kind of board.",
}


def write_report(results: Path, output: Path) -> Path:
    """Render ``results`` (and its subdirectories) into ``output``; return ``output``."""
    if not results.is_dir():
        raise ConfigError(f"{results}: not a directory")
    sections = [s for d in [results, *sorted(p for p in results.iterdir() if p.is_dir())]
                for s in _sections(d, results)]
    if not sections:
        raise ConfigError(f"{results}: no ShardGuard results here (expected summary.json, "
                          "explore.json, ranking.json or results.jsonl)")
    from jinja2 import Environment, select_autoescape

    env = Environment(autoescape=select_autoescape(default=True))
    env.filters["num"] = _num
    template = env.from_string(resources.files(__package__).joinpath(
        "report.html.j2").read_text())
    html = template.render(title=f"ShardGuard report: {results.name}", sections=sections,
                           version=__version__, source=str(results),
                           made=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html)
    return output


def _sections(d: Path, root: Path) -> list[dict[str, Any]]:
    where = "." if d == root else str(d.relative_to(root))
    out = []
    if (d / "summary.json").exists():
        out.append(_demo(d, where))
    if (d / "explore.json").exists():
        out.append(_exploration(d, where))
    if (d / "ranking.json").exists():
        out.append(_analysis(d, where))
    elif (d / "results.jsonl").exists():
        out.append(_campaign(d, where))
    return out


def _figure(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    data = base64.b64encode(path.read_bytes()).decode()
    return {"src": f"data:image/png;base64,{data}", "name": path.name,
            "note": FIGURE_NOTES.get(path.name, "")}


def _figures(d: Path, names: tuple[str, ...]) -> list[dict[str, str]]:
    return [f for f in (_figure(d / n) for n in names) if f is not None]


def _plan(d: Path) -> dict[str, Any] | None:
    from ..partition.plan import load_plan

    path = d / "plan.yaml"
    if not path.exists():
        return None
    plan = load_plan(path)
    stages = [{"stage": s.name, "device": s.device, "replicas": ", ".join(s.replicas) or "-",
               "layers": f"{seg.first} … {seg.last}", "split": seg.split}
              for seg in plan.segments for s in seg.stages]
    links = [{"link": f"{lk.src}>{lk.dst}", "bytes per image": lk.bytes,
              "protection": lk.protection} for lk in plan.links]
    return {"model": plan.model.ref, "platform": plan.platform, "strategy": plan.strategy,
            "stages": stages, "links": links, "yaml": path.read_text()}


def _measured(setup: dict[str, Any]) -> tuple[str, str]:
    """(measure, sentence): what "accuracy" means in a results directory. Results made
    before the measure was recorded were scored against labels."""
    measure = setup.get("measure", "accuracy")
    data = f" Data: {setup['data']}." if setup.get("data") else ""
    return measure, f"What is measured: {MEASURES[measure]}.{data}"


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _demo(d: Path, where: str) -> dict[str, Any]:
    summary = json.loads((d / "summary.json").read_text())
    _, measured = _measured(summary.get("facts", {}))
    return {"kind": "demo", "title": "Findings", "where": where, "measured": measured,
            "lines": summary.get("lines", []),
            "steps": [{"step": k, "seconds": v} for k, v in summary.get("steps", {}).items()],
            "plan": _plan(d), "figures": _figures(d, ("plan.png",))}


def _analysis(d: Path, where: str) -> dict[str, Any]:
    ranking = json.loads((d / "ranking.json").read_text())
    setup = _read(d / "analysis.json")
    measure, measured = _measured(setup)
    rows = [{"rank": r["rank"], "kind": r["kind"], "name": r["name"],
             f"{LOSSES[measure]} (95% interval)": with_interval(
                 r["accuracy_drop"], r.get("accuracy_drop_low"), r.get("accuracy_drop_high")),
             "worst availability": r["availability"], "attacks": r["attacks"]} for r in ranking]
    tables = [{"caption": "Criticality ranking: the device or link whose attack costs "
                          "the most accuracy first", "rows": rows}]
    conditions = _conditions(d / "conditions.csv", measure)
    if conditions:
        tables.append({"caption": f"Every condition, its seeds pooled ({setup.get('seeds', 1)}"
                                  " per condition), with 95% intervals", "rows": conditions})
    compared = report_table(d)  # analyze --precisions: fp32 vs int8 side by side
    if compared:
        tables.insert(0, compared)
    platform = d / "platform.yaml"
    return {"kind": "analysis", "title": "Vulnerability analysis and criticality", "where": where,
            "measured": measured, "setup": setup, "tables": tables,
            "platform_yaml": platform.read_text() if platform.exists() else "",
            "figures": _figures(d, ANALYSIS_FIGURES), "plan": _plan(d)}


def _conditions(path: Path, measure: str) -> list[dict[str, Any]]:
    import csv

    if not path.exists():
        return []
    word = "accuracy" if measure == "accuracy" else "agreement"
    with path.open() as f:
        found = list(csv.DictReader(f))
    return [{"threat": threat_name(r),
             f"{word} (95% interval)": with_interval(
                 float(r["accuracy"]), r.get("accuracy_low"), r.get("accuracy_high")),
             f"{LOSSES[measure]} (95% interval)": with_interval(
                 float(r["accuracy_drop"]), r.get("accuracy_drop_low"),
                 r.get("accuracy_drop_high")),
             "unscorable": float(r.get("unscorable") or 0.0),
             "availability": float(r["availability"]), "seeds": int(float(r["seeds"]))}
            for r in found]


def threat_name(row: dict[str, Any]) -> str:
    """A threat as people name it: ``L1 on every: ber=0.001, bits=exponent-high``."""
    params = row.get("params") or "{}"
    values = json.loads(params) if isinstance(params, str) else params
    named = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
    return f"{row['threat']} on {row['target']}" + (f": {named}" if named else "")


def _campaign(d: Path, where: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from .backend import Journal
    from .metrics import pool

    # the last run's own rows (its tables); the journal may hold others' too
    table_file = d / "results.parquet"
    rows = (pq.read_table(table_file).to_pylist() if table_file.exists() else
            list(Journal(d / "results.jsonl", "trial").rows.values()))
    spec = d / "campaign.json"
    setup = json.loads(spec.read_text()) if spec.exists() else {}
    measure, measured = _measured({**setup, "data": setup.get("data_used")})
    word = "accuracy" if measure == "accuracy" else "agreement"
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:  # one line per strategy, threat (with its target and parameters), defence
        groups[(r.get("strategy") or "", threat_name(r), r.get("defence") or "none")].append(r)
    table = []
    for (strategy, threat, defence), rs in sorted(groups.items()):
        both = pool(rs)
        mean = {k: _mean([r.get(k) for r in rs]) for k in (
            "availability", "unscorable", "detection_rate", "false_positive_rate",
            "max_defence_energy_j")}
        table.append({"strategy": strategy, "threat": threat, "defence": defence,
                      "seeds": len(rs), f"clean {word} (95% interval)": with_interval(
                          both["clean_accuracy"], both["clean_accuracy_low"],
                          both["clean_accuracy_high"]),
                      f"{word} (95% interval)": with_interval(
                          both["accuracy"], both["accuracy_low"], both["accuracy_high"]),
                      f"{LOSSES[measure]} (95% interval)": with_interval(
                          both["accuracy_drop"], both["accuracy_drop_low"],
                          both["accuracy_drop_high"]),
                      "unscorable": mean["unscorable"], "availability": mean["availability"],
                      "detection rate": mean["detection_rate"],
                      "false positives": mean["false_positive_rate"],
                      "defence energy (mJ, busiest device)":
                          _scale(mean["max_defence_energy_j"], 1e3)})
    return {"kind": "campaign", "title": "Campaign: threats × defences", "where": where,
            "measured": measured,
            "setup": setup, "tables": [{"caption": f"{len(rows)} trials: one line per strategy, "
                                                   "threat and defence, seeds pooled, with 95% "
                                                   "intervals", "rows": table}],
            "figures": [], "plan": _plan(d)}


def _exploration(d: Path, where: str) -> dict[str, Any]:
    data = json.loads((d / "explore.json").read_text())
    measure, measured = _measured(data)
    front = [{"#": r["point"], "recommended": "★" if r["recommended"] else "",
              "deployment": r["deployment"], "max energy/device (mJ)": r["energy_mj"],
              "total energy (mJ)": r.get("total_energy_mj"), "latency (ms)": r["latency_ms"],
              f"{LOSSES[measure]} (95% interval)": with_interval(
                  r["vulnerability"], r.get("vulnerability_low"), r.get("vulnerability_high")),
              "plan": r["plan"]} for r in data["front"]]
    rec = data["recommended"]
    path = (d / rec["plan"]).resolve()
    if not path.is_relative_to(d.resolve()):  # a page to mail embeds nothing from elsewhere
        raise ConfigError(f"{d / 'explore.json'}: recommended plan {rec['plan']!r} is not "
                          f"inside {d}")
    return {"kind": "exploration", "title": "Security against energy: the Pareto front",
            "where": where, "setup": data["spec"], "measured": measured,
            "counts": f"{data['evaluated']} of {data['space_size']} candidate deployments "
                      f"evaluated ({data['method']})",
            "tables": [{"caption": "Pareto front (every objective minimised)", "rows": front}],
            "recommended": {**rec, "yaml": path.read_text() if path.exists() else ""},
            "figures": _figures(d, EXPLORE_FIGURES), "plan": None}


def _mean(values: list[Any]) -> float:
    ok = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(ok) / len(ok) if ok else math.nan


def _scale(value: float, factor: float) -> float:
    return value * factor if math.isfinite(value) else value


def _num(value: Any) -> str:
    """Numbers for people: 4 significant digits, fractions of 1 as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"
