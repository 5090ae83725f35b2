"""Commands on plans: ``platforms``, ``plan``, ``check``, ``cost``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..protections import names
from ._options import (
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
            value = (d.crypto_cycles_per_byte[key.split(".", 1)[1]] if "." in key
                     else getattr(d, key))
            table.add_row(d.name, key, f"{value:.4g}" if not isinstance(value, bool) else
                          str(value), source)
    for key, source in p.medium_sources.items():
        table.add_row("(medium)", key, f"{getattr(p.medium, key):.4g}", source)
    console.print(table)


@app.command()
def plan(
    model: ModelRef,
    platform: Annotated[str, typer.Option("--platform", "-p",
                                          help="Built-in platform name or platform YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Plan file to write.")],
    strategy: Annotated[str, typer.Option(help="pipeline, spatial, channel or auto.")] = "pipeline",
    objective: Annotated[str, typer.Option(
        help="latency, throughput, energy (max per device) or energy-total.")] = "latency",
    replicas: Annotated[int, typer.Option(help="Copies of every stage, on distinct devices.")] = 1,
    protection: Annotated[str, typer.Option(
        help=f"Seal every link between stages: {', '.join(names())} (costed when "
             "planning).")] = "none",
    stages: Annotated[int | None, typer.Option(
        help="Pipeline: exactly this many stages, on as many devices (forces a split the "
             "optimiser would not make).")] = None,
    devices: Annotated[int | None, typer.Option(
        help="Spread the plan over exactly this many devices: a pipeline's stages, or the "
             "tiles or channel groups of a spatial or channel split.")] = None,
    input_shape: InputShape = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w",
                                                    help="State-dict file for the model.")] = None,
    preprocess: PreprocessOption = None,
    classes: Classes = None,
    figure: Annotated[Path | None, typer.Option(help="Also draw the plan to this PNG.")] = None,
    force: Force = False,
) -> None:
    """Partition a model onto a platform's devices and write the plan as YAML.

    Example: shardguard plan resnet-small --platform rpi4x4-ethernet --strategy auto -o plan.yaml

    Example: shardguard plan lenet5 --platform mixed-wifi --protection aead:chacha20-poly1305

    Example: shardguard plan resnet18 -p rpi4x4-ethernet --stages 2 -o plan.yaml

    Paths the plan names (a model file, weights, a class list, a platform file) are
    written relative to the plan's directory.
    """
    from ..data import ClassList, parse_preprocess
    from ..errors import ConfigError, ModelError
    from ..graph import trace
    from ..partition import ModelRef as PlanModel
    from ..partition import make_plan
    from ..platform import load_platform
    from ..zoo import load_model
    from ._tables import show, stage_table, summary_line

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
    refuse_overwrite(output, force)
    if figure is not None:
        refuse_overwrite(figure, force)
    given = parse_shape(input_shape) if input_shape else None
    loaded = load_model(model, weights=weights, input_shape=given)
    shape = given or loaded.input_shape
    if shape is None:
        raise ModelError(f"{model}: give --input-shape C,H,W (not known for this model)")
    graph = trace(loaded.module, shape)
    target = load_platform(platform)
    if classes is not None:
        ClassList.from_file(classes)  # refuse a bad class list now
    ref = PlanModel(ref=model, weights=str(weights) if weights else None, input_shape=list(shape),
                    preprocess=parse_preprocess(preprocess) if preprocess else None,
                    classes=str(classes) if classes else None)
    planned = make_plan(graph, ref, target, strategy=strategy,  # type: ignore[arg-type]
                        objective=objective, replicas=replicas,  # type: ignore[arg-type]
                        protection=protection, devices=devices or stages)
    planned.plan.save(output, force=force)
    show(stage_table(planned))
    print(summary_line(planned))
    print(f"plan written to {output}")
    if figure is not None:
        from ..analysis.plan_figure import draw_plan

        draw_plan(planned, figure)
        print(f"figure written to {figure}")


@app.command()
def check(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan YAML.")],
    n: Annotated[int | None, typer.Option(
        "-n", help="Images to compare (default: all the data holds).")] = None,
    data: DataDir = None,
) -> None:
    """Run a plan locally and compare it with the whole model; exit 1 on any mismatch.

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

