"""Issue 14's audit comparisons, re-run (points 1, 2 and 4), through the public code paths.

    PYTHONPATH=src python benchmarks/run.py voting_energy ber_floor sealed_replay

* ``voting_energy`` (point 1): lenet5 and resnet-small on ``rpi4x4-ethernet``, every link
  sealed (``aead:chacha20-poly1305``, as workers seal them), the whole model on pi1 and a
  2-stage pipeline, each with 1 copy and with ``vote:3`` (``sg.plan(..., replicas=3)``,
  ``partition.cost.estimate(..., vote=3)``). The busiest device's active energy (what the
  exploration minimised alone before) and the platform's total energy (every board, the
  idle ones included). The whole-model case is also costed by ``analysis.explore.evaluate``,
  the search's own objectives, as the audit ran it. Ratio: total voted / total unvoted.
* ``ber_floor`` (point 2): L1 random bit flips (``bits: all``) on every link of
  resnet-small's 2-stage pipeline at BER 1e-4 … 3e-2, several seeds, run by the campaign
  machinery (``campaign.execute``); accuracy and accuracy lost pooled over seeds with their
  95 % intervals (``metrics.pool``), and the NaN/inf (unscorable) rate. When NaN outputs
  were scored as class 0, accuracy floored at the test labels' class-0 share.
* ``sealed_replay`` (point 4): L4 replay at rate 0.3 on the sealed s0>s1 link of
  resnet-small's 2-stage pipeline: answered-and-right and lost requests in simulation
  (``LocalExecutor`` with ``SealedLinks.around``) and on real worker processes
  (``run_under_threat``, the runtime's ``MAX_ATTEMPTS`` and deadline, ``on_reject=retry``);
  the difference with a paired bootstrap 95 % interval over images (``metrics``).

Each writes its section of ``results/audit.md`` (``make bench`` overwrites latest.md; this
file keeps the audit's figures by themselves).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import shardguard as sg
from shardguard.analysis.metrics import interval, pool, resample_means, scored, wilson
from shardguard.partition.cost import estimate
from shardguard.platform import load_platform

PLATFORM = "rpi4x4-ethernet"
SEAL = "aead:chacha20-poly1305"
ENERGY_MODELS = ["lenet5", "resnet-small"]
MODEL = "resnet-small"  # points 2 and 4
BERS = [1e-4, 1e-3, 1e-2, 3e-2]
SEEDS = [0, 1, 2, 3, 4]
REPLAY_SEEDS = [5, 6, 7]
SAMPLES = 500
REPLAY_RATE = 0.3
AUDIT = Path(__file__).parent / "results" / "audit.md"
TITLE = "# Issue 14 audit, re-run (points 1, 2 and 4)"


def _section(name: str, lines: list[str]) -> None:
    """Replace (or add) the ``## name`` section of ``audit.md``, keeping the others."""
    text = AUDIT.read_text() if AUDIT.exists() else TITLE + "\n"
    head, *parts = re.split(r"(?m)^(?=## )", text)
    sections = {p.splitlines()[0][3:].strip(): p.rstrip() + "\n" for p in parts}
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    sections[name] = "\n".join([f"## {name}", "", f"Measured {stamp}.", "", *lines]) + "\n"
    AUDIT.parent.mkdir(exist_ok=True)
    AUDIT.write_text(head.rstrip() + "\n\n" + "\n".join(sections.values()))


def _pct(value: float, low: float, high: float) -> str:
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _fig(pooled: dict[str, float], key: str) -> str:
    """A pooled figure (``metrics.pool``) in %, with its 95 % interval."""
    return _pct(pooled[key], pooled[f"{key}_low"], pooled[f"{key}_high"])


# -- point 1: voting energy -----------------------------------------------------------------
def _costed(model: str, devices: int, copies: int) -> dict[str, Any]:
    platform = load_platform(PLATFORM)
    planned = sg.plan(model, platform, objective="energy", devices=devices, replicas=copies,
                      protection=SEAL)
    cost = estimate(planned.compiled, platform, vote=copies)
    layout = " → ".join("+".join([p.device, *p.replicas][:copies])
                        for p in planned.compiled.programs)
    return {"busiest": cost.max_active_j * 1e6, "active": cost.total_active_j * 1e6,
            "total": cost.total_energy_j * 1e6, "idle_boards": len(cost.idle_boards),
            "layout": layout}


