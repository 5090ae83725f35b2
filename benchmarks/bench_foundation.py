"""Foundation benchmarks: tracing/profiling cost and dataset loading, as ratios."""

from __future__ import annotations

import gzip
import statistics
import time
from typing import Any

import torch

from shardguard.data import DEFAULT_DATA_DIR
from shardguard.data.idx import read_idx
from shardguard.graph import trace
from shardguard.zoo import ZOO, build


def _best(fn: Any, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def profile_overhead() -> list[dict[str, Any]]:
    """Tracing + profiling a model, against one forward pass of the same model."""
    rows = []
    for name in ("resnet50", "mobilenetv2"):
        model = build(name).eval()
        x = torch.zeros(1, *ZOO[name].input_shape)
        with torch.no_grad():
            forward = _best(lambda: model(x))
        profiling = _best(lambda: trace(model, ZOO[name].input_shape), repeats=3)
        rows.append({"name": f"profile_overhead[{name}]", "value": profiling, "unit": "s",
                     "ratio": profiling / forward, "target": 20.0,
                     "note": "trace + shape propagation vs one forward pass"})
    return rows


def idx_loading() -> dict[str, Any]:
    """Validated IDX loading of the training images against bare gzip decompression."""
    path = DEFAULT_DATA_DIR / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    bare = statistics.median([_best(lambda: gzip.decompress(raw), 1) for _ in range(3)])
    ours = statistics.median([_best(lambda: read_idx(path, ndim=3, count=60_000,
                                                     shape=(28, 28)), 1) for _ in range(3)])
    return {"value": ours, "unit": "s", "ratio": ours / bare, "target": 1.5,
            "note": "read_idx vs gzip.decompress of the same file"}


BENCHMARKS = [profile_overhead, idx_loading]
