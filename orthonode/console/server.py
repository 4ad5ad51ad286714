"""The console in the serving process: uvicorn on its own thread, on a socket bound before it starts (so
the port is known, and a port in use fails ``orthonode serve`` at start-up with a clear message)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

import uvicorn

from orthonode.console.app import ConsoleContext, create_app
from orthonode.errors import ConfigError
from orthonode.runtime import Runtime

log = logging.getLogger(__name__)


class ConsoleServer:
    def __init__(self, rt: Runtime, embedded_worker_alive: Callable[[], bool | None] = lambda: None) -> None:
        self.rt = rt
        self.context = ConsoleContext(rt, embedded_worker_alive=embedded_worker_alive)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def start(self) -> None:
        settings = self.rt.settings
        family = socket.AF_INET6 if ":" in settings.web_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.web_host, settings.web_port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"web console: cannot listen on {settings.web_host}:{settings.web_port} ({exc.strerror}); "
                "set web_port to a free port, or web_enabled = false"
            ) from exc
        sock.listen(64)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(self.context),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=5,
            limit_concurrency=64,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="orthonode-console", daemon=True
        )
        self._thread.start()
        log.info("console on http://%s:%d/ (metrics at /metrics)", settings.web_host, self.port)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
