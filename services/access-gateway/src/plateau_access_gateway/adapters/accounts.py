"""The accounts repository: users, failures, TOTP, sessions and API tokens in PostgreSQL
(the gateway's schema, migrations ``0001``-``0049``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import asyncpg

from plateau_access_gateway.domain.accounts import Account
from plateau_access_gateway.domain.lockout import FailureRecord
from plateau_access_gateway.domain.principal import Role
from plateau_access_gateway.domain.sessions import Session, SessionStage
from plateau_access_gateway.domain.tokens import ApiToken


class UsernameTakenError(ValueError):
    """Another account of the installation already has this username."""


_USER_COLUMNS = (
    "user_id, tenant, username, role, queue_ids, campaign_ids, password_changed_at, "
    "totp_confirmed, created_at, failed_logins, locked_until"
)


_TOKEN_AND_ACCOUNT = f"""
select {", ".join(f"u.{c}" for c in _USER_COLUMNS.split(", "))},
       t.token_id, t.tenant as token_tenant, t.name as token_name,
       t.created_by as token_created_by, t.created_at as token_created_at,
       t.expires_at as token_expires_at, t.revoked_at as token_revoked_at
from api_tokens t join users u on u.user_id = t.user_id
where t.token_hash = $1
"""


def _account(row: asyncpg.Record) -> Account:
    return Account(
        user_id=row["user_id"],
        tenant=row["tenant"],
        username=row["username"],
        role=Role(row["role"]),
        queue_ids=tuple(row["queue_ids"]),
        campaign_ids=tuple(row["campaign_ids"]),
        password_changed_at=row["password_changed_at"],
        totp_confirmed=row["totp_confirmed"],
        created_at=row["created_at"],
        failed_logins=row["failed_logins"],
        locked_until=row["locked_until"],
    )


def _session(row: asyncpg.Record) -> Session:
    return Session(
        session_id=row["session_id"],
        user_id=row["user_id"],
        tenant=row["tenant"],
        stage=SessionStage(row["stage"]),
        csrf_token=row["csrf_token"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        expires_at=row["expires_at"],
        locked=row["locked"],
        ended_at=row["ended_at"],
    )


def _token(row: asyncpg.Record) -> ApiToken:
    return ApiToken(
        token_id=row["token_id"],
        user_id=row["user_id"],
        tenant=row["tenant"],
        name=row["name"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


class AccountsRepository:
    """Reads and writes the gateway's account tables through its service role."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # -- users -------------------------------------------------------------------------

    async def add(self, account: Account, password_hash: str) -> None:
        try:
            await self._pool.execute(
                "insert into users (user_id, tenant, username, role, queue_ids, campaign_ids, "
                "password_hash, password_changed_at, created_at) "
                "values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                account.user_id,
                account.tenant,
                account.username,
                account.role.value,
                list(account.queue_ids),
                list(account.campaign_ids),
                password_hash,
                account.password_changed_at,
                account.created_at,
            )
        except asyncpg.UniqueViolationError:
            raise UsernameTakenError(
                f"the username {account.username!r} is taken; choose another one"
            ) from None

    async def by_username(self, username: str) -> tuple[Account, str] | None:
        row = await self._pool.fetchrow(
            f"select {_USER_COLUMNS}, password_hash from users where lower(username) = lower($1)",
            username,
        )
        return (_account(row), row["password_hash"]) if row else None

    async def by_id(self, user_id: str) -> tuple[Account, str] | None:
        row = await self._pool.fetchrow(
            f"select {_USER_COLUMNS}, password_hash from users where user_id = $1", user_id
        )
        return (_account(row), row["password_hash"]) if row else None

    async def accounts(self, tenant: str | None = None) -> list[Account]:
        rows = await self._pool.fetch(
            f"select {_USER_COLUMNS} from users where $1::text is null or tenant = $1 "
            "order by tenant, lower(username)",
            tenant,
        )
        return [_account(r) for r in rows]

    async def set_password(self, user_id: str, password_hash: str, changed_at: datetime) -> None:
        await self._pool.execute(
            "update users set password_hash = $2, password_changed_at = $3 where user_id = $1",
            user_id,
            password_hash,
            changed_at,
        )

    async def rehash(self, user_id: str, old_hash: str, new_hash: str) -> None:
        """Replace a hash made with old parameters (only if the password did not change)."""
        await self._pool.execute(
            "update users set password_hash = $3 where user_id = $1 and password_hash = $2",
            user_id,
            old_hash,
            new_hash,
        )

    async def password_max_age(self, tenant: str) -> timedelta | None:
        days = await self._pool.fetchval(
            "select password_max_age_days from tenant_policies where tenant = $1", tenant
        )
        return timedelta(days=days) if days else None

    async def set_password_max_age(self, tenant: str, days: int | None) -> None:
        await self._pool.execute(
            "insert into tenant_policies (tenant, password_max_age_days) values ($1, $2) "
            "on conflict (tenant) do update "
            "set password_max_age_days = excluded.password_max_age_days",
            tenant,
            days,
        )

    # -- failures and locks ------------------------------------------------------------

    async def account_failures(self, user_id: str) -> FailureRecord:
        row = await self._pool.fetchrow(
            "select failed_logins, last_failure_at, locked_until from users where user_id = $1",
            user_id,
        )
        if row is None:
            return FailureRecord()
        return FailureRecord(row["failed_logins"], row["last_failure_at"], row["locked_until"])

    async def set_account_failures(self, user_id: str, record: FailureRecord) -> None:
        await self._pool.execute(
            "update users set failed_logins = $2, last_failure_at = $3, locked_until = $4 "
            "where user_id = $1",
            user_id,
            record.failed,
            record.last_failure_at,
            record.locked_until,
        )

    async def update_account_failures(
        self, user_id: str, change: Callable[[FailureRecord], FailureRecord]
    ) -> tuple[FailureRecord, FailureRecord]:
        """Apply ``change`` to the account's failures atomically (concurrent failed logins
        each count); the record before and after."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "select failed_logins, last_failure_at, locked_until from users "
                "where user_id = $1 for update",
                user_id,
            )
            if row is None:
                return FailureRecord(), FailureRecord()
            before = FailureRecord(
                row["failed_logins"], row["last_failure_at"], row["locked_until"]
            )
            after = change(before)
            await conn.execute(
                "update users set failed_logins = $2, last_failure_at = $3, locked_until = $4 "
                "where user_id = $1",
                user_id,
                after.failed,
                after.last_failure_at,
                after.locked_until,
            )
        return before, after

    async def update_source_failures(
        self, source: str, change: Callable[[FailureRecord], FailureRecord]
    ) -> FailureRecord:
        """Apply ``change`` to a source address's failures atomically; the record after."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "insert into source_failures (source, failed_logins, last_failure_at) "
                "values ($1, 0, now()) on conflict (source) do nothing",
                source,
            )
            row = await conn.fetchrow(
                "select failed_logins, last_failure_at, locked_until from source_failures "
                "where source = $1 for update",
                source,
            )
            assert row is not None  # inserted above if it was missing
            before = FailureRecord(
                row["failed_logins"], row["last_failure_at"], row["locked_until"]
            )
            after = change(before)
            await conn.execute(
                "update source_failures set failed_logins = $2, last_failure_at = $3, "
                "locked_until = $4 where source = $1",
                source,
                after.failed,
                after.last_failure_at,
                after.locked_until,
            )
        return after

    async def source_failures(self, source: str) -> FailureRecord:
        row = await self._pool.fetchrow(
            "select failed_logins, last_failure_at, locked_until from source_failures "
            "where source = $1",
            source,
        )
        if row is None:
            return FailureRecord()
        return FailureRecord(row["failed_logins"], row["last_failure_at"], row["locked_until"])

    # -- second factor -----------------------------------------------------------------

    async def totp(self, user_id: str) -> tuple[str | None, bool]:
        """The TOTP seed (None before enrolment starts) and whether it is confirmed."""
        row = await self._pool.fetchrow(
            "select totp_secret, totp_confirmed from users where user_id = $1", user_id
        )
        return (row["totp_secret"], row["totp_confirmed"]) if row else (None, False)

    async def start_totp(self, user_id: str, secret: str) -> None:
        await self._pool.execute(
            "update users set totp_secret = $2, totp_confirmed = false, totp_last_step = 0 "
            "where user_id = $1 and not totp_confirmed",
            user_id,
            secret,
        )

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        """Accept the code of ``step`` once: False when it or a later one was used (replay)."""
        result = await self._pool.execute(
            "update users set totp_last_step = $2 where user_id = $1 and totp_last_step < $2",
            user_id,
            step,
        )
        return result == "UPDATE 1"

    async def confirm_totp(self, user_id: str, recovery_hashes: Sequence[bytes]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("update users set totp_confirmed = true where user_id = $1", user_id)
            await conn.execute("delete from recovery_codes where user_id = $1", user_id)
            await conn.executemany(
                "insert into recovery_codes (user_id, code_hash) values ($1, $2)",
                [(user_id, h) for h in recovery_hashes],
            )

    async def use_recovery_code(self, user_id: str, code_hash: bytes, now: datetime) -> bool:
        result = await self._pool.execute(
            "update recovery_codes set used_at = $3 "
            "where user_id = $1 and code_hash = $2 and used_at is null",
            user_id,
            code_hash,
            now,
        )
        return result == "UPDATE 1"

    async def recovery_codes_left(self, user_id: str) -> int:
        value = await self._pool.fetchval(
            "select count(*) from recovery_codes where user_id = $1 and used_at is null", user_id
        )
        return int(value)

    # -- sessions ----------------------------------------------------------------------

    async def add_session(self, session: Session, token_hash: bytes) -> None:
        await self._pool.execute(
            "insert into sessions (session_id, token_hash, csrf_token, user_id, tenant, stage, "
            "created_at, last_seen_at, expires_at, locked) "
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            session.session_id,
            token_hash,
            session.csrf_token,
            session.user_id,
            session.tenant,
            session.stage.value,
            session.created_at,
            session.last_seen_at,
            session.expires_at,
            session.locked,
        )

    async def session_by_token(self, token_hash: bytes) -> Session | None:
        row = await self._pool.fetchrow(
            "select * from sessions where token_hash = $1 and ended_at is null", token_hash
        )
        return _session(row) if row else None

    async def touch_session(self, session_id: str, now: datetime) -> None:
        await self._pool.execute(
            "update sessions set last_seen_at = $2 where session_id = $1", session_id, now
        )

    async def update_session(
        self,
        session_id: str,
        *,
        stage: SessionStage,
        locked: bool,
        last_seen_at: datetime,
        expires_at: datetime,
    ) -> None:
        await self._pool.execute(
            "update sessions set stage = $2, locked = $3, last_seen_at = $4, expires_at = $5 "
            "where session_id = $1",
            session_id,
            stage.value,
            locked,
            last_seen_at,
            expires_at,
        )

    async def lock_session(self, session_id: str) -> bool:
        """Mark the session locked; False when it already was (so the lock is recorded once)."""
        result = await self._pool.execute(
            "update sessions set locked = true where session_id = $1 and not locked", session_id
        )
        return result == "UPDATE 1"

    async def end_session(self, session_id: str, now: datetime) -> bool:
        result = await self._pool.execute(
            "update sessions set ended_at = $2 where session_id = $1 and ended_at is null",
            session_id,
            now,
        )
        return result == "UPDATE 1"

    async def end_sessions_of(self, user_id: str, now: datetime) -> list[str]:
        rows = await self._pool.fetch(
            "update sessions set ended_at = $2 where user_id = $1 and ended_at is null "
            "returning session_id",
            user_id,
            now,
        )
        return [r["session_id"] for r in rows]

    # -- API tokens --------------------------------------------------------------------

    async def add_token(self, token: ApiToken, token_hash: bytes) -> None:
        await self._pool.execute(
            "insert into api_tokens (token_id, token_hash, user_id, tenant, name, created_by, "
            "created_at, expires_at) values ($1, $2, $3, $4, $5, $6, $7, $8)",
            token.token_id,
            token_hash,
            token.user_id,
            token.tenant,
            token.name,
            token.created_by,
            token.created_at,
            token.expires_at,
        )

    async def token_by_hash(self, token_hash: bytes) -> tuple[ApiToken, Account] | None:
        """The token of that hash and its user's account, in one round trip (every request
        of a BI tool asks)."""
        row = await self._pool.fetchrow(_TOKEN_AND_ACCOUNT, token_hash)
        if row is None:
            return None
        token = ApiToken(
            token_id=row["token_id"],
            user_id=row["user_id"],
            tenant=row["token_tenant"],
            name=row["token_name"],
            created_by=row["token_created_by"],
            created_at=row["token_created_at"],
            expires_at=row["token_expires_at"],
            revoked_at=row["token_revoked_at"],
        )
        return token, _account(row)

    async def token(self, token_id: str) -> ApiToken | None:
        row = await self._pool.fetchrow("select * from api_tokens where token_id = $1", token_id)
        return _token(row) if row else None

    async def tokens_of(self, user_id: str) -> list[ApiToken]:
        rows = await self._pool.fetch(
            "select * from api_tokens where user_id = $1 order by created_at", user_id
        )
        return [_token(r) for r in rows]

    async def revoke_token(self, token_id: str, now: datetime) -> bool:
        result = await self._pool.execute(
            "update api_tokens set revoked_at = $2 where token_id = $1 and revoked_at is null",
            token_id,
            now,
        )
        return result == "UPDATE 1"
