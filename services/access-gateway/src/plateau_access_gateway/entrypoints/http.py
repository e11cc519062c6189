"""The HTTPS API's application: versioning, errors, security headers, limits, authentication.

``create_app`` takes every collaborator by injection and the routers to mount (the
gateway's own and the read endpoints'); everything it adds is plain ASGI middleware, so
streamed responses (Server-Sent Events) pass through untouched.

Order of the layers, outermost first: security headers (on every response, errors too),
request size limit (413), per-source rate limit (429), authentication (session cookie or
bearer token, CSRF, read-only tokens, per-principal rate limit), then FastAPI's routing.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.domain.sessions import SessionStage, SessionState
from plateau_access_gateway.entrypoints.http_guards import RateLimiter
from plateau_access_gateway.entrypoints.http_principal import API_PREFIX
from plateau_access_gateway.handlers import AccessService

log = structlog.get_logger("plateau.access_gateway.http")

SESSION_COOKIE = "__Host-plateau_session"
CSRF_HEADER = "x-csrf-token"
PROBLEM_JSON = "application/problem+json"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A locked session may still unlock itself, say who it is, or end.
_LOCKED_SESSION_PATHS = frozenset(
    {f"{API_PREFIX}/auth/unlock", f"{API_PREFIX}/auth/logout", f"{API_PREFIX}/auth/session"}
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def problem_type(slug: str) -> str:
    """The ``type`` URI of one of the gateway's problems (RFC 9457)."""
    return f"urn:plateau:problem:{slug}"


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An ``application/problem+json`` response (RFC 9457)."""
    body: dict[str, Any] = {
        "type": problem_type(slug) if slug else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


class ProblemError(Exception):
    """Raised by a route to answer with a problem of its own type."""

    def __init__(
        self,
        status: int,
        detail: str,
        slug: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.headers = headers
        self.extra = extra


def _install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem(
            exc.status,
            exc.detail,
            slug=exc.slug,
            instance=request.url.path,
            headers=exc.headers,
            extra=exc.extra,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = "nothing is here; see /api/v1/openapi.json for what the API serves"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed here"
        return problem(exc.status_code, detail, instance=request.url.path, headers=exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"location": list(e.get("loc", ())), "message": e.get("msg", ""), "kind": e.get("type")}
            for e in exc.errors()
        ]
        return problem(
            422,
            "the request is not valid: see errors",
            slug="invalid-request",
            instance=request.url.path,
            extra={"errors": errors},
        )

    async def on_unstorable_text(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL text cannot hold NUL (nor characters outside UTF-8): bad input, not a
        # server failure.
        return problem(
            422,
            "the request contains characters that cannot be stored (e.g. NUL); remove them",
            slug="invalid-characters",
            instance=request.url.path,
        )

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(asyncpg.CharacterNotInRepertoireError, on_unstorable_text)
    app.add_exception_handler(asyncpg.UntranslatableCharacterError, on_unstorable_text)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


async def _send_problem(scope: Scope, receive: Receive, send: Send, response: JSONResponse) -> None:
    await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """Adds the security headers to every response, and ``no-store`` to the API's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {name for name, _ in SECURITY_HEADERS}
                ]
                headers.extend(SECURITY_HEADERS)
                if api:
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            # Here rather than in an exception handler, which Starlette runs outside every
            # middleware: a server error gets the same headers and body shape as the rest.
            if started:
                raise
            log.error("http.crashed", path=scope.get("path"), exc_info=exc)
            crashed = problem(500, "the server failed; the error is logged")
            await crashed(scope, receive, send_with_headers)


