"""The main job, end to end on what exists: ``shardguard demo`` (``make demo``).

Loads the trained demo model, evaluates it on the Fashion-MNIST test set,
profiles its graph, and ends with a short summary. Each later capability adds
a step here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._progress import log
from .data import load_split
from .graph import trace
from .zoo import load_model
from .zoo.train import evaluate

DEMO_MODEL = "resnet-small"


@dataclass
class DemoSummary:
    model: str
    test_accuracy: float
    recorded_accuracy: float | None
    macs: int
    params: int
    nodes: int
    out_dir: str
    steps: dict[str, float] = field(default_factory=dict)  # step → seconds

    def lines(self) -> list[str]:
        recorded = (f" (recorded {self.recorded_accuracy:.2%})"
                    if self.recorded_accuracy is not None else "")
        return [
            f"model        {self.model}: {self.macs / 1e6:.1f} M MACs, "
            f"{self.params / 1e3:.1f} k params, {self.nodes} graph nodes",
            f"accuracy     {self.test_accuracy:.2%} on the 10 000 Fashion-MNIST test images"
            + recorded,
            f"results      {self.out_dir}/summary.json",
        ]


def run_demo(out_dir: Path, data: Path | None = None, model: str = DEMO_MODEL) -> DemoSummary:
    out_dir.mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}

    start = time.perf_counter()
    log(f"[1/3] loading {model} and the Fashion-MNIST test set")
    loaded = load_model(model)
    test = load_split("test", data)
    steps["load"] = time.perf_counter() - start

    start = time.perf_counter()
    log("[2/3] evaluating on the test set")
    accuracy = evaluate(loaded.module, test)
    steps["evaluate"] = time.perf_counter() - start

    start = time.perf_counter()
    log("[3/3] tracing and profiling the graph")
    assert loaded.input_shape is not None
    graph = trace(loaded.module, loaded.input_shape, measure=True)
    steps["profile"] = time.perf_counter() - start

    summary = DemoSummary(
        model=model, test_accuracy=accuracy,
        recorded_accuracy=loaded.meta.test_accuracy if loaded.meta else None,
        macs=graph.total_macs, params=graph.total_params, nodes=len(graph.compute_nodes),
        out_dir=str(out_dir), steps=steps)
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary
