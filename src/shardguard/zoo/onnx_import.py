"""Import ``.onnx`` models as ``nn.Module`` with onnx2torch (an existing converter).

onnx2torch imports torchvision at module load, only for its NonMaxSuppression
and RoiAlign converters. There is no CPU torchvision build here and no CNN
classifier needs those ops, so when torchvision is absent we import onnx2torch
with a placeholder ``torchvision`` that raises a clear error if one of those two
converters is ever used, and remove the placeholder right after.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelError


def _unavailable(name: str) -> Any:
    def fail(*_: object, **__: object) -> None:
        raise ModelError(f"ONNX op needing torchvision.{name} is not supported (no torchvision)")

    return fail


def _import_onnx2torch() -> Any:
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    try:
        importlib.import_module("torchvision")
        has_torchvision = True
    except ImportError:
        has_torchvision = False
    placeholders: dict[str, types.ModuleType] = {}
    if not has_torchvision:
        root, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.__getattr__ = _unavailable  # type: ignore[method-assign]
        root.ops = ops  # type: ignore[attr-defined]
        placeholders = {"torchvision": root, "torchvision.ops": ops}
        sys.modules.update(placeholders)
    try:
        return importlib.import_module("onnx2torch")
    except ImportError as exc:
        raise ModelError("loading .onnx models needs onnx2torch: "
                         "pip install --no-deps onnx2torch") from exc
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)


def load_onnx(path: Path) -> nn.Module:
    """Convert the ONNX model at ``path`` to a torch.fx ``GraphModule``."""
    if not path.is_file():
        raise ModelError(f"{path}: ONNX file not found")
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError, ...
        raise ModelError(f"{path}: not a valid ONNX model ({exc})") from exc
    try:
        module: nn.Module = _import_onnx2torch().convert(proto)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: onnx2torch cannot convert it ({exc})") from exc
    return module