class _BodyTooLargeError(StarletteHTTPException):
    """A body that outgrew the limit while it arrived; an HTTPException so that FastAPI's
    body parsing lets it through (it turns any other error into a 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """Refuses request bodies above ``max_bytes`` with 413, announced or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = problem(
            413,
            f"the request body is larger than {self.max_bytes} bytes",
            slug="request-too-large",
            instance=str(scope.get("path", "")),
        )
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_problem(scope, receive, send, too_large)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLargeError:
            if started:
                raise
            await _send_problem(scope, receive, send, too_large)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware:
    """429 with ``Retry-After`` once a source address exceeds its rate."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            wait = self.limiter.hit(f"source:{client_address(scope)}")
            if wait is not None:
                await _send_problem(scope, receive, send, _too_many(scope, wait))
                return
        await self.app(scope, receive, send)


def _too_many(scope: Scope, wait: int) -> JSONResponse:
    return problem(
        429,
        f"too many requests; try again in {wait} s",
        slug="rate-limited",
        instance=str(scope.get("path", "")),
        headers={"Retry-After": str(wait)},
    )


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def clear_cookie_header() -> tuple[bytes, bytes]:
    return (
        b"set-cookie",
        f"{SESSION_COOKIE}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict".encode(),
    )


class AuthenticationMiddleware:
    """Sets ``request.state.principal`` from an API token or a session cookie.

    * ``Authorization: Bearer <token>``: a read-only principal (``via=api_token``); any
      method but GET/HEAD is refused (403). A bad or expired token is a 401.
    * the session cookie: an active, usable session gives the user's principal; a session
      still logging in is only exposed as ``request.state.session`` (for the auth routes);
      an idle session is locked (401 ``session-locked``: unlock with the password and the
      second factor), an expired one ended (401 ``session-expired``). Every unsafe method
      needs the session's CSRF token in ``X-CSRF-Token``.
    """

    def __init__(self, app: ASGIApp, service: AccessService, limiter: RateLimiter) -> None:
        self.app = app
        self.service = service
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        refusal = await self._authenticate(scope)
        if refusal is not None:
            await _send_problem(scope, receive, send, refusal)
            return
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> JSONResponse | None:  # noqa: PLR0911
        headers = Headers(scope=scope)
        path = str(scope.get("path", ""))
        method = str(scope.get("method", "GET"))
        state: dict[str, Any] = scope.setdefault("state", {})
        bearer = _bearer(headers)
        if bearer is not None:
            principal = await self.service.token_principal(bearer) if bearer else None
            if principal is None:
                return problem(
                    401,
                    "the API token is unknown, expired or revoked; create a new one",
                    slug="invalid-token",
                    instance=path,
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            if method not in _SAFE_METHODS:
                return problem(
                    403,
                    "API tokens are read-only: they may only GET",
                    slug="read-only-token",
                    instance=path,
                )
            return self._admit(scope, state, principal)
        secret = _cookie(headers, SESSION_COOKIE)
        if not secret:
            return None
        found = await self.service.session(secret)
        if found is None:
            return None
        session, session_state = found
        if session_state is SessionState.EXPIRED:
            return problem(
                401,
                "the session has ended; log in again",
                slug="session-expired",
                instance=path,
                headers={"Set-Cookie": clear_cookie_header()[1].decode()},
            )
        if method not in _SAFE_METHODS:
            token = headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
                return problem(
                    403,
                    "missing or wrong X-CSRF-Token header (GET /api/v1/auth/session gives it)",
                    slug="csrf",
                    instance=path,
                )
        state["session"] = session
        if session_state is SessionState.IDLE_LOCKED:
            state["session_locked"] = True
            if path in _LOCKED_SESSION_PATHS:
                return None
            return problem(
                401,
                "the session is locked after inactivity; unlock it with your password "
                "and code (POST /api/v1/auth/unlock)",
                slug="session-locked",
                instance=path,
            )
        if session.stage is not SessionStage.ACTIVE:
            return None
        principal = await self.service.principal(session)
        if principal is None:
            return None
        return self._admit(scope, state, principal)

    def _admit(
        self, scope: Scope, state: dict[str, Any], principal: Principal
    ) -> JSONResponse | None:
        wait = self.limiter.hit(f"principal:{principal.user_id}")
        if wait is not None:
            return _too_many(scope, wait)
        state["principal"] = principal
        return None


def _cookie(headers: Headers, name: str) -> str | None:
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
    return None


def create_app(
    service: AccessService,
    *,
    routers: Sequence[APIRouter] = (),
    pages: APIRouter | None = None,
    max_request_bytes: int = 64 * 1024,
    source_limiter: RateLimiter | None = None,
    principal_limiter: RateLimiter | None = None,
    state: Mapping[str, Any] | None = None,
) -> FastAPI:
    """The gateway's FastAPI application, with ``routers`` mounted under ``/api/v1`` and
    ``pages`` (the web UI) at the root.

    ``state`` is put on ``app.state`` for the routers' dependencies (e.g. read models).
    """
    from plateau_access_gateway.entrypoints.http_auth import router as auth_router

    app = FastAPI(
        title="Plateau access gateway",
        version="1",
        summary="The client's read-only, audited window on supervision and reporting.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # Swagger UI needs inline script, which the CSP forbids
        redoc_url=None,
    )
    app.state.access = service
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    _install_problem_handlers(app)
    app.include_router(auth_router, prefix=API_PREFIX)
    for router in routers:
        app.include_router(router, prefix=API_PREFIX)
    if pages is not None:
        app.include_router(pages)
    app.add_middleware(
        AuthenticationMiddleware,
        service=service,
        limiter=principal_limiter or RateLimiter(300),
    )
    app.add_middleware(RateLimitMiddleware, limiter=source_limiter or RateLimiter(600))
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_request_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    _document_problems(app)
    return app


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error (RFC 9457 problem details).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "`urn:plateau:problem:<name>` or about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What was wrong and what to do."},
        "instance": {"type": "string", "description": "Path of the request."},
        "errors": {
            "type": "array",
            "description": "Each invalid field (422 invalid-request).",
            "items": {"type": "object"},
        },
        "rules": {
            "type": "array",
            "description": "Each password rule broken (422 weak-password).",
            "items": {"type": "object"},
        },
    },
}


def _document_problems(app: FastAPI) -> None:
    """Every error of every operation is documented as ``application/problem+json``.

    FastAPI documents its validation errors as plain JSON of another shape; the spec must
    say what the API really answers, so clients and schema-driven testers can rely on it.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = PROBLEM_SCHEMA
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        problem_content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for code, response in responses.items():
                    if code.isdigit() and int(code) >= 400:
                        response["content"] = problem_content
                responses["default"] = {
                    "description": "An error (401, 403, 404, 405, 413, 429, 500 ...)",
                    "content": problem_content,
                }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
