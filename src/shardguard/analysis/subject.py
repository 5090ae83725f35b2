"""What a sweep measures — the model, its input, the data and the platform — shared by
campaign and exploration specs.

    model: nets.py:make_net          # a zoo name, path/to/file.py:factory, or model.onnx
    weights: net.pt                  # optional state dict
    input_shape: [3, 224, 224]       # needed when the model is not a zoo model
    preprocess: imagenet             # a preset, a YAML file, or a mapping (default: the
                                     # zoo model's; else its input size and channels)
    classes: classes.txt             # optional class list (image folders' labels)
    data: val/                       # IDX directory, image folder, .npz, or noise
    platform: rpi4x4-ethernet        # built-in name or platform file

Paths in a spec file are relative to the file (``_paths.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field, PositiveInt

from .._config import Config, read_yaml, validate
from .._paths import Kind, located
from ..data import Data, Preprocess, open_data, parse_preprocess
from ..errors import ConfigError

S = TypeVar("S", bound="Subject")

PATHS: dict[str, Kind] = {"model": "model", "weights": "path", "platform": "platform",
                          "classes": "path", "data": "data"}


class Subject(Config):
    """The fields every sweep spec has: what is measured, on what data and devices."""

    model: str
    """A zoo name, path/to/file.py:factory, or an .onnx file."""
    weights: str | None = None
    """A state-dict file (default: the zoo's shipped checkpoint, if any)."""
    input_shape: Annotated[list[PositiveInt], Field(min_length=1, max_length=3)] | None = None
    """C, H, W of one input; needed for a model file or .onnx (zoo models know theirs)."""
    preprocess: Preprocess | None = None
    """How images become the model's input (default: the zoo's; else its input size)."""
    classes: str | None = None
    """A class-list file, one class a line (labels an image folder by the model's classes)."""
    data: str | None = None
    """IDX directory, image folder, .npz file or 'noise' (default: $SHARDGUARD_DATA, else
    Fashion-MNIST)."""
    platform: str
    """A built-in platform name or a platform file."""


def load_spec(cls: type[S], path: Path) -> S:
    """A spec from YAML, its paths made absolute from the file's directory."""
    data = read_yaml(path)
    if isinstance(data, dict):
        data = located(data, path.parent, PATHS)
        if isinstance(data.get("preprocess"), str):
            data["preprocess"] = parse_preprocess(
                data["preprocess"], base=path.parent, source=f"{path}: preprocess").model_dump()
    return validate(cls, data, str(path))


def load_subject(spec: Subject) -> tuple[Any, tuple[int, ...]]:
    """The spec's model (loaded) and its input shape."""
    from ..zoo import load_model

    loaded = load_model(spec.model, weights=spec.weights)
    shape = tuple(spec.input_shape) if spec.input_shape else loaded.input_shape
    if shape is None:
        raise ConfigError(f"{spec.model}: give the model's input_shape (C, H, W) in the spec, "
                          "or --input-shape")
    return loaded, shape


def model_ref(spec: Subject, shape: tuple[int, ...]) -> Any:
    """The plan's ``model`` entry for the spec's model."""
    from ..partition import ModelRef

    return ModelRef(ref=spec.model, weights=spec.weights, input_shape=list(shape),
                    preprocess=spec.preprocess, classes=spec.classes)


def subject_data(spec: Subject, loaded: Any, shape: tuple[int, ...]) -> Data:
    """The spec's data, prepared for its model."""
    return open_data(spec.data, model=loaded, input_shape=shape, preprocess=spec.preprocess,
                     classes=spec.classes)


def profile_images(base: int, input_shape: tuple[int, ...] | list[int]) -> int:
    """How many images to profile ranges or train an eavesdropper on: ``base`` at
    28×28, proportionally fewer for larger inputs (at least 32), so that a 224×224 model
    is not fed thousands of images for a side measurement."""
    values = 1
    for d in input_shape:
        values *= int(d)
    return max(32, min(base, base * 784 // max(1, values)))


def check_memory(graph: Any, samples: int, processes: int, option: str) -> None:
    """Refuse, in one line, a sweep whose batches cannot fit this machine's memory.

    The local executor runs a trial's images as one batch in each of ``processes``
    processes; a batch needs about the input plus four times the largest activation per
    image (a layer's input and output, a residual kept aside, a threat's copy). An
    estimate, erring high: better refused with the numbers than killed half-way.
    """
    from ..platform.host import _memory_bytes  # MemAvailable, as host calibration reads it

    values = 1
    for d in graph.input_shape:
        values *= int(d)
    per_image = values * 4 + 4 * max((n.out_bytes for n in graph.compute_nodes), default=0)
    free, source = _memory_bytes()
    need = samples * per_image * processes
    if not source.startswith("estimate") and need > free:
        fits = max(1, free // (per_image * processes))
        raise ConfigError(
            f"{samples} images of {'×'.join(map(str, graph.input_shape))} per trial need about "
            f"{need / 1e9:.1f} GB in the local executor ({processes} process(es)); "
            f"{free / 1e9:.1f} GB is available: give at most {int(fits)} ({option})")
