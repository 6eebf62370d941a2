"""Model backends behind one async protocol, federated by logical model name.

Backends live in their own modules (`engines.onnx`, `engines.xgboost`, ...) and are imported only when
configured, so importing this package loads no backend SDK.
"""

from engines._offload import Offloader
from engines.base import Engine, ModelCall, Models
from engines.config import EnginesConfig, RouteConfig, TargetConfig, build_engines
from engines.router import RoutedCall, Router
from engines.types import ModelMetadata, ModelRef, Tensors, TensorSpec

__all__ = [
    "Engine",
    "EnginesConfig",
    "ModelCall",
    "ModelMetadata",
    "ModelRef",
    "Models",
    "Offloader",
    "RouteConfig",
    "RoutedCall",
    "Router",
    "TargetConfig",
    "TensorSpec",
    "Tensors",
    "build_engines",
]
