"""Honest energy accounting (issue 14, points 1 and 8): the boards a plan leaves unused pay
idle power, voting copies pay what any stage pays (compute, receive, seal, open, send),
and explorations optimise the platform's total energy beside the busiest device's."""

from __future__ import annotations

import pytest
import torch

from shardguard import trace
from shardguard.defences.catalogue import parse_defence
from shardguard.partition import ModelRef, compile_plan, make_plan
from shardguard.partition.build import assemble_plan, whole
from shardguard.partition.cost import estimate
from shardguard.platform import load_platform
from shardguard.zoo import load_model

SEAL = "aead:chacha20-poly1305"


@pytest.fixture(scope="module")
def lenet():
    return trace(load_model("lenet5").module, (1, 28, 28)), ModelRef(ref="lenet5",
                                                                        input_shape=[1, 28, 28])


def test_boards_the_plan_leaves_unused_pay_idle_power_for_the_period(lenet):
    graph, ref = lenet
    rpi4 = load_platform("rpi4x4-ethernet")
    n = len(graph.compute_nodes)
    planned = assemble_plan(graph, ref, rpi4, "pipeline", "energy",
                            [whole(graph, 0, n // 2 - 1, "s0", "pi1"),
                             whole(graph, n // 2, n - 1, "s1", "pi2")])
    cost = estimate(planned.compiled, rpi4)
    assert set(cost.devices) == {"pi1", "pi2"}
    assert set(cost.idle_boards) == {"pi3", "pi4"}  # powered, idle the whole period
    for board, joules in cost.idle_boards.items():
        assert joules == pytest.approx(rpi4.devices[board].idle_power_w * cost.period_s)
        assert joules > 0
    used = sum(d.energy_j for d in cost.devices.values())
    assert cost.total_energy_j == pytest.approx(used + sum(cost.idle_boards.values()))
    assert cost.total_energy_j > used


def _copy_cost(rpi4, program, n_in, n_out, device):
    """What one copy of a stage on ``device`` costs by hand: compute, open what it
    receives, seal what it sends, and the radio at both."""
    spec, link = rpi4.devices[device], rpi4.medium
    crypto_s = (n_in + n_out) * spec.crypto_cycles_per_byte["chacha20-poly1305"] / spec.clock_hz
    return (spec.active_power_w * (program.macs / spec.mac_rate + crypto_s)
            + spec.radio_j_per_byte(link, False) * n_in + spec.radio_j_per_byte(link, True) * n_out)


def test_voting_copies_pay_compute_receive_seal_and_open_like_the_stage(lenet):
    graph, ref = lenet
    rpi4 = load_platform("rpi4x4-ethernet")
    planned = make_plan(graph, ref, rpi4, strategy="pipeline", objective="energy", replicas=3,
                        devices=1)
    sealed = compile_plan(planned.plan.with_protection(SEAL), graph, build=False)
    (program,) = sealed.programs  # the whole model on one device, two replicas
    n_in, n_out = program.bytes_in, program.bytes_out
    standby = estimate(sealed, rpi4)  # replicas on standby: no work, idle power only
    voted = estimate(sealed, rpi4, vote=3)
    copies = [program.device, *program.replicas]
    assert len(copies) == 3
    for device in copies:
        expected = _copy_cost(rpi4, program, n_in, n_out, device)
        assert voted.devices[device].active_j == pytest.approx(expected, rel=1e-9)
        assert voted.devices[device].crypto_j > 0  # each copy opens and seals its messages
        assert voted.devices[device].bytes_received == n_in
    for device in program.replicas:
        assert standby.devices[device].active_j == 0
    # the vote defence's cost is the copies' cost, sealing included
    extra = parse_defence("vote:3").energy_j(sealed, rpi4)
    for device in program.replicas:
        assert extra[device] == pytest.approx(_copy_cost(rpi4, program, n_in, n_out, device))
    assert extra[program.device] == pytest.approx(0.0, abs=1e-15)
    assert voted.total_energy_j > standby.total_energy_j


def test_a_pipeline_voted_copy_to_copy_sends_every_message(lenet):
    """Two stages on three devices each: the workers send each copy's outputs to every
    copy of the next stage, so the link carries 3 × 3 messages, each sealed and opened."""
    graph, ref = lenet
    rpi4 = load_platform("rpi4x4-ethernet")
    planned = make_plan(graph, ref, rpi4, strategy="pipeline", objective="energy", replicas=3,
                        devices=2)
    sealed = compile_plan(planned.plan.with_protection(SEAL), graph, build=False)
    first, second = sealed.programs
    voted = estimate(sealed, rpi4, vote=3)
    between = [t for t in voted.transfers if t.src.split("@")[0] == first.name
               and t.dst.split("@")[0] == second.name]
    assert len(between) == 9
    sent = sum(t.nbytes for t in between if t.src_device != t.dst_device)
    received = sum(d.bytes_received for d in voted.devices.values())
    assert received == sent + 3 * first.bytes_in  # and the coordinator's input, per copy
    with pytest.raises(Exception, match="vote:3 needs 3 devices"):
        estimate(compile_plan(make_plan(graph, ref, rpi4, strategy="pipeline",
                                        objective="energy", devices=1).plan, graph,
                              build=False), rpi4, vote=3)


def test_in_explore_a_voted_deployment_costs_more_platform_energy_than_unvoted():
    """The audit's case: "whole model on pi1, vote:3" tied with no voting on the busiest
    device's energy; the platform's total tells them apart, and the boards a deployment
    leaves idle are in it."""
    from shardguard.analysis import explore
    from shardguard.analysis.search import OBJECTIVES

    spec = explore.ExploreSpec.model_validate({
        "model": "lenet5", "platform": "rpi4x4-ethernet", "samples": 10,
        "threats": [{"id": "L1", "target": "links", "ber": 1e-3, "bits": "exponent-high"}]})
    explore.init(spec.model_dump_json(), 1)
    one = explore.Candidate("pipeline", ("pi1",), (), ("none",) * 3, 1, False, SEAL)
    voted = explore.Candidate("pipeline", ("pi1",), (), ("none",) * 3, 3, False, SEAL)
    plain, three = explore.evaluate(one), explore.evaluate(voted)
    assert "total_energy_j" in OBJECTIVES and len(OBJECTIVES) == 4
    assert three["total_energy_j"] > plain["total_energy_j"]
    # the copies' own sealing: two more devices spend crypto energy on the coordinator's hops
    assert sum(j > 0 for j in three["crypto_per_device_j"].values()) == 3
    cost = explore.build(one).cost
    assert set(cost.idle_boards) == {"pi2", "pi3", "pi4"}
    assert plain["total_energy_j"] == pytest.approx(cost.total_energy_j)
    assert plain["total_energy_j"] > sum(d.energy_j for d in cost.devices.values())


def _two_stage_cost(lenet, platform, first, second):
    graph, ref = lenet
    n = len(graph.compute_nodes)
    planned = assemble_plan(graph, ref, platform, "pipeline", "energy",
                            [whole(graph, 0, n // 2 - 1, "s0", first),
                             whole(graph, n // 2, n - 1, "s1", second)])
    return estimate(planned.compiled, platform)


def test_ethernet_energy_is_counted_once_inside_the_measured_board_power(lenet, tmp_path):
    """A Pi's measured power includes its Ethernet link (the media's per-byte figures are
    that link power over throughput): Pis pay no per-byte Ethernet energy on top. A Jetson's
    figures are module budgets without the carrier's PHY: it pays. Wi-Fi is charged."""
    from shardguard.platform import load_platform as load

    rpi4 = load("rpi4x4-ethernet")
    assert "ethernet-100m" in rpi4.devices["pi1"].media_in_power
    assert "devices.md" in rpi4.devices["pi1"].sources["media_in_power"]
    cost = _two_stage_cost(lenet, rpi4, "pi1", "pi2")
    assert cost.devices["pi1"].bytes_sent > 0 and cost.devices["pi2"].bytes_received > 0
    assert all(d.radio_j == 0 for d in cost.devices.values())
    hetero = load("hetero8-ethernet")
    cost = _two_stage_cost(lenet, hetero, "pi4a", "nano10")
    link = hetero.medium
    nano = cost.devices["nano10"]
    assert cost.devices["pi4a"].radio_j == 0
    assert nano.radio_j > 0 and nano.radio_j == pytest.approx(
        link.rx_j_per_byte * nano.bytes_received + link.tx_j_per_byte * nano.bytes_sent)
    wifi = load("mixed-wifi")
    cost = _two_stage_cost(lenet, wifi, "pi1", "pi2")
    assert cost.devices["pi1"].radio_j > 0  # Wi-Fi's transmit power is not in the figures
    # a platform file's own per-byte figures are charged as given
    (tmp_path / "given.yaml").write_text(
        "name: given\nmedium: {profile: ethernet-100m, tx_j_per_byte: 1.0e-8, "
        "rx_j_per_byte: 1.0e-8}\ndevices:\n  - {name: a, profile: raspberry-pi-4}\n"
        "  - {name: b, profile: raspberry-pi-4}\n")
    cost = _two_stage_cost(lenet, load(tmp_path / "given.yaml"), "a", "b")
    a = cost.devices["a"]
    assert a.radio_j == pytest.approx(1e-8 * (a.bytes_sent + a.bytes_received))


class Depthwise(torch.nn.Module):
    """Dense, depthwise and fully connected layers: each runs at its own rate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.pw(torch.relu(self.dw(torch.relu(self.conv(x))))))
        return self.fc(y.flatten(1))


TYPED = """name: typed
medium: gigabit-ethernet
devices:
  - {name: a, profile: raspberry-pi-4, mac_rates: {depthwise: 2.0e+8, linear: 5.0e+8}}
  - {name: b, profile: raspberry-pi-4, mac_rates: {conv: 2.0e+10}}
  - {name: c, profile: raspberry-pi-3b}
"""


def test_mac_rates_per_layer_type_price_each_layer_and_the_dp_agrees(tmp_path):
    from dataclasses import replace

    from shardguard.errors import ConfigError
    from shardguard.partition.pipeline import solve

    from .test_partition import REF, brute_force

    (tmp_path / "typed.yaml").write_text(TYPED)
    platform = load_platform(tmp_path / "typed.yaml")
    graph = trace(Depthwise().eval(), (2, 8, 8))
    kinds = {n.name: n.layer_type for n in graph.nodes if n.macs}
    assert sorted(kinds.values()) == ["conv", "conv", "depthwise", "linear"]
    n = len(graph.compute_nodes)
    pi4, pi3 = 1.03e10, 5.54e9  # the profiles' mac_rate
    rates = {"a": {"conv": pi4, "depthwise": 2e8, "linear": 5e8},
             "b": {"conv": 2e10, "depthwise": 4.56e8, "linear": pi4},  # the profile's dw
             "c": {"conv": pi3, "depthwise": pi3, "linear": pi3}}
    for device, rate in rates.items():
        planned = assemble_plan(graph, REF, platform, "manual", "latency",
                                [whole(graph, 0, n - 1, "s0", device)])
        by_hand = sum(x.macs / rate[kinds[x.name]] for x in graph.nodes if x.macs)
        assert planned.cost.stage_compute_s["s0"] == pytest.approx(by_hand, rel=1e-12)
    a = platform.devices["a"]
    assert replace(a, mac_rate=a.mac_rate / 2).rate_for("depthwise") == pytest.approx(1e8)
    for objective in ("latency", "energy"):  # the pipeline DP prices stages the same way
        assert solve(graph, platform, objective).value == pytest.approx(
            brute_force(graph, platform, objective), rel=1e-9)
    (tmp_path / "bad.yaml").write_text(TYPED.replace("linear: 5.0e+8", "pointwise: 5.0e+8"))
    with pytest.raises(ConfigError, match="pointwise"):
        load_platform(tmp_path / "bad.yaml")


def test_the_pi4_profile_prices_depthwise_layers_at_its_sourced_rate():
    pi = load_platform("rpi4x4-ethernet").devices["pi1"]
    assert pi.rate_for("depthwise") < pi.mac_rate
    source = pi.sources["mac_rates.depthwise"]
    assert "ncnn" in source and "mobilenet_v2" in source and "72.62" in source


def test_cli_platforms_shows_the_new_figures_with_their_sources():
    from .conftest import run_cli, succeeded

    out = succeeded(run_cli("platforms", "rpi4x4-ethernet"), "platforms").out
    assert "mac_rates.depthwise" in out and "4.56e+08" in out
    assert "media_in_power" in out and "ethernet-100m" in out


def test_a_journaled_row_without_the_total_energy_objective_is_costed_anew(tmp_path):
    """An exploration directory from before total_energy_j resumes: its old rows (costed
    without idle boards and voting copies' own costs) are evaluated again, not mixed in."""
    import json

    from shardguard.analysis.backend import Journal
    from shardguard.analysis.explore import Candidate
    from shardguard.analysis.search import Evaluations

    old, new = (Candidate("pipeline", (d,), (), ("none",), 1, False) for d in ("pi1", "pi2"))
    rows = [{"key": old.key, "energy_j": 1.0, "latency_s": 1.0, "vulnerability": 0.0},
            {"key": new.key, "energy_j": 1.0, "total_energy_j": 2.0, "latency_s": 1.0,
             "vulnerability": 0.0}]
    (tmp_path / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    asked = []

    class Backend:
        def map(self, fn, items):
            asked.extend(items)
            return [(c, {"key": c.key, "describe": "x", "energy_j": 1.0, "total_energy_j": 3.0,
                         "latency_s": 1.0, "vulnerability": 0.0}) for c in items]

    class Bar:
        def update(self, *args, **kwargs):
            pass

    evaluations = Evaluations(Journal(tmp_path / "evaluations.jsonl", "key"), Backend(),
                              Bar(), None)
    got = evaluations([old, new])
    assert asked == [old]
    assert [r["total_energy_j"] for r in got] == [3.0, 2.0]


def test_cli_plan_names_the_idle_boards_in_the_platforms_total(tmp_path):
    from .conftest import run_cli, succeeded

    out = succeeded(run_cli("plan", "lenet5", "-p", "rpi4x4-ethernet", "--stages", "2",
                            "-o", str(tmp_path / "plan.yaml")), "plan").out
    assert "total energy" in out and "2 unused board(s) idle" in out
