"""Vulnerability analysis of one plan: a standard campaign, figures and a criticality ranking.

    shardguard analyze plan.yaml -o out/analysis

Runs, in the local executor on the first ``samples`` test images:
* L1 bit flips on every link, per bit class (sign, highest exponent bit, exponent,
  mantissa, all) at bit-error rates from 1e-8 to 1e-2;
* L2 Gaussian noise on every link, SNR from −10 to 40 dB;
* D1 crash of each device in turn;
* L6 eavesdropping at cuts spread through the model (PSNR and SSIM of the rebuilt
  input by cut depth);
* on each link in turn, the standard link attacks: L1 (all bits, BER 1e-4),
  L2 (10 dB), L3 (half the messages dropped) and L5 (FGSM, ε 0.02), and FGSM at
  ε from 0.005 to 0.05.

The criticality of a device is the accuracy lost when it crashes; of a link, the
mean accuracy lost under the standard link attacks. The ranking (most critical
first) is the order an attacker should follow.

Each trial that draws random numbers runs under ``seeds`` seeds (each its own random
stream; a crash and FGSM run once); a condition's figure pools them, with its 95 %
interval (images resampled, each with its answers under every seed: ``metrics.pool``),
in ``conditions.csv``, the figures' error bars and the ranking. The plan, its platform
and the setup are saved beside the results (``plan.yaml``, ``platform.yaml``,
``analysis.json``), so the report shows them.

Images come from ``data`` (``data.open_data``: the Fashion-MNIST test set by default,
preprocessed as the plan's model declares). Without labels, "accuracy" is agreement
with the clean model's top-1 and "accuracy lost" the silent-data-corruption rate;
every figure, table and file says which (``measure`` in analysis.json and each row).
The eavesdropper trains on 4000 training images until a held-out tenth stops improving
(``threats.eavesdrop.EavesdropTraining``; its epochs are in each row) and is scored on
500 at 28×28, on proportionally fewer for larger inputs (``subject.profile_images``);
each cut's result is cached in the output directory, so a resumed analysis reuses it
(unless the model's weights changed: the cache key holds their digest).
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..partition.bind import bind  # noqa: E402
from ..threats.eavesdrop import EavesdropTraining  # noqa: E402
from .analysis_figures import figures as draw  # noqa: E402
from .campaign import execute, plan_targets  # noqa: E402
from .leakage import reconstruction_by_depth  # noqa: E402
from .metrics import pool  # noqa: E402
from .precisions import compare  # noqa: E402
from .rows import table, write_csv  # noqa: E402
from .trials import Trial  # noqa: E402

BER = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
BIT_CLASSES = ["sign", "exponent-high", "exponent", "mantissa", "all"]
SNR_DB = [-10, 0, 10, 20, 30, 40]
EPSILON = [0.005, 0.01, 0.02, 0.05]
#: Seeds per condition. Measured on the demo's analysis (resnet-small, 500 images, the
#: 50 L1/L2/L3 conditions): the accuracy lost has a 95 % half-width of median 1.05 /
#: 0.75 / 0.59 points (90th percentile 3.65 / 2.71 / 2.46) with 1 / 3 / 5 seeds; three is
#: the knee. Accuracy itself is bounded by the images, not the seeds (±2.2 points at
#: 94 % on 500 images; ±2 points at 50 % needs about 2400 images).
DEFAULT_SEEDS = 3
LINK_ATTACKS = [{"id": "L1", "ber": 1e-4, "bits": "all"}, {"id": "L2", "snr_db": 10},
                {"id": "L3", "mode": "message", "rate": 0.5},
                {"id": "L5", "method": "fgsm", "epsilon": 0.02}]


@dataclass
class Analysis:
    rows: list[dict[str, Any]]
    ranking: list[dict[str, Any]]  # most critical first
    figures: dict[str, Path]
    clean_accuracy: float
    reconstruction: list[dict[str, Any]]  # L6 by cut depth
    measure: str = "accuracy"  # or "agreement": scored against the clean top-1 (no labels)
    data: str = ""  # which data, as data.Data.describe() says
    conditions: list[dict[str, Any]] = field(default_factory=list)  # seeds pooled (``pool``)
    clean_interval: tuple[float, float] = (math.nan, math.nan)  # 95 %

    def table(self) -> pa.Table:
        """``rows`` (every trial) as an Arrow table; ``.to_pandas()`` gives a DataFrame."""
        return table(self.rows)


def standard_trials(plan_label: str, targets: dict[str, list[str]], seed: int) -> list[Trial]:
    def trial(**threat: Any) -> Trial:
        return Trial(plan_label, {**threat, "seed": seed}, seed)

    trials = [trial(id="L1", target="every", ber=b, bits=c) for c in BIT_CLASSES for b in BER]
    trials += [trial(id="L2", target="every", snr_db=s) for s in SNR_DB]
    trials += [trial(id="D1", target=d) for d in targets["devices"]]
    trials += [trial(target=link, **attack) for link in targets["links"]
               for attack in LINK_ATTACKS]
    trials += [trial(id="L5", target=link, method="fgsm", epsilon=e) for link in targets["links"]
               for e in EPSILON if e != 0.02]  # 0.02 is among the standard attacks
    return trials


def drawn(threat: dict[str, Any]) -> bool:
    """Whether a threat draws random numbers (a crash and FGSM do not: one seed says all)."""
    return threat["id"] != "D1" and not (threat["id"] == "L5" and threat.get("method") == "fgsm")


def condition(row: dict[str, Any]) -> str:
    """What a row measured, whatever its seed: the threat, its target and parameters."""
    return f"{row['threat']} {row['target']} {row['params']}"


def pooled(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each condition's rows under every seed as one figure with its interval."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[condition(r)].append(r)
    out = {}
    for key, rs in groups.items():
        first = rs[0]
        out[key] = {"threat": first["threat"], "target": first["target"],
                    "params": first["params"],
                    **{k: v for k, v in first.items() if k.startswith("param_")},
                    "availability": sum(r["availability"] for r in rs) / len(rs),
                    "unscorable": sum(r.get("unscorable", 0.0) for r in rs) / len(rs),
                    **pool(rs)}
    return out


def criticality(rows: list[dict[str, Any]], targets: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Devices by the accuracy lost when they crash, links by the mean lost under the
    standard attacks; every seed pooled, with 95 % intervals."""
    ranking = []
    standard = {json.dumps({k: v for k, v in a.items() if k != "id"}, sort_keys=True)
                for a in LINK_ATTACKS}
    for kind, name in [("device", d) for d in targets["devices"]] + [
            ("link", lk) for lk in targets["links"]]:
        hits = [r for r in rows if r["target"] == name and (
            r["threat"] == "D1" if kind == "device" else r["params"] in standard)]
        both = pool(hits)
        ranking.append({"kind": kind, "name": name, "accuracy_drop": both["accuracy_drop"],
                        "accuracy_drop_low": both["accuracy_drop_low"],
                        "accuracy_drop_high": both["accuracy_drop_high"],
                        "availability": min(r["availability"] for r in hits),
                        "attacks": "D1 crash" if kind == "device" else
                        "L1 1e-4, L2 10 dB, L3 50% messages, L5 FGSM 0.02"})
    ranking.sort(key=lambda r: -r["accuracy_drop"])
    for i, r in enumerate(ranking, start=1):
        r["rank"] = i
    return ranking


