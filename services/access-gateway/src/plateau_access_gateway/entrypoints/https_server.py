"""The HTTPS server: uvicorn serving the app as a background task of the service host."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from plateau_runtime.errors import ConfigurationError


class _HostedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the service host owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpsServer:
    """Serves ``app`` over TLS on ``host:port`` until the host's stop event is set."""

    def __init__(
        self, app: FastAPI, host: str, port: int, cert_file: Path | None, key_file: Path | None
    ) -> None:
        if cert_file is None or key_file is None:
            raise ConfigurationError(
                "the access gateway needs a TLS certificate and key",
                "set PLATEAU_TLS_CERT_FILE and PLATEAU_TLS_KEY_FILE "
                "(plateau up generates a self-signed pair into its home)",
            )
        for path in (cert_file, key_file):
            if not path.is_file():
                raise ConfigurationError(f"{path} is not a readable file", "check the TLS settings")
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            ssl_certfile=str(cert_file),
            ssl_keyfile=str(key_file),
            log_config=None,  # the service's structlog setup stays in charge
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,  # the client address is the socket's, never a header's
            timeout_graceful_shutdown=1,
        )
        self._server = _HostedServer(config)
        self._address = f"{host}:{port}"

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    async def run(self, stop: asyncio.Event) -> None:
        """A ``BackgroundTask``: serve until ``stop``, then close connections and return."""
        serving = asyncio.create_task(self._serve())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._server.should_exit = True
            stopping.cancel()
            await serving

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit:
            # uvicorn exits the process when it cannot bind; caught inside the task (the
            # event loop would let a SystemExit through), the host reports it instead.
            raise ConfigurationError(
                f"the HTTPS API cannot listen on {self._address}",
                "free the port or set PLATEAU_HTTPS_PORT / PLATEAU_HTTPS_HOST",
            ) from None