def _explored(model: str, copies: int) -> dict[str, float]:
    """The search's objectives for "whole model on pi1" (``explore.evaluate``)."""
    from shardguard.analysis import explore

    spec = explore.ExploreSpec.model_validate({
        "model": model, "platform": PLATFORM, "samples": 10, "seeds": 1,
        "threats": [{"id": "L1", "target": "links", "ber": 1e-3, "bits": "exponent-high"}]})
    explore.init(spec.model_dump_json(), 1)
    row = explore.evaluate(explore.Candidate("pipeline", ("pi1",), (), (SEAL,), copies, False,
                                             SEAL))
    return {"busiest": row["energy_j"] * 1e6, "total": row["total_energy_j"] * 1e6}


def voting_energy() -> list[dict[str, Any]]:
    rows, lines = [], [
        f"Platform {PLATFORM}, every link sealed ({SEAL}). Energy per inference from the cost "
        "model (`sg.plan` + `partition.cost.estimate(vote=k)`), in µJ: *busiest* is the "
        "busiest device's active energy, *total* the platform's (active + idle of every "
        "board, unused ones included). Deterministic: no interval.", "",
        "| model | deployment | copies | devices | busiest µJ | total active µJ | "
        "total µJ (idle incl.) | total voted / unvoted |", "|---|---|---|---|---|---|---|---|"]
    for model in ENERGY_MODELS:
        for devices, what in ((1, "whole model"), (2, "2-stage pipeline")):
            one, three = _costed(model, devices, 1), _costed(model, devices, 3)
            ratio = three["total"] / one["total"]
            for k, c in ((1, one), (3, three)):
                lines.append(f"| {model} | {what} | {k} | {c['layout']} | {c['busiest']:.1f} | "
                             f"{c['active']:.1f} | {c['total']:.1f} | "
                             f"{'' if k == 1 else f'{ratio:.3f}'} |")
            rows.append({"name": f"audit vote:3 total energy, {model}, {what}",
                         "value": three["total"], "unit": "µJ", "ratio": ratio,
                         "target": 1.0, "better": "higher",
                         "note": f"unvoted {one['total']:.1f} µJ; busiest device "
                                 f"{one['busiest']:.1f} → {three['busiest']:.1f} µJ"})
    lines += ["", "The search's own objectives (`analysis.explore.evaluate`), whole model on "
              "pi1, links and the coordinator's hops sealed:", "",
              "| model | copies | busiest µJ (`energy_j`) | total µJ (`total_energy_j`) |",
              "|---|---|---|---|"]
    for model in ENERGY_MODELS:
        one, three = _explored(model, 1), _explored(model, 3)
        for k, c in ((1, one), (3, three)):
            lines.append(f"| {model} | {k} | {c['busiest']:.1f} | {c['total']:.1f} |")
        rows.append({"name": f"audit vote:3 total energy in explore, {model}, whole on pi1",
                     "value": three["total"], "unit": "µJ", "ratio": three["total"] / one["total"],
                     "target": 1.0, "better": "higher",
                     "note": f"unvoted {one['total']:.1f} µJ; busiest "
                             f"{one['busiest']:.1f} → {three['busiest']:.1f} µJ"})
    _section("1. Voting energy", lines)
    return rows


# -- point 2: the BER curve and the class-0 share -------------------------------------------
def _ber_rows(directory: Path) -> tuple[list[dict[str, Any]], float]:
    from shardguard.analysis.campaign import execute
    from shardguard.analysis.trials import Trial
    from shardguard.data import plan_data
    from shardguard.partition import bind

    path = directory / "plan.yaml"
    sg.plan(MODEL, PLATFORM, devices=2).plan.save(path)
    trials = [Trial("pipeline", {"id": "L1", "target": "every", "ber": b, "bits": "all",
                                 "seed": s}, s) for b in BERS for s in SEEDS]
    rows = execute(trials, {"pipeline": str(path)}, SAMPLES, 1, directory / "out",
                   description="L1 BER sweep")
    labels = plan_data(None, bind(path, build=False)).labels(SAMPLES)
    assert labels is not None
    return list(rows), float((labels == 0).double().mean())


