"""Commands for vulnerability analysis: ``campaign``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app


@app.command()
def campaign(
    spec_file: Annotated[Path, typer.Argument(metavar="CAMPAIGN", help="Campaign YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results directory; a run "
                                         "there before is resumed.")] = Path("out/campaign"),
) -> None:
    """Sweep threats × targets × intensities × strategies; one row per trial (CSV, Parquet).

    Example: shardguard campaign examples/campaign.yaml -o out/campaign
    """
    from ..analysis.campaign import load_campaign, run_campaign

    rows = run_campaign(load_campaign(spec_file), output)
    print(f"{len(rows)} trials in {output}/results.csv and results.parquet")


@app.command()
def analyze(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results directory (resumed "
                                         "if it holds an earlier run).")] = Path("out/analysis"),
    samples: Annotated[int, typer.Option("-n", help="Test images per trial.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of every trial.")] = 0,
) -> None:
    """Standard vulnerability analysis of a plan: figures, table and criticality ranking.

    Example: shardguard analyze plan.yaml -o out/analysis
    """
    from rich.console import Console
    from rich.table import Table

    from ..analysis.analyze import analyze as run

    result = run(plan_file, output, samples=samples, seed=seed)
    table = Table("rank", "kind", "name", "accuracy lost", "worst availability", "attacks",
                  title=f"criticality (clean accuracy {result.clean_accuracy:.2%})")
    for r in result.ranking:
        table.add_row(str(r["rank"]), r["kind"], r["name"], f"{r['accuracy_drop']:.2%}",
                      f"{r['availability']:.0%}", r["attacks"])
    Console(width=140).print(table)
    print(f"{len(result.rows)} trials, figures and tables in {output}")
