"""The web UI: one page and its static files, served by the gateway itself.

The page carries no data and no inline script (the CSP forbids it); ``app.js`` reads
everything through ``/api/v1`` with the session cookie, like any other client, so the UI
can show nothing the API would not.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import Response

_WEB = resources.files("plateau_access_gateway") / "web"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: The files the UI is made of; nothing else under the package is ever served.
_ASSETS = frozenset({"app.js", "app.css"})


def _file(name: str) -> Response:
    suffix = PurePosixPath(name).suffix
    body = (_WEB / name).read_bytes()
    # The assets change with the release; browsers revalidate rather than run a stale UI.
    return Response(body, media_type=_TYPES[suffix], headers={"Cache-Control": "no-cache"})


def web_router() -> APIRouter:
    """``GET /`` (the page) and ``GET /static/<asset>``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def page() -> Response:
        return _file("index.html")

    @router.get("/static/{name}")
    async def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return _file(name)

    return router
