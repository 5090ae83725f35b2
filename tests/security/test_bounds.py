"""Every table a worker keeps per peer or per request stops at its bound under hostile
traffic, and the worker still answers: requests waiting for pieces, requests answered
(to drop duplicates), suspects waiting out their grace, open votes, and coordinators
with keys prepared by a hello."""

from __future__ import annotations

import time

import numpy as np
import pytest

from shardguard.defences.ballots import MAX_OPEN
from shardguard.partition import bind
from shardguard.protocol import wire
from shardguard.runtime._dataplane import DONE_MEMORY, MAX_PENDING
from shardguard.runtime.linksec import MAX_SUSPECTS, Inbox, LinkSecurity
from shardguard.runtime.worker import MAX_HELLOS

from ..conftest import eventually, planned, write_plan
from ..harness import Harness

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _gather(tmp_path, protection="none", replicas=1):
    """A spatial plan and the stage that gathers tiles from two other devices."""
    bound = bind(write_plan(tmp_path, planned("resnet-small", "spatial", replicas=replicas),
                            protection, name=f"spatial-{replicas}"))
    route = {p.name: p.device for p in bound.compiled.programs}
    gather = next(p for p in bound.compiled.programs
                  if len({route[t.src] for t in p.inputs if t.src != "input"} - {p.device}) > 1)
    return bound, gather


def _wait(h: Harness, table: str, value: int, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        stats = h.stats()
        if stats["tables"][table] >= value or time.monotonic() > end:
            return stats
        time.sleep(0.2)


def test_requests_waiting_for_pieces_stop_at_their_bound(tmp_path):
    bound, gather = _gather(tmp_path)
    # a deadline well past the time to send every piece on a loaded machine: none expires
    # while the table fills, so exactly the ``extra`` beyond the bound are refused
    deadline = 30.0
    with Harness(tmp_path, bound, gather.device, deadline_s=deadline) as h:
        h.deploy()
        link, arrays = next((k, v) for k, v in h.inputs(gather.name).items()
                            if h.route()[k.split(">")[0]] != gather.device)
        sender = h.route()[link.split(">")[0]]
        extra = 500
        for req in range(MAX_PENDING + extra):  # one piece of each: never complete
            h.send(h.encode(sender, req, link, arrays))
        stats = _wait(h, "pending", MAX_PENDING)
        # past the deployment's deadline: the waiting requests expire
        later = eventually(h.stats, lambda s: s["expired"] >= MAX_PENDING,
                           timeout=deadline + 60)
        h.feed(gather.name, req=10**9)  # and a whole request goes through again
        assert len(h.received("output")) == 1
    assert stats["tables"]["pending"] == MAX_PENDING
    assert stats["rejected"] == {"overloaded": extra}
    assert (later["tables"]["pending"], later["expired"]) == (0, MAX_PENDING)


def test_answered_requests_are_remembered_up_to_their_bound(tmp_path):
    bound = bind(write_plan(tmp_path, planned(), name="pipeline"))
    last = bound.compiled.programs[-1]
    with Harness(tmp_path, bound, last.device) as h:
        h.deploy()
        n = DONE_MEMORY + 300
        for req in range(n):
            h.feed(last.name, req=req)
        got = h.received("output", timeout=120, expect=n)
        stats = h.stats()
    assert len(got) == n
    assert stats["tables"]["done"] == DONE_MEMORY


def test_suspects_waiting_for_their_genuine_message_stop_at_their_bound():
    """Tampered messages with authentic headers wait out their grace; more than the bound
    of them give up the oldest first (checked on the inbox itself: on a worker the grace
    ends long before a test could fill the table)."""
    sender, receiver = LinkSecurity("pi1"), LinkSecurity("pi2")
    publics = {"pi1": sender.public, "pi2": receiver.public}
    for end in (sender, receiver):
        end.configure({"s0>s1": "aead:chacha20-poly1305"}, publics)
    inbox = Inbox(receiver, grace_s=3600)
    schema = {"s0>s1": wire.Expected({"t": ("float32", (4,))}, sealed=True)}
    route = {"s0": "pi1", "s1": "pi2"}
    for seq in range(1, MAX_SUSPECTS + 1001):
        frames = sender.encode(seq, seq, "s0>s1", route, [("t", np.ones((1, 4), np.float32))])
        payload = bytearray(frames[1])
        payload[0] ^= 1
        assert inbox.open([frames[0], bytes(payload), frames[2]], schema) is None
    assert len(inbox.suspects) == MAX_SUSPECTS
    assert min(s.seq for s in inbox.suspects.values()) == 1001  # the oldest given up
    assert inbox.rejected == {"tampered": MAX_SUSPECTS + 1000}
    assert inbox.due(now=time.monotonic() + 7200)  # all due once their grace is over
    assert not inbox.suspects


def test_open_votes_stop_at_their_bound(tmp_path):
    bound = bind(write_plan(tmp_path, planned(replicas=3), name="voted"))
    last = bound.compiled.programs[-1]
    with Harness(tmp_path, bound, last.device) as h:
        message = h.deploy_message()
        message["vote"] = {p.name: 3 for p in bound.compiled.programs}
        assert h.call(message)["ok"]
        (link, arrays), = h.inputs(last.name).items()
        sender = h.route()[link.split(">")[0]]
        for req in range(MAX_OPEN + 500):  # one copy of each vote: never decided
            h.send(h.encode(sender, req, link, arrays))
        stats = _wait(h, "ballots_open", MAX_OPEN)
    assert stats["tables"]["ballots_open"] == MAX_OPEN


def test_coordinators_with_keys_prepared_stop_at_their_bound(tmp_path):
    bound = bind(write_plan(tmp_path, planned(), name="pipeline"))
    device = bound.compiled.programs[0].device
    with Harness(tmp_path, bound, device) as h:
        h.deploy()
        for _ in range(3 * MAX_HELLOS):  # each a new connection: a new identity
            sock = h._dealer(h.keys)
            assert h.call({"kind": "hello"}, sock=sock)["ok"]
            sock.close(linger=0)
        stats = h.stats()
        h.feed(bound.compiled.programs[0].name, req=1)
        assert len(h.received(bound.compiled.programs[1].device)) == 1
    assert stats["tables"]["hellos"] == MAX_HELLOS


def test_the_coordinator_keeps_at_most_its_bound_of_alarms(tmp_path, test_split, monkeypatch):
    from shardguard.runtime import cluster
    from shardguard.runtime.cluster import Cluster
    from shardguard.threats.spec import Replay

    monkeypatch.setattr(cluster, "MAX_ALARMS_KEPT", 5)
    bound = bind(write_plan(tmp_path, planned(), "mac:blake2b", name="sealed"))
    x = test_split.tensors(100)[0].numpy()
    with Cluster(bound, spawn_local=True, attackers=[Replay(target="s0>s1", rate=0.5, seed=1)],
                 on_reject="retry", max_attempts=20, deadline_s=2.0) as c:
        result = c.stream(x, show_progress=False)
    assert result.alarms > 5 and len(result.rejected) == 5
    assert not result.errors
