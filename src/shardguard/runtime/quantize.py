"""Post-training static quantization of an int8 plan's stages (onnxruntime, QDQ format).

    quantize_plan(bound.compiled, dataset.train_images(256))   # once per plan
    LocalExecutor(bound.compiled)(x)     # now runs the quantized stages through onnxruntime
    cluster(bound)                       # and workers receive the same ONNX artifacts

Each int8 stage's exported ONNX (``export.py``) is quantized by onnxruntime's
``quantize_static``: int8 weights per output channel, int8 activations calibrated
(min/max) on the given images, run through the float stages in plan order. Its
outputs end at their QuantizeLinear, so they leave the stage as int8 with one
(scale, zero point) per tensor; a stage that receives an int8 tensor begins with a
DequantizeLinear of that same scale and zero point, so onnxruntime fuses it into its
int8 kernels. The coordinator's hops follow the same rule: it quantizes the input
of an int8 first stage and dequantizes an int8 stage's output. Calibration reads
the first images it is given, so every party computes the same artifacts.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConfigError, ModelError
from ..partition._segment import assemble_tensors
from ..partition.compile import INPUT, CompiledPlan, Quantized, StageProgram
from ..partition.regions import crop, full
from ..protocol.control import Port, StageArtifact
from .export import export_plan

Codec = tuple[float, int]  # (scale, zero point) of one int8 tensor
CALIBRATION_IMAGES = 256


def codec_of(values: npt.NDArray[Any]) -> Codec:
    """Asymmetric int8 (scale, zero point) covering ``values`` and 0, as onnxruntime's
    min/max calibration computes it."""
    lo, hi = min(0.0, float(values.min())), max(0.0, float(values.max()))
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    scale = float(np.float32(scale))
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def quantize(values: npt.NDArray[Any], codec: Codec) -> npt.NDArray[np.int8]:
    scale, zero = codec
    q = np.rint(values.astype(np.float32) / np.float32(scale)) + zero
    return np.asarray(np.clip(q, -128, 127), dtype=np.int8)


def dequantize(values: npt.NDArray[Any], codec: Codec) -> npt.NDArray[np.float32]:
    scale, zero = codec
    return ((values.astype(np.int32) - zero).astype(np.float32) * np.float32(scale))


def quantize_plan(compiled: CompiledPlan, images: torch.Tensor) -> Quantized:
    """Quantize ``compiled``'s int8 stages, calibrated on ``images``; attach and return."""
    if not any(p.precision == "int8" for p in compiled.programs):
        raise ModelError("the plan has no int8 stage to quantize")
    if compiled.quantized is not None:
        return compiled.quantized
    fp32 = export_plan(compiled)
    seen = _calibrate(compiled, fp32, images.detach().float().numpy())
    codecs: dict[str, Codec] = {}
    for p in compiled.programs:  # the coordinator quantizes what an int8 stage receives first
        for t in p.inputs:
            if t.src == INPUT and p.precision == "int8":
                codecs[t.id] = codec_of(seen[t.id])
    artifacts = {}
    for p in compiled.programs:  # in plan order: producers' codecs before their consumers
        artifacts[p.name] = _stage_artifact(p, fp32[p.name], seen, codecs)
    runners = {name: _runner(art) for name, art in artifacts.items()}
    compiled.quantized = Quantized(codecs, runners, artifacts)
    return compiled.quantized


def calibrate(compiled: CompiledPlan, dataset: Any, n: int = CALIBRATION_IMAGES) -> str:
    """Quantize an int8 plan on the first ``n`` training images of ``dataset`` (a
    ``data.Dataset``); a line saying so, or "" for a plan without int8 stages."""
    if not any(p.precision == "int8" for p in compiled.programs):
        return ""
    if n < 1:
        raise ConfigError(f"--calibration-images {n}: must be at least 1")
    images = dataset.train_images(n)
    quantize_plan(compiled, images)
    return f"int8: calibrated on {len(images)} images, {dataset.training_note}\n"


