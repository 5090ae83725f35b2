"""The standard analysis's figures (``analyze.py``): accuracy against each threat's
intensity with 95 % error bars, the criticality ranking and leakage by cut depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import LOSSES, MEASURES  # noqa: E402


def figures(conditions: list[dict[str, Any]], ranking: list[dict[str, Any]],
             reconstruction: list[dict[str, Any]], targets: dict[str, list[str]], out: Path,
             clean: float, measure: str, bit_classes: list[str]) -> dict[str, Path]:
    """The analysis's figures in ``out``: accuracy against BER (one line per bit class),
    SNR and ε, each point with its 95 % interval; the ranking; leakage by cut depth."""
    return {"ber": _ber_figure(conditions, out / "accuracy_vs_ber.png", clean, measure,
                               bit_classes),
            "snr": _snr_figure(conditions, out / "accuracy_vs_snr.png", clean, measure),
            "epsilon": _epsilon_figure(conditions, targets["links"],
                                       out / "accuracy_vs_epsilon.png", clean, measure),
            "ranking": _ranking_figure(ranking, out / "criticality.png", measure),
            "reconstruction": _reconstruction_figure(reconstruction,
                                                     out / "reconstruction_by_depth.png")}


def _errorbar(ax: Any, points: list[dict[str, Any]], x: str, **style: Any) -> None:
    """Accuracy against ``x``, each point with its 95 % interval as an error bar."""
    points = sorted(points, key=lambda p: p[x])
    if not points:
        return
    acc = [p["accuracy"] for p in points]
    err = [[max(0.0, a - p.get("accuracy_low", a)) for a, p in zip(acc, points)],
           [max(0.0, p.get("accuracy_high", a) - a) for a, p in zip(acc, points)]]
    ax.errorbar([p[x] for p in points], acc, yerr=err, marker="o", capsize=3, **style)


def _ber_figure(rows: list[dict[str, Any]], path: Path, clean: float, measure: str,
                bit_classes: list[str]) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for bits in bit_classes:
        _errorbar(ax, [r for r in rows if r["threat"] == "L1" and r["target"] == "every"
                       and r.get("param_bits") == bits], "param_ber", label=bits)
    ax.set_xscale("log")
    return _finish(fig, ax, path, clean, "bit-error rate on every link (per bit of the class)",
                   "Bit flips in transit (L1): by float32 bit class", measure)


def _snr_figure(rows: list[dict[str, Any]], path: Path, clean: float, measure: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _errorbar(ax, [r for r in rows if r["threat"] == "L2" and r["target"] == "every"],
              "param_snr_db")
    return _finish(fig, ax, path, clean, "signal-to-noise ratio on every link (dB)",
                   "Gaussian noise in transit (L2)", measure)


def _epsilon_figure(rows: list[dict[str, Any]], links: list[str], path: Path,
                    clean: float, measure: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for link in links:
        _errorbar(ax, [r for r in rows if r["threat"] == "L5" and r["target"] == link],
                  "param_epsilon", label=link)
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
    return save(fig, path)


def _ranking_figure(ranking: list[dict[str, Any]], path: Path, measure: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * max(1, len(ranking))))
    names = [f"{r['kind']} {r['name']}" for r in ranking]
    colours = ["tab:red" if r["kind"] == "device" else "tab:blue" for r in ranking]
    drops = [r["accuracy_drop"] for r in ranking]
    err = [[max(0.0, d - r.get("accuracy_drop_low", d)) for d, r in zip(drops, ranking)],
           [max(0.0, r.get("accuracy_drop_high", d) - d) for d, r in zip(drops, ranking)]]
    ax.barh(range(len(ranking)), drops, xerr=err, capsize=3, color=colours)
    ax.set_yticks(range(len(ranking)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"{LOSSES[measure]} (device: crash; link: mean of standard attacks; "
                  "bars: 95% interval)")
    ax.set_title("Criticality: which device or link to hit first")
    return save(fig, path)


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
    return save(fig, path)


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def precision_figure(pooled: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy lost against BER, one line per precision and flip class (random: solid,
    most significant bit: dashed), the 95 % intervals as bands (``precisions.py``)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (precision, flips), colour in zip(
            sorted({(r["precision"], r["flips"]) for r in pooled}), plt.rcParams[
                "axes.prop_cycle"].by_key()["color"] * 4):
        points = sorted((r for r in pooled if (r["precision"], r["flips"]) == (
            precision, flips)), key=lambda r: r["ber"])
        ber = [r["ber"] for r in points]
        label = f"{precision}, {'random bits' if flips == 'all' else points[0]['bits']}"
        ax.plot(ber, [r["accuracy_drop"] for r in points], marker="o", color=colour,
                linestyle="-" if flips == "all" else "--", label=label)
        ax.fill_between(ber, [r["accuracy_drop_low"] for r in points],
                        [r["accuracy_drop_high"] for r in points], color=colour, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("bit-error rate on every link")
    ax.set_ylabel("accuracy lost (95% interval)")
    ax.set_title("fp32 vs int8 under L1 bit flips")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
