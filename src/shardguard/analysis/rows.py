"""Result rows as a table: every sweep's results (campaign, analysis, exploration) as Arrow.

    found = sg.explore(spec, Path("out/explore"))
    found.table().to_pandas()                  # a DataFrame, when pandas is installed

Columns are the union of the rows' keys (``param_*`` last); a column a few rows leave
empty is null there.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow as pa

Row = dict[str, Any]


def columns(rows: list[Row]) -> list[str]:
    return sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("param_"), k))


def table(rows: list[Row]) -> pa.Table:
    """``rows`` as an Arrow table (``.to_pandas()`` gives a DataFrame)."""
    names = columns(rows)
    return pa.Table.from_pylist([{c: r.get(c) for c in names} for r in rows])


class Rows(list[Row]):
    """A sweep's rows (a list of dicts, as before) that also give themselves as a table."""

    def table(self) -> pa.Table:
        return table(self)


def write_csv(rows: list[Row], path: Path, leave_out: tuple[str, ...] = ()) -> None:
    """``rows`` as a CSV file with every row's columns but ``leave_out``."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c for c in columns(rows) if c not in leave_out],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
