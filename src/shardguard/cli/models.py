"""Commands on models: ``zoo``, ``train``, ``eval``, ``profile``, ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._progress import log
from ._options import (
    Classes,
    DataDir,
    Force,
    InputShape,
    PreprocessOption,
    Weights,
    count,
    parse_shape,
    refuse_overwrite,
)
from .app import app

if TYPE_CHECKING:  # the CLI imports torch only in the commands that use it
    from ..defences.failout import Failout
    from ..zoo import LoadedModel, Recipe

ModelRef = Annotated[str, typer.Argument(
    help="Zoo name (see `shardguard zoo`), path/to/file.py:factory, or model.onnx.")]


@app.command()
def zoo() -> None:
    """List the zoo's models.

    Example: shardguard zoo
    """
    from rich.table import Table

    from ..zoo import ZOO, checkpoints

    table = Table("name", "input", "trained", "description")
    for name, spec in ZOO.items():
        meta = checkpoints.read_meta(p) if (p := checkpoints.shipped(name)) else None
        trained = f"{meta.test_accuracy:.2%}" if meta else "random weights"
        if spec.pretrained is not None:
            trained = f"pretrained ({len(spec.classes) if spec.classes else '?'} classes)"
        table.add_row(name, "×".join(map(str, spec.input_shape)), trained, spec.description)
    from rich.console import Console

    Console().print(table)


# train's options, declared here so that the command reads as a list of them
_Seed = Annotated[int, typer.Option(help="Seed for initialisation, shuffling, augmentation.")]
_Checkpoint = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Checkpoint to write (default: checkpoints/MODEL.pt).")]
_Failout = Annotated[float, typer.Option(
    help="Failout (M6): per sample, drop one device's pieces of every split tensor with "
         "this probability, so accuracy survives a missing device.")]
_FailoutStrategy = Annotated[str, typer.Option(
    help="With --failout: the partitioning whose devices drop out (spatial or channel).")]
_FailoutPlatform = Annotated[str, typer.Option(
    help="With --failout: the platform the partitioning is planned for.")]


@app.command()
def train(
    model: ModelRef,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the zoo recipe).")] = None,
    seed: _Seed = 0,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (one-cycle).")] = None,
    output: _Checkpoint = None,
    failout: _Failout = 0.0,
    strategy: _FailoutStrategy = "channel",
    platform: _FailoutPlatform = "rpi4x4-ethernet",
    data: DataDir = None,
    force: Force = False,
) -> None:
    """Train a model on Fashion-MNIST and write a checkpoint with its metadata. A model
    with a pretrained backbone (efficientnet-lite0-fmnist) trains its head alone.

    Example: shardguard train lenet5 --epochs 15 -o lenet5.pt

    Example: shardguard train lenet5 --failout 0.3 --strategy channel -o lenet5-failout.pt
    """
    from dataclasses import replace

    import torch

    from ..data import load_fashion_mnist
    from ..errors import ConfigError
    from ..zoo import ZOO, Recipe, build, checkpoints, load_model
    from ..zoo.train import command_line, evaluate
    from ..zoo.train import train as run_training

    count("--epochs", epochs)
    torch.manual_seed(seed)
    loaded = load_model(model, pretrained=False)  # zoo models are built under ``seed`` here
    out = output or Path("checkpoints") / f"{loaded.name}.pt"
    refuse_overwrite(out, force)
    recipe = ZOO[model].recipe if model in ZOO and ZOO[model].recipe else Recipe(epochs=8)
    recipe = replace(recipe, epochs=epochs if epochs is not None else recipe.epochs,
                     lr=lr or recipe.lr)
    if model in ZOO:
        loaded.module = build(model, seed=seed)
    if recipe.head is not None:
        if failout:
            raise ConfigError(f"--failout: {model} trains its head alone, on a frozen "
                              "backbone; failout needs the whole network trained")
        _save_head(loaded, recipe, _idx_directory(data), seed, out)
        return
    network = (_failout_network(loaded, failout, strategy, platform, seed) if failout
               else loaded.module)
    train_split, test_split = load_fashion_mnist(_idx_directory(data))
    run_training(network, train_split, test_split, recipe, seed=seed)
    accuracy = evaluate(loaded.module, test_split)
    meta = checkpoints.save(loaded.module, out, {
        "model": model, "dataset": "fashion-mnist", "test_accuracy": round(accuracy, 4),
        "seed": seed, "epochs": recipe.epochs, "command": command_line(),
        "torch_version": torch.__version__,
        "params": sum(p.numel() for p in loaded.module.parameters()), "failout": failout,
    })
    print(f"{model}: test accuracy {meta.test_accuracy:.4f} → {out} (sha256 {meta.sha256[:12]}…)")


def _failout_network(loaded: LoadedModel, failout: float, strategy: str, platform: str,
                     seed: int) -> Failout:
    """The model wrapped to train with failout over ``strategy``'s devices on ``platform``."""
    from ..defences.failout import failout_for, split_tensors

    network = failout_for(loaded, failout, strategy, platform, seed)
    log(f"failout {failout}: {strategy} over {', '.join(network.devices)} ({platform}), "
        f"at {len(split_tensors(network.compiled))} split tensor(s)")
    return network


