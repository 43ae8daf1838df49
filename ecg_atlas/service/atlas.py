"""The Atlas service: the core and analysis RPCs over one runtime and one embedding pipeline."""

from __future__ import annotations

from ecg_atlas.v1 import atlas_pb2_grpc as pb_grpc

from .analysis_rpcs import AnalysisMethods
from .config import ServerConfig
from .core import CoreMethods
from .pipeline import EmbeddingPipeline
from .runtime import Runtime


class AtlasService(CoreMethods, AnalysisMethods, pb_grpc.AtlasServicer):
    def __init__(self, config: ServerConfig):
        self.runtime = Runtime(config)
        self.pipeline = EmbeddingPipeline(self.runtime)
        self._head = None  # the built-in ecgfm-head probe, made on first use

    @property
    def ready(self):
        return self.runtime.ready

    def load(self) -> None:
        self.runtime.load()

    def close(self) -> None:
        self.runtime.close()
