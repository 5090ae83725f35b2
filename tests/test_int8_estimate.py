"""Issue 15, point 5: the local estimate of an int8 candidate (``int8_emulation``): link
tensors out of int8 stages travel as int8 codes between ``quantize`` and ``dequantize``
(where threats and guards act on them), and the estimate stays close to fp32."""

from __future__ import annotations

import torch

from shardguard import trace
from shardguard.analysis.int8_estimate import int8_emulation
from shardguard.analysis.metrics import wilson
from shardguard.hooks import Interceptor
from shardguard.local import LocalExecutor
from shardguard.partition import ModelRef, compile_plan
from shardguard.partition.build import assemble_plan, whole
from shardguard.platform import load_platform
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import parse_threat
from shardguard.zoo import load_model

from .test_int8_cost import as_int8


class Seen(Interceptor):
    def __init__(self) -> None:
        self.dtypes: dict[str, torch.dtype] = {}

    def on_link(self, transfer, value, traffic):
        self.dtypes[transfer.id] = value.dtype
        return value


def test_int8_links_carry_codes_and_the_estimate_agrees_with_fp32(test_split, train_split):
    graph = trace(load_model("lenet5").module, (1, 28, 28))
    platform = load_platform("rpi4x4-ethernet")
    n = len(graph.compute_nodes)
    planned = assemble_plan(graph, ModelRef(ref="lenet5", input_shape=[1, 28, 28]), platform,
                            "pipeline", "energy", [whole(graph, 0, n // 2 - 1, "s0", "pi1"),
                                                   whole(graph, n // 2, n - 1, "s1", "pi2")])
    fp32 = compile_plan(planned.plan, graph)
    int8 = compile_plan(as_int8(planned.plan), graph)
    x, y = test_split.tensors(500)
    calibration, _ = train_split.tensors(200)
    with torch.no_grad():
        clean = LocalExecutor(fp32, []).run(x).argmax(1)
        with int8_emulation(int8, calibration) as em:
            seen = Seen()
            out = LocalExecutor(int8, [em.quantize, seen, em.dequantize]).run(x)
            flips = ThreatInterceptor(parse_threat({"id": "L1", "target": "s0>s1",
                                                    "bits": "sign", "ber": 0.05}),
                                      em.zero_points)
            struck = LocalExecutor(int8, [em.quantize, flips, em.dequantize]).run(x)
        restored = LocalExecutor(int8, []).run(x).argmax(1)
    link = next(t.id for p in int8.programs for t in p.outputs if t.src == "s0")
    assert seen.dtypes[link] == torch.int8 and em.zero_points[link] in range(-128, 128)
    assert all(d == torch.float32 for k, d in seen.dtypes.items() if k.startswith("input"))
    agree = int((out.argmax(1) == clean).sum())
    low, high = wilson(agree, len(x))
    assert low >= 0.97, f"int8 estimate agrees with fp32 on {agree}/{len(x)} [{low}, {high}]"
    assert (out.argmax(1) == y).double().mean() >= (clean == y).double().mean() - 0.02
    assert not torch.equal(struck, out)  # sign flips on int8 codes change answers
    assert torch.equal(restored, clean)  # the weights are restored after the context
