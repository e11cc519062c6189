"""Logins over the API: lockout, indistinguishable refusals, TOTP, sessions, CSRF, audit."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from access_harness import PASSWORD, enrol, gateway, login

from plateau_access_gateway.domain.principal import Role
from plateau_contracts.events.access import (
    AccountLocked,
    LoginFailed,
    LoginFailure,
    SecondFactorEnrolled,
    SessionEnded,
    SessionLocked,
    UserLoggedIn,
)
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration


async def test_first_login_enrols_totp_then_reads_with_the_session(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        user_id = await gw.user("m.nkounkou", queue_ids=["q-support"])
        async with gw.client() as client:
            before = await client.get("/api/v1/me")
            assert before.status_code == 401
            secret, codes, _ = await enrol(gw, client, "m.nkounkou")
            assert len(codes) == 10 and len(set(codes)) == 10
            assert secret
            me = await client.get("/api/v1/me")
            assert me.status_code == 200, me.text
            assert me.json() == {
                "user_id": user_id,
                "tenant": "acme",
                "username": "m.nkounkou",
                "role": "client_analyst",
                "via": "session",
                "queue_ids": ["q-support"],
                "campaign_ids": None,
            }
        enrolled = await gw.events("user.second_factor_enrolled")
        assert [type(e) for e in enrolled] == [SecondFactorEnrolled]
        [logged_in] = await gw.events("user.logged_in")
        assert isinstance(logged_in, UserLoggedIn)
        assert (logged_in.second_factor, logged_in.source_ip) == ("totp", "198.51.100.7")


async def test_enrolment_shows_an_otpauth_uri_and_an_svg_qr_code(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("qr.user")
        async with gw.client() as client:
            started = await login(client, "qr.user")
            csrf = {"x-csrf-token": started.json()["csrf_token"]}
            me = await client.get("/api/v1/me")
            assert me.status_code == 401  # a half-done login reads nothing
            enrolment = (await client.post("/api/v1/auth/totp/enrolment", headers=csrf)).json()
            assert enrolment["otpauth_uri"].startswith("otpauth://totp/Plateau:qr.user?")
            assert f"secret={enrolment['secret']}" in enrolment["otpauth_uri"]
            assert enrolment["qr_svg"].startswith("<svg")


async def test_totp_codes_are_refused_when_replayed_and_recovery_codes_work_once(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("replay.user")
        async with gw.client() as client:
            secret, codes, _ = await enrol(gw, client, "replay.user")
        used = gw.code(secret)  # the code that confirmed the enrolment
        async with gw.client() as client:
            started = await login(client, "replay.user")
            assert started.json()["stage"] == "totp"
            csrf = {"x-csrf-token": started.json()["csrf_token"]}
            replay = await client.post("/api/v1/auth/totp", json={"code": used}, headers=csrf)
            assert replay.status_code == 401
            assert replay.headers["content-type"] == "application/problem+json"
            recovered = await client.post(
                "/api/v1/auth/totp", json={"recovery_code": codes[0].upper()}, headers=csrf
            )
            assert recovered.status_code == 200, recovered.text
            assert recovered.json()["stage"] == "active"
        async with gw.client() as client:
            started = await login(client, "replay.user")
            csrf = {"x-csrf-token": started.json()["csrf_token"]}
            again = await client.post(
                "/api/v1/auth/totp", json={"recovery_code": codes[0]}, headers=csrf
            )
            assert again.status_code == 401
            gw.clock.advance(seconds=30)
            fresh = await client.post(
                "/api/v1/auth/totp", json={"code": gw.code(secret)}, headers=csrf
            )
            assert fresh.status_code == 200, fresh.text
        failures = await gw.events("user.login_failed")
        assert [f.reason for f in failures] == [LoginFailure.BAD_SECOND_FACTOR] * 2


async def test_lockout_grows_and_refusals_cannot_be_told_apart(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("admin.one", role=Role.OPERATOR_ADMIN, tenant="operator")
        async with gw.client() as client:
            unknown = await login(client, "nobody.here", "Whatever-Password-1")
            wrong = await login(client, "admin.one", "Whatever-Password-1")
            for _ in range(4):
                await login(client, "admin.one", "Whatever-Password-1")
            locked_right_password = await login(client, "admin.one", PASSWORD)
        for response in (unknown, wrong, locked_right_password):
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/problem+json"
            assert "set-cookie" not in response.headers
        assert unknown.json() == wrong.json() == locked_right_password.json()

        [lock] = [e for e in await gw.events() if isinstance(e, AccountLocked)]
        assert lock.failed_attempts == 5
        assert lock.locked_until == gw.clock.now + gw.service.account_lockout.base
        reasons = [e.reason for e in await gw.events("user.login_failed")]
        assert reasons == [
            LoginFailure.UNKNOWN_USER,
            *[LoginFailure.BAD_CREDENTIALS] * 5,
            LoginFailure.ACCOUNT_LOCKED,
        ]
        # The failure while locked doubled the lock: 2 min from now, not 1.
        record = await gw.service.repository.account_failures(lock.user_id)
        assert record.failed == 6
        assert record.locked_until == gw.clock.now + 2 * gw.service.account_lockout.base
        gw.clock.advance(minutes=2)
        async with gw.client() as client:
            assert (await login(client, "admin.one")).status_code == 200
        assert (await gw.service.repository.account_failures(lock.user_id)).failed == 0


async def test_a_source_guessing_across_accounts_is_locked_out(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("victim", role=Role.OPERATOR_ADMIN, tenant="operator")
        async with gw.client("203.0.113.9") as attacker:
            for n in range(20):
                await login(attacker, f"guess-{n}", "Whatever-Password-1")
            refused = await login(attacker, "victim")
        assert refused.status_code == 401
        async with gw.client("198.51.100.20") as colleague:
            assert (await login(colleague, "victim")).status_code == 200
        failed = await gw.events("user.login_failed")
        assert isinstance(failed[-1], LoginFailed)
        assert (failed[-1].reason, failed[-1].source_ip) == (
            LoginFailure.ACCOUNT_LOCKED,
            "203.0.113.9",
        )
        assert failed[0].stream_id() == "login-guess-0"


async def test_idle_session_locks_and_unlocks_with_password_and_code(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("idle.user", role=Role.CLIENT_SUPERVISOR)
        async with gw.client() as client:
            secret, _, csrf = await enrol(gw, client, "idle.user")
            gw.clock.advance(minutes=14, seconds=59)
            assert (await client.get("/api/v1/me")).status_code == 200
            gw.clock.advance(minutes=15)
            locked = await client.get("/api/v1/me")
            assert locked.status_code == 401
            assert locked.json()["type"] == "urn:plateau:problem:session-locked"
            again = await client.get("/api/v1/me")
            assert again.json()["type"] == "urn:plateau:problem:session-locked"
            headers = {"x-csrf-token": csrf}
            no_code = await client.post(
                "/api/v1/auth/unlock", json={"password": PASSWORD}, headers=headers
            )
            assert no_code.status_code == 401
            unlocked = await client.post(
                "/api/v1/auth/unlock",
                json={"password": PASSWORD, "code": gw.code(secret, seconds=30)},
                headers=headers,
            )
            assert unlocked.status_code == 200, unlocked.text
            assert (await client.get("/api/v1/me")).status_code == 200
        [lock] = await gw.events("session.locked")
        assert isinstance(lock, SessionLocked)
        assert lock.idle_s == 15 * 60  # idle since the request at 14:59


async def test_session_ends_at_its_absolute_lifetime(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("long.day", role=Role.OPERATOR_ADMIN, tenant="operator")
        async with gw.client() as client:
            assert (await login(client, "long.day")).status_code == 200
            for _ in range(12 * 6):  # a request every 10 minutes keeps it from idling
                gw.clock.advance(minutes=10)
                response = await client.get("/api/v1/me")
            assert response.status_code == 401
            assert response.json()["type"] == "urn:plateau:problem:session-expired"
        [ended] = await gw.events("session.ended")
        assert isinstance(ended, SessionEnded)
        assert ended.reason == "expired"


async def test_unsafe_requests_need_the_csrf_token_and_cookie_flags_are_strict(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("csrf.admin", role=Role.OPERATOR_ADMIN, tenant="operator")
        async with gw.client() as client:
            started = await login(client, "csrf.admin")
            cookie = started.headers["set-cookie"]
            assert cookie.startswith("__Host-plateau_session=pls_")
            flags = {part.strip().lower() for part in cookie.split(";")[1:]}
            assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags
            assert not any(f.startswith("domain") for f in flags)
            refused = await client.post("/api/v1/tokens", json={"name": "bi"})
            assert refused.status_code == 403
            assert refused.json()["type"] == "urn:plateau:problem:csrf"
            wrong = await client.post(
                "/api/v1/tokens", json={"name": "bi"}, headers={"x-csrf-token": "nope"}
            )
            assert wrong.status_code == 403
            csrf = {"x-csrf-token": started.json()["csrf_token"]}
            created = await client.post("/api/v1/tokens", json={"name": "bi"}, headers=csrf)
            assert created.status_code == 201, created.text


async def test_logout_and_logout_everywhere_end_sessions(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("many.devices", role=Role.OPERATOR_ADMIN, tenant="operator")
        async with gw.client() as laptop, gw.client() as phone, gw.client() as desk:
            csrf = {}
            for device in (laptop, phone, desk):
                started = await login(device, "many.devices")
                csrf[id(device)] = {"x-csrf-token": started.json()["csrf_token"]}
            out = await laptop.post("/api/v1/auth/logout", headers=csrf[id(laptop)])
            assert out.status_code == 204
            assert (await laptop.get("/api/v1/me")).status_code == 401
            assert (await phone.get("/api/v1/me")).status_code == 200
            everywhere = await phone.post("/api/v1/auth/logout-everywhere", headers=csrf[id(phone)])
            assert everywhere.json() == {"sessions_ended": 2}
            assert (await phone.get("/api/v1/me")).status_code == 401
            assert (await desk.get("/api/v1/me")).status_code == 401
        reasons = [e.reason for e in await gw.events("session.ended")]
        assert reasons == ["logged_out"] * 3


async def test_concurrent_guesses_each_count_towards_the_lockout(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        user_id = await gw.user("raced.admin", role=Role.OPERATOR_ADMIN, tenant="operator")

        async def guess(n: int) -> int:
            async with gw.client(f"203.0.113.{n}") as client:
                return (await login(client, "raced.admin", f"Guess-Number-{n}-x")).status_code

        statuses = await asyncio.gather(*(guess(n) for n in range(12)))
        assert statuses == [401] * 12
        record = await gw.service.repository.account_failures(user_id)
        assert record.failed == 12
        locks = [e for e in await gw.events() if isinstance(e, AccountLocked)]
        assert len(locks) == 1 and locks[0].failed_attempts == 5


async def test_an_admin_may_enrol_totp_and_then_must_use_it(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("careful.admin", role=Role.OPERATOR_ADMIN, tenant="operator")
        async with gw.client() as client:
            started = await login(client, "careful.admin")
            assert started.json()["stage"] == "active"
            csrf = {"x-csrf-token": started.json()["csrf_token"]}
            secret = (await client.post("/api/v1/auth/totp/enrolment", headers=csrf)).json()[
                "secret"
            ]
            confirmed = await client.post(
                "/api/v1/auth/totp/confirm", json={"code": gw.code(secret)}, headers=csrf
            )
            assert confirmed.status_code == 200, confirmed.text
            assert len(confirmed.json()["recovery_codes"]) == 10
            assert (await client.get("/api/v1/me")).status_code == 200  # same session goes on
            twice = await client.post("/api/v1/auth/totp/enrolment", headers=csrf)
            assert twice.status_code == 409
        async with gw.client() as client:
            assert (await login(client, "careful.admin")).json()["stage"] == "totp"