def _save_head(loaded: LoadedModel, recipe: Recipe, data: Path | None, seed: int,
               out: Path) -> None:
    """Train a zoo model's head on its frozen pretrained backbone; write the head alone."""
    import torch

    from ..analysis.metrics import rate
    from ..data import open_data
    from ..errors import DataError, ModelError
    from ..zoo import ZOO, checkpoints
    from ..zoo._load import backbone_state
    from ..zoo.train import command_line, head_inputs, top1, train_head

    assert recipe.head is not None
    spec = ZOO[loaded.ref]
    assert spec.backbone is not None
    fitted = loaded.module.load_state_dict(
        {k: v for k, v in backbone_state(spec.backbone).items()
         if not k.startswith(f"{recipe.head}.")}, strict=False)
    if fitted.unexpected_keys or any(not k.startswith(f"{recipe.head}.")
                                     for k in fitted.missing_keys):
        raise ModelError(f"{spec.backbone}'s weights do not fit {loaded.ref} beyond its "
                         f"head {recipe.head}")
    loaded.module.eval()
    train = open_data(data, model=loaded, split="train")
    test = open_data(data, model=loaded)
    if not (train.labelled and test.labelled):
        raise DataError(f"{train.source.name}: training a head needs labelled images")
    n = min(len(train), recipe.train_images or len(train))
    log(f"{loaded.ref}: head {recipe.head} on {spec.backbone}'s frozen features of the "
        f"first {n} images of {train.describe()}")
    features = head_inputs(loaded.module, recipe.head, train.batches(n), n)
    labels = train.labels(n)
    assert labels is not None
    loss = train_head(loaded.module, recipe.head, features, labels, recipe, seed=seed)
    log(f"training loss {loss:.4f}; evaluating on {test.describe()}")
    truth = test.labels()
    assert truth is not None
    right = top1(loaded.module, test.batches(), len(test)).eq(truth)
    first = {str(k): round(float(right[:k].float().mean()), 4) for k in (200, 500)
             if k < len(right)}
    meta = checkpoints.save(loaded.module, out, {
        "model": loaded.ref, "dataset": "fashion-mnist",
        "test_accuracy": round(float(right.float().mean()), 4), "seed": seed,
        "epochs": recipe.epochs, "command": command_line(),
        "torch_version": torch.__version__,
        "params": sum(p.numel() for p in loaded.module.get_submodule(recipe.head).parameters()),
        "backbone": spec.backbone, "accuracy_on_first": first}, only=recipe.head)
    print(f"{loaded.ref}: test accuracy {rate(int(right.sum()), len(right))} → {out} "
          f"(the head alone; sha256 {meta.sha256[:12]}…)")


