"""Shared fixtures and helpers: the real dataset, a CLI runner that uses a real
subprocess, plans of zoo models made once per session, a ZeroMQ context that never hangs."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shardguard.data import Split, load_split

REPO = Path(__file__).resolve().parents[1]
PLATFORM = "rpi4x4-ethernet"
T = TypeVar("T")


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> Result:
    """Run ``shardguard ARGS`` as a real process, as a user would."""
    full_env = {**os.environ, "SHARDGUARD_QUIET": "1", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "shardguard", *args], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def succeeded(result: Result, what: str) -> Result:
    """``result``, after asserting the command exited 0 without a traceback."""
    assert result.code == 0, f"{what}: {result.err[-3000:]}"
    assert "Traceback" not in result.err, what
    return result


@functools.cache
def planned(model: str = "resnet-small", strategy: str = "pipeline", *,
            objective: str = "throughput", replicas: int = 1,
            weights: str | None = None) -> Any:
    """A zoo model planned onto rpi4x4-ethernet, made once per session: copy, never mutate."""
    from shardguard import load_model, load_platform, make_plan, trace
    from shardguard.partition.plan import ModelRef

    loaded = load_model(model, weights=weights)
    graph = trace(loaded.module, (1, 28, 28))
    return make_plan(graph, ModelRef(ref=model, weights=weights, input_shape=[1, 28, 28]),
                     load_platform(PLATFORM), strategy=strategy,  # type: ignore[arg-type]
                     objective=objective, replicas=replicas)  # type: ignore[arg-type]


def eventually(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0,
               interval: float = 0.05) -> T:
    """``probe()``, asked again every ``interval`` s until ``done`` holds for what it returned
    or ``timeout`` s have passed; the last answer either way, for the test to assert on.

    For what a test used to sleep a fixed time for: it returns as soon as the worker got
    there, and waits longer than the sleep did on a busy machine."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() > end:
            return value
        time.sleep(interval)


def write_plan(tmp_path: Path, of: Any, protection: str = "none", name: str = "plan") -> Path:
    """``of``'s plan saved as ``tmp_path/NAME.yaml``, with ``protection`` on every link."""
    path = tmp_path / f"{name}.yaml"
    of.plan.with_protection(protection).save(path)
    return path


def explore_inputs(tmp_path: Path, *profiles: str) -> tuple[Path, Path]:
    """A threat file (L1 random bit flips at 1e-3 on every link) and a platform of one board
    per profile (``a``, ``b``, … on 100 Mbit/s Ethernet), for a short ``explore``."""
    threats = tmp_path / "threats.yaml"
    threats.write_text("threats:\n  - {id: L1, target: links, ber: 1.0e-3, bits: all}\n")
    platform = tmp_path / "boards.yaml"
    platform.write_text("name: boards\nmedium: ethernet-100m\ndevices:\n" + "".join(
        f"  - {{name: {chr(97 + i)}, profile: {p}}}\n" for i, p in enumerate(profiles)))
    return threats, platform


def explore_refusal(tmp_path: Path, threat: str, *args: str) -> str:
    """Run ``explore lenet5`` on rpi4x4-ethernet against one ``threat`` (a YAML flow
    mapping) with ``args``; it must refuse in one line and exit 1. Returns that line."""
    threats = tmp_path / "threats.yaml"
    threats.write_text(f"threats:\n  - {threat}\n")
    bad = run_cli("explore", "lenet5", "-p", "rpi4x4-ethernet", "-t", str(threats), *args,
                  "-o", str(tmp_path / "out"))
    assert bad.code == 1 and len(bad.err.strip().splitlines()) == 1
    return bad.err.strip()


def reference(bound: Any, x: Any) -> Any:
    """What the local executor answers for ``x`` (numpy in, numpy out)."""
    import torch

    from shardguard.local import LocalExecutor

    with torch.no_grad():
        return LocalExecutor(bound.compiled)(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="session")
def test_split() -> Split:
    return load_split("test")


@pytest.fixture(scope="session")
def train_split() -> Split:
    return load_split("train")


@pytest.fixture
def zmq_context() -> Iterator[Any]:
    """A ZeroMQ context that fails the test if it left a socket open, and never hangs.

    ``Context.term()`` blocks until every socket is closed, so a test that failed
    half-way would otherwise hang in teardown; here the leftovers are named, then closed.
    """
    import zmq

    opened: list[zmq.Socket[Any]] = []

    class Tracking(zmq.Context):  # type: ignore[type-arg]
        def socket(self, *args: Any, **kwargs: Any) -> Any:
            sock = super().socket(*args, **kwargs)
            opened.append(sock)
            return sock

    context = Tracking()
    yield context
    left_open = [s for s in opened if not s.closed]
    context.destroy(linger=0)
    assert not left_open, f"{len(left_open)} ZeroMQ socket(s) left open: {left_open}"


# -- running in parallel (make test: pytest -n 2 --dist loadgroup) ---------------------------

#: The longest tests, started first so that the two workers finish together instead of one
#: of them starting a ten-minute test near the end (seconds: one run with -n 2 on a busy
#: 2-core machine, 2026-12-04). Groups (xdist_group) are handed out before single tests.
SLOWEST_FIRST = (
    "test_large_cnn.py::test_a_224_cnn_goes_through_plan_check_run_analyze",  # 1025
    "test_any_model.py::test_imagenet_size_models",  # 577
    "test_analyze.py::test_analysis_writes_figures_and_ranks_devices_and_links",  # 522
    "test_demo.py::test_demo_runs_end_to_end_and_summarises",  # about 2.5 min alone
    "test_large_cnn.py::",
    "test_campaign.py::test_defences_are_a_campaign_dimension",  # 124
    "test_datasets.py::test_an_npz_copy_of_the_test_set",  # 99
    "test_any_model.py::test_campaign_and_explore_run_a_model_file",  # 87
    "test_partition.py::test_zoo_models_plan_and_check_exactly_under_every_strategy",
    "test_freivalds.py::",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, put the longest tests first (a stable sort: the rest keep their order)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # each worker collects, in the same order
        return

    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(SLOWEST_FIRST) if prefix in item.nodeid),
                    len(SLOWEST_FIRST))
    items.sort(key=rank)


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker, torch gets this worker's share of the cores: two workers with
    two threads each on two cores spend their time waiting for each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
