"""The access gateway's use cases: accounts, logins, second factor, sessions and API tokens.

Every decision is recorded in the audit trail (``plateau.access`` facts); no secret ever is.
A refused login looks the same to the caller whatever the reason (unknown user, wrong
password, locked account or source): only the audit trail says which it was.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from uuid6 import uuid7

from plateau_access_gateway.adapters.accounts import AccountsRepository
from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.credentials import (
    Passwords,
    TotpEnrolment,
    digest,
    new_id,
    new_recovery_codes,
    new_secret,
    normalise_recovery_code,
    totp_enrolment,
    totp_step,
)
from plateau_access_gateway.domain.accounts import Account
from plateau_access_gateway.domain.lockout import FailureRecord, LockoutPolicy
from plateau_access_gateway.domain.passwords import PasswordPolicy
from plateau_access_gateway.domain.principal import Principal, Role, Via
from plateau_access_gateway.domain.sessions import (
    Session,
    SessionPolicy,
    SessionStage,
    SessionState,
)
from plateau_access_gateway.domain.tokens import ApiToken, token_expiry
from plateau_contracts.envelope import utc_now
from plateau_contracts.events.access import (
    AccountLocked,
    DeniedReason,
    LoginFailed,
    LoginFailure,
    SecondFactorEnrolled,
    SessionEnded,
    SessionLocked,
    UserCreated,
    UserLoggedIn,
)

SESSION_PREFIX = "pls_"
TOKEN_PREFIX = "plt_"  # noqa: S105 - the marker of an API token, not a secret
#: Tenant under which failed logins naming no account are recorded.
INSTALLATION_TENANT = "installation"


class LoginRefusedError(Exception):
    """A login or re-authentication was refused; deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("the username, password or code is wrong, or logins are paused")


class SessionStateError(Exception):
    """The session cannot do this at its stage (e.g. enrol a second factor twice)."""


class NotFoundError(LookupError):
    """The object does not exist for this principal (another tenant's looks the same)."""


@dataclass(frozen=True)
class Login:
    """A session that started (or moved on): the cookie's secret, shown once, and its stage."""

    session: Session
    secret: str | None = None


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str


