"""Profiled graphs: published MAC and parameter counts, DAG structure, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shardguard import trace
from shardguard.errors import ModelError
from shardguard.zoo import ZOO, build

#: Published totals (torchvision model documentation; the papers' own tables).
PUBLISHED = {
    "resnet18": (1.82e9, 11.69e6),
    "resnet50": (4.11e9, 25.56e6),
    "vgg16": (15.5e9, 138.4e6),
    "mobilenetv2": (0.30e9, 3.5e6),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_profile_totals_match_published_counts_within_2_percent(name):
    graph = trace(build(name), ZOO[name].input_shape)
    macs, params = PUBLISHED[name]
    assert graph.total_macs == pytest.approx(macs, rel=0.02)
    assert graph.total_params == pytest.approx(params, rel=0.02)
    assert graph.total_params == sum(p.numel() for p in build(name).parameters())


def test_residual_branches_are_kept_as_a_dag():
    graph = trace(build("resnet-small"), (1, 28, 28))
    adds = [n for n in graph.nodes if n.kind == "add"]
    assert len(adds) == 6  # one per basic block
    for add in adds:
        assert len(add.inputs) == 2
    # the block input feeds both the residual path and the shortcut
    assert any(len(graph.successors[n.name]) == 2 for n in graph.nodes)


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 5, padding=2)
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        return self.head(torch.flatten(y, 1))


def test_concatenation_and_per_node_costs():
    graph = trace(Branches(), (1, 8, 8))
    cat = next(n for n in graph.nodes if n.kind == "cat")
    assert len(cat.inputs) == 2 and cat.shape == (1, 8, 8, 8)
    a = graph.by_name["a"]
    assert a.macs == 4 * 8 * 8 * 9 and a.params == 4 * 9 + 4 and a.out_bytes == 4 * 8 * 8 * 4
    assert a.attrs["kernel_size"] == [3, 3] and a.attrs["padding"] == [1, 1]
    assert graph.by_name["head"].macs == 512 * 10


def test_measured_profile_times_every_node():
    graph = trace(build("lenet5"), (1, 28, 28), measure=True)
    assert all(n.latency_s is not None and n.latency_s >= 0 for n in graph.compute_nodes)


def test_wrong_input_shape_is_named():
    with pytest.raises(ModelError, match=r"input shape \(3, 28, 28\) does not fit"):
        trace(build("lenet5"), (3, 28, 28))


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x
        return -x


def test_untraceable_model_gets_a_clear_error():
    with pytest.raises(ModelError, match="cannot be traced"):
        trace(DataDependent(), (1, 4, 4))
