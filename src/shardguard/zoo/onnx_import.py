"""Import ``.onnx`` CNNs as torch.fx ``GraphModule``s made of standard torch layers.

    module, shape = load_onnx(Path("resnet50.onnx"))    # shape: (C, H, W) of one input
    reference = OnnxRuntimeModel(Path("resnet50.onnx"))  # the original file, on onnxruntime

ShardGuard converts ONNX graphs itself, node by node (``_onnx_layers.py``,
``_onnx_tensors.py``), rather than through a general converter: its partitioners
know ``nn.Conv2d``, batch norms, pools, ``torch.cat`` and additions, so an imported
model emitted in those terms splits into pipeline stages, spatial tiles and channel
groups exactly like a zoo model, and each stage exports back to ONNX for workers.
Constant subgraphs (weights made by ``ConstantOfShape``, shape arithmetic) are
folded on import. A node it cannot import is named, with its op, in one error.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx

from ..errors import ModelError
from . import _onnx_tensors  # noqa: F401  (registers the tensor ops)
from ._onnx_build import Builder, Unsupported, Value
from ._onnx_layers import OPS

_DOMAINS = ("", "ai.onnx")


def _read(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    try:
        onnx.checker.check_model(str(path))  # from the file: no copy of a large model
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path}: not a valid ONNX model ({first})") from exc
    if proto.functions:
        from onnx import inliner

        proto = inliner.inline_local_functions(proto)
    return proto


def _image_input(proto: Any, path: Path) -> Any:
    initialised = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initialised]
    if len(inputs) != 1:
        raise ModelError(f"{path}: takes {len(inputs)} inputs "
                         f"({', '.join(i.name for i in inputs)}); ShardGuard supports models "
                         "with one image input")
    return inputs[0]


def declared_shape(path: Path) -> tuple[int, ...] | None:
    """The (C, H, W) of one input as the file declares it, or None if any is symbolic."""
    return _declared(_image_input(_read(path), path))[1]


def _declared(value_info: Any) -> tuple[int | None, tuple[int, ...] | None]:
    """(fixed batch size or None, per-sample shape or None) of a graph input."""
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in value_info.type.tensor_type.shape.dim]
    if not dims:
        return None, None
    rest = [d for d in dims[1:] if d]
    return dims[0], tuple(rest) if len(rest) == len(dims) - 1 else None


def load_onnx(path: Path, input_shape: tuple[int, ...] | None = None
              ) -> tuple[fx.GraphModule, tuple[int, ...]]:
    """Convert the ONNX model at ``path``; return the module and the (C, H, W) it takes.

    ``input_shape`` is needed when the file leaves the image size symbolic.
    """
    proto = _read(path)
    image = _image_input(proto, path)
    if image.type.tensor_type.elem_type != 1:  # FLOAT
        raise ModelError(f"{path}: input {image.name} is not float32")
    _, declared = _declared(image)
    shape = tuple(input_shape) if input_shape is not None else declared
    if shape is None:
        raise ModelError(f"{path}: the input size is symbolic; give --input-shape C,H,W")
    if declared is not None and shape != declared:
        raise ModelError(f"{path}: input shape {shape} differs from the {declared} "
                         "the file declares")
    return _convert(proto, shape, path), shape


def _opset(proto: Any) -> int:
    return next((o.version for o in proto.opset_import if o.domain in _DOMAINS), 1)


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    attrs = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        attrs[a.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


def _convert(proto: Any, shape: tuple[int, ...], path: Path) -> fx.GraphModule:
    from onnx import numpy_helper

    graph = proto.graph
    b = Builder(_opset(proto))
    with warnings.catch_warnings():  # read-only views of the file's bytes: never written to
        warnings.simplefilter("ignore", UserWarning)
        env = {i.name: Value(torch.from_numpy(numpy_helper.to_array(i)))
               for i in graph.initializer}
    image = _image_input(proto, path)
    uses = Counter([n for node in graph.node for n in node.input] + [o.name for o in graph.output])

    def store(name: str, value: Value) -> None:
        env[name] = value
        if value.node is not None:
            b.node_uses[value.node] = b.node_uses.get(value.node, 0) + uses[name]

    store(image.name, b.input(image.name, torch.zeros(1, *shape, device="meta")))
    for node in graph.node:
        label = node.name or (node.output[0] if node.output else node.op_type)
        where = f"{path}: node {label!r} ({node.op_type})"
        convert = OPS.get(node.op_type) if node.domain in _DOMAINS else None
        if convert is None:
            domain = f" of domain {node.domain}" if node.domain not in _DOMAINS else ""
            raise ModelError(f"{where}: ShardGuard cannot import ONNX op "
                             f"{node.op_type}{domain}")
        missing = [n for n in node.input if n and n not in env]
        if missing:
            raise ModelError(f"{where}: its input {missing[0]!r} is an output ShardGuard "
                             "does not produce")
        b.label, b.current_op, b.outputs = label, node.op_type, len(node.output)
        try:
            outputs = convert(b, [env[n] if n else None for n in node.input],
                              _attributes(node))
        except Unsupported as exc:
            raise ModelError(f"{where}: {exc}") from None
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"{where}: cannot be imported ({first})") from exc
        for name in node.input:  # node_uses counts the reads still to come
            if name and env[name].node is not None:
                b.node_uses[env[name].node] -= 1  # type: ignore[index]
        for name, value in zip(node.output, outputs):
            if name:
                store(name, value)
    if len(graph.output) != 1:
        raise ModelError(f"{path}: has {len(graph.output)} outputs; ShardGuard supports "
                         "models with one")
    result = env.get(graph.output[0].name)
    if result is None or result.const:
        raise ModelError(f"{path}: its output does not depend on its input")
    return b.finish(result)


class OnnxRuntimeModel:
    """The original ``.onnx`` file run by onnxruntime, called like a module (the reference
    ``check`` compares a plan against). A file with a fixed batch runs in chunks of it."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail, InvalidGraph, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"{path}: onnxruntime cannot load it ({first})") from exc
        inputs = self.session.get_inputs()  # initializers are not listed
        if len(inputs) != 1:
            raise ModelError(f"{path}: takes {len(inputs)} inputs; ShardGuard supports models "
                             "with one image input")
        self.input = inputs[0].name
        batch = inputs[0].shape[0] if inputs[0].shape else None
        self.batch = batch if isinstance(batch, int) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        data = x.detach().numpy().astype(np.float32)
        if self.batch is None:
            return torch.from_numpy(self.session.run(None, {self.input: data})[0])
        parts = []
        for i in range(0, len(data), self.batch):
            chunk = data[i:i + self.batch]
            padded = np.concatenate([chunk, np.zeros((self.batch - len(chunk), *chunk.shape[1:]),
                                                     np.float32)])
            parts.append(self.session.run(None, {self.input: padded})[0][:len(chunk)])
        return torch.from_numpy(np.concatenate(parts))
