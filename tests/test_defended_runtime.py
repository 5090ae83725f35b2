"""Defences on real workers: sealed links, range guards; tampering caught and handled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shardguard import bind
from shardguard.defences.guards import profile_bounds
from shardguard.local import LocalExecutor
from shardguard.runtime.cluster import Cluster
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import BitFlips, Crash, Replay

from .conftest import planned, reference, run_cli, write_plan

pytestmark = pytest.mark.timeout(300)


def _sealed(tmp_path, protection, replicas=1):
    # protection set by hand: planning with AES costs may choose one device
    bound = bind(write_plan(tmp_path, planned(replicas=replicas), protection, name="sealed"))
    assert {link.protection for link in bound.plan.links} == {protection}
    assert len({p.device for p in bound.compiled.programs}) > 1
    return bound


@pytest.mark.parametrize("protection", ["mac:blake2b", "aead:aes-128-gcm"])
def test_a_sealed_plan_answers_exactly_as_the_local_executor(tmp_path, test_split, protection):
    bound = _sealed(tmp_path, protection)
    x = test_split.tensors(500)[0].numpy()
    with Cluster(bound, spawn_local=True) as c:
        result = c.stream(x, batch=4, show_progress=False)
        stats = c.stats()
    assert not result.errors and not result.rejected
    np.testing.assert_allclose(result.outputs, reference(bound, x), rtol=0, atol=1e-5)
    assert all(not s["rejected"] for s in stats.values())


def _attacked_stream(bound, x, policy):
    link = next(f"{t.src}>{t.dst}" for p in bound.compiled.programs for t in p.outputs
                if t.dst != "output")
    with Cluster(bound, spawn_local=True, attackers=[Replay(target=link, rate=0.3, seed=5)],
                 on_reject=policy, max_attempts=10, deadline_s=5.0) as c:
        result = c.stream(x, show_progress=False)
        stats = c.stats()
    in_workers = sum(n for s in stats.values() for reason, n in s["rejected"].items()
                     if reason == "tampered")
    return result, in_workers


def test_tampered_messages_are_rejected_and_asked_again_until_every_answer_is_right(
        tmp_path, test_split):
    bound = _sealed(tmp_path, "aead:chacha20-poly1305")
    x = test_split.tensors(300)[0].numpy()
    result, in_workers = _attacked_stream(bound, x, "retry")
    assert 30 <= len(result.rejected) == in_workers  # every rejection was reported
    assert not result.errors and result.resubmitted >= len({a["req"] for a in result.rejected})
    np.testing.assert_allclose(result.outputs, reference(bound, x), rtol=0, atol=1e-5)


def test_the_drop_policy_fails_each_request_whose_message_was_rejected(tmp_path, test_split):
    bound = _sealed(tmp_path, "mac:hmac-sha256")
    x = test_split.tensors(200)[0].numpy()
    result, in_workers = _attacked_stream(bound, x, "drop")
    assert len(result.rejected) == in_workers >= 20
    assert len(result.errors) == len(result.rejected) and result.resubmitted == 0
    assert all("rejected" in e for e in result.errors.values())
    answered = ~np.isnan(result.outputs).any(axis=1)
    np.testing.assert_allclose(result.outputs[answered], reference(bound, x)[answered],
                               rtol=0, atol=1e-5)


def test_range_guards_on_workers_recover_accuracy_lost_to_exponent_flips(tmp_path, test_split,
                                                                         train_split):
    bound = _sealed(tmp_path, "none")
    bounds = profile_bounds(bound.compiled, train_split.tensors(2000)[0])
    x, y = test_split.tensors(300)
    # guards bound activations between stages: the attacker is on the link between them
    attack = [BitFlips(target="s0>s1", ber=1e-3, bits="exponent-high", seed=3)]
    accuracy = {}
    for guarded in (False, True):
        with Cluster(bound, spawn_local=True, attackers=attack,
                     guards=bounds if guarded else None) as c:
            result = c.stream(x.numpy(), show_progress=False)
            stats = c.stats()
        assert not result.errors
        accuracy[guarded] = float((result.outputs.argmax(1) == y.numpy()).mean())
        flagged = sum(s["flagged"] for s in stats.values())
        assert (flagged > 0) == guarded
    # in the local executor, the same attack leaves 25 % and the guards 93.7 % (test_guards)
    assert accuracy[False] < 0.5 and accuracy[True] > 0.85, accuracy


def test_weight_digests_on_workers_find_bit_flips_in_stored_models_on_demand(tmp_path):
    bound = _sealed(tmp_path, "none")
    with Cluster(bound, spawn_local=True, fault_injection=True) as c:
        before = c.verify()
        target = bound.compiled.programs[0].device
        c.behave(target, flip_stored=3, seed=1)
        after = c.verify()
    assert all(all(stages.values()) for stages in before.values())
    for device, stages in after.items():
        hosted = {p.name for p in bound.compiled.programs if device in [p.device, *p.replicas]}
        assert set(stages) == hosted
        assert all(ok is (device != target) for ok in stages.values()), (device, stages)


def test_triplicated_stages_on_workers_outvote_a_compromised_device(tmp_path, test_split):
    bound = _sealed(tmp_path, "aead:chacha20-poly1305", replicas=3)
    x = test_split.tensors(200)[0].numpy()
    expected = reference(bound, x)
    with Cluster(bound, spawn_local=True, fault_injection=True, vote=3) as c:
        clean = c.stream(x, batch=4, show_progress=False)
        target = bound.compiled.programs[1].device
        c.behave(target, corrupt="random", seed=2)
        attacked = c.stream(x, batch=4, show_progress=False)
    for result in (clean, attacked):
        assert not result.errors and not result.rejected
        np.testing.assert_allclose(result.outputs, expected, rtol=0, atol=1e-5)


def test_duplicated_stages_on_workers_detect_a_compromised_device(tmp_path, test_split):
    bound = _sealed(tmp_path, "none", replicas=2)
    x = test_split.tensors(100)[0].numpy()
    target = bound.compiled.programs[0].replicas[0]  # the second copy of the first stage
    with Cluster(bound, spawn_local=True, fault_injection=True, vote=2,
                 on_reject="drop") as c:
        c.behave(target, corrupt="sign")
        result = c.stream(x, show_progress=False)
    assert len(result.errors) == len(x)  # every request went through it: none answered
    assert all("vote failed" in e for e in result.errors.values())


def test_cli_run_with_voting_and_guards_matches_the_local_executor(tmp_path):
    path = str(write_plan(tmp_path, planned(replicas=3), "mac:hmac-sha256"))
    result = run_cli("run", path, "--spawn-local", "--vote", "3",
                     "--guards", "1000", "--check", "-n", "200")
    assert result.code == 0, result.err[-2000:]
    assert "distributed run matches the local executor" in result.out
    assert run_cli("run", path, "--spawn-local", "--vote", "4").err.strip() \
        == "error: vote must be 1 (off), 2 (detect) or 3 (mask), got 4"


def test_a_key_holder_cannot_claim_a_stage_the_plan_did_not_give_it(tmp_path, test_split,
                                                                    zmq_context):
    import zmq

    bound = _sealed(tmp_path, "aead:aes-128-gcm")
    first, second = bound.compiled.programs[:2]
    link = f"{first.name}>{second.name}"
    t = next(t for t in second.inputs if t.src == first.name)
    x = test_split.tensors(50)[0].numpy()
    with Cluster(bound, spawn_local=True) as c:
        # The coordinator holds keys for every device: it seals a valid message that
        # claims to come from the first stage, run by itself.
        forged_route = {first.name: "coordinator", second.name: second.device,
                        "output": "coordinator"}
        piece = np.zeros((1, *t.shape), np.float32)
        sender = zmq_context.socket(zmq.PUSH)
        sender.setsockopt(zmq.LINGER, 5000)  # closing must not drop the forged message
        sender.connect(c.handles[second.device].data)
        sender.send_multipart(c.security.encode(7, 10**6, link, forged_route, [(t.id, piece)],
                                               receiver=second.device))
        sender.close()
        result = c.stream(x, show_progress=False)
        rejected = c.call(second.device, {"kind": "stats"})["rejected"]
    assert rejected == {"misrouted": 1}
    assert not result.errors
    np.testing.assert_allclose(result.outputs, reference(bound, x), rtol=0, atol=1e-5)


def test_the_degrade_policy_answers_with_zeros_for_a_rejected_tile(tmp_path, test_split):
    bound = bind(write_plan(tmp_path, planned(strategy="spatial", objective="latency"),
                            "aead:chacha20-poly1305"))
    tile = next(f"{t.src}>{t.dst}" for p in bound.compiled.programs for t in p.outputs
                if t.dst != "output" and p.device != bound.compiled.by_name[t.dst].device)
    x = test_split.tensors(200)[0].numpy()
    with Cluster(bound, spawn_local=True, attackers=[Replay(target=tile, rate=0.3, seed=1)],
                 on_reject="degrade") as c:
        result = c.stream(x, show_progress=False)
    assert not result.errors  # every request answered
    assert result.degraded is not None
    assert int(result.degraded.sum()) == len({a["req"] for a in result.rejected}) >= 20
    clean = ~result.degraded
    np.testing.assert_allclose(result.outputs[clean], reference(bound, x)[clean], rtol=0,
                               atol=1e-5)
    # a degraded answer is what the plan computes with that tile missing (filled with zeros)
    sender = bound.compiled.by_name[tile.split(">")[0]].device
    with torch.no_grad():
        missing = LocalExecutor(bound.compiled, [ThreatInterceptor(Crash(target=sender))])(
            torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(result.outputs[~clean], missing[~clean], rtol=0, atol=1e-4)


def test_the_failover_policy_routes_around_a_sender_whose_messages_are_rejected(
        tmp_path, test_split):
    bound = _sealed(tmp_path, "mac:blake2b", replicas=2)
    first = bound.compiled.programs[0]
    x = test_split.tensors(200)[0].numpy()
    with Cluster(bound, spawn_local=True, fault_injection=True, on_reject="failover",
                 deadline_s=5.0) as c:
        c.behave(first.device, garble_wire=True)  # everything it sends fails its tag
        result = c.stream(x, show_progress=False)
        stats = c.stats()
    assert not result.errors
    np.testing.assert_allclose(result.outputs, reference(bound, x), rtol=0, atol=1e-5)
    senders = {a["sender"] for a in result.rejected}
    assert senders == {first.device}
    # Only requests already in flight when the first alarm came (at most the window) went
    # through the garbling device; each was asked again through the replica, as was every
    # later request. Without failover all 200 would go through it and be rejected.
    assert 1 <= len(result.rejected) <= c.window
    assert stats[first.replicas[0]]["stages"][first.name]["runs"] == len(x)
    assert stats[first.device]["stages"][first.name]["runs"] <= c.window
