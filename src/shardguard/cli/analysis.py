"""Commands for vulnerability analysis: ``campaign``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._options import (
    Classes,
    DataDir,
    Force,
    InputShape,
    PreprocessOption,
    Ray,
    count,
    parse_shape,
    refuse_overwrite,
)
from .app import app

if TYPE_CHECKING:  # the CLI imports the library only in the commands that use it
    from ..analysis.analyze import Analysis
    from ..analysis.explore import ExploreSpec
    from ..analysis.search import Exploration


@app.command()
def campaign(
    spec_file: Annotated[Path, typer.Argument(metavar="CAMPAIGN", help="Campaign YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results directory; a run "
                                         "there before is resumed.")] = Path("out/campaign"),
    data: DataDir = None,
    ray: Ray = None,
) -> None:
    """Sweep threats × targets × intensities × strategies; one row per trial (CSV, Parquet).

    The spec names the model (a zoo name, file.py:factory or .onnx, with input_shape for
    the last two), the platform and the data (data:, or --data, which wins).

    Example: shardguard campaign examples/campaign.yaml -o out/campaign

    Example: shardguard campaign examples/campaign.yaml -o out/campaign --ray HEAD:6379
    """
    import json

    from ..analysis.campaign import load_campaign, run_campaign
    from ..analysis.metrics import MEASURES

    spec = load_campaign(spec_file)
    if data is not None:
        spec.data = data
    rows = run_campaign(spec, output, ray=ray)
    setup = json.loads((output / "campaign.json").read_text())
    print(f"data: {setup['data_used']}")
    print(f"{len(rows)} trials in {output}/results.csv and results.parquet; "
          f"'accuracy' there is {MEASURES[setup['measure']]}")


@app.command()
def analyze(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results directory (resumed "
                                         "if it holds an earlier run).")] = Path("out/analysis"),
    samples: Annotated[int, typer.Option("-n", help="Images per trial (the first N of the "
                                                     "data).")] = 2000,
    seed: Annotated[int, typer.Option(help="First seed (trials run under seed, seed+1, …; "
                                           "each trial draws from its own stream).")] = 0,
    seeds: Annotated[int | None, typer.Option(help="Seeds per condition, pooled into one "
                                                   "figure with its 95% interval "
                                                   "[default: 3].")] = None,
    data: DataDir = None,
    ray: Ray = None,
    eavesdrop_images: Annotated[int | None, typer.Option(
        help="Images the eavesdropper trains on, a tenth held out to stop it (default "
             "4000 at 28×28).")] = None,
    eavesdrop_epochs: Annotated[int | None, typer.Option(
        help="Most epochs it trains while the held-out PSNR rises (default 40).")] = None,
    precisions: Annotated[str | None, typer.Option(
        help="Comma-separated precisions (fp32,int8): the plan at each, side by side "
             "(accuracy, energy, bytes, bit flips at the same BER).")] = None,
) -> None:
    """Standard vulnerability analysis of a plan: figures, table and criticality ranking.

    Example: shardguard analyze plan.yaml -o out/analysis

    Example: shardguard analyze plan.yaml -o out/analysis --data photos/ -n 200
    """
    from ..analysis.analyze import DEFAULT_SEEDS
    from ..analysis.analyze import analyze as run
    from ..analysis.precisions import parse_precisions
    from ..threats.eavesdrop import EavesdropTraining

    count("-n", samples)
    seeds = DEFAULT_SEEDS if seeds is None else seeds
    count("--seeds", seeds)
    count("--eavesdrop-images", eavesdrop_images, least=20)
    count("--eavesdrop-epochs", eavesdrop_epochs)
    given = {"images": eavesdrop_images, "max_epochs": eavesdrop_epochs}
    result = run(plan_file, output, samples=samples, seed=seed, seeds=seeds, ray=ray, data=data,
                 eavesdropper=EavesdropTraining(**{k: v for k, v in given.items()
                                                   if v is not None}),
                 precisions=parse_precisions(precisions) if precisions is not None else None)
    _print_ranking(result, seeds, output)


def _print_ranking(result: Analysis, seeds: int, output: Path) -> None:
    """The criticality ranking as a table, each drop with its 95 % interval."""
    from rich.console import Console
    from rich.table import Table

    from ..analysis.metrics import LOSSES, MEASURES, with_interval

    print(f"data: {result.data}")
    low, high = result.clean_interval
    table = Table("rank", "kind", "name", f"{LOSSES[result.measure]} (95% interval)",
                  "worst availability", "attacks",
                  title=f"criticality (clean: {MEASURES[result.measure]} "
                        f"{with_interval(result.clean_accuracy, low, high)}; "
                        f"{seeds} seeds pooled)")
    for r in result.ranking:
        table.add_row(str(r["rank"]), r["kind"], r["name"],
                      with_interval(r["accuracy_drop"], r["accuracy_drop_low"],
                                    r["accuracy_drop_high"]),
                      f"{r['availability']:.0%}", r["attacks"])
    Console(width=140).print(table)
    print(f"each drop with its 95% interval ({seeds} seeds pooled, images resampled); "
          f"{len(result.rows)} trials, figures and tables in {output}")


# explore's options, declared here so that the command reads as a list of them
_Model = Annotated[str, typer.Argument(
    help="Zoo name (see `shardguard zoo`), path/to/file.py:factory, or model.onnx.")]
_Platform = Annotated[str, typer.Option("--platform", "-p",
                                        help="Built-in platform name or YAML file.")]
_Threats = Annotated[Path, typer.Option(
    "--threats", "-t", help="Threat scenario YAML: a list under 'threats' (D1, D4 but not "
                            "adversarial, L1-L4; target a device, a link, 'devices' or "
                            "'links'; each threat's own seed).")]
_Budget = Annotated[int, typer.Option(help="Candidates to evaluate (NSGA-II); a space "
                                           "this small or smaller is enumerated.")]
_Output = Annotated[Path, typer.Option("--output", "-o", help="Results directory; a run "
                                       "there before is resumed.")]
_Method = Annotated[str, typer.Option(help="auto, exhaustive or nsga2.")]
_Strategies = Annotated[str, typer.Option(help="Comma-separated partition strategies.")]
_MaxDevices = Annotated[int, typer.Option(help="Most devices a candidate uses.")]
_Protections = Annotated[str, typer.Option(help="Comma-separated link protections to "
                                                "choose from.")]
_Ends = Annotated[str | None, typer.Option(help="Comma-separated protections to choose "
                                                "from for the coordinator's hops (input "
                                                "and results; default: --protections).")]
_Copies = Annotated[str, typer.Option(help="Comma-separated copies per stage to choose "
                                           "from: 1 (none), 2 or 3 (voting).")]
_Guards = Annotated[str, typer.Option(help="Comma-separated range-guard placements to "
                                           "choose from: none, links, activations (every "
                                           "ReLU-family activation inside the stages), both "
                                           "(links and activations); on = links, off = none.")]
_Precisions = Annotated[str, typer.Option(help="Comma-separated precisions each stage "
                                               "chooses from: fp32, int8.")]
_Samples = Annotated[int, typer.Option("-n", help="Held-out test images per candidate "
                                                  "(the end of the test set).")]
_Seed = Annotated[int, typer.Option(help="Seed of the NSGA-II search (threats carry their own, "
                                         "in the YAML).")]
_Seeds = Annotated[int, typer.Option(help="Draws of each threat on each target (each its "
                                          "own random stream), pooled with a 95% interval.")]
_Processes = Annotated[int, typer.Option(help="Local worker processes (0: one per core).")]
_Weights = Annotated[Path | None, typer.Option(
    "--weights", "-w", help="State-dict file for the model.")]


@app.command()
def explore(
    model: _Model,
    platform: _Platform,
    threats: _Threats,
    budget: _Budget = 300,
    output: _Output = Path("out/explore"),
    method: _Method = "auto",
    strategies: _Strategies = "pipeline,spatial,channel",
    max_devices: _MaxDevices = 4,
    protections: _Protections = "none,mac:blake2b,aead:chacha20-poly1305,aead:aes-128-gcm",
    ends: _Ends = None,
    copies: _Copies = "1,3",
    guards: _Guards = "none,links",
    precisions: _Precisions = "fp32",
    samples: _Samples = 300,
    seed: _Seed = 0,
    seeds: _Seeds = 3,
    processes: _Processes = 0,
    weights: _Weights = None,
    input_shape: InputShape = None,
    preprocess: PreprocessOption = None,
    classes: Classes = None,
    data: DataDir = None,
    ray: Ray = None,
) -> None:
    """Find the deployments that trade security against energy per device: the Pareto front.

    Objectives: largest energy per device per inference, the platform's total energy per
    inference (idle boards included), latency, and accuracy lost under the threat scenario
    (defences on); constraint: every device's memory. Writes
    front.csv, a plan per front point, figures and explore.json to the output directory.

    Example: shardguard explore lenet5 -p rpi4x4-ethernet -t examples/threats.yaml --budget 200

    Example: shardguard explore lenet5 -p rpi4x4-ethernet -t examples/threats.yaml
    --guards none,links,activations,both

    Example: shardguard explore net.onnx --input-shape 3,224,224 --preprocess imagenet
    -p rpi4x4-ethernet -t examples/threats.yaml --data photos/ -n 50 --budget 40
    """
    from ..analysis.search import run_exploration

    count("-n", samples)
    count("--budget", budget)
    count("--max-devices", max_devices)
    count("--processes", processes, least=0)
    count("--seeds", seeds)
    spec = _explore_spec(
        model=model, platform=platform, threats=threats, strategies=strategies,
        max_devices=max_devices, protections=protections, ends=ends, copies=copies,
        guards=guards, samples=samples, seed=seed, seeds=seeds, weights=weights,
        input_shape=input_shape, precisions=precisions,
        preprocess=preprocess, classes=classes, data=data)
    result = run_exploration(spec, output, budget=budget, method=method, processes=processes,
                             ray=ray)
    _print_front(result, output)


def _explore_spec(*, model: str, platform: str, threats: Path, strategies: str,
                  max_devices: int, protections: str, ends: str | None, copies: str,
                  guards: str, samples: int, seed: int, seeds: int, weights: Path | None,
                  input_shape: str | None, preprocess: str | None, classes: Path | None,
                  data: str | None, precisions: str = "fp32") -> ExploreSpec:
    """The exploration spec the options describe, validated (the threats from their YAML)."""
    from .._config import read_yaml, validate
    from ..analysis.explore import ExploreSpec
    from ..data import parse_preprocess
    from ..errors import ConfigError

    if _items(guards) == ["both"]:  # the old spelling of the old default: say what changed
        typer.echo("note: --guards both is the placement links and activations (guard:both) "
                   "in every candidate; with and without link guards, as 'both' once meant, "
                   "is --guards none,links (the default)", err=True)
    scenario = read_yaml(threats)
    if not isinstance(scenario, dict) or not isinstance(scenario.get("threats"), list):
        raise ConfigError(f"{threats}: expected a list under 'threats'")
    return validate(ExploreSpec, {
        "model": model, "platform": platform, "threats": scenario["threats"],
        "strategies": _items(strategies), "max_devices": max_devices,
        "protections": _items(protections), "copies": _items(copies),
        "ends": _items(ends) if ends is not None else None,
        "guards": [{"on": "links", "off": "none"}.get(g, g) for g in _items(guards)],
        "precisions": _items(precisions), "samples": samples, "seed": seed, "seeds": seeds,
        "weights": str(weights) if weights else None,
        "input_shape": list(parse_shape(input_shape)) if input_shape else None,
        "preprocess": parse_preprocess(preprocess) if preprocess else None,
        "classes": str(classes) if classes else None, "data": data}, "explore")


def _print_front(result: Exploration, output: Path) -> None:
    """The Pareto front as a table, ★ on the recommended point, and where the files are."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..analysis.metrics import with_interval
    from ..analysis.search import labels

    print(f"data: {result.data}")
    table = Table("#", "deployment", "max energy/device (mJ)", "total energy (mJ)",
                  "latency (ms)", f"{labels(result.measure)['vulnerability']} (95% interval)",
                  title=f"Pareto front ({result.method}, {len(result.rows)} of "
                        f"{result.space_size} candidates evaluated)")
    for i, r in enumerate(result.front):
        mark = " ★" if r["key"] == result.recommended["key"] else ""
        table.add_row(f"{i}{mark}", escape(r["describe"]), f"{r['energy_j'] * 1e3:.3f}",
                      f"{r['total_energy_j'] * 1e3:.3f}", f"{r['latency_s'] * 1e3:.2f}",
                      with_interval(r["vulnerability"], r.get("vulnerability_low"),
                                    r.get("vulnerability_high")))
    Console(width=150).print(table)
    print(f"each loss with its 95% interval ({result.spec.seeds} seeds pooled, images "
          "resampled)")
    print(f"recommended ★: {result.recommended['describe']}\n  {result.reason}\n"
          f"  plan: {output}/plans/recommended.yaml; front, plans and figures in {output}")


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@app.command()
def report(
    results: Annotated[Path, typer.Argument(metavar="RESULTS_DIR", help="A demo, campaign, "
                                            "analysis or exploration directory.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")]
    = Path("report.html"),
    force: Force = False,
) -> None:
    """Write one self-contained HTML page (figures embedded) for a results directory.

    Sections for what it holds: the setup and plan, the tables, the figures, the
    criticality ranking, the Pareto front and the recommended plan with its reason.

    Example: shardguard report out/demo -o out/demo/report.html
    """
    from ..analysis.report import write_report

    refuse_overwrite(output, force)
    print(f"report: {write_report(results, output)}")
