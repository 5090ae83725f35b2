"""Commands on plans: ``platforms``, ``plan``, ``check``, ``cost``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..protections import names
from ._options import (
    CalibrationImages,
    Classes,
    DataDir,
    Force,
    InputShape,
    PreprocessOption,
    count,
    parse_shape,
    refuse_overwrite,
)
from .app import app
from .models import ModelRef

if TYPE_CHECKING:  # the CLI imports the library only in the commands that use it
    from ..graph import Graph
    from ..partition import ModelRef as PlanModel


@app.command()
def platforms(
    name: Annotated[str | None, typer.Argument(help="A platform to show in full.")] = None,
) -> None:
    """List the built-in platforms, or show one with the source of every figure.

    Example: shardguard platforms rpi4x4-ethernet
    """
    from rich.console import Console
    from rich.table import Table

    from ..platform import builtin_platforms, load_platform

    console = Console(width=160)
    if name is None:
        for ref in builtin_platforms():
            p = load_platform(ref)
            console.print(f"{ref:20s} {p.description}")
        return
    p = load_platform(name)
    table = Table("device", "figure", "value", "source", title=f"{p.name}: {p.description}")
    for d in p.devices.values():
        for key, source in d.sources.items():
            group, _, item = key.partition(".")
            value = (d.rate_for(item) if group == "mac_rates" else
                     d.crypto_cycles_per_byte[item] if item else getattr(d, key))
            text = (", ".join(sorted(value)) if isinstance(value, frozenset) else str(value)
                    if isinstance(value, bool) else f"{value:.4g}")
            table.add_row(d.name, key, text, source)
    for key, source in p.medium_sources.items():
        table.add_row("(medium)", key, f"{getattr(p.medium, key):.4g}", source)
    console.print(table)


# plan's options, declared here so that the command reads as a list of them
_Platform = Annotated[str, typer.Option("--platform", "-p",
                                        help="Built-in platform name or platform YAML.")]
_Output = Annotated[Path, typer.Option("--output", "-o", help="Plan file to write.")]
_Strategy = Annotated[str, typer.Option(help="pipeline, spatial, channel or auto.")]
_Objective = Annotated[str, typer.Option(
    help="latency, throughput, energy (max per device) or energy-total.")]
_Replicas = Annotated[int, typer.Option(help="Copies of every stage, on distinct devices.")]
_Protection = Annotated[str, typer.Option(
    help=f"Seal every link between stages: {', '.join(names())} (costed when "
         "planning).")]
_Stages = Annotated[int | None, typer.Option(
    help="Pipeline: exactly this many stages, on as many devices (forces a split the "
         "optimiser would not make).")]
_Devices = Annotated[int | None, typer.Option(
    help="Spread the plan over exactly this many devices: a pipeline's stages, or the "
         "tiles or channel groups of a spatial or channel split.")]
_Weights = Annotated[Path | None, typer.Option("--weights", "-w",
                                               help="State-dict file for the model.")]
_Precision = Annotated[str, typer.Option(
    help="fp32, or int8: every stage post-training quantized (calibrated when run or "
         "checked, on --data).")]
_Figure = Annotated[Path | None, typer.Option(help="Also draw the plan to this PNG.")]


@app.command()
def plan(
    model: ModelRef,
    platform: _Platform,
    output: _Output,
    strategy: _Strategy = "pipeline",
    objective: _Objective = "latency",
    replicas: _Replicas = 1,
    protection: _Protection = "none",
    stages: _Stages = None,
    devices: _Devices = None,
    input_shape: InputShape = None,
    weights: _Weights = None,
    preprocess: PreprocessOption = None,
    classes: Classes = None,
    precision: _Precision = "fp32",
    figure: _Figure = None,
    force: Force = False,
) -> None:
    """Partition a model onto a platform's devices and write the plan as YAML.

    Example: shardguard plan resnet-small --platform rpi4x4-ethernet --strategy auto -o plan.yaml

    Example: shardguard plan lenet5 --platform mixed-wifi --protection aead:chacha20-poly1305

    Example: shardguard plan resnet18 -p rpi4x4-ethernet --stages 2 -o plan.yaml

    Paths the plan names (a model file, weights, a class list, a platform file) are
    written relative to the plan's directory.
    """
    from ..partition import make_plan
    from ..partition.build import with_precision
    from ..platform import load_platform
    from ._tables import show, stage_table, summary_line

    _check_plan_options(strategy, objective, replicas, stages, devices)
    if precision not in ("fp32", "int8"):
        from ..errors import ConfigError

        raise ConfigError(f"--precision {precision!r}: expected fp32 or int8")
    refuse_overwrite(output, force)
    if figure is not None:
        refuse_overwrite(figure, force)
    graph, shape = _traced(model, weights, input_shape)
    target = load_platform(platform)
    ref = _plan_model(model, weights, shape, preprocess, classes)
    planned = make_plan(graph, ref, target, strategy=strategy,  # type: ignore[arg-type]
                        objective=objective, replicas=replicas,  # type: ignore[arg-type]
                        protection=protection, devices=devices or stages)
    if precision == "int8":
        planned = with_precision(planned, graph, target, "int8")
    planned.plan.save(output, force=force)
    show(stage_table(planned))
    print(summary_line(planned))
    print(f"plan written to {output}")
    if figure is not None:
        from ..analysis.plan_figure import draw_plan

        draw_plan(planned, figure)
        print(f"figure written to {figure}")


def _check_plan_options(strategy: str, objective: str, replicas: int, stages: int | None,
                        devices: int | None) -> None:
    """Refuse a strategy, objective or count ``plan`` does not take, in one line."""
    from ..errors import ConfigError

    if strategy not in ("pipeline", "spatial", "channel", "auto"):
        raise ConfigError(f"--strategy {strategy!r}: expected pipeline, spatial, channel or auto")
    if objective not in ("latency", "throughput", "energy", "energy-total"):
        raise ConfigError(f"--objective {objective!r}: expected latency, throughput, energy "
                          "or energy-total")
    count("--replicas", replicas)
    count("--stages", stages)
    count("--devices", devices)
    if stages is not None and devices is not None and stages != devices:
        raise ConfigError(f"--stages {stages} and --devices {devices}: give one of them")
    if stages is not None and strategy not in ("pipeline", "auto"):
        raise ConfigError(f"--stages applies to pipelines; for a {strategy} split, give "
                          "--devices")


def _traced(model: str, weights: Path | None,
            input_shape: str | None) -> tuple[Graph, tuple[int, ...]]:
    """The model loaded and traced, and its input shape (given, else the model's own)."""
    from ..errors import ModelError
    from ..graph import trace
    from ..zoo import load_model

    given = parse_shape(input_shape) if input_shape else None
    loaded = load_model(model, weights=weights, input_shape=given)
    shape = given or loaded.input_shape
    if shape is None:
        raise ModelError(f"{model}: give --input-shape C,H,W (not known for this model)")
    return trace(loaded.module, shape), shape


def _plan_model(model: str, weights: Path | None, shape: tuple[int, ...],
                preprocess: str | None, classes: Path | None) -> PlanModel:
    """The plan's model entry; a bad class list is refused here."""
    from ..data import ClassList, parse_preprocess
    from ..partition import ModelRef as PlanModel

    if classes is not None:
        ClassList.from_file(classes)  # refuse a bad class list now
    return PlanModel(ref=model, weights=str(weights) if weights else None,
                     input_shape=list(shape),
                     preprocess=parse_preprocess(preprocess) if preprocess else None,
                     classes=str(classes) if classes else None)


@app.command()
def check(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan YAML.")],
    n: Annotated[int | None, typer.Option(
        "-n", help="Images to compare (default: all the data holds).")] = None,
    data: DataDir = None,
    calibration_images: CalibrationImages = 256,
) -> None:
    """Run a plan locally and compare it with the whole model; exit 1 on any mismatch.

    An int8 plan is compared for top-1 agreement and accuracy instead (exit 1 when it
    loses more than 1 point of the float model's accuracy, or without labels agrees on
    fewer than 99% of the images).

    Example: shardguard check plan.yaml -n 1000
    """
    import torch

    from ..data import plan_data
    from ..errors import PlanningError
    from ..local import LocalExecutor
    from ..local import check as compare
    from ..partition import bind

    count("-n", n)
    bound = bind(plan_file)
    dataset = plan_data(data, bound)
    print(f"data: {dataset.describe()}")
    if any(st.precision == "int8" for st in bound.plan.stages):
        return _check_int8(bound, dataset, n, calibration_images)
    reference: Callable[[torch.Tensor], torch.Tensor] = bound.model.module
    against = "the whole model"
    if bound.model.ref.endswith(".onnx"):  # the original file, not ShardGuard's import of it
        from ..zoo.onnx_import import OnnxRuntimeModel

        reference = OnnxRuntimeModel(Path(bound.model.ref))
        against = f"onnxruntime running {bound.model.ref}"
    result = compare(LocalExecutor(bound.compiled), reference, dataset.batches(n))
    print(f"{result.samples} inputs: max |difference| {result.max_abs_diff:.3g} "
          f"({result.relative:.2e} of the output range); same predicted class on "
          f"{result.same_class}/{result.samples}")
    if not result.ok():
        raise PlanningError(f"{plan_file}: the partitioned model does not match {against}")
    print(f"plan matches {against}")


def _check_int8(bound: Any, dataset: Any, n: int | None, calibration_images: int) -> None:
    """check for an int8 plan: top-1 agreement with the float model, and both accuracies."""
    import torch

    from ..analysis.metrics import rate
    from ..errors import PlanningError
    from ..local import LocalExecutor
    from ..runtime.quantize import calibrate

    print(calibrate(bound.compiled, dataset, calibration_images), end="")
    executor, labels = LocalExecutor(bound.compiled), dataset.labels(n)
    with torch.no_grad():
        pairs = [(bound.model.module(x).argmax(1), executor(x).argmax(1))
                 for x in dataset.batches(n)]
    ref, got = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    same, total = int((ref == got).sum()), len(ref)
    print(f"int8 vs float: same top-1 on {same}/{total}: {rate(same, total)}")
    if labels is None:
        if same < 0.99 * total:
            raise PlanningError(f"the int8 plan agrees with the float model on {same}/{total}")
        return
    right_float, right_int8 = int((ref == labels).sum()), int((got == labels).sum())
    print(f"accuracy: float {rate(right_float, total)}; int8 {rate(right_int8, total)}")
    if right_int8 < right_float - 0.01 * total:
        raise PlanningError(f"the int8 plan loses {(right_float - right_int8) / total:.2%} of "
                            "accuracy (more than 1 point)")
    print("int8 plan within 1 point of the float model's accuracy")


@app.command()
def cost(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan YAML.")],
) -> None:
    """Print the cost model's figures per device: time, bytes, memory, energy.

    Example: shardguard cost plan.yaml
    """
    from ..partition import bind
    from ._tables import device_table, show, stage_table, summary_line

    bound = bind(plan_file, build=False)
    show(stage_table(bound), device_table(bound))
    print(summary_line(bound))

