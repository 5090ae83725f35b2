"""``.onnx`` models from the wild: the ONNX Model Zoo classics and today's torch exports
import, plan under every strategy, match onnxruntime running the original file, and run
on workers; a node that cannot be imported is named in one line.

Every user-facing path runs as a command in a fresh process (``run_cli``). The classics
are 224×224 networks on 2 cores: all nine plan as a pipeline and are checked, and all
nine split into tiles and into channel groups (each has a convolutional prefix that both
strategies split) and are checked. Four of those eighteen splits run as ``shardguard
plan`` and ``shardguard check`` commands; the other fourteen call the same library
functions in this process, asserting the same, to spare two interpreters starting and
importing torch for each.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper

from shardguard.zoo import load_model
from shardguard.zoo.onnx_import import OnnxRuntimeModel, load_onnx

from .conftest import PLATFORM, run_cli
from .onnx_classics import CLASSICS, filled

pytestmark = pytest.mark.slow

#: Split by commands in fresh processes: LRN, grouped convolutions and an asymmetric
#: max-pool pad (alexnet); asymmetric pads, Caffe scale layers and count_include_pad=0
#: pooling (inception_v2); fire modules' concatenations (squeezenet); residual sums
#: (resnet50). The other classics are split in this process.
REPRESENTATIVE = {("bvlc_alexnet", "spatial"), ("inception_v2", "spatial"),
                  ("squeezenet", "channel"), ("resnet50", "channel")}


#: The classics as parameters, each classic's tests on one xdist worker (make test runs
#: ``--dist loadgroup``), which fills its weights once.
BY_CLASSIC = [pytest.param(name, marks=pytest.mark.xdist_group(f"classic-{name}"))
              for name in CLASSICS]


@pytest.fixture(scope="session")
def classic(tmp_path_factory):
    """``classic(name)``: the classic's file with seeded random weights, made once."""
    directory = tmp_path_factory.mktemp("classics")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = filled(name, directory)
        return made[name]
    return get


def plan_and_check(model: Path, strategy: str, out: Path, objective: str = "latency") -> dict:
    """``shardguard plan`` then ``shardguard check`` against onnxruntime; the plan."""
    plan = out / f"{model.stem}-{strategy}.yaml"
    made = run_cli("plan", str(model), "-p", PLATFORM, "--strategy", strategy,
                   "--objective", objective, "-o", str(plan))
    assert made.code == 0, made.err
    checked = run_cli("check", str(plan), "-n", "2")
    assert checked.code == 0, checked.out + checked.err
    assert f"plan matches onnxruntime running {model}" in checked.out
    return yaml.safe_load(plan.read_text())


def plan_and_check_in_process(model: Path, strategy: str, out: Path,
                              objective: str = "latency") -> dict:
    """``plan_and_check`` without the processes: the library calls that ``shardguard plan``
    and ``shardguard check`` make (``cli/planning.py``), with the check's tolerance."""
    from shardguard import load_platform, make_plan, trace
    from shardguard.data import plan_data
    from shardguard.local import LocalExecutor, check
    from shardguard.partition import ModelRef, bind

    plan = out / f"{model.stem}-{strategy}.yaml"
    loaded = load_model(str(model))
    assert loaded.input_shape is not None
    graph = trace(loaded.module, loaded.input_shape)
    ref = ModelRef(ref=str(model), input_shape=list(loaded.input_shape))
    planned = make_plan(graph, ref, load_platform(PLATFORM),
                        strategy=strategy, objective=objective)  # type: ignore[arg-type]
    planned.plan.save(plan)
    bound = bind(plan)  # as ``check`` reads it: from the file
    assert Path(bound.model.ref) == model  # compared with onnxruntime running the original
    result = check(LocalExecutor(bound.compiled), OnnxRuntimeModel(model),
                   plan_data(None, bound).batches(2))
    assert result.samples == 2 and result.ok(), result  # ok(): the tolerance ``check`` uses
    return yaml.safe_load(plan.read_text())


def splits(plan: dict) -> list[str]:
    return [s["split"] for s in plan["segments"]]


@pytest.mark.parametrize("name", BY_CLASSIC)
def test_every_classic_plans_as_a_pipeline_and_matches_onnxruntime(name, classic, tmp_path):
    # energy (the most per device) spreads even the small ones over several devices
    plan = plan_and_check(classic(name), "pipeline", tmp_path, objective="energy")
    assert len(plan["segments"]) >= 2  # really partitioned


