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