def ber_floor() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        rows, class_0 = _ber_rows(Path(tmp))
    groups: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[float(r["param_ber"])].append(r)
    out, lines = [], [
        f"{MODEL}, 2-stage pipeline (`sg.plan(devices=2)`), L1 random bit flips (`bits: all`) "
        f"on every link, {SAMPLES} Fashion-MNIST test images × {len(SEEDS)} seeds, run by "
        "`campaign.execute`. Accuracy and accuracy lost in %, 95 % intervals from "
        "`metrics.pool` (images resampled, seeds pooled). Unscorable: outputs with a NaN or "
        "an infinity (wrong, never class 0), with its Wilson interval over the image × seed "
        "draws (taken as independent). Class-0 share of these labels: "
        f"{100 * class_0:.1f} % (where accuracy floored when NaN was scored as class 0).", "",
        "| BER | accuracy % [95%] | accuracy lost % [95%] | unscorable % [95%] | "
        "accuracy below class-0 share? |", "|---|---|---|---|---|"]
    clean = pool(rows)
    for ber in sorted(groups):
        p = pool(groups[ber])
        n = SAMPLES * len(groups[ber])
        bad = round(float(np.mean([r["unscorable"] for r in groups[ber]])) * n)
        ul, uh = wilson(bad, n)
        below = "yes (whole interval)" if p["accuracy_high"] < class_0 else "no"
        lines.append(f"| {ber:g} | {_fig(p, 'accuracy')} | {_fig(p, 'accuracy_drop')} | "
                     f"{_pct(bad / n, ul, uh)} | {below} |")
        row = {"name": f"audit L1 BER {ber:g} accuracy, {MODEL}", "value": 100 * p["accuracy"],
               "unit": "%", "note": f"% [95%] {_fig(p, 'accuracy')}; lost "
               f"{_fig(p, 'accuracy_drop')}; unscorable {_pct(bad / n, ul, uh)}; class-0 "
               f"share {100 * class_0:.1f}%"}
        if ber >= 1e-2:  # where every output was NaN before: the interval below the floor
            row.update(ratio=p["accuracy_high"] / class_0, target=1.0)
        out.append(row)
    lines += ["", f"Clean accuracy {_fig(clean, 'clean_accuracy')} %."]
    _section("2. The BER curve and the class-0 share", lines)
    return out


# -- point 4: sealed replay, simulation vs real -----------------------------------------------
def _sealed_outcomes(bound: Any, seed: int, x: torch.Tensor, y: torch.Tensor
                     ) -> dict[str, np.ndarray]:
    """Per image: answered and right, and lost, in simulation and on real workers, with
    the attacker drawing from ``seed`` in both."""
    from shardguard.defences.sealed import SealedLinks
    from shardguard.runtime._options import ClusterOptions
    from shardguard.runtime.threatened import run_under_threat
    from shardguard.threats.local import ThreatInterceptor
    from shardguard.threats.spec import parse_threat

    threat = parse_threat({"id": "L4", "target": "s0>s1", "rate": REPLAY_RATE, "seed": seed})
    with torch.no_grad():
        sim = sg.LocalExecutor(bound.compiled, SealedLinks("retry").around(
            [ThreatInterceptor(threat)])).run_outcome(x)
    defaults = ClusterOptions(spawn_local=True)
    real = run_under_threat(bound, threat, x.numpy(), max_attempts=defaults.max_attempts,
                            deadline_s=defaults.deadline_s, on_reject="retry")
    predicted, ok = scored(sim.output)
    real_predicted, real_ok = scored(real.outputs)
    lost_real = np.zeros(len(x), dtype=bool)
    lost_real[list(real.errors)] = True
    return {"sim": (sim.answered & ok & (predicted == y)).numpy(),
            "real": (real_ok & (real_predicted == y)).numpy() & ~lost_real,
            "sim_lost": (~sim.answered).numpy(), "real_lost": lost_real,
            "resubmitted": np.array(real.resubmitted)}


