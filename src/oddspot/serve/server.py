"""Run the service with uvicorn: on a socket bound here (so a taken port is a one-line error), in the
foreground (`serve`, what `oddspot serve` calls) or on a background thread (`BackgroundServer`, for
tests and notebooks).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from oddspot.errors import OddspotError
from oddspot.serve.models import ServedModel
from oddspot.serve.settings import ServeSettings


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); a one-line error when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OddspotError(f"--host {host}: cannot resolve it ({exc.strerror}); use an address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OddspotError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
                           "choose another port or stop what uses it") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def make_server(models: Sequence[ServedModel], settings: ServeSettings, log_level: str = "warning") -> Any:
    """A uvicorn Server for the app of `models` (not started)."""
    import uvicorn

    from oddspot.serve.app import create_app

    app = create_app(models, settings)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, server_header=False, lifespan="on",
                            limit_concurrency=settings.queue + 64, timeout_keep_alive=30,
                            timeout_graceful_shutdown=max(1, int(settings.timeout_s)))
    return uvicorn.Server(config)


def serve(models: Sequence[ServedModel], settings: ServeSettings, sock: socket.socket | None = None,
          log_level: str = "warning") -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM stops it gracefully)."""
    sock = sock or bind(settings.host, settings.port)
    try:
        make_server(models, settings, log_level).run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """The service on a thread of this process: `with BackgroundServer(models, settings) as url: ...`."""

    def __init__(self, models: Sequence[ServedModel], settings: ServeSettings | None = None) -> None:
        settings = settings or ServeSettings(port=0)
        self.sock = bind(settings.host, settings.port)
        self.url = url_of(self.sock)
        self.server = make_server(models, settings)
        self.app = self.server.config.app
        self._thread = threading.Thread(target=self._run, name="oddspot-serve", daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 30.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OddspotError(f"the service did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self.sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
