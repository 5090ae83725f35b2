"""D5 on an int8 stage: bit flips in the int8 weights of its quantized ONNX model.

    touched = flip_int8_initializers(model, ber=1e-4, bits="msb", rng=rng)   # in place

An int8 stage's weights are the int8 initializers of its quantized ONNX graph (the
weights a QDQ or QLinear model stores, and their int8 zero points, all in the device's
memory as a fault at rest would find them); their float scales and int32 biases are left
alone here, as ``bits`` names int8 bits. Whatever runs the model (onnxruntime on a worker,
the local executor) then sees the flipped weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .bits import flip_array


def flip_int8_initializers(model: onnx.ModelProto, ber: float,
                           bits: str | int | Sequence[int] = "all",
                           rng: np.random.Generator | None = None) -> int:
    """Flip bits of every int8 initializer of ``model`` at rate ``ber`` over ``bits`` (int8
    classes or positions 0..7), in place; the number of initializers that changed."""
    rng = rng if rng is not None else np.random.default_rng()
    changed = 0
    for i, init in enumerate(model.graph.initializer):
        if init.data_type != onnx.TensorProto.INT8:
            continue
        before = numpy_helper.to_array(init)
        after = flip_array(before, ber, bits, rng)
        if not np.array_equal(before, after):
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(after, init.name))
            changed += 1
    return changed