def _calibrate(compiled: CompiledPlan, fp32: Mapping[str, StageArtifact],
               x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
    """Every transfer's float values on ``x``, the float stages run in plan order."""
    import onnxruntime as ort

    xt = torch.from_numpy(x)
    seen = {t.id: crop(xt, full(xt.shape[1:]), t.region).numpy()
            for t in compiled.input_transfers}
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not its notes on initializers the exporter left unused
    for p in compiled.programs:
        session = ort.InferenceSession(fp32[p.name].onnx, options,
                                       providers=["CPUExecutionProvider"])
        feeds = {f"in{i}": seen[t.id] for i, t in enumerate(p.inputs)}
        for t, value in zip(p.outputs, session.run(None, feeds)):
            seen[t.id] = np.asarray(value, dtype=np.float32)
    return seen


class _Reader:
    """onnxruntime's CalibrationDataReader over one stage's calibration inputs."""

    def __init__(self, feeds: dict[str, npt.NDArray[np.float32]], batch: int = 32) -> None:
        n = len(next(iter(feeds.values())))
        self.batches = iter([{k: v[i:i + batch] for k, v in feeds.items()}
                             for i in range(0, n, batch)])

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        return next(self.batches, None)


def _quantized_model(p: StageProgram, art: StageArtifact,
                     seen: Mapping[str, npt.NDArray[np.float32]]) -> onnx.ModelProto:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    feeds = {f"in{i}": seen[t.id] for i, t in enumerate(p.inputs)}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(art.onnx)
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, every time
        ort.set_default_logger_severity(3)
        try:
            quantize_static(str(src), str(dst), _Reader(feeds),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        finally:
            logging.getLogger().setLevel(quiet)
            ort.set_default_logger_severity(2)  # onnxruntime's default, warnings
        return onnx.load(str(dst))


def _stage_artifact(p: StageProgram, art: StageArtifact,
                    seen: Mapping[str, npt.NDArray[np.float32]],
                    codecs: dict[str, Codec]) -> StageArtifact:
    """``p``'s artifact: quantized if int8; int8 inputs dequantized at its start."""
    model = _quantized_model(p, art, seen) if p.precision == "int8" else onnx.load_from_string(
        art.onnx)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    inputs = []
    for port, t in zip(art.inputs, p.inputs):
        if t.id in codecs:
            _int8_input(graph, inits, port.name, codecs[t.id])
            port = Port(port.name, port.link, port.tensor, "int8", port.shape, *codecs[t.id])
        inputs.append(port)
    outputs = []
    for port, t in zip(art.outputs, p.outputs):
        if p.precision == "int8":
            codecs[t.id] = _int8_output(graph, inits, port.name, seen[t.id])
            port = Port(port.name, port.link, port.tensor, "int8", port.shape, *codecs[t.id])
        outputs.append(port)
    return StageArtifact(p.name, model.SerializeToString(), tuple(inputs), tuple(outputs))


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node's use and production of ``old`` renamed ``new``."""
    for node in graph.node:
        for seq in (node.input, node.output):
            for k, name in enumerate(seq):
                if name == old:
                    seq[k] = new


def _constants(graph: onnx.GraphProto, name: str, codec: Codec) -> tuple[str, str]:
    scale, zero = codec
    graph.initializer.extend([
        numpy_helper.from_array(np.array(scale, np.float32), f"{name}_link_scale"),
        numpy_helper.from_array(np.array(zero, np.int8), f"{name}_link_zero_point")])
    return f"{name}_link_scale", f"{name}_link_zero_point"


def _int8_input(graph: onnx.GraphProto, inits: Mapping[str, onnx.TensorProto], name: str,
                codec: Codec) -> None:
    """Graph input ``name`` becomes int8, dequantized with ``codec``; any quantization of it
    the stage does itself uses the same codec, so the pair cancels out."""
    inner = f"{name}_dequantized"
    _rename(graph, name, inner)
    scale, zero = _constants(graph, name, codec)
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] == inner:
            node.input[1], node.input[2] = scale, zero
    graph.node.insert(0, helper.make_node("DequantizeLinear", [name, scale, zero], [inner]))
    for value in graph.input:
        if value.name == name:
            value.type.tensor_type.elem_type = TensorProto.INT8


def _int8_output(graph: onnx.GraphProto, inits: Mapping[str, onnx.TensorProto], name: str,
                 values: npt.NDArray[np.float32]) -> Codec:
    """Graph output ``name`` leaves as int8, at the QuantizeLinear before its trailing
    DequantizeLinear (or a new one, calibrated on ``values``); its codec."""
    inner = f"{name}_float"
    producer = next((n for n in graph.node if name in n.output), None)
    _rename(graph, name, inner)
    if producer is not None and producer.op_type == "DequantizeLinear" and all(
            k in inits or k.endswith(("_link_scale", "_link_zero_point"))
            for k in producer.input[1:3]):
        scale_name, zero_name = producer.input[1], producer.input[2]
        found = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        codec = (float(found[scale_name]), int(found[zero_name]))
        graph.node.append(helper.make_node("Identity", [producer.input[0]], [name]))
    else:
        codec = codec_of(values)
        scale, zero = _constants(graph, name, codec)
        graph.node.append(helper.make_node("QuantizeLinear", [inner, scale, zero], [name]))
    for value in graph.output:
        if value.name == name:
            value.type.tensor_type.elem_type = TensorProto.INT8
    return codec


def _runner(art: StageArtifact) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """The stage's ONNX run by onnxruntime on the CPU, as a worker runs it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(art.onnx, options, providers=["CPUExecutionProvider"])

    def run(args: list[torch.Tensor]) -> list[torch.Tensor]:
        feeds = {port.name: np.ascontiguousarray(a.detach().numpy())
                 for port, a in zip(art.inputs, args)}
        return [torch.from_numpy(np.asarray(o)) for o in session.run(None, feeds)]
    return run


def dequantized_output(compiled: CompiledPlan, pieces: Mapping[str, npt.NDArray[Any]]
                       ) -> npt.NDArray[np.float32]:
    """The model's float output from the pieces the last stages sent (transfer id → array)."""
    codecs = compiled.quantized.codecs if compiled.quantized is not None else {}
    parts = [(torch.from_numpy(dequantize(pieces[t.id], codecs[t.id]) if t.id in codecs
                               else np.asarray(pieces[t.id], np.float32)), t.region)
             for t in compiled.output_transfers]
    return assemble_tensors(parts, full(compiled.graph.output_shape[1:])).numpy()
