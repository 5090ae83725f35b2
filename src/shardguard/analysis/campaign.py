"""Campaigns: sweep threat × target × intensity × strategy, one tidy row per trial.

    shardguard campaign campaign.yaml -o results/

A campaign file names the model, the platform, the strategies and a list of
threats whose parameters may be lists (every combination is a trial) and whose
``target`` may be ``devices`` or ``links`` (each one of the plan's)::

    model: resnet-small
    platform: rpi4x4-ethernet
    strategies: [pipeline, spatial]
    objective: energy
    samples: 2000
    seeds: [0]
    threats:
      - {id: L1, target: every, ber: [1.0e-7, 1.0e-5, 1.0e-3], bits: [exponent-high, mantissa]}
      - {id: D1, target: devices}
    defences: [none, "seal:aead:chacha20-poly1305", "vote:3", freivalds, guard]

Each threat runs under each defence (``defences/catalogue.py``); a row then adds
the defence's detection rate (of the samples the threat harmed without it), its
false-positive rate on clean traffic, and the energy it costs each device.
Defences apply to the threats the local executor runs directly (D1, D3, D4, D5,
L1–L4); voting and Freivalds share the stage's weights here, so they are not
paired with D5.

Trials run on local processes, in the local executor (``execution: local``); a row
says ``simulation_only`` when the threat cannot act on real workers at all (D4
adversarial, D5, L5, L6 need gradients, stored weights or training). Each finished trial is
appended to ``results.jsonl`` at once, so an interrupted campaign resumes where
it stopped; ``results.csv`` and ``results.parquet`` are written at the end. An L6
trial trains its decoder as ``analyze`` does (``leakage.eavesdropped``), with a bar
of its own, and its row gives the epochs it trained and whether it converged.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from .._progress import Steps, progress
from ..errors import ConfigError
from ..partition.plan import Objective, Strategy
from .rows import Rows, table, write_csv
from .subject import (
    Subject,
    check_memory,
    load_spec,
    load_subject,
    model_ref,
    profile_images,
    subject_data,
)
from .trials import Trial, matched, plan_precision, trial_threat

SUPPORTED = ("D1", "D2", "D3", "D4", "D5", "L1", "L2", "L3", "L4", "L5", "L6")


class CampaignSpec(Subject):
    """A campaign: the model, data and platform (``Subject``), then what to sweep."""

    strategies: Annotated[list[Strategy], Field(min_length=1)] = ["pipeline"]
    objective: Objective = "energy"
    samples: Annotated[int, Field(ge=1, le=10_000)] = 2000  # the first N images of the data
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    threats: Annotated[list[dict[str, Any]], Field(min_length=1)]
    processes: Annotated[int, Field(ge=0)] = 0  # 0: one per core
    deadline_s: Annotated[float, Field(gt=0)] = 10.0  # a request later than this is lost
    defences: Annotated[list[str], Field(min_length=1)] = ["none"]
    precision: Literal["fp32", "int8"] = "fp32"  # int8: every stage quantized (quantize.py)


def expand(spec: CampaignSpec, targets: dict[str, dict[str, list[str]]]) -> list[Trial]:
    """Every trial of the campaign; ``targets[strategy]`` lists its plan's devices and links."""
    from ..defences.catalogue import parse_defence
    from ..threats.spec import check_int8, parse_threat

    defences = [parse_defence(d) for d in spec.defences]
    inside = [d.name for d in defences if d.kind == "freivalds" or d.placement in (
        "activations", "both")]
    if spec.precision == "int8" and inside:
        raise ConfigError(f"defences: {inside[0]!r} checks inside the stages, which an int8 "
                          "plan runs in onnxruntime (guard:links and the others work)")
    trials = []
    for strategy in spec.strategies:
        for i, entry in enumerate(spec.threats):
            if entry.get("id") not in SUPPORTED:
                raise ConfigError(f"threats.{i}: {entry.get('id')!r} is not available in "
                                  f"campaigns yet (available: {', '.join(SUPPORTED)})")
            keys = sorted(entry)
            for combo in itertools.product(*[_choices(k, entry[k]) for k in keys]):
                threat = dict(zip(keys, combo))
                names = matched(threat.get("target", "every"), targets[strategy], entry,
                                 f"threats.{i}", strategy)
                for name in names:
                    for seed in spec.seeds:
                        concrete = {**threat, "target": name, "seed": seed}
                        parsed = parse_threat(concrete, f"threats.{i}")  # validate now
                        if spec.precision == "int8":
                            check_int8(parsed, f"threats.{i}", "the plan is int8")
                        for defence in defences:
                            if defended(parsed, defence.kind):
                                trials.append(Trial(strategy, concrete, seed, defence.name))
    return trials