def _replayed() -> dict[str, np.ndarray]:
    """Every attacker seed's outcomes, per image: (N, seeds) arrays."""
    from shardguard.partition import bind

    data = sg.open_data(None, model=sg.load_model(MODEL))
    x, y = data.images(SAMPLES), data.labels(SAMPLES)
    assert y is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sealed.yaml"
        sg.plan(MODEL, PLATFORM, devices=2).plan.with_protection(SEAL).save(path)
        bound = bind(path)
        runs = [_sealed_outcomes(bound, seed, x, y) for seed in REPLAY_SEEDS]
    return {k: np.stack([r[k] for r in runs], axis=-1) for k in runs[0]}


def sealed_replay() -> list[dict[str, Any]]:
    from shardguard.protocol.control import MAX_ATTEMPTS

    o = _replayed()
    keys = ("sim", "real", "sim_lost", "real_lost")
    per_image = np.stack([o[k].mean(1) for k in keys])  # each image's mean over seeds
    means = resample_means(per_image)  # the same resampled images for every row: paired
    (dl, dh), (ll, lh) = interval(means[0] - means[1]), interval(means[2] - means[3])
    value = per_image.mean(1)
    agree = dl <= 0.0 <= dh and ll <= 0.0 <= lh
    n = o["sim"].size
    cell = {k: f"{_pct(value[i], *interval(means[i]))} ({int(o[k].sum())}/{n})"
            for i, k in enumerate(keys)}
    lines = [
        f"{MODEL}, 2-stage pipeline, every link sealed ({SEAL}); L4 replay at rate "
        f"{REPLAY_RATE} on s0>s1; {SAMPLES} Fashion-MNIST test images × attacker seeds "
        f"{REPLAY_SEEDS} (the same seeds in both). Simulation: `LocalExecutor` with "
        "`SealedLinks(\"retry\").around([threat])`. Real: `run_under_threat` on spawned "
        "worker processes, the attacker in the link's relay, `max_attempts` and the deadline "
        "as `ClusterOptions`' defaults, `on_reject=\"retry\"`. 95 % intervals: bootstrap "
        "over images, each with its outcomes under every seed (`metrics.resample_means`), "
        "paired for the differences.", "",
        "| | simulation % [95%] | real workers % [95%] | sim − real, points [95%] |",
        "|---|---|---|---|",
        f"| answered and right | {cell['sim']} | {cell['real']} | "
        f"{100 * (value[0] - value[1]):+.1f} [{100 * dl:+.1f}, {100 * dh:+.1f}] |",
        f"| lost requests | {cell['sim_lost']} | {cell['real_lost']} | "
        f"{100 * (value[2] - value[3]):+.1f} [{100 * ll:+.1f}, {100 * lh:+.1f}] |", "",
        f"Agree within the interval: {'yes' if agree else 'NO'} (0 "
        f"{'inside' if agree else 'outside'} both differences' intervals). Real "
        f"resubmissions: {int(o['resubmitted'].sum())} over {len(REPLAY_SEEDS)} runs. "
        f"A request is lost when all {MAX_ATTEMPTS} submissions meet the replay: "
        f"{REPLAY_RATE}^{MAX_ATTEMPTS} = {100 * REPLAY_RATE ** MAX_ATTEMPTS:.1f} %."]
    _section("4. Sealed replay: simulation vs real workers", lines)
    return [{"name": f"audit sealed L4 {REPLAY_RATE} answered-and-right, sim − real",
             "value": 100 * (value[0] - value[1]), "unit": "points",
             "note": f"sim {100 * value[0]:.1f}%, real {100 * value[1]:.1f}%; 95% "
                     f"[{100 * dl:+.1f}, {100 * dh:+.1f}]; {'agree' if agree else 'DISAGREE'}"},
            {"name": f"audit sealed L4 {REPLAY_RATE} lost requests, sim − real",
             "value": 100 * (value[2] - value[3]), "unit": "points",
             "note": f"sim {int(o['sim_lost'].sum())}/{n}, real {int(o['real_lost'].sum())}/"
                     f"{n}; 95% [{100 * ll:+.1f}, {100 * lh:+.1f}]"}]


BENCHMARKS = [voting_energy, ber_floor, sealed_replay]
