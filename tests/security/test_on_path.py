"""A man in the middle on each kind of hop of a sealed plan (coordinator → stage, stage →
stage, stage → coordinator) flips bits, swaps payloads, replays, reorders, truncates,
drops and duplicates messages: no altered answer is ever accepted, every request ends,
and the workers keep serving with flat memory."""

from __future__ import annotations

import pytest

from shardguard.runtime.cluster import Cluster

from .conftest import rss, wrong
from .tools import OPS, OnPath

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class Switch:
    """Wraps an attacker so the test can stop it and check the workers still serve."""

    def __init__(self, attacker: OnPath) -> None:
        self.attacker, self.on = attacker, True

    def __call__(self, frames: list[bytes]) -> list[list[bytes]] | None:
        return self.attacker(frames) if self.on else [frames]


@pytest.mark.parametrize("protection, hops", [
    ("aead:chacha20-poly1305", ("input>s0",)),
    ("aead:chacha20-poly1305", ("s0>s1",)),
    ("aead:chacha20-poly1305", ("s1>output",)),
    ("mac:blake2b", ("input>s0", "s0>s1", "s1>output")),
])
def test_a_man_in_the_middle_gets_no_altered_answer_accepted(plans, images, protection, hops):
    bound = plans[protection]
    attackers = {hop: Switch(OnPath(rate=0.25, seed=i)) for i, hop in enumerate(hops)}
    with Cluster(bound, spawn_local=True, taps={h: [a] for h, a in attackers.items()},
                 on_reject="retry", max_attempts=40, deadline_s=1.0, window=16) as c:
        c.stream(images[:20], show_progress=False)
        before = {d: rss(h.process.pid) for d, h in c.handles.items()}  # type: ignore[union-attr]
        attacked = c.stream(images, show_progress=False)
        for a in attackers.values():
            a.on = False
        after = {d: rss(h.process.pid) for d, h in c.handles.items()}  # type: ignore[union-attr]
        clean = c.stream(images[:100], show_progress=False)
    done = {op: sum(a.attacker.done[op] for a in attackers.values()) for op in OPS}
    assert all(n > 0 for n in done.values()), done  # every kind of attack happened
    assert wrong(bound, attacked, images) == 0
    assert not attacked.errors  # every request ended answered (asked again as needed)
    assert attacked.resubmitted > 0 and attacked.routed_around == []
    assert not clean.errors and not clean.rejected and wrong(bound, clean, images[:100]) == 0
    for device in before:
        assert after[device] - before[device] < 16 * 2**20
