"""Fault-injection throughput against PyTorchFI 0.6.0: same model, samples and faults.

One neuron fault per inference: element (c, h, w) of the first convolution's output
set to a large value, a different position for each sample. PyTorchFI is installed
for the benchmarks only (``make bench`` puts it in ``benchmarks/.deps``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEPS = Path(__file__).parent / ".deps"
SAMPLES, PER_INFERENCE, VALUE = 1000, 200, 1.0e4


def _neuron_faults(c: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> Any:
    """One fault per sample on a link's tensor (a local-executor interceptor)."""
    from shardguard.hooks import Interceptor

    class NeuronFaults(Interceptor):
        def on_link(self, transfer: Any, value: torch.Tensor, traffic: Any) -> torch.Tensor:
            if (transfer.src, transfer.dst) != ("a", "b"):  # the cut after the convolution
                return value
            value = value.clone()
            n = len(value)
            value[torch.arange(n), c[:n], h[:n], w[:n]] = VALUE
            return value

    return NeuronFaults()


def fault_injection_vs_pytorchfi() -> list[dict[str, Any]]:
    sys.path.insert(0, str(DEPS))
    from pytorchfi.core import fault_injection

    from shardguard.data import load_split
    from shardguard.graph import trace
    from shardguard.local import LocalExecutor
    from shardguard.partition import ModelRef
    from shardguard.partition.build import assemble_plan, whole
    from shardguard.platform import load_platform
    from shardguard.zoo import load_model

    torch.set_num_threads(2)
    model = load_model("resnet-small").module
    x, _ = load_split("test").tensors(SAMPLES)
    graph = trace(model, (1, 28, 28))
    first_conv = 0  # the stem convolution: node 0 of the graph, layer 0 for PyTorchFI
    c_out, h_out, w_out = graph.compute_nodes[first_conv].shape[1:]
    rng = np.random.default_rng(0)
    c = torch.from_numpy(rng.integers(0, c_out, SAMPLES))
    h = torch.from_numpy(rng.integers(0, h_out, SAMPLES))
    w = torch.from_numpy(rng.integers(0, w_out, SAMPLES))

    # ShardGuard: a cut after the convolution; the fault is on that link's tensor
    n = len(graph.compute_nodes)
    planned = assemble_plan(graph, ModelRef(ref="resnet-small", input_shape=[1, 28, 28]),
                            load_platform("rpi4x4-ethernet"), "manual", "latency",
                            [whole(graph, 0, first_conv, "a", "pi1"),
                             whole(graph, first_conv + 1, n - 1, "b", "pi2")])
    executor = LocalExecutor(planned.compiled, [_neuron_faults(c, h, w)])
    with torch.no_grad():
        executor.run(x[:10])
        start = time.perf_counter()
        ours = executor.run(x).argmax(1)
        ours_s = time.perf_counter() - start

    # PyTorchFI, batched: one declaration, one fault per batch element
    with torch.no_grad():
        pfi = fault_injection(model, SAMPLES, input_shape=[1, 28, 28],
                              layer_types=[torch.nn.Conv2d], use_cuda=False)
        start = time.perf_counter()
        corrupt = pfi.declare_neuron_fi(batch=list(range(SAMPLES)),
                                        layer_num=[first_conv] * SAMPLES, dim1=c.tolist(),
                                        dim2=h.tolist(), dim3=w.tolist(), value=[VALUE] * SAMPLES)
        theirs = corrupt(x).argmax(1)
        batched_s = time.perf_counter() - start

        # PyTorchFI, per inference: declare the fault, run the one sample
        single = fault_injection(model, 1, input_shape=[1, 28, 28],
                                 layer_types=[torch.nn.Conv2d], use_cuda=False)
        start = time.perf_counter()
        for i in range(PER_INFERENCE):
            corrupt = single.declare_neuron_fi(batch=[0], layer_num=[first_conv],
                                               dim1=[int(c[i])], dim2=[int(h[i])],
                                               dim3=[int(w[i])], value=[VALUE])
            corrupt(x[i:i + 1])
        single_s = (time.perf_counter() - start) / PER_INFERENCE * SAMPLES
    agree = float((ours == theirs).float().mean())
    rate = SAMPLES / ours_s
    return [
        {"name": "fault_injection[vs PyTorchFI per inference]", "value": rate,
         "unit": "injections/s", "ratio": rate / (SAMPLES / single_s), "target": 5.0,
         "better": "higher",
         "note": f"PyTorchFI 0.6.0 {SAMPLES / single_s:.0f}/s declaring one fault and running "
                 f"one sample at a time; same faults give the same predictions on {agree:.1%}"},
        {"name": "fault_injection[vs PyTorchFI batched]", "value": rate,
         "unit": "injections/s", "ratio": rate / (SAMPLES / batched_s),
         "note": f"PyTorchFI batched (one fault per batch element) {SAMPLES / batched_s:.0f}/s; "
                 "recorded, not a target"},
    ]


BENCHMARKS = [fault_injection_vs_pytorchfi]
