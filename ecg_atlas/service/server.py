"""Transport and composition: ``AtlasServer(config).start()`` binds the port at once (health says
NOT_SERVING), then loads the encoder, opens the store and warms the encoder up in the background;
only then does health say SERVING and do Atlas RPCs run (before that they get UNAVAILABLE).
``stop()`` refuses new RPCs, lets running ones finish (an Ingest under way still gets its response
and its writes), drains the encoder queue and closes the store.

Health (``grpc.health.v1``), reflection (v1 and v1alpha), bearer-token auth, TLS, message-size and
concurrency limits are set up here; the RPCs themselves live in ``atlas.py``'s modules.
Logs: request contents (signals, ecg ids, patient ids, metadata) are logged only at DEBUG.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ecg_atlas.errors import AtlasError
from ecg_atlas.v1 import atlas_pb2 as pb

from . import handlers, presence
from .allocator import tune_process
from .atlas import AtlasService
from .auth import TokenAuthInterceptor
from .config import ServerConfig

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Atlas"].full_name


class AtlasServer:
    """gRPC server around :class:`AtlasService` with health, reflection, auth, TLS and limits."""

    def __init__(self, config: ServerConfig):
        config.validate()
        self.config = config
        self.service = AtlasService(config)
        self.health = health.HealthServicer()
        self.port: int | None = None
        self.load_error: BaseException | None = None
        self._loaded = threading.Event()
        interceptors = [TokenAuthInterceptor(config.tokens)] if config.tokens else []
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=config.max_concurrent_rpcs + 4, thread_name_prefix="rpc"),
            interceptors=interceptors,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", config.max_receive_message_bytes),
                ("grpc.max_send_message_length", config.max_send_message_bytes),
                ("grpc.so_reuseport", 0),
            ])
        handlers.add_service(self.service, pb.DESCRIPTOR.services_by_name["Atlas"], pb, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        handlers.add_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
                                self._server)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    @property
    def address(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self, *, background_load: bool = True) -> "AtlasServer":
        """Bind and serve; the model loads in the background unless ``background_load`` is False."""
        tune_process()
        cfg = self.config
        bind = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
        try:
            if cfg.tls:
                client_ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca else None
                credentials = grpc.ssl_server_credentials(
                    [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
                    root_certificates=client_ca, require_client_auth=client_ca is not None)
                self.port = self._server.add_secure_port(bind, credentials)
            else:
                self.port = self._server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise AtlasError(f"cannot listen on {bind}: {exc} (is the port in use?)") from exc
        self._server.start()
        log.info("bound %s (tls=%s, auth=%s); loading", self.address, cfg.tls, bool(cfg.tokens))
        if background_load:
            threading.Thread(target=self._load, name="load-model", daemon=True).start()
        else:
            self._load()
            if self.load_error is not None:
                raise self.load_error
        return self

    def _load(self) -> None:
        try:
            t = time.perf_counter()
            self.service.load()
            presence.announce(self.config.store, self.address, self.config.tls)
            for name in ("", SERVICE_NAME):
                self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
            log.info("serving: model %s on %s, warmed up in %.1f s", self.service.runtime.encoder.model_id,
                     self.service.runtime.encoder.device, time.perf_counter() - t)
        except BaseException as exc:  # reported by wait_ready / the serve command
            self.load_error = exc
        finally:
            self._loaded.set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded and warm; raise what loading raised."""
        if not self._loaded.wait(timeout):
            raise TimeoutError("the server did not become ready in time")
        if self.load_error is not None:
            raise self.load_error

    def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs, let running ones finish (acknowledged writes included), close the store."""
        presence.withdraw(self.config.store)
        self.health.enter_graceful_shutdown()
        grace = self.config.grace_s if grace is None else grace
        self._server.stop(grace).wait()
        self._loaded.wait()
        self.service.close()
        log.info("stopped")

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)
