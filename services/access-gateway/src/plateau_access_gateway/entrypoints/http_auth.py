"""Routes of authentication, the user's own credentials and the operator's administration:
``/api/v1/auth/...``, ``/api/v1/me``, ``/api/v1/tokens``, ``/api/v1/admin/...``.

They translate HTTP to :class:`AccessService` calls and back; the rules live there.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from plateau_access_gateway.adapters.accounts import UsernameTakenError
from plateau_access_gateway.adapters.credentials import TotpEnrolment
from plateau_access_gateway.domain.accounts import Account
from plateau_access_gateway.domain.passwords import WeakPasswordError
from plateau_access_gateway.domain.principal import Principal, Role
from plateau_access_gateway.domain.sessions import Session, SessionStage
from plateau_access_gateway.domain.tokens import ApiToken, TokenLifetimeError
from plateau_access_gateway.entrypoints.http import (
    SESSION_COOKIE,
    ProblemError,
    clear_cookie_header,
    client_address,
)
from plateau_access_gateway.entrypoints.http_principal import current_principal, require_roles
from plateau_access_gateway.handlers import (
    AccessService,
    Login,
    LoginRefusedError,
    NotFoundError,
    SessionStateError,
)
from plateau_contracts.events.access import DeniedReason
from plateau_contracts.events.common import Ident
from plateau_runtime.eventstore import StoredEvent

router = APIRouter()

Authenticated = Annotated[Principal, Depends(current_principal)]


def _service(request: Request) -> AccessService:
    service = request.app.state.access
    assert isinstance(service, AccessService)
    return service


Service = Annotated[AccessService, Depends(_service)]

_admin_only = require_roles(Role.OPERATOR_ADMIN)


async def _admin(request: Request) -> Principal:
    """An operator admin; anyone else gets 403, and the attempt is audited."""
    try:
        return await _admin_only(request)
    except HTTPException as exc:
        principal = getattr(request.state, "principal", None)
        if exc.status_code == status.HTTP_403_FORBIDDEN and isinstance(principal, Principal):
            await _service(request).audit.denied(
                principal,
                method=request.method,
                path=request.url.path,
                kind=None,
                object_id=None,
                reason=DeniedReason.MISSING_ROLE,
            )
        raise


Admin = Annotated[Principal, Depends(_admin)]


def _session(request: Request) -> Session:
    session = getattr(request.state, "session", None)
    if not isinstance(session, Session):
        raise ProblemError(401, "log in first (POST /api/v1/auth/login)", "not-logged-in")
    return session


CurrentSession = Annotated[Session, Depends(_session)]


def _refused() -> ProblemError:
    return ProblemError(
        401,
        "login failed: the username, password or code is wrong, or logins are paused "
        "after repeated failures; wait and try again",
        "login-failed",
    )


def _weak(exc: WeakPasswordError) -> ProblemError:
    return ProblemError(
        422,
        f"the new password was refused: {exc}",
        "weak-password",
        extra={"rules": [{"rule": r.value, "detail": m} for r, m in exc.failures]},
    )


def _source(request: Request) -> str:
    return client_address(request.scope)


# -- models ------------------------------------------------------------------------------


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class SessionView(BaseModel):
    """A session's stage and the CSRF token unsafe requests must send in ``X-CSRF-Token``."""

    stage: SessionStage = Field(
        description="`active`: logged in; otherwise the step the login waits for."
    )
    csrf_token: str
    expires_at: datetime
    locked: bool = False


class CodeRequest(BaseModel):
    code: str | None = Field(default=None, max_length=16, description="TOTP code.")
    recovery_code: str | None = Field(default=None, max_length=32)


class EnrolmentView(BaseModel):
    otpauth_uri: str = Field(description="To add the account to an authenticator app.")
    secret: str = Field(description="The same seed, to type in by hand.")
    qr_svg: str = Field(description="The URI as a QR code (SVG).")


class EnrolledView(SessionView):
    recovery_codes: list[str] = Field(description="Ten one-time codes, shown once.")


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class UnlockRequest(CodeRequest):
    password: str = Field(min_length=1, max_length=1024)


class UserView(BaseModel):
    user_id: str
    tenant: str
    username: str
    role: Role
    queue_ids: list[str]
    campaign_ids: list[str]
    second_factor: bool
    locked_until: datetime | None = None
    created_at: datetime


class MeView(BaseModel):
    user_id: str
    tenant: str
    username: str
    role: Role
    via: str
    queue_ids: list[str] | None = Field(description="null: every queue of the tenant.")
    campaign_ids: list[str] | None = Field(description="null: every campaign of the tenant.")


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["Power BI"])
    days: int | None = Field(default=None, description="Lifetime, 1-90 days (default 30).")


