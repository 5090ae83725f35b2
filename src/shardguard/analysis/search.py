"""Search the exploration space (``explore.py``): exhaustively, or NSGA-II with pymoo.

    result = run_exploration(spec, Path("out/explore"), budget=300)
    result.front          # rows of the Pareto front: feasible, mutually non-dominated
    result.recommended    # the front point closest to the ideal, and why

The problem is a pymoo ``Problem`` (integer variables, four objectives, the memory
constraint); its evaluation is a callable over a whole population, which runs the
candidates it has not seen on a ``Backend`` (local processes or Ray) and journals
each row to ``evaluations.jsonl`` at once. A run resumes from that journal: the
search is seeded, so it proposes the same candidates again and finds them there.
``auto`` enumerates the space when it holds at most ``budget`` candidates, and
runs NSGA-II with ``budget`` evaluations otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .._progress import progress
from ..errors import ConfigError
from .backend import Backend, Journal, claim, split_cores
from .candidate import Candidate
from .explore import ExploreSpec, Space, evaluate, init
from .rows import table

OBJECTIVES = ("energy_j", "total_energy_j", "latency_s", "vulnerability")
LABELS = {"energy_j": "max energy per device (mJ/inference)",
          "total_energy_j": "platform energy, idle boards included (mJ/inference)",
          "latency_s": "latency (ms)", "vulnerability": "accuracy lost under the threats"}


def labels(measure: str = "accuracy") -> dict[str, str]:
    """The objectives' labels; without labels in the data, the loss is the share of
    answers changed (silent data corruption), and the label says so."""
    from .metrics import LOSSES

    return {**LABELS, "vulnerability": f"{LOSSES[measure]} under the threats"}
SCALE = {"energy_j": 1e3, "total_energy_j": 1e3, "latency_s": 1e3, "vulnerability": 1.0}
METHODS = ("auto", "exhaustive", "nsga2")


@dataclass
class Exploration:
    spec: ExploreSpec
    method: str
    space_size: int
    rows: list[dict[str, Any]]  # every candidate evaluated (this run and before)
    front: list[dict[str, Any]]
    recommended: dict[str, Any]
    reason: str
    evaluated_now: int  # evaluated in this run; the rest came from the journal
    measure: str = "accuracy"  # or "agreement": scored against the clean top-1 (no labels)
    data: str = ""  # which data, as data.Data.describe() says

    def table(self) -> pa.Table:
        """``rows`` (every candidate evaluated) as an Arrow table (``.to_pandas()``)."""
        return table(self.rows)


class Evaluations:
    """Rows by candidate key, journaled; evaluates only what the journal does not hold.

    ``rows`` are the candidates asked for in this run (found in the journal or
    evaluated now): a journal may hold others, from a run with other choices or the
    security-level variants, and they are not this search's.
    """

    def __init__(self, journal: Journal, backend: Backend, bar: Any, task: Any) -> None:
        self.journal, self.backend, self.bar, self.task = journal, backend, bar, task
        self.asked: dict[str, None] = {}  # keys, in the order first asked
        self.new = 0

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [self.journal.rows[k] for k in self.asked]

    def __call__(self, candidates: list[Candidate]) -> list[dict[str, Any]]:
        fresh = {c.key: c for c in candidates if c.key not in self.asked}
        self.asked.update(dict.fromkeys(fresh))
        # a row journaled before an objective existed (total_energy_j), or before voting
        # copies paid for their guards (a boolean guard, copies > 1), is costed anew
        missing = [c for k, c in fresh.items() if k not in self.journal
                   or not set(OBJECTIVES) <= set(self.journal.rows[k])
                   or _unpriced_copies(self.journal.rows[k], c)]
        self.bar.update(self.task, advance=len(fresh) - len(missing))
        for _, row in self.backend.map(evaluate, missing):
            self.journal.add(row)
            self.new += 1
            self.bar.update(self.task, advance=1, info=row["describe"][:40])
        for c in fresh.values():  # a row journaled before guard placements: named as now
            self.journal.rows[c.key].update(candidate=asdict(c), describe=c.describe())
        return [self.journal.rows[c.key] for c in candidates]


def _unpriced_copies(row: dict[str, Any], c: Candidate) -> bool:
    """Whether ``row`` was journaled with a boolean guard (before guard placements, when a
    voting copy's guards cost nothing) for a candidate whose copies now pay for them."""
    return isinstance(row.get("candidate", {}).get("guard"), bool) and (
        c.copies > 1 and c.guard != "none")


def _problem(space: Space, evaluations: Evaluations) -> Any:
    from pymoo.core.problem import Problem

    class DeploymentProblem(Problem):  # type: ignore[misc]
        def __init__(self) -> None:
            xl, xu = space.bounds()
            super().__init__(n_var=len(xl), n_obj=len(OBJECTIVES), n_ieq_constr=1,
                             xl=np.array(xl), xu=np.array(xu), vtype=int)

        def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kw: Any) -> None:
            rows = evaluations([space.decode(v) for v in x])
            out["F"] = np.array([objectives(r) for r in rows])
            out["G"] = np.array([[r["memory_over"] if math.isfinite(r["memory_over"])
                                  else 1e15] for r in rows])

    return DeploymentProblem()


def objectives(row: dict[str, Any]) -> list[float]:
    return [row[o] if math.isfinite(row[o]) else 1e9 for o in OBJECTIVES]


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The feasible rows no other feasible row dominates; one row per objective vector
    (the one with the fewest devices, then the first key)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    feasible = sorted((r for r in rows if r["feasible"]),
                      key=lambda r: (len(r["candidate"]["devices"]), r["key"]))
    if not feasible:
        return []
    f = np.array([objectives(r) for r in feasible])
    keep = NonDominatedSorting().do(f, only_non_dominated_front=True)
    seen: set[tuple[float, ...]] = set()
    front = []
    for i in sorted(keep):
        point = tuple(round(v, 12) for v in f[i])
        if point not in seen:
            seen.add(point)
            front.append(feasible[i])
    return sorted(front, key=lambda r: objectives(r))


