"""The HTML report: one self-contained page that renders in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from shardguard.analysis.campaign import CampaignSpec, run_campaign
from shardguard.analysis.explore import ExploreSpec
from shardguard.analysis.search import run_exploration

from .conftest import run_cli

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    run_exploration(ExploreSpec.model_validate({
        "model": "lenet5", "platform": "rpi4x4-ethernet", "strategies": ["pipeline"],
        "max_devices": 2, "protections": ["none", "mac:blake2b"], "copies": [1],
        "guards": [False], "samples": 50,
        "threats": [{"id": "L1", "target": "links", "ber": 1e-3, "bits": "exponent-high"}]}),
        root / "explore", budget=100, processes=1)
    run_campaign(CampaignSpec.model_validate({
        "model": "lenet5", "platform": "rpi4x4-ethernet", "samples": 50, "processes": 1,
        "threats": [{"id": "L1", "target": "every", "ber": 1e-3, "bits": "exponent-high"}],
        "defences": ["none", "seal:mac:blake2b"]}), root / "campaign")
    return root


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: make test installs it (scripts/ensure-chromium.sh)"
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_report_is_one_file_that_renders_every_figure_in_chromium(results, tmp_path):
    page = tmp_path / "report.html"
    result = run_cli("report", str(results), "-o", str(page))
    assert result.code == 0, result.err
    html = page.read_text()
    assert not re.search(r'src="(?!data:)', html)  # nothing fetched: figures are inline
    for heading in ("Security against energy: the Pareto front", "Recommended deployment",
                    "Campaign: threats × defences", "Pareto front (every objective minimised)"):
        assert heading in html
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    shown = re.search(r'data-figures="(\d+)/(\d+)"', dom)
    assert shown and shown.group(1) == shown.group(2) and int(shown.group(2)) >= 3, shown
    shot = tmp_path / "shot.png"
    _chromium("--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}",
              page.as_uri())
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    assert np.std(pixels[..., :3]) > 0.05  # drawn: text, tables and figures, not blank


def test_report_names_what_is_wrong_with_its_input(tmp_path):
    result = run_cli("report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert result.code == 1 and result.err.strip().startswith("error: ") \
        and "no ShardGuard results here" in result.err
    (tmp_path / "r.html").write_text("x")
    again = run_cli("report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert again.code == 1 and "already exists (use --force to overwrite)" in again.err