class TokenView(BaseModel):
    token_id: str
    user_id: str
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class NewTokenView(TokenView):
    token: str = Field(description="The bearer token, shown once.")


class NewUserRequest(BaseModel):
    tenant: str = Field(min_length=1, max_length=128)
    username: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")
    role: Role
    # Ids as the user.created event holds them: an empty one was a 500 after the account
    # was stored.
    queue_ids: list[Ident] = Field(default_factory=list)
    campaign_ids: list[Ident] = Field(default_factory=list)
    password: str | None = Field(
        default=None, max_length=1024, description="Initial password; omitted: generated."
    )


class NewUserView(UserView):
    initial_password: str | None = Field(
        description="The generated initial password (shown once); null when one was given."
    )


class PasswordPolicyRequest(BaseModel):
    max_age_days: int | None = Field(default=None, ge=1, le=3650)


class AuditEventView(BaseModel):
    position: int
    hash: str
    prev_hash: str
    event_id: str
    type: str
    stream: str
    tenant: str
    recorded_at: datetime
    data: dict[str, Any]


def _session_view(session: Session, locked: bool = False) -> SessionView:
    return SessionView(
        stage=session.stage,
        csrf_token=session.csrf_token,
        expires_at=session.expires_at,
        locked=locked,
    )


def _set_cookie(response: Response, login: Login) -> None:
    assert login.secret is not None
    response.set_cookie(
        SESSION_COOKIE,
        login.secret,
        max_age=int((login.session.expires_at - login.session.created_at).total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def _user_view(account: Account) -> UserView:
    return UserView(
        user_id=account.user_id,
        tenant=account.tenant,
        username=account.username,
        role=account.role,
        queue_ids=list(account.queue_ids),
        campaign_ids=list(account.campaign_ids),
        second_factor=account.totp_confirmed,
        locked_until=account.locked_until,
        created_at=account.created_at,
    )


def _token_view(token: ApiToken) -> TokenView:
    return TokenView(
        token_id=token.token_id,
        user_id=token.user_id,
        name=token.name,
        created_by=token.created_by,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


# -- authentication ----------------------------------------------------------------------


@router.post("/auth/login", response_model=SessionView, tags=["auth"])
async def login(
    body: LoginRequest, request: Request, response: Response, service: Service
) -> SessionView:
    """Check a username and password; the session cookie is set at the stage reached."""
    try:
        started = await service.login(
            body.username, body.password, _source(request), request.headers.get("user-agent")
        )
    except LoginRefusedError:
        raise _refused() from None
    _set_cookie(response, started)
    return _session_view(started.session)


@router.get("/auth/session", response_model=SessionView, tags=["auth"])
async def session_info(request: Request, session: CurrentSession) -> SessionView:
    """The current session's stage and CSRF token."""
    return _session_view(session, locked=bool(getattr(request.state, "session_locked", False)))


@router.post("/auth/totp/enrolment", response_model=EnrolmentView, tags=["auth"])
async def start_enrolment(session: CurrentSession, service: Service) -> EnrolmentView:
    """Start enrolling TOTP: a new seed as an otpauth URI and a QR code (at the login's
    `enrol_totp` stage, or from an active session of a user without a second factor)."""
    try:
        enrolment: TotpEnrolment = await service.start_enrolment(session)
    except SessionStateError as exc:
        raise ProblemError(409, str(exc), "wrong-stage") from None
    return EnrolmentView(
        otpauth_uri=enrolment.uri, secret=enrolment.secret, qr_svg=enrolment.qr_svg
    )


@router.post("/auth/totp/confirm", response_model=EnrolledView, tags=["auth"])
async def confirm_enrolment(
    body: CodeRequest,
    request: Request,
    response: Response,
    session: CurrentSession,
    service: Service,
) -> EnrolledView:
    """Confirm the enrolment with a code; the login completes and recovery codes are shown."""
    try:
        started, codes = await service.confirm_enrolment(
            session, body.code or "", _source(request), request.headers.get("user-agent")
        )
    except SessionStateError as exc:
        raise ProblemError(409, str(exc), "wrong-stage") from None
    except LoginRefusedError:
        raise _refused() from None
    if started.secret is not None:  # a login that completed: its new session
        _set_cookie(response, started)
    view = _session_view(started.session)
    return EnrolledView(**view.model_dump(), recovery_codes=codes)


@router.post("/auth/totp", response_model=SessionView, tags=["auth"])
async def second_factor(
    body: CodeRequest,
    request: Request,
    response: Response,
    session: CurrentSession,
    service: Service,
) -> SessionView:
    """Finish a login with a TOTP code or a one-time recovery code."""
    try:
        started = await service.second_factor(
            session,
            code=body.code,
            recovery_code=body.recovery_code,
            source_ip=_source(request),
            user_agent=request.headers.get("user-agent"),
        )
    except SessionStateError as exc:
        raise ProblemError(409, str(exc), "wrong-stage") from None
    except LoginRefusedError:
        raise _refused() from None
    _set_cookie(response, started)
    return _session_view(started.session)


@router.post("/auth/password", response_model=SessionView, tags=["auth"])
async def change_password(
    body: PasswordChange,
    request: Request,
    response: Response,
    session: CurrentSession,
    service: Service,
) -> SessionView:
    """Change one's password (required when it expired); other sessions end."""
    if session.stage not in (SessionStage.ACTIVE, SessionStage.CHANGE_PASSWORD):
        raise ProblemError(409, "finish the second factor first", "wrong-stage")
    try:
        started = await service.change_password(
            session,
            body.current_password,
            body.new_password,
            _source(request),
            request.headers.get("user-agent"),
        )
    except WeakPasswordError as exc:
        raise _weak(exc) from None
    except SessionStateError as exc:
        raise ProblemError(422, str(exc), "same-password") from None
    except LoginRefusedError:
        raise _refused() from None
    _set_cookie(response, started)
    return _session_view(started.session)


@router.post("/auth/unlock", response_model=SessionView, tags=["auth"])
async def unlock(
    body: UnlockRequest, request: Request, session: CurrentSession, service: Service
) -> SessionView:
    """Unlock a session locked after inactivity: the password, and the code when enrolled."""
    try:
        unlocked = await service.unlock_session(
            session,
            password=body.password,
            code=body.code,
            recovery_code=body.recovery_code,
            source_ip=_source(request),
            user_agent=request.headers.get("user-agent"),
        )
    except LoginRefusedError:
        raise _refused() from None
    return _session_view(unlocked)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
async def logout(session: CurrentSession, service: Service) -> Response:
    """End this session."""
    await service.logout(session)
    return Response(status_code=204, headers={"set-cookie": clear_cookie_header()[1].decode()})


class LoggedOutView(BaseModel):
    sessions_ended: int


@router.post("/auth/logout-everywhere", response_model=LoggedOutView, tags=["auth"])
async def logout_everywhere(
    principal: Authenticated, response: Response, service: Service
) -> LoggedOutView:
    """End every session of the user, on every device (API tokens stay: revoke them)."""
    ended = await service.logout_everywhere(principal.user_id, principal.tenant)
    response.headers["set-cookie"] = clear_cookie_header()[1].decode()
    return LoggedOutView(sessions_ended=ended)


# -- the user's own ----------------------------------------------------------------------


@router.get("/me", response_model=MeView, tags=["me"])
async def me(principal: Authenticated) -> MeView:
    """Who is asking: user, tenant, role and scope."""
    return MeView(
        user_id=principal.user_id,
        tenant=principal.tenant,
        username=principal.username,
        role=principal.role,
        via=principal.via.value,
        queue_ids=sorted(principal.queue_scope) if principal.queue_scope is not None else None,
        campaign_ids=(
            sorted(principal.campaign_scope) if principal.campaign_scope is not None else None
        ),
    )


@router.get("/tokens", response_model=list[TokenView], tags=["tokens"])
async def list_tokens(principal: Authenticated, service: Service) -> list[TokenView]:
    """The user's API tokens (never their secrets)."""
    return [_token_view(t) for t in await service.tokens_of(principal.user_id)]


async def _create_token(
    service: AccessService, owner: Account, body: TokenRequest, principal: Principal
) -> NewTokenView:
    try:
        created = await service.create_token(owner, body.name, body.days, principal.user_id)
    except TokenLifetimeError as exc:
        raise ProblemError(422, str(exc), "invalid-lifetime") from None
    return NewTokenView(**_token_view(created.token).model_dump(), token=created.secret)


@router.post(
    "/tokens", response_model=NewTokenView, status_code=status.HTTP_201_CREATED, tags=["tokens"]
)
async def create_token(
    body: TokenRequest, principal: Authenticated, service: Service
) -> NewTokenView:
    """A read-only API token for the user's BI tool; the token is shown only now."""
    owner = await service.account(principal.user_id)
    return await _create_token(service, owner, body, principal)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["tokens"])
async def revoke_token(
    token_id: str, request: Request, principal: Authenticated, service: Service
) -> Response:
    """Revoke an API token: it is refused from now on."""
    try:
        await service.revoke_token(principal, token_id, request.url.path)
    except NotFoundError:
        raise ProblemError(404, f"no API token {token_id}", "not-found") from None
    return Response(status_code=204)


# -- administration (operator admins) ----------------------------------------------------


@router.get("/admin/users", response_model=list[UserView], tags=["admin"])
async def list_users(
    _: Admin, service: Service, tenant: Annotated[str | None, Query(max_length=128)] = None
) -> list[UserView]:
    """The installation's users, of one tenant or all."""
    return [_user_view(a) for a in await service.repository.accounts(tenant)]


@router.post(
    "/admin/users", response_model=NewUserView, status_code=status.HTTP_201_CREATED, tags=["admin"]
)
async def create_user(body: NewUserRequest, admin: Admin, service: Service) -> NewUserView:
    """Create a user of a tenant; without a password, an initial one is generated."""
    try:
        account, password = await service.create_user(
            tenant=body.tenant,
            username=body.username,
            role=body.role,
            password=body.password,
            queue_ids=body.queue_ids,
            campaign_ids=body.campaign_ids,
            created_by=admin.user_id,
        )
    except WeakPasswordError as exc:
        raise _weak(exc) from None
    except UsernameTakenError as exc:
        raise ProblemError(409, str(exc), "username-taken") from None
    return NewUserView(
        **_user_view(account).model_dump(),
        initial_password=None if body.password is not None else password,
    )


@router.post("/admin/users/{user_id}/unlock", response_model=UserView, tags=["admin"])
async def unlock_user(user_id: str, _: Admin, service: Service) -> UserView:
    """Lift a lockout after failed logins."""
    try:
        account = await service.unlock_account(user_id)
    except NotFoundError:
        raise ProblemError(404, f"no user {user_id}", "not-found") from None
    return _user_view(account)


@router.post(
    "/admin/users/{user_id}/tokens",
    response_model=NewTokenView,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
)
async def create_token_for(
    user_id: str, body: TokenRequest, admin: Admin, service: Service
) -> NewTokenView:
    """An API token for another user (e.g. to set up the client's BI tool)."""
    try:
        owner = await service.account(user_id)
    except NotFoundError:
        raise ProblemError(404, f"no user {user_id}", "not-found") from None
    return await _create_token(service, owner, body, admin)


@router.put("/admin/tenants/{tenant}/password-policy", tags=["admin"])
async def set_password_policy(
    tenant: str, body: PasswordPolicyRequest, _: Admin, service: Service
) -> PasswordPolicyRequest:
    """Set (or with null, remove) the maximum age of a tenant's passwords."""
    await service.repository.set_password_max_age(tenant, body.max_age_days)
    return body


def _audit_view(stored: StoredEvent) -> AuditEventView:
    envelope = stored.envelope
    return AuditEventView(
        position=stored.position,
        hash=stored.hash.hex(),
        prev_hash=stored.prev_hash.hex(),
        event_id=str(envelope.event_id),
        type=envelope.type,
        stream=envelope.stream,
        tenant=envelope.tenant,
        recorded_at=envelope.recorded_at,
        data=dict(envelope.data),
    )


@router.get("/admin/audit", response_model=list[AuditEventView], tags=["admin"])
async def audit_events(
    _: Admin,
    service: Service,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Chain position to continue after.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
) -> list[AuditEventView]:
    """Audit events in chain order, with their position and hash (page with ``after``)."""
    return [_audit_view(s) for s in await service.audit.page(after, limit, tenant)]


_CSV_COLUMNS = (
    "position", "hash", "prev_hash", "event_id", "type", "stream", "tenant", "recorded_at", "data"
)  # fmt: skip


@router.get("/admin/audit.csv", tags=["admin"], response_class=StreamingResponse)
async def audit_csv(
    _: Admin,
    service: Service,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
) -> StreamingResponse:
    """The audit trail as CSV, in chain order, each row with its position and hash."""

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(_CSV_COLUMNS)
        after = 0
        while True:
            page = await service.audit.page(after, 1000, tenant)
            if not page:
                break
            for stored in page:
                view = _audit_view(stored)
                writer.writerow(
                    [
                        view.position,
                        view.hash,
                        view.prev_hash,
                        view.event_id,
                        view.type,
                        view.stream,
                        view.tenant,
                        view.recorded_at.isoformat(),
                        json.dumps(view.data, sort_keys=True, default=str),
                    ]
                )
            after = page[-1].position
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="audit.csv"'},
    )