def recommend(front: list[dict[str, Any]],
              measure: str = "accuracy") -> tuple[dict[str, Any], str]:
    """The front point nearest the ideal point, each objective scaled to [0, 1] over the
    front (a knee: no objective is given up much for the others)."""
    f = np.array([objectives(r) for r in front])
    low, span = f.min(0), np.ptp(f, 0)
    scaled = (f - low) / np.where(span > 0, span, 1.0)
    best = int(np.argmin(np.linalg.norm(scaled, axis=1)))
    r = front[best]
    reason = (f"nearest the ideal point of the {len(front)}-point front (each objective "
              f"scaled to its range there): {r['energy_j'] * 1e3:.3f} mJ on the busiest "
              f"device, {r['total_energy_j'] * 1e3:.3f} mJ in all, "
              f"{r['latency_s'] * 1e3:.2f} ms, {r['vulnerability']:.1%} "
              f"{labels(measure)['vulnerability']}")
    return r, reason


def run_exploration(spec: ExploreSpec, out: Path, *, budget: int = 300, method: str = "auto",
                    processes: int = 0, ray: str | None = None) -> Exploration:
    from ..graph import trace
    from ..platform import load_platform
    from .explore import make_space
    from .subject import check_memory, load_subject, subject_data

    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if budget < 1:
        raise ConfigError(f"budget must be at least 1, got {budget}")
    loaded, shape = load_subject(spec)
    data = subject_data(spec, loaded, shape)  # a bad dataset is refused here, in one line
    platform = load_platform(spec.platform)
    graph = trace(loaded.module, shape)
    if ray is None:
        check_memory(graph, min(spec.samples, len(data)), split_cores(processes)[0], "-n")
    space = make_space(spec, graph, platform)
    size = space.size()
    if method == "auto":
        method = "exhaustive" if size <= budget else "nsga2"
    claim(out, "spec.json", {**spec.model_dump(mode="json"), "data_used": data.describe()},
          ("model", "weights", "platform", "threats", "samples", "seed", "seeds", "input_shape",
           "preprocess", "data_used"))
    processes, threads = split_cores(processes)
    backend = Backend(init, (spec.model_dump_json(), threads), processes=processes, ray=ray)
    total = size if method == "exhaustive" else budget
    with progress() as bar, backend:
        task = bar.add_task(f"exploring ({method})", total=total, info=backend.name)
        evaluations = Evaluations(Journal(out / "evaluations.jsonl", "key"), backend, bar, task)
        if method == "exhaustive":
            evaluations(space.candidates())
        else:
            _search_nsga2(space, evaluations, budget, spec.seed)
        rows = evaluations.rows
        front = pareto_front(rows)
        if not front:
            raise ConfigError("no candidate fits the devices' memory: nothing to recommend")
        recommended, reason = recommend(front, data.measure)
        levels = security_levels(space, _with_links(front, rows, platform), evaluations)
        bar.update(task, total=len(evaluations.asked), completed=len(evaluations.asked))
    result = Exploration(spec, method, size, rows, front, recommended, reason, evaluations.new,
                         data.measure, data.describe())
    from .front_figures import write_outputs

    write_outputs(result, levels, platform, out)
    return result


def _search_nsga2(space: Space, evaluations: Evaluations, budget: int, seed: int) -> None:
    """Spend ``budget`` evaluations: the space's memory-feasible seeds first, then NSGA-II
    over integer-rounded candidates for what is left."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    evaluations(list(space.seeds[:budget]))  # memory-feasible starts, if any
    left = budget - len(evaluations.asked)
    if left > 0:
        algorithm = NSGA2(pop_size=min(40, left), sampling=IntegerRandomSampling(),
                          crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                          mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
                          eliminate_duplicates=True)
        minimize(_problem(space, evaluations), algorithm, ("n_eval", left),
                 seed=seed, verbose=False)


def _with_links(front: list[dict[str, Any]], rows: list[dict[str, Any]],
                platform: Any) -> dict[str, Any]:
    """The deployment to price security levels on: one with links, on as many device
    types as any (front points first, then the least energy)."""
    def types(r: dict[str, Any]) -> int:
        return len({platform.devices[d].profile or d for d in r["candidate"]["devices"]})
    linked = [r for r in rows if r["feasible"] and r.get("links")]
    if not linked:
        return front[0]
    keys = {r["key"] for r in front}
    return max(linked, key=lambda r: (types(r), r["key"] in keys, -r["energy_j"]))


def security_levels(space: Space, chosen: dict[str, Any],
                    evaluations: Evaluations) -> list[dict[str, Any]]:
    """``chosen``'s partition with every link at each protection level in turn: the
    energy each device then spends (the security-vs-energy chart, per device type)."""
    base = Candidate(**{**chosen["candidate"], "devices": tuple(chosen["candidate"]["devices"]),
                        "cuts": tuple(chosen["candidate"]["cuts"]),
                        "protection": tuple(chosen["candidate"]["protection"])})
    variants = [replace(base, protection=(p,) * space.links,
                        ends=p if p in space.ends else base.ends) for p in space.protections]
    rows = evaluations(variants)
    return [{"protection": p, "deployment": r["describe"],
             "energy_per_device_j": r.get("energy_per_device_j", {}),
             "crypto_per_device_j": r.get("crypto_per_device_j", {}), "links": r.get("links", {})}
            for p, r in zip(space.protections, rows)]
