"""Export each stage program to ONNX: the artifact a worker runs with onnxruntime.

    artifacts = export_plan(compiled)      # one StageArtifact per stage, ONNX bytes inside

Inputs are named ``in0..``, outputs ``out0..`` in the program's transfer order; the
batch dimension is dynamic. The artifact also lists, for every input and output,
its link (``src>dst``), tensor id, dtype and per-sample shape, so a worker can
validate what it receives and route what it sends without knowing the model.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping

import torch

from ..errors import ModelError
from ..partition.compile import CompiledPlan, StageProgram, Transfer
from ..protocol.control import Port, StageArtifact


def _port(prefix: str, i: int, t: Transfer) -> Port:
    return Port(f"{prefix}{i}", f"{t.src}>{t.dst}", t.id, "float32", t.shape)


def export_program(program: StageProgram, opset: int = 17, extra_outputs: int = 0
                   ) -> StageArtifact:
    """``extra_outputs`` results after the sent ones (``z0..``: a Freivalds verifier's)."""
    if program.module is None:
        raise ModelError(f"stage {program.name}: program not built")
    args = tuple(torch.zeros(2, *t.shape) for t in program.inputs)
    in_names = [f"in{i}" for i in range(len(args))]
    out_names = [f"out{i}" for i in range(len(program.outputs))]
    out_names += [f"z{k}" for k in range(extra_outputs)]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # torch types ``f`` as a path; the TorchScript exporter (dynamo=False) also
            # writes to a file-like object
            torch.onnx.export(program.module, args, buffer,  # type: ignore[arg-type]
                              input_names=in_names, output_names=out_names,
                              opset_version=opset, dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in in_names + out_names})
    except Exception as exc:  # the exporter raises many types for unsupported ops
        raise ModelError(f"stage {program.name}: ONNX export failed ({exc})") from exc
    return StageArtifact(
        program.name, buffer.getvalue(),
        tuple(_port("in", i, t) for i, t in enumerate(program.inputs)),
        tuple(_port("out", i, t) for i, t in enumerate(program.outputs)))


def export_plan(compiled: CompiledPlan, extra_outputs: Mapping[str, int] | None = None
                ) -> dict[str, StageArtifact]:
    compiled.build()
    extra = extra_outputs or {}
    return {p.name: export_program(p, extra_outputs=extra.get(p.name, 0))
            for p in compiled.programs}