def save_setup(bound: Any, plan_file: Path, out: Path) -> dict[str, str]:
    """The plan and its platform, copied beside the results (the report shows them)."""
    from ..platform import builtin_platforms

    out.mkdir(parents=True, exist_ok=True)
    if plan_file.resolve() != (out / "plan.yaml").resolve():
        shutil.copyfile(plan_file, out / "plan.yaml")
    source = bound.platform.source
    platform = (Path(__file__).parents[1] / "platform" / "builtin" / f"{source}.yaml"
                if source in builtin_platforms() else Path(source))
    shutil.copyfile(platform, out / "platform.yaml")
    return {"plan_file": "plan.yaml", "platform": source, "platform_file": "platform.yaml"}


def analyze(plan_file: Path, out: Path, *, samples: int = 2000, seed: int = 0,
            seeds: int = DEFAULT_SEEDS, processes: int = 0, ray: str | None = None,
            data: str | None = None, eavesdropper: EavesdropTraining | None = None,
            precisions: list[str] | None = None) -> Analysis:
    """The standard analysis of ``plan_file`` under ``seeds`` seeds (``seed``, ``seed`` + 1,
    …) on the first ``samples`` images of ``data``; results, figures and setup in ``out``.
    With ``precisions`` (e.g. fp32 and int8), the same plan at each precision side by side
    too (``precisions.py``)."""
    import hashlib

    from ..data import plan_data
    from .backend import claim, split_cores
    from .subject import check_memory

    bound = bind(plan_file, build=False)
    dataset = plan_data(data, bound)  # a bad dataset is refused here, in one line
    if ray is None:
        check_memory(bound.graph, min(samples, len(dataset)), split_cores(processes)[0], "-n")
    setup = {"plan": str(plan_file), "samples": samples, "seed": seed, "seeds": seeds,
             "plan_sha256": hashlib.sha256(plan_file.read_bytes()).hexdigest(),
             "data": dataset.describe(), "measure": dataset.measure,
             **({"precisions": precisions} if precisions else {})}
    claim(out, "analysis.json", setup, ("plan_sha256", "samples", "data"))
    setup.update(save_setup(bound, plan_file, out))
    (out / "analysis.json").write_text(json.dumps(setup, indent=2) + "\n")
    targets = plan_targets(bound.plan)
    label = bound.plan.strategy
    trials = standard_trials(label, targets, seed) + [  # further seeds: where draws matter
        t for s in range(seed + 1, seed + seeds) for t in standard_trials(label, targets, s)
        if drawn(t.threat)]
    rows = execute(trials, {label: str(plan_file)}, samples, processes, out,
                   description="analysis", ray=ray, data=data)
    conditions = list(pooled(rows).values())
    write_csv(conditions, out / "conditions.csv")
    ranking = criticality(rows, targets)
    clean = rows[0]["clean_accuracy"] if rows else 0.0
    clean_interval = ((rows[0].get("clean_accuracy_low", math.nan),
                       rows[0].get("clean_accuracy_high", math.nan)) if rows else
                      (math.nan, math.nan))
    (out / "eavesdropper").mkdir(exist_ok=True)
    reconstruction = reconstruction_by_depth(bound, dataset, training=eavesdropper, seed=seed,
                                             cache=out / "eavesdropper")
    (out / "reconstruction.json").write_text(json.dumps(reconstruction, indent=2) + "\n")
    (out / "ranking.json").write_text(json.dumps(ranking, indent=2) + "\n")
    figures = draw(conditions, ranking, reconstruction, targets, out, clean, dataset.measure,
                   BIT_CLASSES)
    if precisions:
        compare(bound, precisions, out, samples=samples, seed=seed, seeds=seeds,
                processes=processes, ray=ray, data=data)
        figures["precisions"] = out / "precision_vs_ber.png"
    return Analysis(rows, ranking, figures, clean, reconstruction, dataset.measure,
                    dataset.describe(), conditions, clean_interval)
