"""fp32 vs int8 side by side (issue 15, point 6): ``analyze --precisions fp32,int8`` runs
the same plan at both precisions and the report shows them in one table."""

from __future__ import annotations

import csv

import pytest

from .conftest import PLATFORM, run_cli, succeeded

pytestmark = pytest.mark.timeout(1200)


@pytest.mark.slow
def test_analyze_with_precisions_writes_both_and_the_report_compares_them(tmp_path):
    plan = tmp_path / "plan.yaml"
    succeeded(run_cli("plan", "lenet5", "-p", PLATFORM, "--stages", "2", "-o", str(plan)),
              "plan")
    out = tmp_path / "analysis"
    succeeded(run_cli("analyze", str(plan), "-n", "200", "--seeds", "1", "-o", str(out),
                      "--eavesdrop-images", "100", "--eavesdrop-epochs", "1",
                      "--precisions", "fp32,int8"), "analyze --precisions")
    with (out / "precisions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["precision"] for r in rows} == {"fp32", "int8"}
    for p, msb in (("fp32", "exponent-high"), ("int8", "msb")):  # the same BERs for both
        mine = [r for r in rows if r["precision"] == p]
        assert {(r["bits"], float(r["ber"])) for r in mine} == {
            (b, ber) for b in ("all", msb) for ber in (1e-4, 1e-3, 1e-2)}
        assert all(float(r["accuracy_drop_low"]) <= float(r["accuracy_drop"])
                   <= float(r["accuracy_drop_high"]) for r in mine)
    report = tmp_path / "report.html"
    succeeded(run_cli("report", str(out), "-o", str(report)), "report")
    html = report.read_text()
    assert "fp32 vs int8, the same plan" in html
    table = html[html.index("fp32 vs int8, the same plan"):].split("</table>")[0]
    assert "<td>fp32</td>" in table and "<td>int8</td>" in table
    assert "lost, random bits, BER 0.001" in table and "lost, MSB, BER 0.001" in table


def test_an_unknown_precision_for_analyze_is_refused_in_one_line(tmp_path):
    result = run_cli("analyze", str(tmp_path / "plan.yaml"), "--precisions", "fp16",
                     "-o", str(tmp_path / "a"))
    assert result.code != 0 and "Traceback" not in result.err
    assert "--precisions 'fp16': expected a comma-separated list of fp32 and int8" in result.err
