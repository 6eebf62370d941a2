"""First-pass candidate sources: a kind says how ids are retrieved; every source then scores them with a
declared first-pass model and keeps the best (`_base.DeclaredSource`)."""

from remix.steps.sources._base import DeclaredSource, Retriever, SourceParams
from remix.steps.sources.grpc import GRPC, GrpcParams
from remix.steps.sources.kv_list import KV_LIST, KvListParams
from remix.steps.sources.static import STATIC, StaticParams

__all__ = [
    "GRPC",
    "KV_LIST",
    "STATIC",
    "DeclaredSource",
    "GrpcParams",
    "KvListParams",
    "Retriever",
    "SourceParams",
    "StaticParams",
]
