"""The zoo: models build and run, shipped checkpoints are trained, user models load."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from shardguard.errors import IntegrityError, ModelError
from shardguard.zoo import TRAINED, ZOO, build, checkpoints, load_model
from shardguard.zoo.train import evaluate

from .conftest import run_cli

#: The issue's targets on the 10 000-image Fashion-MNIST test set.
MIN_ACCURACY = {"lenet5": 0.89, "vgg-small": 0.91, "resnet-small": 0.91, "mobilenetv2-small": 0.91}


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_maps_its_input_to_class_logits(name):
    model = build(name).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *ZOO[name].input_shape))
    classes = ZOO[name].classes
    assert out.shape == (2, len(classes) if classes is not None else 1000)


def test_the_four_small_models_and_one_head_are_shipped_trained():
    assert set(TRAINED) == set(MIN_ACCURACY) | {"efficientnet-lite0-fmnist"}
    assert all(checkpoints.shipped(name) is not None for name in TRAINED)


@pytest.mark.parametrize("name", sorted(MIN_ACCURACY))
def test_shipped_checkpoint_reaches_its_accuracy_and_reproduces_its_metadata(name, test_split):
    path = checkpoints.shipped(name)
    assert path is not None and path.stat().st_size < 5 * 2**20
    meta = json.loads(path.with_suffix(".json").read_text())
    assert {"dataset", "test_accuracy", "seed", "epochs", "sha256", "command"} <= set(meta)
    assert meta["dataset"] == "fashion-mnist" and meta["command"].startswith("shardguard train")
    assert meta["sha256"] == checkpoints.sha256_file(path)
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    accuracy = evaluate(load_model(name).module, test_split)
    assert accuracy >= MIN_ACCURACY[name]
    assert abs(accuracy - meta["test_accuracy"]) <= 2 / len(test_split)


def test_cli_eval_reproduces_the_recorded_accuracy():
    result = run_cli("eval", "lenet5")
    meta = json.loads(checkpoints.shipped("lenet5").with_suffix(".json").read_text())
    assert result.code == 0, result.err
    assert f"test accuracy {meta['test_accuracy']:.2%} [" in result.out


def test_an_altered_checkpoint_fails_its_digest(tmp_path):
    source = checkpoints.shipped("lenet5")
    copy = tmp_path / "lenet5.pt"
    data = bytearray(source.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    copy.with_suffix(".json").write_text(source.with_suffix(".json").read_text())
    with pytest.raises(IntegrityError, match="sha256"):
        load_model("lenet5", weights=copy)


def test_weights_of_another_model_are_refused_by_name():
    with pytest.raises(ModelError, match="do not fit model vgg-small"):
        load_model("vgg-small", weights=checkpoints.shipped("lenet5"))


USER_MODELS = textwrap.dedent("""
    import torch
    from torch import nn

    def good():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 26 * 26, 10))

    def raises():
        raise ValueError("no such width")

    def not_a_module():
        return 42
""")


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(USER_MODELS)
    return path


def test_user_factory_loads_with_its_weights(user_file, tmp_path):
    first = load_model(f"{user_file}:good")
    weights = tmp_path / "good.pt"
    torch.save(first.module.state_dict(), weights)
    second = load_model(f"{user_file}:good", weights=weights)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(first.module(x), second.module(x))


@pytest.mark.parametrize("factory, message", [
    ("raises", "factory raised ValueError: no such width"),
    ("not_a_module", "returned int, not an nn.Module"),
    ("absent", "has no function 'absent'"),
])
def test_bad_user_factories_get_one_clear_error(user_file, factory, message):
    with pytest.raises(ModelError, match=message):
        load_model(f"{user_file}:{factory}")


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ModelError, match="did you mean 'resnet18'"):
        load_model("resnet19")


def test_onnx_model_converts_to_the_same_function(tmp_path):
    model = load_model("lenet5").module
    path = tmp_path / "lenet5.onnx"
    x = torch.rand(4, 1, 28, 28)
    torch.onnx.export(model, (x,), str(path), input_names=["x"], dynamo=False)
    converted = load_model(str(path)).module
    with torch.no_grad():
        assert torch.allclose(converted(x), model(x), atol=1e-5)


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model(str(path))
