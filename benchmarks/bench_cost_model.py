"""The cost model against published times: a whole model on one Raspberry Pi 4, predicted
by the built-in profile, beside ncnn's own benchmark of the same network on that board.

Published times: Tencent/ncnn benchmark/README.md, "Raspberry Pi 4 Model B Broadcom
BCM2711B0, Cortex-A72 (ARMv8) (1.5GHz x 4)", ``benchncnn 8 4 0`` (4 threads, fp32), the
avg column — the table the profile's ``mac_rate`` (resnet18) and ``mac_rates.depthwise``
(mobilenet_v2) are derived from; so resnet18 and mobilenetv2 are fits, not checks, and
resnet50, vgg16 and MobileNet v1 (ncnn's "mobilenet"; not in the zoo, built here from its
paper's Table 1: Howard et al., "MobileNets", arXiv 1704.04861) are the checks. The
ratio is predicted / published (1.0: exact).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from shardguard.graph import trace
from shardguard.partition import ModelRef
from shardguard.partition.build import assemble_plan, whole
from shardguard.partition.cost import estimate
from shardguard.platform import load_platform
from shardguard.zoo import ZOO, build

SOURCE = ("Tencent/ncnn benchmark/README.md, Raspberry Pi 4 Model B (Cortex-A72 1.5GHz x 4), "
          "benchncnn 4 threads fp32, avg")
#: ms, from SOURCE: zoo name -> (ncnn's name, avg ms)
PUBLISHED_MS = {"resnet18": ("resnet18", 176.18), "resnet50": ("resnet50", 335.34),
                "vgg16": ("vgg16", 873.71), "mobilenetv2": ("mobilenet_v2", 72.62)}
FITTED = {"resnet18": "mac_rate", "mobilenetv2": "mac_rates.depthwise"}
#: MobileNet v1 1.0-224, Table 1 of Howard et al. 2017: (output channels, stride) of each
#: depthwise-separable block after the 3x3 stride-2 stem of 32 channels
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5,
             (1024, 2), (1024, 1)]


def mobilenet_v1() -> nn.Module:
    """MobileNet v1 1.0 at 224x224 (Table 1 of the paper; batch norm left out: no MACs)."""
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU()]
    cin = 32
    for cout, stride in V1_BLOCKS:
        layers += [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.ReLU(),
                   nn.Conv2d(cin, cout, 1), nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000))


def ncnn_pi4_time_ratios() -> list[dict[str, Any]]:
    """Predicted / published time of each model on one Raspberry Pi 4, with the per-type
    MAC rates and with the one device rate (as before per-type rates)."""
    platform = load_platform("rpi4x4-ethernet")
    pi = platform.devices["pi1"]
    one_rate = replace(platform, devices={"pi1": replace(pi, layer_speed={})})
    rows = []
    for model, (ncnn_name, published_ms) in {
            **PUBLISHED_MS, "mobilenet-v1": ("mobilenet", 72.08)}.items():
        shape = ZOO[model].input_shape if model in ZOO else (3, 224, 224)
        module = build(model) if model in ZOO else mobilenet_v1()
        graph = trace(module.eval(), shape)
        planned = assemble_plan(graph, ModelRef(ref=model, input_shape=list(shape)), platform,
                                "manual", "latency",
                                [whole(graph, 0, len(graph.compute_nodes) - 1, "s0", "pi1")])
        typed = estimate(planned.compiled, platform).stage_compute_s["s0"] * 1e3
        single = estimate(planned.compiled, one_rate).stage_compute_s["s0"] * 1e3
        fitted = (f"fitted: the profile's {FITTED[model]} is derived from this row"
                  if model in FITTED else "a check: no profile figure comes from this row")
        rows.append({"name": f"ncnn_pi4_time[{model}]", "value": typed, "unit": "ms",
                     "ratio": typed / published_ms, "published_ms": published_ms,
                     "ratio_one_rate": single / published_ms,
                     "note": f"predicted / published; ncnn {ncnn_name} {published_ms} ms "
                             f"({SOURCE}); one device rate: ×{single / published_ms:.2f}; "
                             f"{fitted}"})
    return rows


BENCHMARKS = [ncnn_pi4_time_ratios]
