"""L6: eavesdropping — how well can the input be rebuilt from the tensor on a link?

The attacker records the tensors that cross a link for inputs it knows (the
training split here), trains a decoder to map them back to the images, and then
reconstructs unseen test images from what it overhears. The decoder rebuilds the
image as pixels in [0, 1] — the model's input with its normalisation undone
(``pixels``), so a model that takes ImageNet-normalised inputs is scored on the same
scale as one that takes raw pixels. Reported as PSNR (dB, peak 1) and SSIM (Wang et
al., 2004: 7×7 Gaussian window, σ = 1.5, C1 = 0.01², C2 = 0.03²), averaged over the
test images. Simulation only.

Trained to convergence (``EavesdropTraining``): a tenth of the attacker's images is
held out, and training stops when the held-out PSNR has not risen by ``min_gain_db``
for ``patience`` epochs (or after ``max_epochs``); the best epoch's decoder is scored.
A fixed ``epochs`` without ``patience`` trains exactly that many epochs on every image.
``analyze`` and the L6 threat of campaigns (``spec.Eavesdrop``) share these settings
(``spec.DecoderTraining``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..hooks import Interceptor, Traffic
from ..local import LocalExecutor
from ..partition.compile import CompiledPlan, Transfer
from .local import link_matches
from .spec import EAVESDROP_IMAGES, DecoderTraining

BATCH = 32  # images per step when converging: a held-out gain per epoch comes sooner


class EavesdropTraining(DecoderTraining):
    """``analyze``'s eavesdropper: how many images, and how long it trains (to convergence
    on a held-out split: ``DecoderTraining``, shared with the L6 threat of campaigns)."""

    images: Annotated[int, Field(ge=20)] = EAVESDROP_IMAGES  # known inputs (at 28×28)
    test: Annotated[int, Field(ge=1)] = 500  # test images it is scored on (at 28×28)


def training_args(training: DecoderTraining) -> dict[str, Any]:
    """``eavesdrop``'s keyword arguments for ``training``: ``max_epochs`` is its
    ``epochs``, the limit (or, with ``patience`` None, the budget)."""
    return {"epochs": training.max_epochs, "patience": training.patience,
            "min_gain_db": training.min_gain_db, "holdout": training.holdout}


@dataclass(frozen=True)
class Reconstruction:
    link: str
    psnr_db: float
    ssim: float
    tensor_shape: tuple[int, ...]
    epochs: int = 0  # epochs trained
    converged: bool = False  # stopped by the held-out criterion, before the epoch limit


class _Recorder(Interceptor):
    def __init__(self, target: str) -> None:
        self.target = target
        self.seen: dict[str, torch.Tensor] = {}


    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor:
        if link_matches(self.target, transfer):
            self.seen[transfer.id] = value.detach()
        return value


@torch.no_grad()
def overheard(compiled: CompiledPlan, link: str, x: torch.Tensor) -> torch.Tensor:
    """What crosses ``link`` for inputs ``x``: the (N, C, H, W) tensor when it is one
    feature map, else everything flattened and joined, (N, features)."""
    recorder = _Recorder(link)
    executor = LocalExecutor(compiled, [recorder])
    parts = []
    for chunk in torch.split(x, 500):
        recorder.seen.clear()
        executor.run(chunk)
        if not recorder.seen:
            raise ValueError(f"no tensor crosses link {link!r}")
        seen = [v for _, v in sorted(recorder.seen.items())]
        parts.append(seen[0] if len(seen) == 1 and seen[0].dim() == 4
                     else torch.cat([v.flatten(1) for v in seen], 1))
    return torch.cat(parts)


class Decoder(nn.Module):
    """Overheard tensor → image. Feature maps: convolutions, then resize to the image;
    flat features: a linear map to a 7×7 grid first."""

    def __init__(self, example: torch.Tensor, out_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if example.dim() == 4:
            self.front: nn.Module = nn.Sequential(nn.Conv2d(example.shape[1], 32, 3, padding=1),
                                                  nn.ReLU())
        else:
            self.front = nn.Sequential(nn.LayerNorm(example.shape[1]),
                                       nn.Linear(example.shape[1], 32 * 7 * 7), nn.ReLU(),
                                       nn.Unflatten(1, (32, 7, 7)))
        self.back = nn.Sequential(
            nn.Upsample(size=out_shape[1:], mode="bilinear"), nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(), nn.Conv2d(32, out_shape[0], 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.back(self.front(z)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image of (N, C, H, W) tensors in [0, 1]."""
    coords = torch.arange(7, dtype=a.dtype) - 3
    g = torch.exp(-(coords ** 2) / (2 * 1.5 ** 2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(a.shape[1], 1, 7, 7)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1)
                                                         * (var_a + var_b + c2))
    return score.flatten(1).mean(1)