class AccessService:
    """Accounts, authentication and credentials, with their audit trail."""

    def __init__(
        self,
        repository: AccountsRepository,
        audit: AuditTrail,
        passwords: Passwords,
        policy: PasswordPolicy,
        *,
        account_lockout: LockoutPolicy | None = None,
        source_lockout: LockoutPolicy | None = None,
        sessions: SessionPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.repository = repository
        self.audit = audit
        self.passwords = passwords
        self.policy = policy
        self.account_lockout = account_lockout or LockoutPolicy()
        # A source (an office behind NAT) has many users: it locks later than one account.
        self.source_lockout = source_lockout or LockoutPolicy(threshold=20)
        self.session_policy = sessions or SessionPolicy()
        self.clock = clock

    # -- accounts ----------------------------------------------------------------------

    async def create_user(
        self,
        *,
        tenant: str,
        username: str,
        role: Role,
        password: str | None,
        queue_ids: Sequence[str] = (),
        campaign_ids: Sequence[str] = (),
        created_by: str,
    ) -> tuple[Account, str]:
        """Create an account; with no password, a generated one (returned, shown once)."""
        initial = password if password is not None else generate_password()
        self.policy.check(initial, username)
        now = self.clock()
        account = Account(
            user_id=str(uuid7()),
            tenant=tenant,
            username=username,
            role=role,
            queue_ids=tuple(queue_ids),
            campaign_ids=tuple(campaign_ids),
            password_changed_at=now,
            totp_confirmed=False,
            created_at=now,
        )
        # The fact first: what it refuses (e.g. an empty queue id) must not leave an account
        # stored without its audit event.
        created = UserCreated(
            user_id=account.user_id,
            username=username,
            roles=(role,),
            queue_ids=tuple(queue_ids),
            campaign_ids=tuple(campaign_ids),
            created_by=created_by,
        )
        await self.repository.add(account, await self.passwords.hash(initial))
        await self.audit.record(tenant, created)
        return account, initial

    async def account(self, user_id: str) -> Account:
        found = await self.repository.by_id(user_id)
        if found is None:
            raise NotFoundError(user_id)
        return found[0]

    async def unlock_account(self, user_id: str) -> Account:
        """Lift a lockout (an administrator's decision)."""
        account = await self.account(user_id)
        await self.repository.set_account_failures(user_id, FailureRecord())
        return account

    async def change_password(
        self, session: Session, current: str, new: str, source_ip: str, user_agent: str | None
    ) -> Login:
        """Change the user's password; every other session of the user ends."""
        found = await self.repository.by_id(session.user_id)
        if found is None:
            raise LoginRefusedError()
        account, stored = found
        if not await self.passwords.verify(stored, current):
            await self._failed(account, account.username, LoginFailure.BAD_CREDENTIALS, source_ip)
            raise LoginRefusedError()
        self.policy.check(new, account.username)
        if await self.passwords.verify(stored, new):
            raise SessionStateError("choose a password different from the current one")
        now = self.clock()
        await self.repository.set_password(account.user_id, await self.passwords.hash(new), now)
        for other in await self.repository.end_sessions_of(account.user_id, now):
            if other != session.session_id:
                await self.audit.record(
                    account.tenant,
                    SessionEnded(
                        user_id=account.user_id, session_id=other, reason="password_changed"
                    ),
                )
        # This session goes on (or, after an expired password, becomes active).
        started = await self._new_session(account, SessionStage.ACTIVE)
        await self.audit.record(
            account.tenant,
            UserLoggedIn(
                user_id=account.user_id,
                session_id=started.session.session_id,
                source_ip=source_ip,
                user_agent=user_agent,
                second_factor="totp" if account.needs_second_factor() else None,
            ),
        )
        return started

    # -- login -------------------------------------------------------------------------

    async def login(
        self, username: str, password: str, source_ip: str, user_agent: str | None
    ) -> Login:
        """Check a password; a session at the stage the login reached, or ``LoginRefusedError``.

        Every path verifies one argon2 hash, so a refusal takes as long whatever its reason.
        """
        now = self.clock()
        found = await self.repository.by_username(username)
        account, stored = found if found else (None, None)
        correct = await self.passwords.verify(stored, password)
        source = self.source_lockout.current(await self.repository.source_failures(source_ip), now)
        if account is None:
            await self._failed(None, username, LoginFailure.UNKNOWN_USER, source_ip)
            raise LoginRefusedError()
        record = self.account_lockout.current(
            await self.repository.account_failures(account.user_id), now
        )
        if record.is_locked(now) or source.is_locked(now):
            await self._failed(account, username, LoginFailure.ACCOUNT_LOCKED, source_ip)
            raise LoginRefusedError()
        if not correct or stored is None:
            await self._failed(account, username, LoginFailure.BAD_CREDENTIALS, source_ip)
            raise LoginRefusedError()
        if self.passwords.needs_rehash(stored):
            await self.repository.rehash(
                account.user_id, stored, await self.passwords.hash(password)
            )
        if not account.needs_second_factor():
            max_age = await self.repository.password_max_age(account.tenant)
            if account.password_expired(now, max_age):
                return await self._new_session(account, SessionStage.CHANGE_PASSWORD)
            await self.repository.set_account_failures(account.user_id, FailureRecord())
            started = await self._new_session(account, SessionStage.ACTIVE)
            await self._logged_in(account, started.session, source_ip, user_agent, None)
            return started
        stage = SessionStage.TOTP if account.totp_confirmed else SessionStage.ENROL_TOTP
        return await self._new_session(account, stage)

    async def second_factor(
        self,
        session: Session,
        *,
        code: str | None,
        recovery_code: str | None,
        source_ip: str,
        user_agent: str | None,
    ) -> Login:
        """Finish a login with a TOTP code or a recovery code."""
        if session.stage is not SessionStage.TOTP:
            raise SessionStateError("this session is not waiting for a second-factor code")
        account = await self.account(session.user_id)
        if not await self._check_second_factor(account, code, recovery_code, source_ip):
            raise LoginRefusedError()
        return await self._after_second_factor(account, session, source_ip, user_agent)

    async def start_enrolment(self, session: Session) -> TotpEnrolment:
        """A new TOTP seed for the account, as a URI and a QR code (the seed is shown once).

        At a login's ``enrol_totp`` stage, or from an active session of a user who has no
        second factor yet (an operator admin choosing to use one).
        """
        account = await self._enrolling(session)
        enrolment = totp_enrolment(account.username)
        await self.repository.start_totp(account.user_id, enrolment.secret)
        return enrolment

    async def confirm_enrolment(
        self, session: Session, code: str, source_ip: str, user_agent: str | None
    ) -> tuple[Login, list[str]]:
        """Confirm the seed with a code; returns the session and ten recovery codes."""
        account = await self._enrolling(session)
        secret, _ = await self.repository.totp(account.user_id)
        if secret is None:
            raise SessionStateError("start the enrolment first (POST /api/v1/auth/totp/enrolment)")
        if not await self._check_totp(account, secret, code, source_ip):
            raise LoginRefusedError()
        codes = new_recovery_codes()
        await self.repository.confirm_totp(account.user_id, [digest(c) for c in codes])
        await self.audit.record(
            account.tenant, SecondFactorEnrolled(user_id=account.user_id, method="totp")
        )
        if session.stage is SessionStage.ACTIVE:
            return Login(session), codes
        account = replace(account, totp_confirmed=True)
        login = await self._after_second_factor(account, session, source_ip, user_agent)
        return login, codes

    async def _enrolling(self, session: Session) -> Account:
        account = await self.account(session.user_id)
        if session.stage is SessionStage.ENROL_TOTP or (
            session.stage is SessionStage.ACTIVE and not account.totp_confirmed
        ):
            return account
        if account.totp_confirmed:
            raise SessionStateError("a second factor is already enrolled")
        raise SessionStateError("this session is not enrolling a second factor")

    async def _after_second_factor(
        self, account: Account, session: Session, source_ip: str, user_agent: str | None
    ) -> Login:
        now = self.clock()
        await self.repository.set_account_failures(account.user_id, FailureRecord())
        await self.repository.end_session(session.session_id, now)
        max_age = await self.repository.password_max_age(account.tenant)
        if account.password_expired(now, max_age):
            return await self._new_session(account, SessionStage.CHANGE_PASSWORD)
        # A new session id after each step, so a token seen before the login is worthless.
        started = await self._new_session(account, SessionStage.ACTIVE)
        await self._logged_in(account, started.session, source_ip, user_agent, "totp")
        return started

    async def _check_second_factor(
        self, account: Account, code: str | None, recovery_code: str | None, source_ip: str
    ) -> bool:
        now = self.clock()
        record = self.account_lockout.current(
            await self.repository.account_failures(account.user_id), now
        )
        if record.is_locked(now):
            await self._failed(account, account.username, LoginFailure.ACCOUNT_LOCKED, source_ip)
            return False
        if recovery_code:
            hashed = digest(normalise_recovery_code(recovery_code))
            if await self.repository.use_recovery_code(account.user_id, hashed, now):
                return True
            await self._failed(account, account.username, LoginFailure.BAD_SECOND_FACTOR, source_ip)
            return False
        secret, confirmed = await self.repository.totp(account.user_id)
        if secret is None or not confirmed:
            return False
        return await self._check_totp(account, secret, code or "", source_ip)

    async def _check_totp(self, account: Account, secret: str, code: str, source_ip: str) -> bool:
        step = totp_step(secret, code, self.clock())
        if step is not None and await self.repository.use_totp_step(account.user_id, step):
            return True
        await self._failed(account, account.username, LoginFailure.BAD_SECOND_FACTOR, source_ip)
        return False

    async def _failed(
        self, account: Account | None, username: str, reason: LoginFailure, source_ip: str
    ) -> None:
        now = self.clock()
        source = await self.repository.update_source_failures(
            source_ip, lambda record: self.source_lockout.after_failure(record, now)
        )
        if account is None:
            await self.audit.record(
                INSTALLATION_TENANT,
                LoginFailed(
                    username=username,
                    reason=reason,
                    source_ip=source_ip,
                    consecutive_failures=source.failed,
                ),
            )
            return
        stored, after = await self.repository.update_account_failures(
            account.user_id, lambda record: self.account_lockout.after_failure(record, now)
        )
        before = self.account_lockout.current(stored, now)
        facts: list[LoginFailed | AccountLocked] = [
            LoginFailed(
                username=username,
                user_id=account.user_id,
                reason=reason,
                source_ip=source_ip,
                consecutive_failures=after.failed,
            )
        ]
        if after.locked_until is not None and not before.is_locked(now):
            facts.append(
                AccountLocked(
                    user_id=account.user_id,
                    reason="too_many_failures",
                    failed_attempts=after.failed,
                    locked_until=after.locked_until,
                )
            )
        await self.audit.record(account.tenant, *facts)

    async def _logged_in(
        self,
        account: Account,
        session: Session,
        source_ip: str,
        user_agent: str | None,
        second_factor: str | None,
    ) -> None:
        await self.audit.record(
            account.tenant,
            UserLoggedIn(
                user_id=account.user_id,
                session_id=session.session_id,
                source_ip=source_ip,
                user_agent=user_agent,
                second_factor="totp" if second_factor else None,
            ),
        )

    async def _new_session(self, account: Account, stage: SessionStage) -> Login:
        now = self.clock()
        session = Session(
            session_id=new_id(),
            user_id=account.user_id,
            tenant=account.tenant,
            stage=stage,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=self.session_policy.expires_at(now, stage),
            locked=False,
        )
        secret = new_secret(SESSION_PREFIX)
        await self.repository.add_session(session, digest(secret))
        return Login(session, secret)

    # -- sessions ----------------------------------------------------------------------

    async def session(self, secret: str) -> tuple[Session, SessionState] | None:
        """The session a cookie names and its state now; an idle one is locked, an expired
        one ended (both recorded once). A usable active session counts as activity."""
        session = await self.repository.session_by_token(digest(secret))
        if session is None:
            return None
        now = self.clock()
        state = self.session_policy.state(
            last_seen_at=session.last_seen_at,
            expires_at=session.expires_at,
            locked=session.locked,
            now=now,
        )
        if state is SessionState.EXPIRED:
            if await self.repository.end_session(session.session_id, now):
                await self.audit.record(
                    session.tenant,
                    SessionEnded(
                        user_id=session.user_id, session_id=session.session_id, reason="expired"
                    ),
                )
        elif state is SessionState.IDLE_LOCKED:
            if await self.repository.lock_session(session.session_id):
                idle = int((now - session.last_seen_at).total_seconds())
                await self.audit.record(
                    session.tenant,
                    SessionLocked(
                        user_id=session.user_id, session_id=session.session_id, idle_s=idle
                    ),
                )
        else:
            await self.repository.touch_session(session.session_id, now)
        return session, state

    async def unlock_session(
        self,
        session: Session,
        *,
        password: str,
        code: str | None,
        recovery_code: str | None,
        source_ip: str,
        user_agent: str | None,
    ) -> Session:
        """Re-authenticate a locked session with the password (and the second factor)."""
        found = await self.repository.by_id(session.user_id)
        if found is None:
            raise LoginRefusedError()
        account, stored = found
        correct = await self.passwords.verify(stored, password)
        now = self.clock()
        record = self.account_lockout.current(
            await self.repository.account_failures(account.user_id), now
        )
        if record.is_locked(now):
            await self._failed(account, account.username, LoginFailure.ACCOUNT_LOCKED, source_ip)
            raise LoginRefusedError()
        if not correct:
            await self._failed(account, account.username, LoginFailure.BAD_CREDENTIALS, source_ip)
            raise LoginRefusedError()
        if account.needs_second_factor() and not await self._check_second_factor(
            account, code, recovery_code, source_ip
        ):
            raise LoginRefusedError()
        await self.repository.set_account_failures(account.user_id, FailureRecord())
        await self.repository.update_session(
            session.session_id,
            stage=session.stage,
            locked=False,
            last_seen_at=now,
            expires_at=session.expires_at,
        )
        await self._logged_in(
            account,
            session,
            source_ip,
            user_agent,
            "totp" if account.needs_second_factor() else None,
        )
        return replace(session, locked=False, last_seen_at=now)

    async def logout(self, session: Session) -> None:
        if await self.repository.end_session(session.session_id, self.clock()):
            await self.audit.record(
                session.tenant,
                SessionEnded(
                    user_id=session.user_id, session_id=session.session_id, reason="logged_out"
                ),
            )

    async def logout_everywhere(self, user_id: str, tenant: str) -> int:
        """End every session of the user (API tokens are revoked one by one)."""
        ended = await self.repository.end_sessions_of(user_id, self.clock())
        if ended:
            await self.audit.record(
                tenant,
                *[SessionEnded(user_id=user_id, session_id=s, reason="logged_out") for s in ended],
            )
        return len(ended)

    async def principal(self, session: Session) -> Principal | None:
        account = await self.repository.by_id(session.user_id)
        if account is None:
            return None
        return principal_of(account[0], Via.SESSION, session.session_id)

    # -- API tokens --------------------------------------------------------------------

    async def create_token(
        self, owner: Account, name: str, days: int | None, created_by: str
    ) -> NewToken:
        now = self.clock()
        token = ApiToken(
            token_id=new_id(),
            user_id=owner.user_id,
            tenant=owner.tenant,
            name=name,
            created_by=created_by,
            created_at=now,
            expires_at=token_expiry(now, days),
        )
        secret = new_secret(TOKEN_PREFIX)
        await self.repository.add_token(token, digest(secret))
        return NewToken(token, secret)

    async def token_principal(self, secret: str) -> Principal | None:
        found = await self.repository.token_by_hash(digest(secret))
        if found is None or not found[0].usable(self.clock()):
            return None
        token, account = found
        return principal_of(account, Via.API_TOKEN, token.token_id)

    async def tokens_of(self, user_id: str) -> list[ApiToken]:
        return await self.repository.tokens_of(user_id)

    async def revoke_token(self, principal: Principal, token_id: str, path: str) -> ApiToken:
        """Revoke one of the principal's tokens (an operator admin: anyone's)."""
        token = await self.repository.token(token_id)
        if token is None:
            raise NotFoundError(token_id)
        if principal.role is not Role.OPERATOR_ADMIN and token.user_id != principal.user_id:
            await self.audit.denied(
                principal,
                method="DELETE",
                path=path,
                kind="api_token",
                object_id=token_id,
                reason=DeniedReason.OTHER_TENANT
                if token.tenant != principal.tenant
                else DeniedReason.OUT_OF_SCOPE,
            )
            raise NotFoundError(token_id)
        now = self.clock()
        await self.repository.revoke_token(token_id, now)
        if token.revoked_at is None:
            await self.audit.record(
                token.tenant,
                SessionEnded(user_id=token.user_id, session_id=token.token_id, reason="revoked"),
            )
        return replace(token, revoked_at=token.revoked_at or now)


def principal_of(account: Account, via: Via, credential_id: str) -> Principal:
    return Principal(
        tenant=account.tenant,
        user_id=account.user_id,
        username=account.username,
        role=account.role,
        via=via,
        credential_id=credential_id,
        queue_scope=frozenset(account.queue_ids) or None,
        campaign_scope=frozenset(account.campaign_ids) or None,
    )


def generate_password() -> str:
    """An initial password that passes the policy: four random words' worth of entropy."""
    while True:
        candidate = secrets.token_urlsafe(15) + "-7a"
        if sum(c.isupper() for c in candidate) and sum(c.islower() for c in candidate):
            return candidate
