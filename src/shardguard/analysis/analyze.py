"""Vulnerability analysis of one plan: a standard campaign, figures and a criticality ranking.

    shardguard analyze plan.yaml -o out/analysis

Runs, in the local executor on the first ``samples`` test images:
* L1 bit flips on every link, per bit class (sign, highest exponent bit, exponent,
  mantissa, all) at bit-error rates from 1e-8 to 1e-2;
* L2 Gaussian noise on every link, SNR from −10 to 40 dB;
* D1 crash of each device in turn;
* L6 eavesdropping at cuts spread through the model (PSNR and SSIM of the rebuilt
  input by cut depth);
* on each link in turn, the standard link attacks: L1 (all bits, BER 1e-4),
  L2 (10 dB), L3 (half the messages dropped) and L5 (FGSM, ε 0.02), and FGSM at
  ε from 0.005 to 0.05.

The criticality of a device is the accuracy lost when it crashes; of a link, the
mean accuracy lost under the standard link attacks. The ranking (most critical
first) is the order an attacker should follow.

Images come from ``data`` (``data.open_data``: the Fashion-MNIST test set by default,
preprocessed as the plan's model declares). Without labels, "accuracy" is agreement
with the clean model's top-1 and "accuracy lost" the silent-data-corruption rate;
every figure, table and file says which (``measure`` in analysis.json and each row).
The eavesdropper trains on 4000 training images until a held-out tenth stops improving
(``threats.eavesdrop.EavesdropTraining``; its epochs are in each row) and is scored on
500 at 28×28, on proportionally fewer for larger inputs (``subject.profile_images``);
each cut's result is cached in the output directory, so a resumed analysis reuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import pyarrow as pa

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .._progress import progress  # noqa: E402
from ..partition.bind import bind  # noqa: E402
from ..threats.eavesdrop import EavesdropTraining  # noqa: E402
from .campaign import Trial, execute, plan_targets  # noqa: E402
from .metrics import LOSSES, MEASURES  # noqa: E402
from .rows import table  # noqa: E402
from .subject import profile_images  # noqa: E402

BER = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
BIT_CLASSES = ["sign", "exponent-high", "exponent", "mantissa", "all"]
SNR_DB = [-10, 0, 10, 20, 30, 40]
EPSILON = [0.005, 0.01, 0.02, 0.05]
LINK_ATTACKS = [{"id": "L1", "ber": 1e-4, "bits": "all"}, {"id": "L2", "snr_db": 10},
                {"id": "L3", "mode": "message", "rate": 0.5},
                {"id": "L5", "method": "fgsm", "epsilon": 0.02}]


@dataclass
class Analysis:
    rows: list[dict[str, Any]]
    ranking: list[dict[str, Any]]  # most critical first
    figures: dict[str, Path]
    clean_accuracy: float
    reconstruction: list[dict[str, Any]]  # L6 by cut depth
    measure: str = "accuracy"  # or "agreement": scored against the clean top-1 (no labels)
    data: str = ""  # which data, as data.Data.describe() says

    def table(self) -> pa.Table:
        """``rows`` (every trial) as an Arrow table; ``.to_pandas()`` gives a DataFrame."""
        return table(self.rows)


def reconstruction_by_depth(bound: Any, data: Any, *, depths: int = 4,
                            training: EavesdropTraining | None = None, seed: int = 0,
                            cache: Path | None = None) -> list[dict[str, Any]]:
    """L6 at cuts spread through the model: how well an eavesdropper rebuilds the input.

    Each cut is a two-stage pipeline cut where a single tensor is live; depth is the
    share of the model's MACs before the cut. ``data`` (``data.Data``) gives the images:
    ``training.images`` of its training split (or its own, without one) and its first
    ``training.test``. The decoder trains to convergence (``EavesdropTraining``); each
    cut's result is kept in ``cache`` (a directory), keyed by the plan, the cut, the
    data and the training settings, so a resumed analysis does not train it again.
    """
    from ..partition.pipeline import tables

    training = training or EavesdropTraining()
    t = tables(bound.graph)
    n = len(t.names)
    single = [j for j in range(1, n) if t.valid[j] and int(t.live[j].sum()) == 1]
    if not single:
        return []
    picks = sorted({single[round(i * (len(single) - 1) / max(1, depths - 1))]
                    for i in range(depths)})
    shape = bound.plan.model.input_shape
    images = profile_images(training.images, shape), profile_images(training.test, shape)
    loaded: list[Any] = []  # the images, loaded once if any cut is not in the cache
    results = []
    with progress() as bar:
        for j in picks:
            key = _cache_key(bound, t.names[j - 1], data, training, images, seed)
            path = cache / f"{key[:24]}.json" if cache is not None else None
            if path is not None and path.is_file():
                results.append(json.loads(path.read_text()))
                continue
            if not loaded:
                loaded += [data.train_images(images[0]),
                           data.images(min(len(data), images[1]))]
            row = _eavesdrop_cut(bar, bound, t, j, loaded, data, training, seed)
            if path is not None:
                path.write_text(json.dumps(row) + "\n")
            results.append(row)
    return results


def _eavesdrop_cut(bar: Any, bound: Any, t: Any, j: int, images: list[Any], data: Any,
                   training: EavesdropTraining, seed: int) -> dict[str, Any]:
    """The eavesdropper on the cut before node ``j``, trained under a progress bar."""
    from ..partition.build import assemble_plan, whole
    from ..threats.eavesdrop import eavesdrop

    graph, platform, n = bound.graph, bound.platform, len(t.names)
    devices = platform.names[:2] if len(platform.names) > 1 else platform.names * 2
    task = bar.add_task(f"eavesdropper after {t.names[j - 1]}", total=training.max_epochs,
                        info="")

    def epoch(done: int, held_out_db: float) -> None:
        bar.update(task, completed=done, info=f"held-out PSNR {held_out_db:.1f} dB")

    planned = assemble_plan(graph, bound.plan.model, platform, "manual", "latency",
                            [whole(graph, 0, j - 1, "a", devices[0]),
                             whole(graph, j, n - 1, "b", devices[1])])
    rec = eavesdrop(planned.compiled, "a>b", *images, epochs=training.max_epochs,
                    patience=training.patience, min_gain_db=training.min_gain_db,
                    holdout=training.holdout, seed=seed, pixels=data.pixels, on_epoch=epoch)
    bar.update(task, total=rec.epochs, completed=rec.epochs)
    return {"cut_after": t.names[j - 1], "depth": float(t.macs[j] / t.macs[n]),
            "psnr_db": rec.psnr_db, "ssim": rec.ssim,
            "tensor": "x".join(map(str, rec.tensor_shape)), "epochs": rec.epochs,
            "converged": rec.converged}


def _cache_key(bound: Any, cut: str, data: Any, training: EavesdropTraining,
               images: tuple[int, int], seed: int) -> str:
    """What an eavesdropper's result depends on: the plan (model, weights and platform as
    named), the cut, the data, the image counts and the training settings."""
    import hashlib

    what = {"plan": bound.plan.model_dump(mode="json"), "cut": cut, "data": data.describe(),
            "training": training.model_dump(mode="json"), "images": images, "seed": seed}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def standard_trials(plan_label: str, targets: dict[str, list[str]], seed: int) -> list[Trial]:
    def trial(**threat: Any) -> Trial:
        return Trial(plan_label, {**threat, "seed": seed}, seed)

    trials = [trial(id="L1", target="every", ber=b, bits=c) for c in BIT_CLASSES for b in BER]
    trials += [trial(id="L2", target="every", snr_db=s) for s in SNR_DB]
    trials += [trial(id="D1", target=d) for d in targets["devices"]]
    trials += [trial(target=link, **attack) for link in targets["links"]
               for attack in LINK_ATTACKS]
    trials += [trial(id="L5", target=link, method="fgsm", epsilon=e) for link in targets["links"]
               for e in EPSILON if e != 0.02]  # 0.02 is among the standard attacks
    return trials


def criticality(rows: list[dict[str, Any]], targets: dict[str, list[str]]) -> list[dict[str, Any]]:
    ranking = []
    for device in targets["devices"]:
        hits = [r for r in rows if r["threat"] == "D1" and r["target"] == device]
        ranking.append({"kind": "device", "name": device,
                        "accuracy_drop": sum(r["accuracy_drop"] for r in hits) / len(hits),
                        "availability": min(r["availability"] for r in hits),
                        "attacks": "D1 crash"})
    standard = {json.dumps({k: v for k, v in a.items() if k != "id"}, sort_keys=True)
                for a in LINK_ATTACKS}
    for link in targets["links"]:
        hits = [r for r in rows if r["target"] == link and r["params"] in standard]
        ranking.append({"kind": "link", "name": link,
                        "accuracy_drop": sum(r["accuracy_drop"] for r in hits) / len(hits),
                        "availability": min(r["availability"] for r in hits),
                        "attacks": "L1 1e-4, L2 10 dB, L3 50% messages, L5 FGSM 0.02"})
    ranking.sort(key=lambda r: -r["accuracy_drop"])
    for i, r in enumerate(ranking, start=1):
        r["rank"] = i
    return ranking


def analyze(plan_file: Path, out: Path, *, samples: int = 2000, seed: int = 0,
            processes: int = 0, ray: str | None = None, data: str | None = None,
            eavesdropper: EavesdropTraining | None = None) -> Analysis:
    import hashlib

    from ..data import plan_data
    from .backend import claim, split_cores
    from .subject import check_memory

    bound = bind(plan_file, build=False)
    dataset = plan_data(data, bound)  # a bad dataset is refused here, in one line
    if ray is None:
        check_memory(bound.graph, min(samples, len(dataset)), split_cores(processes)[0], "-n")
    claim(out, "analysis.json", {"plan": str(plan_file), "samples": samples,
                                 "plan_sha256": hashlib.sha256(plan_file.read_bytes()).hexdigest(),
                                 "data": dataset.describe(), "measure": dataset.measure},
          ("plan_sha256", "samples", "data"))
    targets = plan_targets(bound.plan)
    label = bound.plan.strategy
    trials = standard_trials(label, targets, seed)
    rows = execute(trials, {label: str(plan_file)}, samples, processes, out,
                   description="analysis", ray=ray, data=data)
    ranking = criticality(rows, targets)
    clean = rows[0]["clean_accuracy"] if rows else 0.0
    (out / "eavesdropper").mkdir(exist_ok=True)
    reconstruction = reconstruction_by_depth(bound, dataset, training=eavesdropper, seed=seed,
                                             cache=out / "eavesdropper")
    (out / "reconstruction.json").write_text(json.dumps(reconstruction, indent=2) + "\n")
    measure = dataset.measure
    figures = {"ber": _ber_figure(rows, out / "accuracy_vs_ber.png", clean, measure),
               "snr": _snr_figure(rows, out / "accuracy_vs_snr.png", clean, measure),
               "epsilon": _epsilon_figure(rows, targets["links"], out / "accuracy_vs_epsilon.png",
                                          clean, measure),
               "ranking": _ranking_figure(ranking, out / "criticality.png", measure),
               "reconstruction": _reconstruction_figure(reconstruction,
                                                        out / "reconstruction_by_depth.png")}
    (out / "ranking.json").write_text(json.dumps(ranking, indent=2) + "\n")
    return Analysis(rows, ranking, figures, clean, reconstruction, measure, dataset.describe())


def _ber_figure(rows: list[dict[str, Any]], path: Path, clean: float, measure: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for bits in BIT_CLASSES:
        points = sorted((r["param_ber"], r["accuracy"]) for r in rows
                        if r["threat"] == "L1" and r["target"] == "every"
                        and r.get("param_bits") == bits)
        if points:
            ax.plot(*zip(*points), marker="o", label=bits)
    ax.set_xscale("log")
    return _finish(fig, ax, path, clean, "bit-error rate on every link (per bit of the class)",
                   "Bit flips in transit (L1): by float32 bit class", measure)


def _snr_figure(rows: list[dict[str, Any]], path: Path, clean: float, measure: str) -> Path:
    points = sorted((r["param_snr_db"], r["accuracy"]) for r in rows
                    if r["threat"] == "L2" and r["target"] == "every")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if points:
        ax.plot(*zip(*points), marker="o")
    return _finish(fig, ax, path, clean, "signal-to-noise ratio on every link (dB)",
                   "Gaussian noise in transit (L2)", measure)


def _epsilon_figure(rows: list[dict[str, Any]], links: list[str], path: Path,
                    clean: float, measure: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for link in links:
        points = sorted((r["param_epsilon"], r["accuracy"]) for r in rows
                        if r["threat"] == "L5" and r["target"] == link)
        if points:
            ax.plot(*zip(*points), marker="o", label=link)
    return _finish(fig, ax, path, clean, "ε (FGSM step, relative to the tensor's range)",
                   "Adversarial tampering on each link (L5, white-box on downstream stages)",
                   measure)


def _reconstruction_figure(points: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if points:
        depth = [p["depth"] for p in points]
        ax.plot(depth, [p["psnr_db"] for p in points], marker="o", color="tab:purple")
        ax2 = ax.twinx()
        ax2.plot(depth, [p["ssim"] for p in points], marker="s", color="tab:green")
        ax2.set_ylabel("SSIM", color="tab:green")
        ax2.set_ylim(0, 1)
        for p in points:
            ax.annotate(p["cut_after"], (p["depth"], p["psnr_db"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 4))
    ax.set_xlabel("cut depth (share of the model's MACs before the cut)")
    ax.set_ylabel("PSNR of the rebuilt input (dB)", color="tab:purple")
    ax.set_title("Eavesdropping (L6): how well the input can be rebuilt from a link")
    return _save(fig, path)


def _ranking_figure(ranking: list[dict[str, Any]], path: Path, measure: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * max(1, len(ranking))))
    names = [f"{r['kind']} {r['name']}" for r in ranking]
    colours = ["tab:red" if r["kind"] == "device" else "tab:blue" for r in ranking]
    ax.barh(range(len(ranking)), [r["accuracy_drop"] for r in ranking], color=colours)
    ax.set_yticks(range(len(ranking)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"{LOSSES[measure]} (device: crash; link: mean of standard attacks)")
    ax.set_title("Criticality: which device or link to hit first")
    return _save(fig, path)


def _finish(fig: Any, ax: Any, path: Path, clean: float, xlabel: str, title: str,
            measure: str) -> Path:
    """An accuracy plot's common parts: the clean line, labels (saying what is measured:
    accuracy, or agreement with the clean model without labels), the [0, 1] axis."""
    ax.axhline(clean, color="grey", ls="--", lw=0.8, label="clean")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(MEASURES[measure])
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