@pytest.mark.parametrize("name", BY_CLASSIC)
@pytest.mark.parametrize("strategy", ["spatial", "channel"])
def test_classics_split_into_tiles_and_channel_groups_match_onnxruntime(
        name, strategy, classic, tmp_path):
    run = plan_and_check if (name, strategy) in REPRESENTATIVE else plan_and_check_in_process
    plan = run(classic(name), strategy, tmp_path, objective="throughput")
    assert strategy in splits(plan)  # not the pipeline a strategy falls back to


@pytest.mark.xdist_group("classic-squeezenet")
def test_an_imported_classic_runs_on_workers(classic, tmp_path):
    plan = tmp_path / "squeezenet.yaml"
    assert run_cli("plan", str(classic("squeezenet")), "-p", PLATFORM, "--strategy",
                   "spatial", "-o", str(plan)).code == 0
    result = run_cli("run", str(plan), "--spawn-local", "--check", "-n", "4", "--batch", "2")
    assert result.code == 0, result.out + result.err
    assert "2/2 requests answered (4 images, 0 failed" in result.out
    assert "distributed run matches the local executor" in result.out


def _export(model: torch.nn.Module, path: Path, dynamo: bool,
            shape: tuple[int, ...] = (1, 28, 28)) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, *shape),), str(path), dynamo=dynamo,
                          input_names=["x"])
    return path


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_a_torch_export_profiles_in_a_fresh_process(dynamo, tmp_path):
    path = _export(load_model("lenet5").module, tmp_path / "lenet5.onnx", dynamo)
    result = run_cli("profile", str(path))
    assert result.code == 0, result.err
    assert "lenet5 1×28×28" in result.out and "conv" in result.out


@pytest.mark.parametrize("dynamo, strategy", [(True, "channel"), (False, "spatial")],
                         ids=["dynamo-channel", "legacy-spatial"])
def test_a_torch_export_splits_and_matches_onnxruntime(dynamo, strategy, tmp_path):
    path = _export(load_model("resnet-small").module, tmp_path / "resnet.onnx", dynamo)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("ReduceMean" in ops) == dynamo  # what onnx2torch could not import
    assert strategy in splits(plan_and_check(path, strategy, tmp_path))


