"""The vulnerability analysis of a plan: figures, rows and a criticality ranking."""

from __future__ import annotations

import json

import pytest

from shardguard.analysis.analyze import BER, BIT_CLASSES, EPSILON, LINK_ATTACKS, SNR_DB, analyze

from .conftest import planned, write_plan


@pytest.mark.slow
def test_analysis_writes_figures_and_ranks_devices_and_links(tmp_path):
    of = planned("lenet5", objective="energy")
    result = analyze(write_plan(tmp_path, of), tmp_path / "analysis", samples=300, seeds=1)
    devices = of.plan.devices_used()
    links = {f"{lk.src}>{lk.dst}" for lk in of.plan.links}
    assert len(result.rows) == (len(BER) * len(BIT_CLASSES) + len(SNR_DB) + len(devices)
                                + (len(LINK_ATTACKS) + len(EPSILON) - 1) * len(links))
    ranked = {(r["kind"], r["name"]) for r in result.ranking}
    assert ranked == {("device", d) for d in devices} | {("link", lk) for lk in links}
    drops = [r["accuracy_drop"] for r in result.ranking]
    assert drops == sorted(drops, reverse=True)
    # a pipeline without replicas: losing any device loses everything
    assert all(r["accuracy_drop"] == pytest.approx(result.clean_accuracy)
               for r in result.ranking if r["kind"] == "device")
    for path in result.figures.values():
        assert path.stat().st_size > 10_000
    assert json.loads((tmp_path / "analysis" / "ranking.json").read_text()) == result.ranking
