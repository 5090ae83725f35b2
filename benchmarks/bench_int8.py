"""int8 vs fp32 (issue 15): stage time on this machine and bytes per link, as ratios.

For each trained 28×28 zoo model, a 2-stage pipeline plan (``rpi4x4-ethernet``) at
fp32 and the same plan at int8 (quantized as ``runtime.quantize`` does: onnxruntime,
QDQ, per-channel weights, activations calibrated on 64 training images). Each stage's
ONNX is timed in onnxruntime on the CPU, one intra-op thread for both precisions,
fed the values it receives on real test images (int8 stages their int8 codes):
warm-up, then the median of interleaved repeats, at batch 1 and batch 32. The row's
ratio is int8 / fp32 of the stages' summed medians (below 1: int8 is faster here).
The bytes row is int8 / fp32 of the bytes on the link between the two stages, as the
plan's cost model counts them (the issue asks for ¼).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import shardguard as sg
from shardguard.data import plan_data
from shardguard.partition import bind
from shardguard.partition.build import with_precision
from shardguard.platform import load_platform
from shardguard.runtime.export import export_plan
from shardguard.runtime.quantize import _calibrate, quantize, quantize_plan

MODELS = ["lenet5", "vgg-small", "resnet-small", "mobilenetv2-small"]
PLATFORM = "rpi4x4-ethernet"
BATCHES = [1, 32]
CALIBRATION = 64
WARMUP, REPEATS = 5, 21


def _session(onnx: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def _feeds(art: Any, seen: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    feeds = {}
    for port in art.inputs:
        value = seen[port.tensor][:batch]
        if port.dtype == "int8":
            value = quantize(value, (port.scale, port.zero_point))
        feeds[port.name] = np.ascontiguousarray(value)
    return feeds


def _time(session: Any, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - start


def _stage_times(fp32: dict[str, Any], int8: dict[str, Any], seen: dict[str, np.ndarray],
                 batch: int) -> tuple[float, float]:
    """Summed median stage time (s) of the fp32 and int8 stages, repeats interleaved."""
    total = [0.0, 0.0]
    for name in fp32:
        runs = [(_session(a[name].onnx), _feeds(a[name], seen, batch)) for a in (fp32, int8)]
        for session, feeds in runs:
            for _ in range(WARMUP):
                session.run(None, feeds)
        samples: list[list[float]] = [[], []]
        for _ in range(REPEATS):
            for k, (session, feeds) in enumerate(runs):
                samples[k].append(_time(session, feeds))
        for k in range(2):
            total[k] += statistics.median(samples[k])
    return total[0], total[1]


def _model_rows(model: str, directory: Path) -> list[dict[str, Any]]:
    platform = load_platform(PLATFORM)
    planned = sg.plan(model, platform, devices=2)
    quantized = with_precision(planned, planned.compiled.graph, platform, "int8")
    files = {p: directory / f"{model}-{p}.yaml" for p in ("fp32", "int8")}
    planned.plan.save(files["fp32"])
    quantized.plan.save(files["int8"])
    b32, b8 = bind(files["fp32"]), bind(files["int8"])
    data = plan_data(None, b8)
    quantize_plan(b8.compiled, data.train_images(CALIBRATION))
    fp32 = export_plan(b32.compiled)
    assert b8.compiled.quantized is not None
    int8 = dict(b8.compiled.quantized.artifacts)
    x = data.images(max(BATCHES)).float().numpy()
    seen = _calibrate(b32.compiled, fp32, x)  # every transfer's float values
    rows = []
    for batch in BATCHES:
        t32, t8 = _stage_times(fp32, int8, seen, batch)
        rows.append({"name": f"int8 stage time, {model}, batch {batch}",
                     "value": t8 / batch * 1e6, "unit": "µs/image", "ratio": t8 / t32,
                     "note": f"fp32 {t32 / batch * 1e6:.1f} µs/image; 2 stages, "
                             "1 onnxruntime thread each"})
    inner = [(a.bytes, b.bytes) for a, b in zip(planned.plan.links, quantized.plan.links)
             if a.src != "input" and a.dst != "output"]
    a, b = sum(p[0] for p in inner), sum(p[1] for p in inner)
    rows.append({"name": f"int8 link bytes, {model}", "value": b, "unit": "B/image",
                 "ratio": b / a, "target": [0.25, 0.25],
                 "note": f"fp32 {a} B/image on the stage-to-stage link (cost model)"})
    return rows


def int8_vs_fp32() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            rows += _model_rows(model, Path(tmp))
    return rows


BENCHMARKS = [int8_vs_fp32]
