"""The main job, end to end on what exists: ``shardguard demo`` (``make demo``).

Loads the trained demo model, evaluates it on the Fashion-MNIST test set,
profiles its graph, plans it onto the built-in 4-device platform and checks the
partitioned model against the whole one; runs it on local worker processes and
checks every output; analyses its vulnerabilities; shows an attack detected and
mitigated by sealed links and what that costs each device; explores the
deployments that trade security against energy per device; and writes one HTML
report (``out/demo/report.html``) with a summary of the findings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .._progress import log
from ..runtime.netns import Network
from ._security import ci, defend_step, explore_step, planned_outputs
from ._settings import (
    DEMO_MODEL,
    DEMO_PLATFORM,
    DEMO_PROTECTION,
    LARGE,
    LARGE_PLATFORM,
    DemoSizes,
    sizes_for,
)

T = TypeVar("T")


@dataclass
class DemoSummary:
    out_dir: str
    facts: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)  # step → seconds


class _Steps:
    def __init__(self, total: int, summary: DemoSummary) -> None:
        self.total, self.done, self.summary = total, 0, summary

    def run(self, key: str, title: str, fn: Callable[[], T]) -> T:
        """Step ``key`` (its name in ``summary.steps``), announced as ``title``."""
        self.done += 1
        log(f"[{self.done}/{self.total}] {title}")
        start = time.perf_counter()
        result = fn()
        self.summary.steps[key] = round(time.perf_counter() - start, 2)
        return result

    def line(self) -> str:
        return "times      " + ", ".join(f"{key} {seconds:.0f} s"
                                         for key, seconds in self.summary.steps.items())


@dataclass
class _Demo:
    """What the steps of one demo run share: where it writes, the model, data and sizes."""

    out_dir: Path
    model: str
    data: str | None
    platform: str
    loaded: Any
    test: Any
    sizes: DemoSizes
    summary: DemoSummary
    steps: _Steps


def run_demo(out_dir: Path, data: str | Path | None = None, model: str = DEMO_MODEL,
             platform: str | None = None, network: Network = "loopback") -> DemoSummary:
    """The demo on ``model`` (a trained zoo model) and ``platform`` (default:
    ``DEMO_PLATFORM``, or ``LARGE_PLATFORM`` for an ImageNet-size model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = str(data) if data is not None else None  # every step reads the same data
    summary = DemoSummary(str(out_dir))
    demo = _load(out_dir, model, data, platform, summary)
    steps, platform = demo.steps, demo.platform
    evaluated, accuracy, graph = _evaluate_and_profile(demo)
    planned, checked = _plan_and_check(demo, graph)
    _run_on_workers(demo, planned, network)
    _analyze(demo)
    defence = steps.run("defend", "defending: the same attack on a link, unsealed and then "
                        f"sealed with {DEMO_PROTECTION}",
                        lambda: defend_step(planned, demo.test, out_dir, platform,
                                            demo.sizes.defence))
    summary.lines += defence.pop("lines")
    summary.facts.update(defence)
    cost = planned.cost
    summary.facts.update(model=model, test_accuracy=accuracy, evaluated_images=evaluated,
                         macs=graph.total_macs, params=graph.total_params, platform=platform,
                         stages=len(planned.compiled.programs), latency_s=cost.latency_s,
                         throughput=cost.throughput, check_same_class=checked.same_class,
                         check_max_abs_diff=checked.max_abs_diff)
    exploration = steps.run("explore", "exploring deployments: security against energy "
                            f"per device (NSGA-II, {demo.sizes.explore_budget} candidates)",
                            lambda: explore_step(model, platform, out_dir / "explore", data,
                                                 demo.sizes))
    summary.lines += exploration.pop("lines")
    summary.facts.update(exploration)
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")

    from ..analysis.report import write_report

    report = steps.run("report", "writing the report", lambda: write_report(out_dir,
                                                                  out_dir / "report.html"))
    summary.lines.append(f"report     {report} (open it in a browser); numbers in "
                         f"{out_dir}/summary.json")
    summary.facts.update(report=str(report))
    summary.lines.append(steps.line())
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def _load(out_dir: Path, model: str, data: str | None, platform: str | None,
          summary: DemoSummary) -> _Demo:
    """Step 1: the model and the data. A bad platform or an untrained model is refused
    here, before the long steps."""
    from ..data import open_data
    from ..platform import load_platform
    from ..zoo import load_model

    steps = _Steps(9, summary)

    def load() -> tuple[Any, Any]:
        loaded = load_model(model)
        return loaded, open_data(data, model=loaded)

    loaded, test = steps.run("load", f"loading {model} and the data", load)
    log(f"data: {test.describe()}")
    assert loaded.input_shape is not None
    sizes = sizes_for(loaded.input_shape)
    platform = platform or (LARGE_PLATFORM if sizes is LARGE else DEMO_PLATFORM)
    load_platform(platform)  # a bad platform is refused now, not after the evaluation
    _refuse_untrained(loaded, test)
    return _Demo(out_dir, model, data, platform, loaded, test, sizes, summary, steps)


def _evaluate_and_profile(demo: _Demo) -> tuple[int, float, Any]:
    """Steps 2 and 3: accuracy on the test images, and the traced, profiled graph.
    Returns (images evaluated, accuracy, graph)."""
    from ..analysis.metrics import rate
    from ..graph import trace
    from ..zoo.train import top1

    loaded, test = demo.loaded, demo.test
    evaluated = min(len(test), demo.sizes.evaluate or len(test))
    predicted = demo.steps.run("evaluate", f"evaluating it on {evaluated} images",
                               lambda: top1(loaded.module, test.batches(evaluated), evaluated))
    truth = test.labels(evaluated)
    right = int((predicted == truth).sum()) if truth is not None else 0
    accuracy = right / evaluated if truth is not None else float("nan")
    graph = demo.steps.run("profile", "tracing and profiling its graph",
                           lambda: trace(loaded.module, loaded.input_shape, measure=True))
    recorded = (f" (recorded {loaded.meta.test_accuracy:.2%} on the whole test set)"
                if loaded.meta else "")
    demo.summary.lines += [
        f"model      {demo.model}: {graph.total_macs / 1e6:.1f} M MACs, "
        f"{graph.total_params / 1e3:.1f} k parameters, {len(graph.compute_nodes)} graph nodes",
        f"data       {test.describe()}",
        f"accuracy   {rate(right, evaluated)} on {evaluated} images{recorded}"
        if truth is not None else "accuracy   none to measure (no labels): attacks are "
        "scored by agreement with the clean model's answers"]
    demo.summary.facts.update(data=test.describe(), measure=test.measure)
    return evaluated, accuracy, graph


def _plan_and_check(demo: _Demo, graph: Any) -> tuple[Any, Any]:
    """Step 4: a throughput-optimal pipeline (plan.yaml, plan.png), checked against the
    whole model. Returns (planned, check result)."""
    from ..analysis.plan_figure import draw_plan
    from ..local import LocalExecutor, check
    from ..partition import ModelRef, make_plan
    from ..platform import load_platform

    out_dir, loaded, test = demo.out_dir, demo.loaded, demo.test

    def plan_and_check() -> tuple[Any, Any]:
        target = load_platform(demo.platform)
        planned = make_plan(graph, ModelRef(ref=demo.model,
                                            input_shape=list(loaded.input_shape)),
                            target, strategy="pipeline", objective="throughput")
        planned.plan.save(out_dir / "plan.yaml", force=True)
        draw_plan(planned, out_dir / "plan.png")
        return planned, check(LocalExecutor(planned.compiled), loaded.module,
                              test.batches(demo.sizes.check))

    checked_n = min(len(test), demo.sizes.check or len(test))
    planned, checked = demo.steps.run(
        "plan+check", f"planning it onto {demo.platform} and checking the partitioned model "
        f"on {checked_n} images", plan_and_check)
    cost = planned.cost
    demo.summary.lines += [
        f"plan       {len(planned.compiled.programs)} pipeline stages on "
        f"{', '.join(cost.devices)}: latency {cost.latency_s * 1e3:.2f} ms, "
        f"{cost.throughput:.0f} inferences/s, max {cost.max_active_j * 1e3:.2f} mJ per device, "
        f"{cost.total_energy_j * 1e3:.2f} mJ in total, the idle power of "
        f"{len(cost.idle_boards)} unused board(s) included (cost model) — "
        f"{out_dir}/plan.yaml, plan.png",
        f"check      partitioned = whole model on {checked.same_class}/{checked.samples} "
        f"images (max |difference| {checked.max_abs_diff:.1e})"]
    demo.summary.facts.update(max_device_energy_j=cost.max_active_j,
                              total_energy_j=cost.total_energy_j,
                              idle_boards=sorted(cost.idle_boards))
    return planned, checked


def _run_on_workers(demo: _Demo, planned: Any, network: Network) -> None:
    """Step 5: the plan on local worker processes, every output compared with the local
    executor's."""
    test, sizes = demo.test, demo.sizes

    def run_distributed() -> Any:
        from ..partition import bind
        from ..runtime.cluster import Cluster

        bound = bind(demo.out_dir / "plan.yaml")
        x = test.images(sizes.distributed)
        with Cluster(bound, spawn_local=True, network=network) as c:
            result = c.stream(x.numpy(), batch=4)
        with_local = planned_outputs(bound, x)
        y = test.labels(sizes.distributed)
        return result, with_local, (y.numpy() if y is not None else with_local.argmax(1))

    result, local_out, labels = demo.steps.run(
        "run", f"running it on {len(planned.cost.devices)} local worker processes (ZeroMQ, "
        "onnxruntime) and checking every output", run_distributed)
    from ..analysis.metrics import rate, scored

    scores = scored(result.outputs)  # a NaN or infinite output is no answer, no class
    predicted, answered = scores[0].numpy(), scores[1].numpy()
    same = int((predicted[answered] == local_out[answered].argmax(1)).sum())
    diff = float(np.abs(result.outputs[answered] - local_out[answered]).max())
    right = int((predicted[answered] == labels[answered]).sum())
    pct = result.percentiles()
    demo.summary.lines += [
        f"workers    {result.answered}/{len(result.latency_s)} requests answered, "
        f"{result.throughput:.0f} images/s, p50 {pct.get('p50', float('nan')) * 1e3:.1f} ms; "
        f"same class as the local executor on {same}/{int(answered.sum())} "
        f"(max |difference| {diff:.1e}); {'accuracy' if test.labelled else 'agreement'} on "
        f"the answered images {rate(right, int(answered.sum()))}"]
    demo.summary.facts.update(distributed_answered=result.answered, distributed_same_class=same,
                              distributed_throughput=result.throughput)


def _analyze(demo: _Demo) -> None:
    """Step 6: a short vulnerability analysis of the plan; the most critical part, and what
    an eavesdropper rebuilds from a link."""
    from ..analysis.analyze import analyze
    from ..threats.eavesdrop import EavesdropTraining

    out_dir, summary = demo.out_dir, demo.summary
    eavesdropper = EavesdropTraining(images=demo.sizes.eavesdrop_images,
                                     max_epochs=demo.sizes.eavesdrop_epochs)
    analysis = demo.steps.run("analyze", "a short vulnerability analysis (bit flips, noise, "
                              "crashes, per link)",
                              lambda: analyze(out_dir / "plan.yaml", out_dir / "analysis",
                                              samples=demo.sizes.analysis, data=demo.data,
                                              eavesdropper=eavesdropper))
    worst = analysis.ranking[0]
    by_class = {r["param_bits"]: r for r in analysis.conditions
                if r["threat"] == "L1" and r["target"] == "every" and r["param_ber"] == 1e-4}
    nan = {"accuracy": float("nan"), "accuracy_low": float("nan"),
           "accuracy_high": float("nan")}
    summary.lines += [
        f"attacks    at a bit-error rate of 1e-4 on every link, accuracy is "
        f"{ci(by_class.get('mantissa', nan), 'accuracy')} with mantissa flips but "
        f"{ci(by_class.get('exponent-high', nan), 'accuracy')} with flips of bit 30 "
        f"({analysis.conditions[0]['seeds'] if analysis.conditions else 0} seeds pooled, 95% "
        f"intervals); most critical: {worst['kind']} {worst['name']} "
        f"(−{ci(worst, 'accuracy_drop')}) — {out_dir}/analysis/"]
    if analysis.reconstruction:
        shallow, deep = analysis.reconstruction[0], analysis.reconstruction[-1]
        summary.lines.append(
            f"eavesdrop  an attacker rebuilds the input from a link at PSNR "
            f"{shallow['psnr_db']:.1f} dB / SSIM {shallow['ssim']:.2f} after {shallow['cut_after']}"
            f", {deep['psnr_db']:.1f} dB / {deep['ssim']:.2f} after {deep['cut_after']} "
            f"(decoders trained {'/'.join(str(r['epochs']) for r in analysis.reconstruction)}"
            f" epochs)")
    summary.facts.update(most_critical=f"{worst['kind']} {worst['name']}",
                         l1_1e4_accuracy={k: r["accuracy"] for k, r in by_class.items()},
                         l1_1e4_accuracy_interval={k: [r["accuracy_low"], r["accuracy_high"]]
                                                   for k, r in by_class.items()})


def _refuse_untrained(loaded: Any, test: Any) -> None:
    """The demo measures a trained model on data of its own classes."""
    from ..data import ClassList
    from ..errors import ConfigError
    from ..zoo._registry import FASHION_MNIST

    if loaded.weights is None:
        raise ConfigError(f"{loaded.ref}: has no trained weights; the demo needs a trained "
                          "model (see `shardguard zoo`)")
    classes: ClassList | None = loaded.classes
    if test.source.kind == "idx" and classes is not None and classes != FASHION_MNIST:
        raise ConfigError(f"{loaded.ref} classifies {len(classes)} classes that are not "
                          "Fashion-MNIST's; give --data images of its own classes")
