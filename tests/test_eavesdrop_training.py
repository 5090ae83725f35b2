"""The eavesdropper (L6) trains to convergence: it stops when a held-out split stops
improving, reports its epochs, and ``analyze`` caches each cut's result for a resumed run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from shardguard import load_model, load_platform, trace
from shardguard.partition.build import assemble_plan, whole
from shardguard.partition.plan import ModelRef
from shardguard.threats.eavesdrop import eavesdrop

from .conftest import planned, write_plan


@pytest.fixture(scope="module")
def shallow_cut():
    """lenet5 cut after its first pooling: a 6×14×14 tensor on the link."""
    graph = trace(load_model("lenet5").module, (1, 28, 28))
    names = [n.name for n in graph.compute_nodes]
    cut = next(i for i, name in enumerate(names) if name.endswith("features_2"))
    return assemble_plan(graph, ModelRef(ref="lenet5", input_shape=[1, 28, 28]),
                         load_platform("rpi4x4-ethernet"), "manual", "latency",
                         [whole(graph, 0, cut, "a", "pi1"),
                          whole(graph, cut + 1, len(names) - 1, "b", "pi2")]).compiled


def test_training_stops_when_the_held_out_split_stops_improving(shallow_cut, train_split,
                                                                test_split):
    train_x, test_x = train_split.tensors(400)[0], test_split.tensors(100)[0]
    seen: list[tuple[int, float]] = []
    converged = eavesdrop(shallow_cut, "a>b", train_x, test_x, epochs=60, patience=2,
                          on_epoch=lambda e, db: seen.append((e, db)))
    assert converged.converged and converged.epochs < 60  # the criterion stopped it
    assert [e for e, _ in seen] == list(range(1, converged.epochs + 1))
    best = max(range(len(seen)), key=lambda i: seen[i][1])
    # it stopped ``patience`` epochs after the last epoch that gained 0.1 dB
    gains = [i for i in range(1, len(seen)) if seen[i][1] >= max(db for _, db in seen[:i]) + 0.1]
    assert converged.epochs == (gains[-1] + 1 if gains else 1) + 2
    assert best < converged.epochs
    two = eavesdrop(shallow_cut, "a>b", train_x, test_x, epochs=2)  # the old fixed budget
    assert two.epochs == 2 and not two.converged
    assert converged.psnr_db > two.psnr_db + 1  # under-trained, leakage was understated


def test_a_gain_too_small_to_count_stops_it_after_patience_epochs(shallow_cut, train_split,
                                                                   test_split):
    train_x, test_x = train_split.tensors(100)[0], test_split.tensors(20)[0]
    rec = eavesdrop(shallow_cut, "a>b", train_x, test_x, epochs=10, patience=3,
                    min_gain_db=100.0)
    assert (rec.epochs, rec.converged) == (4, True)  # the first epoch, then three without
    capped = eavesdrop(shallow_cut, "a>b", train_x, test_x, epochs=3, patience=5)
    assert (capped.epochs, capped.converged) == (3, False)  # the limit, not convergence


SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import shardguard.threats.eavesdrop as module
    from shardguard.analysis.analyze import reconstruction_by_depth
    from shardguard.data import plan_data
    from shardguard.partition import bind
    from shardguard.threats.eavesdrop import EavesdropTraining

    plan, cache, epochs, forbid = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if forbid == "yes":  # this process must not train: every cut comes from the cache
        def refuse(*args, **kwargs):
            raise SystemExit("trained again")
        module.eavesdrop = refuse
    bound = bind(Path(plan))
    training = EavesdropTraining(images=100, test=20, max_epochs=epochs)
    rows = reconstruction_by_depth(bound, plan_data(None, bound), training=training,
                                   depths=2, cache=cache)
    print(json.dumps(rows))
""")


def _run(*args: str, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ,
                                                       "SHARDGUARD_QUIET": "1" if quiet else "0"})


def test_a_rerun_takes_each_cut_from_the_cache_without_training(tmp_path):
    plan = str(write_plan(tmp_path, planned("lenet5", objective="energy")))
    cache = tmp_path / "eavesdropper"
    cache.mkdir()
    first = _run(plan, str(cache), "2", "no")
    assert first.returncode == 0, first.stderr[-2000:]
    rows = json.loads(first.stdout)
    assert len(rows) == 2 and all(r["epochs"] >= 1 and "converged" in r for r in rows)
    again = _run(plan, str(cache), "2", "yes")  # a fresh process, training forbidden
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout) == rows
    other = _run(plan, str(cache), "3", "yes")  # other training settings: trained anew
    assert other.returncode != 0 and "trained again" in other.stderr


def test_the_cache_key_follows_the_weights_not_only_the_plan_that_names_them(tmp_path):
    """A model retrained in place (same plan file, same weights path) is a new key: the
    cached reconstruction of the old weights is not reused for the new ones."""
    import torch

    from shardguard.analysis.leakage import _cache_key
    from shardguard.data import plan_data
    from shardguard.partition import bind
    from shardguard.threats.eavesdrop import EavesdropTraining

    weights = tmp_path / "lenet5.pt"
    trained = load_model("lenet5").module.state_dict()
    torch.save(trained, weights)
    plan = write_plan(tmp_path, planned("lenet5", objective="energy", weights=str(weights)))

    def key() -> str:
        bound = bind(plan, build=False)
        return _cache_key(bound, "features_2", plan_data(None, bound), EavesdropTraining(),
                          (100, 20), 0)

    first = key()
    assert key() == first  # the same weights: the same key
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in trained.items()},
               weights)  # retrained in place: the plan file and the path are unchanged
    retrained = key()
    assert retrained != first
    torch.save(trained, weights)
    assert key() == first


def test_each_cut_trains_under_a_progress_bar_showing_its_held_out_psnr(tmp_path):
    """The step ran minutes in silence (issue 14, point 9): each cut now has a bar on stderr
    that counts its epochs and shows the held-out PSNR; a cached cut trains none."""
    plan = str(write_plan(tmp_path, planned("lenet5", objective="energy")))
    cache = tmp_path / "eavesdropper"
    cache.mkdir()
    shown = _run(plan, str(cache), "2", "no", quiet=False)
    assert shown.returncode == 0, shown.stderr[-2000:]
    cuts = [r["cut_after"] for r in json.loads(shown.stdout)]
    bars = [line for line in shown.stderr.splitlines() if "eavesdropper after" in line]
    assert len(cuts) == 2 and len(bars) == 2, shown.stderr[-2000:]
    for cut, bar in zip(cuts, bars):
        assert f"eavesdropper after {cut}" in bar and "held-out PSNR" in bar and " dB" in bar
    again = _run(plan, str(cache), "2", "yes", quiet=False)  # every cut from the cache
    assert again.returncode == 0 and "eavesdropper after" not in again.stderr
