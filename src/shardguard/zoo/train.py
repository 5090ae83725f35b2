"""Training and evaluation on in-memory tensors, with a progress bar and a fixed seed.

    shardguard train resnet-small --epochs 8 -o resnet-small.pt
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .._progress import progress
from ..data import Split
from ._registry import Recipe


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    test_accuracy: float


def evaluate(module: nn.Module, split: Split, *, n: int | None = None,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``module`` on the first ``n`` samples of ``split``."""
    return float(predict(module, split, n=n, batch_size=batch_size).eq(
        torch.from_numpy(split.labels[:n])).float().mean())


@torch.no_grad()
def predict(module: nn.Module, split: Split, *, n: int | None = None,
            batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes for the first ``n`` samples of ``split``."""
    was_training = module.training
    module.eval()
    x, _ = split.tensors(n)
    preds = [module(chunk).argmax(1) for chunk in torch.split(x, batch_size)]
    module.train(was_training)
    return torch.cat(preds)


@torch.no_grad()
def top1(module: nn.Module, batches: Iterable[torch.Tensor],
         total: int | None = None) -> torch.Tensor:
    """Top-1 class of every input the batches hold, -1 where the output is not finite
    (a NaN is never silently a class); with a progress bar when ``total`` is given."""
    was_training = module.training
    module.eval()
    preds = []
    with progress() as bar:
        task = bar.add_task("inference", total=total, info="")
        for x in batches:
            out = module(x)
            finite = torch.isfinite(out).all(1)
            preds.append(torch.where(finite, out.argmax(1), -1))
            bar.update(task, advance=len(x))
    module.train(was_training)
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of (B, C, H, W) by up to ``pad`` pixels (zero fill), and flip half."""
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    rows = (oy + torch.arange(h))[:, :, None]  # (B, H, 1)
    cols = (ox + torch.arange(w))[:, None, :]  # (B, 1, W)
    shifted = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols]  # (B, H, W, C)
    flip = torch.rand(b, generator=generator) < 0.5
    shifted[flip] = shifted[flip].flip(2)
    return shifted.permute(0, 3, 1, 2).contiguous()


def train(module: nn.Module, train_split: Split, test_split: Split, recipe: Recipe, *,
          seed: int = 0, eval_n: int | None = None) -> list[EpochResult]:
    """Train ``module`` in place with AdamW and a one-cycle schedule; evaluate after each epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = train_split.tensors()
    steps_per_epoch = math.ceil(len(y) / recipe.batch_size)
    optimiser = torch.optim.AdamW(module.parameters(), lr=recipe.lr,
                                  weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    history: list[EpochResult] = []
    with progress() as bar:
        task = bar.add_task("training", total=recipe.epochs * steps_per_epoch, info="")
        for epoch in range(1, recipe.epochs + 1):
            module.train()
            order = torch.randperm(len(y), generator=generator)
            total = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
                xb = x[idx]
                if recipe.augment:
                    xb = random_shift(xb, 2, generator)
                loss = loss_fn(module(xb), y[idx])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training diverged at epoch {epoch} (loss {loss})")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item()
                bar.update(task, advance=1,
                           info=f"epoch {epoch}/{recipe.epochs} loss {total / (i + 1):.3f}")
            accuracy = evaluate(module, test_split, n=eval_n)
            history.append(EpochResult(epoch, total / steps_per_epoch, accuracy))
            bar.console.print(f"epoch {epoch}: loss {total / steps_per_epoch:.4f}, "
                              f"test accuracy {accuracy:.4f}") if not bar.disable else None
    module.eval()
    return history


def command_line() -> str:
    """The command that is running, as it would be typed (recorded in checkpoint metadata)."""
    argv = ["shardguard", *sys.argv[1:]]
    return " ".join(argv)


@torch.no_grad()
def head_inputs(module: nn.Module, head: str, batches: Iterable[torch.Tensor],
                total: int | None = None) -> torch.Tensor:
    """What layer ``head`` receives for every input: the frozen backbone's features."""
    layer = module.get_submodule(head)
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    try:
        top1(module, batches, total)
    finally:
        hook.remove()
    return torch.cat(seen)


def train_head(module: nn.Module, head: str, features: torch.Tensor, labels: torch.Tensor,
               recipe: Recipe, *, seed: int = 0) -> float:
    """Train layer ``head`` alone on the backbone's ``features`` (AdamW, cosine schedule);
    the final training loss. The rest of ``module`` is untouched."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    layer = module.get_submodule(head)
    steps = math.ceil(len(labels) / recipe.batch_size)
    optimiser = torch.optim.AdamW(layer.parameters(), lr=recipe.lr,
                                  weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, recipe.epochs * steps)
    loss_fn = nn.CrossEntropyLoss()
    total = math.nan
    with progress() as bar:
        task = bar.add_task("training the head", total=recipe.epochs, info="")
        for epoch in range(1, recipe.epochs + 1):
            total = 0.0
            for idx in torch.split(torch.randperm(len(labels), generator=generator),
                                   recipe.batch_size):
                loss = loss_fn(layer(features[idx]), labels[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(idx) / len(labels)
            bar.update(task, advance=1, info=f"epoch {epoch}/{recipe.epochs} loss {total:.3f}")
    if not math.isfinite(total):
        raise FloatingPointError(f"training the head diverged (loss {total})")
    return total