@app.command("eval")
def eval_(
    model: ModelRef,
    weights: Weights = None,
    n: Annotated[int | None, typer.Option("-n", help="Evaluate on the first N images.")]
    = None,
    data: DataDir = None,
    input_shape: InputShape = None,
    preprocess: PreprocessOption = None,
    classes: Classes = None,
) -> None:
    """Accuracy of a model on a dataset (with its 95% interval); on the Fashion-MNIST test
    set, checks it against the checkpoint's recorded accuracy.

    Example: shardguard eval resnet-small

    Example: shardguard eval nets.py:make_net --input-shape 3,224,224 --preprocess imagenet
    --data val/ -n 500
    """
    from collections import Counter

    from ..analysis.metrics import rate
    from ..data import open_data
    from ..errors import IntegrityError
    from ..zoo import load_model
    from ..zoo.train import top1

    count("-n", n)
    loaded = load_model(model, weights=weights)
    dataset = open_data(data, model=loaded, preprocess=preprocess, classes=classes,
                        input_shape=parse_shape(input_shape) if input_shape else None)
    print(f"data: {dataset.describe()}")
    total = len(dataset) if n is None else min(n, len(dataset))
    predicted = top1(loaded.module, dataset.batches(n), total)
    unscored = int((predicted < 0).sum())
    labels = dataset.labels(n)
    if unscored:
        print(f"{unscored} of {total} outputs are not finite (NaN or inf): counted as wrong")
    if labels is None:
        common = ", ".join(f"{c} ×{k}" for c, k in Counter(predicted.tolist()).most_common(5))
        print(f"{loaded.name}: no labels, so no accuracy; {total} images classified "
              f"(most frequent classes: {common})")
        return
    right = int((predicted == labels).sum())
    print(f"{loaded.name}: test accuracy {rate(right, total)} on {total} images")
    meta = loaded.meta
    if meta is not None and dataset.source.kind == "idx" and meta.dataset == "fashion-mnist":
        recorded = (meta.test_accuracy if total == len(dataset) else
                    meta.accuracy_on_first.get(str(total)))
        if recorded is None:
            kept = ", ".join(["all", *meta.accuracy_on_first])
            log(f"no accuracy recorded for the first {total} images (recorded: {kept}): "
                "not checked")
            return
        accuracy = right / total
        # Two images of slack: float summation order may differ between CPUs.
        if abs(accuracy - recorded) > 2 / total + 1e-9:
            raise IntegrityError(f"{loaded.weights}: accuracy {accuracy:.4f} does not reproduce "
                                 f"the recorded {recorded:.4f}")
        log(f"reproduces the recorded accuracy {recorded:.4f}")


@app.command()
def profile(
    model: ModelRef,
    input_shape: Annotated[str | None, typer.Option(
        "--input-shape", help="C,H,W of one input (default: the zoo model).")] = None,
    weights: Weights = None,
    measure: Annotated[bool, typer.Option(help="Also time each node on this host.")] = False,
) -> None:
    """Trace a model with torch.fx and print each node's MACs, parameters and output size.

    Example: shardguard profile resnet18 --input-shape 3,224,224
    """
    from ..errors import ModelError
    from ..graph import trace
    from ..graph.report import print_profile
    from ..zoo import load_model

    given = parse_shape(input_shape) if input_shape else None
    loaded = load_model(model, weights=weights, pretrained=weights is not None, input_shape=given)
    shape = given or loaded.input_shape
    if shape is None:
        raise ModelError(f"{model}: give --input-shape C,H,W (not known for this model)")
    graph = trace(loaded.module, shape, measure=measure)
    print_profile(graph, title=f"{loaded.name} {'×'.join(map(str, shape))}")


@app.command()
def predict(
    model: ModelRef,
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files.")],
    top: Annotated[int, typer.Option("--top", "-k", help="Classes to show per image.")] = 5,
    as_json: Annotated[bool, typer.Option(
        "--json", help="A JSON list: per image, `image` and `top` (`index`, `name`, `p`).")]
    = False,
    weights: Weights = None,
) -> None:
    """Classify image files: each image's most probable classes, with their probabilities.

    Example: shardguard predict efficientnet-lite0 cat.jpg espresso.png --top 3
    """
    import json

    from ..zoo import load_model
    from ..zoo.predict import predict as classify

    results = classify(load_model(model, weights=weights), images, top=top)
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return
    for r in results:
        print(r.image)
        for rank, g in enumerate(r.top, start=1):
            print(f"  {rank}. {g.name} (class {g.index}): {g.p:.3f}")


def _idx_directory(data: str | None) -> Path | None:
    """Training reads a directory of IDX files with both splits (Fashion-MNIST's layout)."""
    from ..errors import DataError

    if data is not None and (data == "noise" or not Path(data).is_dir()):
        raise DataError(f"--data {data}: training needs a directory of IDX files with the "
                        "train and test splits")
    return Path(data) if data is not None else None
