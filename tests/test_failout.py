"""Failout (M6): a model trained with a device's pieces dropped survives that device missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shardguard import load_model, load_platform, make_plan, trace
from shardguard.defences.failout import failout, split_tensors
from shardguard.errors import ConfigError
from shardguard.local import LocalExecutor
from shardguard.partition.plan import ModelRef
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import Crash

from .conftest import planned, run_cli

WEIGHTS = Path(__file__).parents[1] / "src/shardguard/zoo/weights"


def _plan(loaded, strategy="channel"):
    graph = trace(loaded.module, (1, 28, 28))
    return graph, make_plan(graph, ModelRef(ref="lenet5", input_shape=[1, 28, 28]),
                            load_platform("rpi4x4-ethernet"), strategy=strategy)


def _accuracy_without(weights, device, x, y):
    compiled = planned("lenet5", "channel", objective="latency", weights=weights).compiled
    executor = LocalExecutor(compiled, [ThreatInterceptor(Crash(target=device))])
    with torch.no_grad():
        outcome = executor.run_outcome(x)
    assert bool(outcome.answered.all()) and bool(outcome.degraded.all())
    return float((outcome.output.argmax(1) == y).float().mean())


def test_a_failout_trained_model_keeps_more_accuracy_with_a_device_missing(test_split):
    # Shipped checkpoints, same recipe and seed; the failout one was trained with
    # `shardguard train lenet5 --failout 0.3 --strategy channel` (see its .json).
    weights = str(WEIGHTS / "lenet5-failout.pt")
    trained = load_model("lenet5", weights=weights)
    assert trained.meta is not None and trained.meta.failout == 0.3
    x, y = test_split.tensors()
    for device in ("pi2", "pi3", "pi4"):  # pi1 holds the stage that gathers: not optional
        kept = _accuracy_without(weights, device, x, y)
        lost = _accuracy_without(None, device, x, y)
        # measured on the 10 000 test images: failout 90.0-90.3 %, normal 64.8-86.6 %
        assert kept >= 0.89 and kept >= lost + 0.03, (device, kept, lost)


def test_failout_layers_act_only_in_training_and_drop_whole_device_pieces():
    loaded = load_model("lenet5")
    graph, planned = _plan(loaded)
    net = failout(graph, planned.compiled, p=0.999, seed=0)
    x = torch.randn(64, 1, 28, 28)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), loaded.module(x))
    captured = {}
    drops = {n: m for n, m in net.network.named_modules() if n.startswith("failout_")}
    assert set(drops) == {f"failout_{t}" for t in split_tensors(planned.compiled)}
    for name, module in drops.items():
        module.register_forward_hook(lambda m, i, o, name=name: captured.update({name: o}))
    net.train()
    with torch.no_grad():
        net(x)
    dropped_by_layer = []
    for name, module in drops.items():
        out = captured[name]
        dropped = torch.full((len(x),), -1)
        for device, region in module.pieces:
            piece = out[(slice(None), *(slice(a, b) for a, b in region))].flatten(1)
            zeroed = (piece == 0).all(1)
            assert zeroed.sum() > 0, f"{net.devices[device]}'s piece of {name} never dropped"
            dropped[zeroed] = device
        dropped_by_layer.append(dropped)
    # one device per sample is lost, the same at every split tensor, as when it is down
    assert all(torch.equal(d, dropped_by_layer[0]) for d in dropped_by_layer)
    assert (dropped_by_layer[0] >= 0).float().mean() > 0.9


def test_failout_refuses_a_plan_that_splits_nothing():
    loaded = load_model("lenet5")
    graph, planned = _plan(loaded, strategy="pipeline")
    with pytest.raises(ConfigError, match="splits none"):
        failout(graph, planned.compiled, p=0.3)


def test_cli_train_with_failout_records_it(tmp_path):
    out = tmp_path / "f.pt"
    result = run_cli("train", "lenet5", "--epochs", "1", "--failout", "0.3", "-o", str(out))
    assert result.code == 0, result.err[-2000:]
    assert "failout 0.3: channel over pi1, pi2, pi3, pi4" in result.err + result.out
    import json

    assert json.loads(out.with_suffix(".json").read_text())["failout"] == 0.3
