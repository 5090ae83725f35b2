"""Where sweeps run: a local process pool (default) or a Ray cluster (``--ray ADDRESS``).

    with Backend(init, initargs, processes=2, ray=None) as backend:
        for item, result in backend.map(run_one, items):   # as each finishes
            ...

``init(*initargs)`` prepares a process once (loads the model, the data, the plans)
before it runs ``fn`` on items; ``fn`` and ``init`` must be module-level functions,
and items and results plain picklable values. Results come back as they finish,
each with its item, so a caller can journal them at once and resume later. An item
may report how it is going with ``note(message)`` (an eavesdropper's epochs): the
message reaches the ``on_note`` given to the ``Backend``, from a pool process through
a queue, so the caller's progress bar follows it (Ray drops notes).

With Ray (the optional extra ``shardguard[ray]``), ``ray`` is the address of a
running cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``) or ``local`` to
start one on this machine for the run. Each Ray worker process runs ``init``
once, the first time it is given an item, so results are the same rows as on
the local pool. Every node needs ShardGuard, the dataset and the plans' model
files at the same paths.

A ``Journal`` keeps what a sweep has done: one JSON row a line, appended as each
result arrives, so a rerun into the same directory resumes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ShardGuardError

_READY: dict[str, Any] = {}  # which initargs this process was prepared with
_FAILED: list[BaseException] = []  # what ``init`` raised in this pool process, if anything
_NOTES: list[Callable[[Any], None]] = []  # where ``note`` sends, in this process


def note(message: Any) -> None:
    """Tell the sweep's caller how the item being run is going (an epoch trained, say):
    ``message`` (picklable) reaches the ``on_note`` of the ``Backend`` running the item,
    from this process or a pool process; on Ray, or with no ``on_note``, it is dropped."""
    if _NOTES:
        _NOTES[0](message)


def _pool_init(init: Callable[..., None], initargs: tuple[Any, ...],
               notes: Any = None) -> None:
    """``init`` in a pool process; what it raises is kept and raised by every task, so
    the caller sees the error itself, not a broken pool. ``notes``: the queue ``note``
    puts on."""
    _NOTES[:] = [notes.put] if notes is not None else []
    try:
        init(*initargs)
    except Exception as exc:  # noqa: BLE001  (re-raised by _pool_call, in the caller)
        _FAILED.append(exc)


def _pool_call(fn: Callable[[Any], Any], item: Any) -> Any:
    if _FAILED:
        raise _FAILED[0]
    return fn(item)


def _prepared(init: Callable[..., None], initargs: tuple[Any, ...], fn: Callable[[Any], Any],
              item: Any) -> Any:
    """``fn(item)`` in a process prepared by ``init(*initargs)`` (once per process)."""
    key = repr((init.__module__, init.__qualname__, initargs))
    if _READY.get("key") != key:
        init(*initargs)
        _READY["key"] = key
    return fn(item)


def claim(out: Path, name: str, setup: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Make ``out`` a resumable sweep's directory for ``setup`` (saved as ``out/name``).

    A sweep resumes from its journal, whose rows are keyed by trial or candidate;
    ``keys`` are the setup's fields those keys do not cover (the model, the images):
    if ``out`` holds results made with other values of them, it is refused rather
    than mixed.
    """
    path = out / name
    if path.exists():
        old = json.loads(path.read_text())
        # a key the old file lacks was added since: its results were made without it
        changed = [k for k in keys if k in old and old[k] != setup.get(k)]
        if changed:
            raise ConfigError(f"{out}: holds results made with another {', '.join(changed)}; "
                              "choose another output directory (or remove it)")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(setup, indent=2) + "\n")


