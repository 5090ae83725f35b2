"""The vulnerability analysis of a plan: figures, rows and a criticality ranking."""

from __future__ import annotations

import json

import pytest

import shardguard.threats.eavesdrop
from shardguard.analysis.analyze import BER, BIT_CLASSES, EPSILON, LINK_ATTACKS, SNR_DB, analyze
from shardguard.threats.eavesdrop import EavesdropTraining

from .conftest import planned, write_plan

#: a small eavesdropper: what is tested here is that it runs, reports and is cached
EAVESDROPPER = EavesdropTraining(images=1000, test=200, max_epochs=6)


@pytest.mark.slow
def test_analysis_writes_figures_and_ranks_devices_and_links(tmp_path, monkeypatch):
    of = planned("lenet5", objective="energy")
    result = analyze(write_plan(tmp_path, of), tmp_path / "analysis", samples=300, seeds=1,
                     eavesdropper=EAVESDROPPER)
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
    # the eavesdropper's epochs are in its rows; a resumed analysis takes it from the cache
    saved = json.loads((tmp_path / "analysis" / "reconstruction.json").read_text())
    assert saved == result.reconstruction and len(saved) >= 2
    assert all(1 <= r["epochs"] <= EAVESDROPPER.max_epochs and "converged" in r for r in saved)

    def refuse(*args, **kwargs):
        raise AssertionError("the eavesdropper was trained again")

    monkeypatch.setattr(shardguard.threats.eavesdrop, "eavesdrop", refuse)
    again = analyze(tmp_path / "plan.yaml", tmp_path / "analysis", samples=300,
                    eavesdropper=EAVESDROPPER)
    assert again.reconstruction == result.reconstruction
