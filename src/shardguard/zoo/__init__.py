"""The model zoo: CNN definitions, user models, training and checkpoints.

    from shardguard.zoo import load_model
    m = load_model("resnet-small")           # shipped trained weights
    m = load_model("nets.py:make_net", weights="net.pt")
"""

from ._load import LoadedModel, build, load_model
from ._registry import TRAINED, ZOO, ModelSpec, Recipe

__all__ = ["TRAINED", "ZOO", "LoadedModel", "ModelSpec", "Recipe", "build", "load_model"]
