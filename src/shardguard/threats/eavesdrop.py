"""L6: eavesdropping — how well can the input be rebuilt from the tensor on a link?

The attacker records the tensors that cross a link for inputs it knows (the
training split here), trains a decoder to map them back to the images, and then
reconstructs unseen test images from what it overhears. The decoder rebuilds the
image as pixels in [0, 1] — the model's input with its normalisation undone
(``pixels``), so a model that takes ImageNet-normalised inputs is scored on the same
scale as one that takes raw pixels. Reported as PSNR (dB, peak 1) and SSIM (Wang et
al., 2004: 7×7 Gaussian window, σ = 1.5, C1 = 0.01², C2 = 0.03²), averaged over the
test images. Simulation only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..hooks import Interceptor, Traffic
from ..local import LocalExecutor
from ..partition.compile import CompiledPlan, Transfer
from .local import link_matches


@dataclass(frozen=True)
class Reconstruction:
    link: str
    psnr_db: float
    ssim: float
    tensor_shape: tuple[int, ...]


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
              *, epochs: int = 3, seed: int = 0,
              pixels: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Reconstruction:
    """Train a decoder on what ``link`` carries for ``train_x``; score it on ``test_x``.

    ``pixels`` maps model inputs back to pixels in [0, 1] (``Data.pixels``); without it
    the inputs must already be pixels."""
    torch.manual_seed(seed)
    z_train, z_test = overheard(compiled, link, train_x), overheard(compiled, link, test_x)
    if pixels is not None:
        train_x, test_x = pixels(train_x), pixels(test_x)
    decoder = Decoder(z_train[:1], tuple(train_x.shape[1:]))  # type: ignore[arg-type]
    optimiser = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.split(torch.randperm(len(z_train), generator=generator), 128):
            loss = F.mse_loss(decoder(z_train[idx]), train_x[idx])
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            optimiser.step()
    with torch.no_grad():
        rebuilt = decoder(z_test)
    return Reconstruction(link, float(psnr(rebuilt, test_x).mean()),
                          float(ssim(rebuilt, test_x).mean()), tuple(z_train.shape[1:]))
