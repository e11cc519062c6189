"""The API's envelope: tokens, headers, limits, problem+json errors, administration, audit."""

from __future__ import annotations

import csv
import io
from typing import Annotated

import asyncpg
import httpx
import pydantic
import pytest
from access_harness import PASSWORD, Gateway, enrol, gateway, login
from fastapi import APIRouter, Depends, Request

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.domain.principal import Principal, Role
from plateau_access_gateway.entrypoints.http import ProblemError
from plateau_access_gateway.entrypoints.http_denials import not_found
from plateau_access_gateway.entrypoints.http_guards import RateLimiter
from plateau_access_gateway.entrypoints.http_principal import current_principal
from plateau_contracts.events.access import AccessDenied, DeniedReason
from plateau_runtime.eventstore import EventStore
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration


async def admin_login(
    gw: Gateway, client: httpx.AsyncClient, username: str = "root.admin"
) -> dict[str, str]:
    await gw.user(username, role=Role.OPERATOR_ADMIN, tenant="operator")
    started = await login(client, username)
    assert started.json()["stage"] == "active"
    return {"x-csrf-token": started.json()["csrf_token"]}


async def test_api_tokens_are_read_only_expire_and_can_be_revoked(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("bi.analyst")
        async with gw.client() as browser:
            _, _, csrf = await enrol(gw, browser, "bi.analyst")
            headers = {"x-csrf-token": csrf}
            too_long = await browser.post(
                "/api/v1/tokens", json={"name": "bi", "days": 91}, headers=headers
            )
            assert too_long.status_code == 422
            created = await browser.post(
                "/api/v1/tokens", json={"name": "Power BI", "days": 7}, headers=headers
            )
            assert created.status_code == 201, created.text
            token = created.json()["token"]
            assert token.startswith("plt_")
            listed = (await browser.get("/api/v1/tokens")).json()
            assert [t["name"] for t in listed] == ["Power BI"]
            assert "token" not in listed[0]

        async with gw.client() as bi:
            bearer = {"authorization": f"Bearer {token}"}
            me = await bi.get("/api/v1/me", headers=bearer)
            assert me.status_code == 200 and me.json()["via"] == "api_token"
            write = await bi.post("/api/v1/tokens", json={"name": "x"}, headers=bearer)
            assert write.status_code == 403
            assert write.json()["type"] == "urn:plateau:problem:read-only-token"
            gw.clock.advance(days=7)
            expired = await bi.get("/api/v1/me", headers=bearer)
            assert expired.status_code == 401
            assert expired.headers["www-authenticate"].startswith("Bearer")

        async with gw.client() as browser:
            second_login = await login(browser, "bi.analyst")
            assert second_login.json()["stage"] == "totp"
        fresh = await gw.service.create_token(
            await gw.service.account(listed[0]["user_id"]), "again", None, "test"
        )
        async with gw.client() as bi:
            bearer = {"authorization": f"Bearer {fresh.secret}"}
            assert (await bi.get("/api/v1/me", headers=bearer)).status_code == 200
            principal = await gw.service.token_principal(fresh.secret)
            assert principal is not None
            await gw.service.revoke_token(principal, fresh.token.token_id, "/api/v1/tokens")
            assert (await bi.get("/api/v1/me", headers=bearer)).status_code == 401
            garbage = await bi.get("/api/v1/me", headers={"authorization": "Bearer plt_nope"})
            assert garbage.status_code == 401


async def test_another_users_token_answers_404_and_the_attempt_is_audited(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        owner = await gw.user("owner.of.token", tenant="globex")
        account = await gw.service.account(owner)
        theirs = await gw.service.create_token(account, "theirs", None, "test")
        await gw.user("nosy.user", tenant="acme")
        async with gw.client() as nosy:
            _, _, csrf = await enrol(gw, nosy, "nosy.user")
            attempt = await nosy.delete(
                f"/api/v1/tokens/{theirs.token.token_id}", headers={"x-csrf-token": csrf}
            )
            missing = await nosy.delete(
                "/api/v1/tokens/does-not-exist", headers={"x-csrf-token": csrf}
            )
        assert attempt.status_code == missing.status_code == 404
        assert attempt.headers["content-type"] == "application/problem+json"
        assert await gw.service.token_principal(theirs.secret) is not None  # still valid
        [denied] = await gw.events("access.denied")
        assert isinstance(denied, AccessDenied)
        assert (denied.reason, denied.resource_kind, denied.resource_id) == (
            DeniedReason.OTHER_TENANT,
            "api_token",
            theirs.token.token_id,
        )


async def test_every_response_carries_the_security_headers(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw, gw.client() as client:
        for response in (
            await client.get("/api/v1/openapi.json"),
            await client.get("/api/v1/me"),
            await client.get("/api/v1/nowhere"),
            await login(client, "nobody", "x"),
        ):
            csp = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert response.headers["strict-transport-security"].startswith("max-age=")
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["cache-control"] == "no-store"


async def test_errors_are_problem_details(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw, gw.client() as client:
        not_found = await client.get("/api/v1/nowhere")
        wrong_method = await client.put("/api/v1/auth/login")
        invalid = await client.post("/api/v1/auth/login", json={"username": ""})
        unauthenticated = await client.get("/api/v1/me")
        for response, status in (
            (not_found, 404),
            (wrong_method, 405),
            (invalid, 422),
            (unauthenticated, 401),
        ):
            assert response.status_code == status
            assert response.headers["content-type"] == "application/problem+json"
            body = response.json()
            assert body["status"] == status
            assert {"type", "title", "detail"} <= set(body)
        assert {e["location"][-1] for e in invalid.json()["errors"]} == {"username", "password"}


async def test_openapi_is_published_under_v1(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw, gw.client() as client:
        spec = (await client.get("/api/v1/openapi.json")).json()
        assert spec["info"]["version"] == "1"
        assert {"/api/v1/auth/login", "/api/v1/me", "/api/v1/tokens", "/api/v1/admin/audit"} <= set(
            spec["paths"]
        )
        login = spec["paths"]["/api/v1/auth/login"]["post"]["responses"]
        assert set(login["422"]["content"]) == set(login["default"]["content"])
        assert set(login["422"]["content"]) == {"application/problem+json"}
        assert "Problem" in spec["components"]["schemas"]


async def test_large_bodies_get_413_and_bursts_get_429(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(
        service_pool,
        service_schema.schema,
        max_request_bytes=2048,
        # The limiters' clock stands still, so no token refills however slowly the
        # machine runs the requests (the refill itself is a unit test of RateLimiter).
        source_limiter=RateLimiter(60, burst=5, clock=lambda: 0.0),
        principal_limiter=RateLimiter(60, burst=3, clock=lambda: 0.0),
    ) as gw:
        async with gw.client("192.0.2.1") as client:
            big = await client.post(
                "/api/v1/auth/login",
                content=b"{" + b" " * 4096 + b"}",
                headers={"content-type": "application/json"},
            )
            assert big.status_code == 413
            assert big.headers["content-type"] == "application/problem+json"

            async def chunks():  # no Content-Length: counted as it arrives
                for _ in range(4):
                    yield b" " * 1024

            streamed = await client.post("/api/v1/auth/login", content=chunks())
            assert streamed.status_code == 413
            responses = [await client.get("/api/v1/openapi.json") for _ in range(5)]
            limited = responses[-1]
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
        await gw.user("busy.admin", role=Role.OPERATOR_ADMIN, tenant="operator")
        async with gw.client("192.0.2.2") as first:
            assert (await login(first, "busy.admin")).status_code == 200
            statuses = [(await first.get("/api/v1/me")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


async def test_inputs_schemathesis_found_are_refused_with_422_not_500(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    """An empty queue or campaign id for a new user (the user.created event refused it
    after the account was stored) and a token lifetime beyond what a timedelta holds."""
    async with gateway(service_pool, service_schema.schema) as gw, gw.client() as client:
        csrf = await admin_login(gw, client)
        for ids in ({"queue_ids": ["q-support", ""]}, {"campaign_ids": [""]}):
            refused = await client.post(
                "/api/v1/admin/users",
                json={"tenant": "acme", "username": "empty.ids", "role": "client_analyst"} | ids,
                headers=csrf,
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["type"] == "urn:plateau:problem:invalid-request"
        # The CLI's way in (plateau users add --queue ""): refused before anything is stored.
        with pytest.raises(pydantic.ValidationError):
            await gw.user("empty.queue", queue_ids=[""])
        users = (await client.get("/api/v1/admin/users", params={"tenant": "acme"})).json()
        assert users == []
        for days in (-1979118546933408768, 10**18):
            token = await client.post(
                "/api/v1/tokens", json={"name": "Power BI", "days": days}, headers=csrf
            )
            assert token.status_code == 422, token.text
            assert token.json()["type"] == "urn:plateau:problem:invalid-lifetime"


async def test_admin_manages_users_and_reads_the_audit_trail(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        async with gw.client() as client:
            csrf = await admin_login(gw, client)
            weak = await client.post(
                "/api/v1/admin/users",
                json={
                    "tenant": "acme",
                    "username": "new.user",
                    "role": "client_analyst",
                    "password": "new.user-Password1",
                },
                headers=csrf,
            )
            assert weak.status_code == 422
            assert {r["rule"] for r in weak.json()["rules"]} >= {"not_username"}
            created = await client.post(
                "/api/v1/admin/users",
                json={
                    "tenant": "acme",
                    "username": "new.user",
                    "role": "client_supervisor",
                    "queue_ids": ["q-support"],
                },
                headers=csrf,
            )
            assert created.status_code == 201, created.text
            initial = created.json()["initial_password"]
            taken = await client.post(
                "/api/v1/admin/users",
                json={"tenant": "globex", "username": "NEW.user", "role": "client_analyst"},
                headers=csrf,
            )
            assert taken.status_code == 409
            users = (await client.get("/api/v1/admin/users", params={"tenant": "acme"})).json()
            assert [u["username"] for u in users] == ["new.user"]

            async with gw.client("192.0.2.50") as stranger:
                for _ in range(5):
                    await login(stranger, "new.user", "Not-The-Password-9")
                assert (await login(stranger, "new.user", initial)).status_code == 401
            user_id = created.json()["user_id"]
            unlocked = await client.post(f"/api/v1/admin/users/{user_id}/unlock", headers=csrf)
            assert unlocked.status_code == 200
            async with gw.client("192.0.2.51") as owner:
                assert (await login(owner, "new.user", initial)).json()["stage"] == "enrol_totp"

            page = (await client.get("/api/v1/admin/audit", params={"limit": 3})).json()
            assert [e["position"] for e in page] == [1, 2, 3]
            assert page[1]["prev_hash"] == page[0]["hash"]
            rest = (await client.get("/api/v1/admin/audit", params={"after": 3})).json()
            assert rest[0]["position"] == 4
            types = {e["type"] for e in page + rest}
            assert {
                "user.created",
                "user.logged_in",
                "user.login_failed",
                "user.account_locked",
            } <= types
            exported = await client.get("/api/v1/admin/audit.csv")
            assert exported.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(exported.text)))
            assert [int(r["position"]) for r in rows] == [e["position"] for e in page + rest]
            assert rows[-1]["hash"] == rest[-1]["hash"]
        report = await gw.service.audit.verify()
        assert report.intact and report.head_position == len(rows)
        assert report.head_hash == rows[-1]["hash"]


async def test_client_roles_cannot_administer(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        await gw.user("just.client", role=Role.CLIENT_SUPERVISOR)
        async with gw.client() as client:
            _, _, csrf = await enrol(gw, client, "just.client")
            listed = await client.get("/api/v1/admin/users")
            audit = await client.get("/api/v1/admin/audit")
            create = await client.post(
                "/api/v1/admin/users",
                json={"tenant": "acme", "username": "x", "role": "operator_admin"},
                headers={"x-csrf-token": csrf},
            )
        assert [r.status_code for r in (listed, audit, create)] == [403, 403, 403]
        denied = await gw.events("access.denied")
        assert [(d.method, d.path, d.reason) for d in denied] == [
            ("GET", "/api/v1/admin/users", DeniedReason.MISSING_ROLE),
            ("GET", "/api/v1/admin/audit", DeniedReason.MISSING_ROLE),
            ("POST", "/api/v1/admin/users", DeniedReason.MISSING_ROLE),
        ]


async def test_expired_password_must_be_changed_and_old_hashes_are_upgraded(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    async with gateway(service_pool, service_schema.schema) as gw:
        user_id = await gw.user("aging.admin", role=Role.OPERATOR_ADMIN, tenant="operator")
        await gw.service.repository.set_password_max_age("operator", 90)
        _, before = await gw.service.repository.by_id(user_id) or (None, "")
        gw.clock.advance(days=91)
        async with gw.client() as client:
            started = await login(client, "aging.admin")
            assert started.json()["stage"] == "change_password"
            csrf = {"x-csrf-token": started.json()["csrf_token"]}
            assert (await client.get("/api/v1/me")).status_code == 401
            weak = await client.post(
                "/api/v1/auth/password",
                json={"current_password": PASSWORD, "new_password": "short"},
                headers=csrf,
            )
            assert weak.status_code == 422
            assert "min_length" in {r["rule"] for r in weak.json()["rules"]}
            changed = await client.post(
                "/api/v1/auth/password",
                json={"current_password": PASSWORD, "new_password": "Mpila-Poto-Poto-1990"},
                headers=csrf,
            )
            assert changed.status_code == 200, changed.text
            assert changed.json()["stage"] == "active"
            assert (await client.get("/api/v1/me")).status_code == 200
        # Stronger parameters than the stored hash's: the next login rehashes it.
        from plateau_access_gateway.adapters.credentials import Argon2Parameters, Passwords

        gw.service.passwords = Passwords(
            Argon2Parameters(time_cost=2, memory_cost_kib=2048, parallelism=1)
        )
        async with gw.client() as client:
            assert (await login(client, "aging.admin", "Mpila-Poto-Poto-1990")).status_code == 200
        _, after = await gw.service.repository.by_id(user_id) or (None, "")
        assert before.startswith("$argon2id$") and after.startswith("$argon2id$v=19$m=2048,t=2")


def _queue_router(audit: AuditTrail) -> APIRouter:
    """A stand-in for a read router, as the read endpoints plug in."""
    router = APIRouter()

    @router.get("/queues/{queue_id}")
    async def queue(
        queue_id: str, request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> dict[str, str]:
        owner = {"q-acme": "acme", "q-acme-vip": "acme", "q-globex": "globex"}.get(queue_id)
        if owner is None:
            raise ProblemError(404, f"no queue {queue_id}", "not-found")
        if owner != principal.tenant or not principal.may_see_queue(queue_id):
            reason = (
                DeniedReason.OTHER_TENANT
                if owner != principal.tenant
                else DeniedReason.OUT_OF_SCOPE
            )
            raise await not_found(audit, principal, request, "queue", queue_id, reason)
        return {"queue_id": queue_id}

    return router


async def test_plugged_routers_refuse_other_tenants_and_scopes_with_an_audited_404(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    audit = AuditTrail(EventStore(service_pool, service_schema.schema))
    async with gateway(service_pool, service_schema.schema, routers=[_queue_router(audit)]) as gw:
        await gw.user("scoped.user", queue_ids=["q-acme"])
        async with gw.client() as client:
            await enrol(gw, client, "scoped.user")
            mine = await client.get("/api/v1/queues/q-acme")
            theirs = await client.get("/api/v1/queues/q-globex")
            unscoped = await client.get("/api/v1/queues/q-acme-vip")
            missing = await client.get("/api/v1/queues/q-none")
        assert mine.status_code == 200
        assert theirs.status_code == unscoped.status_code == missing.status_code == 404
        assert theirs.json()["detail"] == "no queue q-globex"
        assert {k: v for k, v in theirs.json().items() if k not in {"detail", "instance"}} == {
            k: v for k, v in missing.json().items() if k not in {"detail", "instance"}
        }
        denied = await gw.events("access.denied")
        assert [(d.resource_id, d.reason) for d in denied] == [
            ("q-globex", DeniedReason.OTHER_TENANT),
            ("q-acme-vip", DeniedReason.OUT_OF_SCOPE),
        ]
        assert all(d.path.startswith("/api/v1/queues/") and d.method == "GET" for d in denied)