def defended(threat: Any, kind: str) -> bool:
    """Whether a trial of ``threat`` under a defence of ``kind`` means something here."""
    from ..threats.spec import Compromised

    if kind == "none":
        return True
    if threat.id in ("D2", "L5", "L6") or (isinstance(threat, Compromised)
                                           and threat.mode == "adversarial"):
        return False  # run by their own paths, which take no defence
    return not (threat.id == "D5" and kind in ("vote", "freivalds"))


def plan_key(strategy: str, replicas: int) -> str:
    return strategy if replicas == 1 else f"{strategy}@{replicas}"


def _choices(key: str, value: Any) -> list[Any]:
    """A list sweeps its values; but ``bits: [30, 29]`` is one set of bit positions."""
    if not isinstance(value, list):
        return [value]
    if key == "bits" and all(isinstance(v, int) for v in value):
        return [value]
    return value


def _cell(value: Any) -> Any:
    """Numbers stay numbers and null stays null (``patience: null`` beside ``patience: 2``);
    anything else becomes text (one type per column)."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return value if isinstance(value, str) else json.dumps(value)


# -- worker processes ----------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _init(plan_files: dict[str, str], samples: int, threads: int,
          deadline_s: float = 10.0, data: str | None = None) -> None:
    import torch

    from ..data import plan_data
    from ..local import LocalExecutor
    from ..partition import bind
    from ..runtime.quantize import calibrate
    from .metrics import scored

    torch.set_num_threads(threads)
    _STATE.clear()  # a reused process (Ray keeps its workers) starts this campaign afresh
    _STATE.update(bound={}, clean={}, deadline_s=deadline_s)
    for key, path in plan_files.items():
        bound = bind(path)
        if "x" not in _STATE:  # every plan is of the same model: the same images
            dataset = plan_data(data, bound)
            _STATE.update(data=dataset, x=dataset.images(samples), y=dataset.labels(samples))
        x = _STATE["x"]
        calibrate(bound.compiled, _STATE["data"])  # int8: the first training images, as
        _STATE["bound"][key] = bound  # every process (pool or Ray) reads the same ones
        if "@" not in key:  # replicas do not change the clean answers
            with torch.no_grad():
                _STATE["clean"][key] = scored(LocalExecutor(bound.compiled).run(x))[0]


def run_trial(trial: Trial) -> dict[str, Any]:
    """One trial in this process: the threat in the local executor; one tidy row."""

    from ..defences.catalogue import parse_defence
    from ..threats.spec import Straggler, simulation_only
    from .metrics import measure, reference, scored

    threat = trial_threat(trial)  # this trial's own stream; its key stays as it was
    defence = parse_defence(trial.defence)
    bound = _STATE["bound"][plan_key(trial.strategy, defence.replicas)]
    x, clean = _STATE["x"], _STATE["clean"][trial.strategy]
    y, scored_by = reference(_STATE["y"], clean)  # without labels: the clean top-1
    outcome, extra = _undefended(bound, threat, x, y, trial.key)
    cost = _straggler_cost(bound, threat) if isinstance(threat, Straggler) else bound.cost
    if defence.kind != "none":
        harmed = ~outcome.answered | (scored(outcome.output)[0] != clean)
        outcome = _outcome(bound, threat, x, defence, seed=trial.seed)
        flagged = defence.flagged(len(x))
        energy = defence.energy_j(bound.compiled, bound.platform)
        extra.update(
            detection_rate=float((flagged & harmed).sum() / harmed.sum()) if harmed.any()
            else float("nan"),
            harmed_without_defence=float(harmed.float().mean()),
            false_positive_rate=_false_positives(trial.strategy, defence, bound, x),
            defence_energy_j=json.dumps({d: round(j, 9) for d, j in energy.items()}),
            max_defence_energy_j=max(energy.values(), default=0.0))
    predicted, scorable = scored(outcome.output)
    metrics = measure(y, clean, predicted, outcome.answered, outcome.degraded, scorable)
    params = {k: v for k, v in trial.threat.items() if k not in ("id", "target", "seed")}
    return {"trial": trial.key, "strategy": trial.strategy, "defence": trial.defence,
            "threat": threat.id,
            "target": threat.target, "seed": trial.seed, "stream_seed": threat.seed,
            "params": json.dumps(params, sort_keys=True), "execution": "local",
            "precision": plan_precision(bound.plan),
            "measure": scored_by,
            "simulation_only": simulation_only(threat),
            **{f"param_{k}": _cell(v) if k != "bits" else str(v) for k, v in params.items()},
            **metrics.row(), "latency_s": cost.latency_s,
            "max_active_energy_j": cost.max_active_j, **extra}


def _undefended(bound: Any, threat: Any, x: Any, y: Any,
                label: str = "") -> tuple[Any, dict[str, Any]]:
    """The outcome of ``threat`` on the plan without a defence, and the extra columns the
    threat reports (an eavesdropper's reconstruction quality, epochs and convergence);
    ``label`` names the trial in progress notes."""
    from ..threats.attacks import adversarial_device, adversarial_link
    from ..threats.spec import Adversarial, Compromised, Eavesdrop, Outage

    if isinstance(threat, Adversarial):  # needs gradients through the downstream stages
        return adversarial_link(bound.compiled, threat, x, y), {}
    if isinstance(threat, Compromised) and threat.mode == "adversarial":
        return adversarial_device(bound.compiled, threat, x, y), {}
    if isinstance(threat, Outage):
        return _outage(bound, threat, x, _STATE["deadline_s"]), {}
    if isinstance(threat, Eavesdrop):  # trained as analyze's is, to convergence by default
        from .leakage import eavesdropped

        return _outcome(bound, None, x), eavesdropped(bound, threat, x, _STATE["data"], label)
    return _outcome(bound, threat, x), {}


def _straggler_cost(bound: Any, threat: Any) -> Any:
    """A straggler changes timing only: the cost model with the slowed devices."""
    from dataclasses import replace

    from ..partition.cost import estimate

    slow = dict(bound.platform.devices)
    for name, device in slow.items():
        if threat.target in ("every", name):
            slow[name] = replace(device, mac_rate=device.mac_rate / threat.factor)
    return estimate(bound.compiled, replace(bound.platform, devices=slow))


def _outcome(bound: Any, threat: Any, x: Any, defence: Any = None, seed: int = 0) -> Any:
    import torch

    from ..local import LocalExecutor
    from ..threats.local import interceptor, weight_flips
    from ..threats.spec import WeightFlips

    hooks = [] if threat is None or isinstance(threat, WeightFlips) else [
        interceptor(threat, bound.compiled)]
    if defence is not None:
        bounds = _bounds(bound) if defence.kind == "guard" else None
        hooks = defence.hooks(bound.compiled, hooks, bounds=bounds, seed=seed)
    with torch.no_grad():
        if isinstance(threat, WeightFlips):
            with weight_flips(bound.compiled, threat):
                if defence is None or not defence.refuses_weights(bound.compiled, len(x)):
                    return LocalExecutor(bound.compiled, hooks).run_outcome(x)
            # M7: the changed stages were refused and reloaded from the trusted weights
        return LocalExecutor(bound.compiled, hooks).run_outcome(x)


def _bounds(bound: Any) -> Any:
    """Range-guard bounds (links, activations) for this plan, profiled once on clean
    training images."""
    cache = _STATE.setdefault("bounds", {})
    if id(bound) not in cache:
        from ..defences.guards import profile_guards

        count = profile_images(5000, bound.plan.model.input_shape)
        cache[id(bound)] = profile_guards(bound.compiled, _STATE["data"].train_images(count))
    return cache[id(bound)]


def _false_positives(strategy: str, defence: Any, bound: Any, x: Any) -> float:
    """Share of clean samples the defence flags (no threat), once per plan and defence."""
    cache: dict[tuple[str, str], float] = _STATE.setdefault("fpr", {})
    if (strategy, defence.name) not in cache:
        _outcome(bound, None, x, defence)
        cache[(strategy, defence.name)] = float(defence.flagged(len(x)).float().mean())
    return cache[(strategy, defence.name)]


def _outage(bound: Any, threat: Any, x: Any, deadline_s: float) -> Any:
    """D2, simulated: requests stream one per period (the cost model's); those that need
    the stopped device while it is out wait for it, and are lost if the wait exceeds
    the deadline. Values are unchanged."""
    import torch

    outcome = _outcome(bound, None, x)
    if not any(threat.target in ("every", d) for d in bound.plan.devices_used()):
        return outcome
    arrival = torch.arange(len(x), dtype=torch.float64) * bound.cost.period_s
    out = (arrival >= threat.start_s) & (arrival < threat.start_s + threat.seconds)
    wait = threat.start_s + threat.seconds - arrival
    lost = out & (wait + bound.cost.latency_s > deadline_s)
    outcome.answered &= ~lost
    outcome.output[lost] = float("nan")
    return outcome


def run_campaign(spec: CampaignSpec, out: Path, ray: str | None = None) -> Rows:
    """Run every trial not already in ``out/results.jsonl``; return all rows (``.table()``:
    as an Arrow table)."""
    from ..graph import trace
    from ..partition import load_plan, make_plan
    from ..partition.build import with_precision
    from ..platform import load_platform

    loaded, shape = load_subject(spec)
    data = subject_data(spec, loaded, shape)  # a bad dataset is refused here, in one line
    graph = trace(loaded.module, shape)
    if ray is None:
        from .backend import split_cores

        check_memory(graph, min(spec.samples, len(data)), split_cores(spec.processes)[0],
                     "samples in the campaign")
    platform = load_platform(spec.platform)
    from ..defences.catalogue import parse_defence

    replicas = sorted({1, *(parse_defence(d).replicas for d in spec.defences)})
    from .backend import claim

    claim(out, "campaign.json", {**spec.model_dump(mode="json"),  # the report reads it too
                                 "data_used": data.describe(), "measure": data.measure},
          ("model", "weights", "platform", "objective", "samples", "deadline_s", "input_shape",
           "preprocess", "data_used", "precision"))
    plan_files: dict[str, str] = {}
    targets: dict[str, dict[str, list[str]]] = {}
    for strategy in spec.strategies:
        for k in replicas:
            key = plan_key(strategy, k)
            path = out / "plans" / f"{key}.yaml"
            if not path.exists():
                planned = make_plan(graph, model_ref(spec, shape), platform, strategy=strategy,
                                    objective=spec.objective, replicas=k)
                if spec.precision == "int8":
                    planned = with_precision(planned, graph, platform, "int8")
                planned.plan.save(path)
                plan = planned.plan
            else:
                plan = load_plan(path)
            plan_files[key] = str(path)
            if k == 1:
                targets[strategy] = plan_targets(plan)
    return execute(expand(spec, targets), plan_files, spec.samples, spec.processes, out,
                   deadline_s=spec.deadline_s, ray=ray, data=spec.data)


def plan_targets(plan: Any) -> dict[str, list[str]]:
    """What ``devices`` and ``links`` mean as a threat target for ``plan``."""
    links = sorted({f"{lk.src}>{lk.dst}" for lk in plan.links})
    return {"devices": plan.devices_used(), "links": links}


def execute(trials: list[Trial], plan_files: dict[str, str], samples: int, processes: int,
            out: Path, description: str = "campaign", deadline_s: float = 10.0,
            ray: str | None = None, data: str | None = None) -> Rows:
    """Run the trials not already in ``out/results.jsonl`` on a process pool (or a Ray
    cluster: ``analysis/backend.py``); all rows."""
    from .backend import Backend, Journal, split_cores

    out.mkdir(parents=True, exist_ok=True)
    journal = Journal(out / "results.jsonl", "trial")
    todo = [t for t in trials if t.key not in journal]
    processes, threads = split_cores(processes)
    with progress() as bar:
        steps = Steps(bar)  # a trial that notes its steps (L6's epochs) gets a bar of its own
        backend = Backend(_init, (plan_files, samples, threads, deadline_s, data),
                          processes=processes, ray=ray, on_note=steps.note)
        task = bar.add_task(description, total=len(trials), completed=len(trials) - len(todo),
                            info=backend.name)
        with backend:
            for _, row in backend.map(run_trial, todo):
                journal.add(row)
                steps.finish(row["trial"], row.get("epochs"))
                bar.update(task, advance=1, info=f"{row['threat']} {row['target']}")
    rows = Rows(journal.rows[t.key] for t in trials)  # this sweep's, not whatever else is there
    write_tables(rows, out)
    return rows


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    import pyarrow.parquet as pq

    # per-image outcomes (for pooling seeds) stay in results.jsonl and the Parquet file
    write_csv(rows, out / "results.csv", leave_out=("outcomes",))
    pq.write_table(table(rows), out / "results.parquet")


def load_campaign(path: str | Path) -> CampaignSpec:
    """A campaign file; its paths are relative to it."""
    return load_spec(CampaignSpec, Path(path))
