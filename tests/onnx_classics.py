"""The ONNX Model Zoo classics the ``onnx`` wheel ships, with their weights filled in.

The files under ``onnx/backend/test/data/light/`` (opset 9, 224×224) make every weight
with a ``ConstantOfShape`` node (all 0.02), so every image gets the same output.
``filled`` replaces each such node by an initializer of the same name and shape holding
seeded random values scaled to its role (He-uniform convolution and FC weights, batch
norm scales and variances near 1), so outputs depend on the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
CLASSICS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
            "shufflenet", "squeezenet", "vgg19", "zfnet512")


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    found: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            found.setdefault(name, []).append((node, i))
    return found


def _role(name: str, consumers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> tuple[str, int]:
    """(op, input position) of the first real consumer, looking through Unsqueeze."""
    node, i = consumers[name][0]
    while node.op_type == "Unsqueeze":
        node, i = consumers[node.output[0]][0]
    return node.op_type, i


def _values(shape: list[int], role: tuple[str, int], rng: np.random.Generator) -> np.ndarray:
    op, position = role
    if op in ("Conv", "Gemm") and position == 1:  # He-uniform: variance 2 / fan_in
        fan_in = int(np.prod(shape[1:]))  # Conv (O, I, kH, kW); Gemm transB=1: (O, I)
        bound = np.float32(np.sqrt(6.0 / fan_in))
        return rng.random(shape, np.float32) * (2 * bound) - bound
    if (op == "BatchNormalization" and position in (1, 4)) or op == "Mul":
        return rng.random(shape, np.float32) * 0.4 + 0.8  # scales and variances: near 1
    return rng.standard_normal(shape, np.float32) * np.float32(0.05)  # biases, means, shifts


_HOMOGENEOUS = {"Relu", "GlobalAveragePool", "AveragePool", "MaxPool", "Reshape", "Flatten",
                "Dropout"}


def _calibrate(model: onnx.ModelProto, spread: float = 2.0) -> None:
    """Scale the last layer so the logits (under the final softmax, if any) have std
    ``spread`` on a random image (random weights saturate some models' softmax, others
    flatten it, and either would hide differences). Measured with onnxruntime."""
    import onnxruntime as ort

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    logits = graph.output[0].name
    if producer[logits].op_type == "Softmax":
        logits = producer[logits].input[0]
    layer = producer[logits]
    while layer.op_type in _HOMOGENEOUS:  # scaling the layer before scales these too
        layer = producer[layer.input[0]]
    output = onnx.ValueInfoProto()
    output.CopyFrom(graph.output[0])
    del graph.output[:]  # a probe: the same model with the logits as its output
    graph.output.extend([onnx.helper.make_empty_tensor_value_info(logits)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    del graph.output[:]
    graph.output.extend([output])
    image = session.get_inputs()[0]
    x = np.random.default_rng(1).random((1, 3, 224, 224), np.float32)
    factor = spread / float(session.run(None, {image.name: x})[0].std())
    weights = {t.name: t for t in graph.initializer}
    for name in layer.input[1:3]:  # weight and bias
        while name not in weights:  # made from an initializer by a Reshape
            name = producer[name].input[0]
        tensor = weights[name]
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * factor, name))


def filled(name: str, directory: Path, seed: int = 0) -> Path:
    """``light_NAME.onnx`` with seeded random weights, written to ``directory``."""
    model = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    graph = model.graph
    shapes = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers = _consumers(graph)
    rng = np.random.default_rng(seed)
    keep, made, dropped = [], [], set()
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = [int(d) for d in shapes[node.input[0]]]
            role = _role(node.output[0], consumers)
            values = _values(shape, role, rng).astype(np.float32, copy=False)
            made.append(numpy_helper.from_array(values, node.output[0]))
            dropped.add(node.input[0])
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + made)
    inputs = [i for i in graph.input if i.name not in dropped]
    if model.ir_version < 4:  # IR 3: every initializer is also a graph input
        inputs += [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                   for t in made]
    del graph.input[:]
    graph.input.extend(inputs)
    _calibrate(model)
    path = directory / f"{name}.onnx"
    onnx.save(model, str(path))
    return path
