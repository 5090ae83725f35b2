"""The eavesdropper (L6) in sweeps: by cut depth for ``analyze``, per trial for campaigns.

Both train it alike (``threats.spec.DecoderTraining``: to convergence on a held-out
split unless given a fixed budget), show each epoch on a progress bar and report the
epochs trained and whether the held-out criterion stopped it (``epochs``,
``converged``). ``analyze`` keeps each cut's result in a cache keyed by what it depends
on, the weights' digest included.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .._progress import progress
from ..threats.eavesdrop import EavesdropTraining
from .subject import profile_images


def reconstruction_by_depth(bound: Any, data: Any, *, depths: int = 4,
                            training: EavesdropTraining | None = None, seed: int = 0,
                            cache: Path | None = None) -> list[dict[str, Any]]:
    """L6 at cuts spread through the model: how well an eavesdropper rebuilds the input.

    Each cut is a two-stage pipeline cut where a single tensor is live; depth is the
    share of the model's MACs before the cut. ``data`` (``data.Data``) gives the images:
    ``training.images`` of its training split (or its own, without one) and its first
    ``training.test``. The decoder trains to convergence (``EavesdropTraining``); each
    cut's result is kept in ``cache`` (a directory), keyed by the plan, its weights'
    digest, the cut, the data and the training settings, so a resumed analysis does
    not train it again.
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
    from ..threats.eavesdrop import eavesdrop, training_args

    graph, platform, n = bound.graph, bound.platform, len(t.names)
    devices = platform.names[:2] if len(platform.names) > 1 else platform.names * 2
    task = bar.add_task(f"eavesdropper after {t.names[j - 1]}", total=training.max_epochs,
                        info="")

    def epoch(done: int, held_out_db: float) -> None:
        bar.update(task, completed=done, info=held_out(held_out_db))

    planned = assemble_plan(graph, bound.plan.model, platform, "manual", "latency",
                            [whole(graph, 0, j - 1, "a", devices[0]),
                             whole(graph, j, n - 1, "b", devices[1])])
    rec = eavesdrop(planned.compiled, "a>b", *images, seed=seed, pixels=data.pixels,
                    on_epoch=epoch, **training_args(training))
    bar.update(task, total=rec.epochs, completed=rec.epochs)
    return {"cut_after": t.names[j - 1], "depth": float(t.macs[j] / t.macs[n]),
            "psnr_db": rec.psnr_db, "ssim": rec.ssim,
            "tensor": "x".join(map(str, rec.tensor_shape)), "epochs": rec.epochs,
            "converged": rec.converged}


def held_out(psnr_db: float) -> str:
    """A progress bar's note on an eavesdropper's epoch: its held-out PSNR, if any."""
    return "" if math.isnan(psnr_db) else f"held-out PSNR {psnr_db:.1f} dB"


def _cache_key(bound: Any, cut: str, data: Any, training: EavesdropTraining,
               images: tuple[int, int], seed: int) -> str:
    """What an eavesdropper's result depends on: the plan as named (model, weights file,
    platform), the weights themselves (a model retrained in place, under the same names,
    is a new key), the cut, the data, the image counts and the training settings."""
    import hashlib

    what = {"plan": bound.plan.model_dump(mode="json"), "weights": weights_digest(bound.model),
            "cut": cut, "data": data.describe(), "training": training.model_dump(mode="json"),
            "images": images, "seed": seed}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def weights_digest(model: Any) -> str:
    """SHA-256 of the weights a plan binds: every tensor of the loaded model's state dict
    (parameters and buffers), with its name, dtype and shape. About 0.1 s per 100 MB."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def eavesdropped(bound: Any, threat: Any, x: Any, data: Any, label: str) -> dict[str, Any]:
    """A campaign's L6 trial: the decoder trained on ``threat.train_samples`` training
    images (proportionally fewer for inputs larger than 28×28) as ``threat`` says, scored
    on the campaign's images ``x``. Each epoch goes to the campaign's progress bar
    (``backend.note``: ``label``, a description, the epoch, the limit, a note)."""
    from ..threats.eavesdrop import eavesdrop, training_args
    from .backend import note

    train_x = data.train_images(profile_images(threat.train_samples, tuple(x.shape[1:])))
    what = f"eavesdropper on {threat.target}"

    def epoch(done: int, held_out_db: float) -> None:
        note((label, what, done, threat.max_epochs, held_out(held_out_db)))

    rec = eavesdrop(bound.compiled, threat.target, train_x, x, seed=threat.seed,
                    pixels=data.pixels, on_epoch=epoch, **training_args(threat))
    return {"psnr_db": rec.psnr_db, "ssim": rec.ssim, "epochs": rec.epochs,
            "converged": rec.converged}