def test_pretrained_efficientnet_exported_splits_into_tiles_and_matches_onnxruntime(tmp_path):
    """TensorFlow-style asymmetric padding, which the legacy exporter writes as a Pad whose
    pads it computes with Slice (negative steps), Transpose and Cast, becomes tiles."""
    path = _export(load_model("efficientnet-lite0").module, tmp_path / "lite0.onnx", False,
                   (3, 224, 224))
    assert {"Pad", "Slice"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "spatial" in splits(plan_and_check(path, "spatial", tmp_path, "throughput"))


def _model(nodes, initializers, shape=(1, 3, 8, 8), out=(1, 4), opset=13):
    graph = helper.make_graph(
        nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out))],
        [numpy_helper.from_array(np.asarray(v, np.int64 if k.startswith("i_") else np.float32), k)
         for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _many_ops() -> onnx.ModelProto:
    """Edge cases of the importer in one model: auto_pad, asymmetric pads, pooling that
    excludes padding, Caffe scale layers, Clip, Pad, Concat, Transpose, Gemm alpha/beta."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], "conv_same", auto_pad="SAME_UPPER",
          strides=[2, 2], kernel_shape=[3, 3]),
        n("Mul", ["c1", "scale"], ["m1"], "scale"),
        n("Add", ["m1", "shift"], ["a1"], "shift"),
        n("Clip", ["a1", "lo", "hi"], ["r1"], "relu6"),
        n("MaxPool", ["r1"], ["p1"], "pool_asym", kernel_shape=[3, 3], strides=[1, 1],
          pads=[0, 0, 1, 1]),
        n("AveragePool", ["p1"], ["p2"], "avg_excl", kernel_shape=[3, 3], strides=[1, 1],
          pads=[1, 0, 1, 2]),
        n("Pad", ["p2", "i_pads"], ["p3"], "pad", mode="constant"),
        n("Conv", ["p3", "w2"], ["c2"], "conv_dw", group=4, kernel_shape=[3, 3]),
        n("Concat", ["c2", "p2"], ["cat"], "cat", axis=1),
        n("Transpose", ["cat"], ["t"], "nhwc", perm=[0, 2, 3, 1]),
        n("Transpose", ["t"], ["t2"], "nchw", perm=[0, 3, 1, 2]),
        n("GlobalAveragePool", ["t2"], ["g"], "gap"),
        n("Reshape", ["g", "i_shape"], ["f"], "flat"),
        n("Gemm", ["f", "wf", "bf"], ["y0"], "fc", alpha=0.5, beta=2.0, transB=1),
        n("Softmax", ["y0"], ["y"], "prob", axis=1),
    ]
    inits = {"w1": rng.normal(0, 0.3, (4, 3, 3, 3)), "b1": rng.normal(0, 0.1, 4),
             "scale": rng.uniform(0.5, 1.5, (4, 1, 1)), "shift": rng.normal(0, 0.1, (4, 1, 1)),
             "lo": 0.0, "hi": 6.0, "i_pads": [0, 0, 1, 1, 0, 0, 1, 1],
             "w2": rng.normal(0, 0.3, (4, 1, 3, 3)), "i_shape": [0, -1],
             "wf": rng.normal(0, 0.3, (4, 8)), "bf": rng.normal(0, 0.1, 4)}
    return _model(nodes, inits)


def test_converted_ops_compute_what_onnxruntime_computes(tmp_path):
    path = tmp_path / "many.onnx"
    onnx.save(_many_ops(), str(path))
    module, shape = load_onnx(path)
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = module(x)
    assert torch.allclose(got, OnnxRuntimeModel(path)(x), atol=1e-6)
    kinds = {type(m).__name__ for m in module.modules()}
    assert {"ConstantPad2d", "BatchNorm2d", "ReLU6", "ValidAvgPool2d"} <= kinds


def test_the_caffe_scale_layer_folds_into_the_batch_norm_before_it(tmp_path):
    n = helper.make_node
    nodes = [n("BatchNormalization", ["x", "g", "b", "m", "v"], ["bn"], "bn"),
             n("Mul", ["bn", "s"], ["ms"], "scale"), n("Add", ["ms", "t"], ["y0"], "shift"),
             n("GlobalAveragePool", ["y0"], ["gp"], "gap"),
             n("Flatten", ["gp"], ["y"], "flat")]
    rng = np.random.default_rng(1)
    inits = {k: rng.uniform(0.5, 1.5, 3) for k in "gbmv"}
    inits |= {"s": rng.uniform(0.5, 1.5, (3, 1, 1)), "t": rng.normal(0, 1, (3, 1, 1))}
    path = tmp_path / "bn.onnx"
    onnx.save(_model(nodes, inits, out=(1, 3)), str(path))
    module, _ = load_onnx(path)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()) == 1
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(module(x), OnnxRuntimeModel(path)(x), atol=1e-5)


def _unsupported(kind: str) -> onnx.ModelProto:
    n = helper.make_node
    if kind == "op":
        return _model([n("Einsum", ["x"], ["y"], "mystery", equation="nchw->nchw")], {},
                      out=(1, 3, 8, 8))
    if kind == "domain":
        return _model([n("Swizzle", ["x"], ["y"], "custom", domain="com.example")], {},
                      out=(1, 3, 8, 8))
    return _model([n("Reshape", ["x", "i_shape"], ["y"], "fold_batch")], {"i_shape": [3, -1]},
                  out=(3, 64))


@pytest.mark.parametrize("kind, message", [
    ("op", "node 'mystery' (Einsum): ShardGuard cannot import ONNX op Einsum"),
    ("domain", "node 'custom' (Swizzle): ShardGuard cannot import ONNX op Swizzle of domain "
               "com.example"),
    ("batch", "node 'fold_batch' (Reshape): reshaping [1, 3, 8, 8] to [3, 64] moves the "
              "batch dimension"),
])
def test_a_node_that_cannot_be_imported_is_named_in_one_line(kind, message, tmp_path):
    path = tmp_path / f"{kind}.onnx"
    model = _unsupported(kind)
    if kind == "domain":
        model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, str(path))
    result = run_cli("profile", str(path))
    assert result.code == 1 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.err
