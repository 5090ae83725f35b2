"""The demo's security steps: an attack on a link, unsealed and then sealed (``defend``),
and the exploration of deployments that trade security against energy (``explore``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ._settings import DEMO_PROTECTION, EXPLORE_THREATS, DemoSizes


def planned_outputs(bound: Any, x: Any) -> np.ndarray:
    import torch

    from ..local import LocalExecutor

    with torch.no_grad():
        return LocalExecutor(bound.compiled)(x).numpy()


def ci(row: dict[str, Any], key: str) -> str:
    """``81.2% [78.9%, 83.4%]``: a figure with its 95 % interval, from a row's columns."""
    from ..analysis.metrics import with_interval

    return with_interval(row[key], row[f"{key}_low"], row[f"{key}_high"])


def explore_step(model: str, platform: str, out: Path, data: str | None,
                 sizes: DemoSizes) -> dict[str, Any]:
    """NSGA-II over pipeline and spatial partitions of up to 3 devices, three protections
    and range guards, against bit flips and replays on every link."""
    from ..analysis.explore import ExploreSpec
    from ..analysis.search import labels, run_exploration

    spec = ExploreSpec(model=model, platform=platform, threats=EXPLORE_THREATS,
                       strategies=["pipeline", "spatial"], max_devices=3,
                       protections=["none", DEMO_PROTECTION, "aead:aes-128-gcm"], copies=[1],
                       samples=sizes.explore_images, data=data)
    result = run_exploration(spec, out, budget=sizes.explore_budget, method="nsga2")
    levels = json.loads((out / "explore.json").read_text())["security_levels"]
    cost = {lv["protection"]: max(lv["crypto_per_device_j"].values(), default=0.0)
            for lv in levels}
    rec = result.recommended
    return {"lines": [
        f"explore    {len(result.front)} deployments on the Pareto front of {len(result.rows)} "
        f"evaluated; recommended: {rec['describe']} — {rec['energy_j'] * 1e3:.2f} mJ on the "
        f"busiest device, {rec['latency_s'] * 1e3:.2f} ms, {ci(rec, 'vulnerability')} "
        f"{labels(result.measure)['vulnerability'].split(' under')[0]} under bit flips and "
        f"replays — {out}/plans/recommended.yaml",
        f"           sealing every link of {levels[0]['deployment'].split(', links')[0]} "
        f"costs a Pi 4 {cost.get(DEMO_PROTECTION, 0) * 1e6:.0f} µJ "
        f"per inference with ChaCha20-Poly1305 and "
        f"{cost.get('aead:aes-128-gcm', 0) * 1e6:.0f} µJ with AES-128-GCM (no AES "
        "instructions)"],
        "front_points": len(result.front), "recommended": rec["describe"],
        "recommended_energy_j": rec["energy_j"], "recommended_latency_s": rec["latency_s"],
        "recommended_vulnerability": rec["vulnerability"],
        "recommended_vulnerability_interval": [rec["vulnerability_low"],
                                               rec["vulnerability_high"]]}


def defend_step(planned: Any, test: Any, out_dir: Path, platform: str,
                images: int) -> dict[str, Any]:
    """An on-path attacker replays tensors on the first link; then the links are sealed."""
    from ..analysis.metrics import rate, scored
    from ..defences.catalogue import parse_defence
    from ..partition import bind
    from ..platform import load_platform
    from ..runtime.threatened import run_under_threat
    from ..threats.spec import Replay

    link = planned.plan.links[0]
    attacker = Replay(target=f"{link.src}>{link.dst}", rate=0.3, seed=0)
    x = test.images(images)
    labels = test.labels(images)
    y = labels.numpy() if labels is not None else planned_outputs(planned, x).argmax(1)
    planned.plan.with_protection(DEMO_PROTECTION).save(out_dir / "plan-sealed.yaml", force=True)
    results: dict[str, Any] = {}
    for protection, path in (("none", "plan.yaml"), (DEMO_PROTECTION, "plan-sealed.yaml")):
        result = run_under_threat(bind(out_dir / path), attacker, x.numpy(), deadline_s=5.0,
                                  max_attempts=10, window=32, on_reject="retry")
        predicted, answered = scored(result.outputs)  # NaN or infinite: no class
        right = int((answered.numpy() & (predicted.numpy() == y)).sum())
        results[protection] = (result, right)
    target = load_platform(platform)
    energy = {p: parse_defence("none" if p == "none" else f"seal:{p}").energy_j(
        planned.compiled, target) for p in ("none", DEMO_PROTECTION, "aead:aes-128-gcm")}

    def extra_uj(protection: str) -> str:
        return ", ".join(f"{d} +{j * 1e6:.1f} µJ" for d, j in energy[protection].items())

    (_, plain_right), (sealed, sealed_right) = results["none"], results[DEMO_PROTECTION]
    n = len(x)
    return {
        "lines": [
            f"attack     replaying 30 % of the tensors on {link.src}>{link.dst}: "
            f"{plain_right}/{n} right unsealed ({rate(plain_right, n)}), nothing noticed",
            f"defence    sealed with {DEMO_PROTECTION}: {len(sealed.rejected)} tampered "
            f"messages rejected and asked again; {sealed.answered}/{n} answered, "
            f"{sealed_right}/{n} right ({rate(sealed_right, n)}) — {out_dir}/plan-sealed.yaml",
            f"cost       per inference (cost model): {extra_uj(DEMO_PROTECTION)}; "
            f"AES-128-GCM would cost {extra_uj('aead:aes-128-gcm')} "
            f"(the Pi 4 has no AES instructions)"],
        "unsealed_right": plain_right, "sealed_right": sealed_right,
        "sealed_rejected": len(sealed.rejected), "sealed_answered": sealed.answered,
        "crypto_uj_per_device": {p: {d: j * 1e6 for d, j in e.items()}
                                 for p, e in energy.items()},
    }
