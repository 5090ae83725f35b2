"""A real 224×224 CNN end to end, timed: ``efficientnet-lite0-fmnist`` from the zoo and
the same network exported to ONNX, each planned on ``rpi4x4-ethernet`` (the model fits a
board) and on ``rpi4x4-12mb`` (it must be split), then checked, run on local workers,
analysed on 200 images and explored with a small budget — every step as the command a
user runs, in a fresh process. Each step's time is a row (recorded, no target: these
machines are shared).

Also a campaign trial's cost as a ratio to clean inference of the same 200 images by
the whole model: the limit is 1.0 (a trial runs at least one inference of each image);
what is above it is the partitioned executor and the attack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

MODEL = "efficientnet-lite0-fmnist"
PLATFORMS = ("rpi4x4-ethernet", "rpi4x4-12mb")
IMAGES = 200  # analyze: the "≥ 200 images"
ONNX_PREPROCESS = ("{resize: [224, 224], channels: 3, mean: [0.498039], std: [0.501961], "
                   "interpolation: bilinear}")
THREATS = "threats:\n  - {id: L1, target: links, ber: 1.0e-3, bits: exponent-high}\n"


def _cli(*args: str) -> tuple[float, str]:
    """Run ``shardguard ARGS`` in a fresh process; (seconds, stdout). Raises on failure."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "shardguard", *args], capture_output=True,
                          text=True, env={**os.environ, "SHARDGUARD_QUIET": "1"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"shardguard {' '.join(args)}: {proc.stderr.strip()[-500:]}")
    return seconds, proc.stdout


def _export(path: Path) -> None:
    import torch

    from shardguard.zoo import load_model

    torch.onnx.export(load_model(MODEL).module, (torch.zeros(1, 3, 224, 224),), str(path))


def _chain(model: str, given: list[str], platform: str, out: Path) -> list[dict[str, Any]]:
    plan = out / "plan.yaml"
    (out / "threats.yaml").write_text(THREATS)
    steps = {
        "plan": ["plan", model, "-p", platform, *given, "-o", str(plan)],
        "check": ["check", str(plan), "-n", "8"],
        "run": ["run", str(plan), "--spawn-local", "-n", str(IMAGES), "--check"],
        "analyze": ["analyze", str(plan), "-n", str(IMAGES), "-o", str(out / "analysis")],
        "explore": ["explore", model, "-p", platform, *given, "-t", str(out / "threats.yaml"),
                    "-o", str(out / "explore"), "-n", "50", "--budget", "6",
                    "--strategies", "pipeline", "--max-devices", "3",
                    "--protections", "none,aead:chacha20-poly1305", "--copies", "1"],
    }
    rows = []
    label = "onnx" if model.endswith(".onnx") else "zoo"
    for step, args in steps.items():
        seconds, stdout = _cli(*args)
        note = ""
        if step == "plan":
            segments = len(yaml.safe_load(plan.read_text())["segments"])
            note = f"{segments} stage(s)"
        elif step == "run":
            note = next((line.strip() for line in stdout.splitlines() if "answered" in line), "")
        elif step == "analyze":
            rows_file = out / "analysis" / "results.jsonl"
            first = json.loads(rows_file.read_text().splitlines()[0])
            note = f"clean accuracy {first['clean_accuracy']:.3f} on {IMAGES} images"
        rows.append({"name": f"large_{label}_{platform}_{step}", "value": seconds,
                     "unit": "s", "note": note})
    return rows


def _chain_benchmark(source: str, platform: str) -> Any:
    """A benchmark: the chain for the zoo model or its ONNX export on ``platform``."""

    def bench() -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            model, given = MODEL, []
            if source == "onnx":
                model = str(Path(tmp) / "lite0-fmnist.onnx")
                _export(Path(model))
                given = ["--preprocess", ONNX_PREPROCESS]
            return _chain(model, given, platform, Path(tmp))

    bench.__name__ = f"large_{source}_{platform.replace('-', '_')}"
    return bench


def campaign_trial_vs_clean_inference() -> dict[str, Any]:
    import torch

    from shardguard.analysis import campaign
    from shardguard.analysis.trials import Trial

    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.yaml"
        _cli("plan", MODEL, "-p", "rpi4x4-12mb", "-o", str(plan))
        campaign._init({"pipeline": str(plan)}, IMAGES, torch.get_num_threads())
        x = campaign._STATE["x"]
        module = campaign._STATE["bound"]["pipeline"].model.module
        trial = Trial("pipeline", {"id": "L1", "target": "every", "ber": 1e-4, "bits": "all",
                                   "seed": 0}, 0)
        best_clean = best_trial = float("inf")
        for _ in range(2):  # best of two, interleaved
            start = time.perf_counter()
            with torch.no_grad():
                module(x)
            best_clean = min(best_clean, time.perf_counter() - start)
            start = time.perf_counter()
            campaign.run_trial(trial)
            best_trial = min(best_trial, time.perf_counter() - start)
    return {"name": "large_campaign_trial_cost", "value": best_trial, "unit": "s",
            "ratio": best_trial / best_clean,
            "note": f"L1 on every link, {IMAGES} images; clean inference {best_clean:.2f} s "
                    "(the limit is 1.0)"}


#: Each chain is its own benchmark (``python benchmarks/run.py large_zoo_rpi4x4_12mb``):
#: analyze on 200 images at 224×224 takes about a quarter of an hour on 2 cores.
BENCHMARKS = [*(_chain_benchmark(source, platform) for source in ("zoo", "onnx")
                for platform in PLATFORMS), campaign_trial_vs_clean_inference]