def eavesdrop(compiled: CompiledPlan, link: str, train_x: torch.Tensor, test_x: torch.Tensor,
              *, epochs: int = 3, patience: int | None = None, min_gain_db: float = 0.1,
              holdout: float = 0.1, seed: int = 0,
              pixels: Callable[[torch.Tensor], torch.Tensor] | None = None,
              on_epoch: Callable[[int, float], None] | None = None) -> Reconstruction:
    """Train a decoder on what ``link`` carries for ``train_x``; score it on ``test_x``.

    With ``patience``, ``epochs`` is the limit and training stops early on a held-out
    ``holdout`` share of ``train_x`` (see the module docstring); ``on_epoch(epoch,
    held-out PSNR)`` follows it (NaN for the PSNR without ``patience``: none is held
    out). ``pixels`` maps model inputs back to pixels in [0, 1] (``Data.pixels``);
    without it the inputs must already be pixels."""
    torch.manual_seed(seed)
    z_train, z_test = overheard(compiled, link, train_x), overheard(compiled, link, test_x)
    if pixels is not None:
        train_x, test_x = pixels(train_x), pixels(test_x)
    decoder = Decoder(z_train[:1], tuple(train_x.shape[1:]))  # type: ignore[arg-type]
    optimiser = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    if patience is None:  # a fixed budget, every image trained on
        for done in range(1, epochs + 1):
            _epoch(decoder, optimiser, z_train, train_x,
                   torch.randperm(len(z_train), generator=generator), 128)
            if on_epoch is not None:
                on_epoch(done, float("nan"))  # nothing held out to score
        trained, converged = epochs, False
    else:
        trained, converged = _converge(decoder, optimiser, z_train, train_x, generator, epochs,
                                       patience, min_gain_db, holdout, on_epoch)
    with torch.no_grad():
        rebuilt = decoder(z_test)
    return Reconstruction(link, float(psnr(rebuilt, test_x).mean()),
                          float(ssim(rebuilt, test_x).mean()), tuple(z_train.shape[1:]),
                          trained, converged)


def _epoch(decoder: Decoder, optimiser: torch.optim.Optimizer, z: torch.Tensor,
           x: torch.Tensor, order: torch.Tensor, batch: int) -> None:
    for idx in torch.split(order, batch):
        loss = F.mse_loss(decoder(z[idx]), x[idx])
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        optimiser.step()


def _converge(decoder: Decoder, optimiser: torch.optim.Optimizer, z: torch.Tensor,
              x: torch.Tensor, generator: torch.Generator, epochs: int, patience: int,
              min_gain_db: float, holdout: float,
              on_epoch: Callable[[int, float], None] | None) -> tuple[int, bool]:
    """Train until the held-out PSNR stops rising; leave the best epoch's weights in
    ``decoder``. Returns the epochs trained and whether the criterion stopped it."""
    order = torch.randperm(len(z), generator=generator)
    held = max(1, int(len(z) * holdout))
    fit, check = order[held:], order[:held]
    best, best_state, waited, trained = float("-inf"), decoder.state_dict(), 0, 0
    for trained in range(1, epochs + 1):
        _epoch(decoder, optimiser, z, x, fit[torch.randperm(len(fit), generator=generator)],
               BATCH)
        with torch.no_grad():
            score = float(psnr(decoder(z[check]), x[check]).mean())
        if on_epoch is not None:
            on_epoch(trained, score)
        waited = 0 if score >= best + min_gain_db else waited + 1  # only a real gain counts
        if score > best:
            best, best_state = score, copy.deepcopy(decoder.state_dict())
        if waited >= patience:
            decoder.load_state_dict(best_state)
            return trained, True
    decoder.load_state_dict(best_state)
    return trained, False