def split_cores(processes: int) -> tuple[int, int]:
    """``(processes, threads per process)``: ``processes`` (0: one per core), and the
    cores shared out among them, so a sweep never runs more threads than cores."""
    cores = os.cpu_count() or 1
    processes = processes or cores
    return processes, max(1, cores // processes)


class Journal:
    """A sweep's rows by ``key`` (a trial's or a candidate's), one JSON object a line.

    A line cut short, as a killed run leaves the last one, is dropped (its item simply
    runs again) and the file is rewritten without it before the next row, so appending
    stays valid; reading never writes. Any other line that is not a row is an error
    naming the file and the line.
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.rows: dict[str, dict[str, Any]] = {}
        self._cut = False  # the file does not end a line: rewrite it before appending
        if not path.exists():
            return
        text = path.read_text()
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or key not in row:
                if i == len(lines) - 1 and not text.endswith("\n"):  # cut short by a kill
                    break
                raise ConfigError(f"{path}: line {i + 1} is not a row of this sweep; "
                                  "remove the line (or the file) to go on")
            self.rows[str(row[key])] = row
        self._cut = bool(text) and not text.endswith("\n")

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, row: dict[str, Any]) -> None:
        """Keep ``row`` and append it to the file at once (flushed: a kill loses none)."""
        self.rows[str(row[self.key])] = row
        if self._cut:  # drop the cut line, so that this row starts a line of its own
            fresh = self.path.with_name(self.path.name + ".new")
            fresh.write_text("".join(json.dumps(r) + "\n" for r in self.rows.values()))
            os.replace(fresh, self.path)  # atomic: a kill now loses no row
            self._cut = False
            return
        with self.path.open("a") as sink:
            sink.write(json.dumps(row) + "\n")


class Backend:
    def __init__(self, init: Callable[..., None], initargs: tuple[Any, ...], *,
                 processes: int = 0, ray: str | None = None,
                 on_note: Callable[[Any], None] | None = None) -> None:
        self.init, self.initargs = init, initargs
        self.processes = processes or os.cpu_count() or 1
        self.ray = ray
        self.on_note = on_note  # called here with what items ``note`` as they run
        self._pool: ProcessPoolExecutor | None = None
        self._notes: Any = None  # the pool processes' queue of notes
        self._started_ray = False

    @property
    def name(self) -> str:
        return f"ray ({self.ray})" if self.ray else f"{self.processes} local process(es)"

    def __enter__(self) -> Backend:
        if self.ray:
            try:
                import ray
            except ImportError as exc:
                raise ConfigError("--ray needs Ray: pip install 'shardguard[ray]'") from exc
            if not ray.is_initialized():
                address = None if self.ray == "local" else self.ray
                kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
                if address is None:
                    kwargs["num_cpus"] = self.processes
                try:
                    ray.init(address=address, **kwargs)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    raise ConfigError(f"cannot reach the Ray cluster at {self.ray!r}: {exc}") \
                        from exc
                self._started_ray = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._notes is not None:
            self._notes.close()
            self._notes = None
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """``(item, fn(item))`` for every item, in the order they finish."""
        items = list(items)
        if not items:
            return iter(())
        if self.ray:
            return self._map_ray(fn, items)
        if self.processes == 1 or len(items) == 1:  # here, in this process
            return self._map_here(fn, items)
        return self._map_pool(fn, items)

    def _map_here(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[Any, Any]]:
        _NOTES[:] = [self.on_note] if self.on_note is not None else []
        try:
            for item in items:
                yield item, _prepared(self.init, self.initargs, fn, item)
        finally:
            _NOTES.clear()

    def _map_pool(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[Any, Any]]:
        if self._pool is None:
            context = multiprocessing.get_context()
            self._notes = context.Queue() if self.on_note is not None else None
            self._pool = ProcessPoolExecutor(self.processes, mp_context=context,
                                             initializer=_pool_init,
                                             initargs=(self.init, self.initargs, self._notes))
        futures: dict[Future[Any], Any] = {self._pool.submit(_pool_call, fn, item): item
                                           for item in items}
        while futures:  # with notes to pass on, look at them at least every 0.2 s
            done, _ = wait(futures, timeout=0.2 if self._notes is not None else None,
                           return_when=FIRST_COMPLETED)
            self._pass_notes()
            for future in done:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise ShardGuardError(
                        f"a worker process died while running the sweep ({self.processes} "
                        "processes): most likely out of memory; give fewer images or "
                        "processes") from None
                yield futures.pop(future), result

    def _pass_notes(self) -> None:
        """The pool processes' notes so far, to ``on_note``."""
        while self._notes is not None and self.on_note is not None:
            try:
                message = self._notes.get_nowait()
            except queue.Empty:
                return
            self.on_note(message)

    def _map_ray(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[Any, Any]]:
        import ray

        remote = ray.remote(_prepared)
        refs = {remote.remote(self.init, self.initargs, fn, item): item for item in items}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield refs[ref], ray.get(ref)
