"""Odd input to every operation of the OpenAPI document: never a server error, and every
error is problem+json (a deterministic stand-in until schemathesis runs in CI)."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from access_harness import gateway, login

from plateau_access_gateway.domain.lockout import FailureRecord
from plateau_access_gateway.domain.principal import Role
from plateau_access_gateway.entrypoints.http_guards import RateLimiter
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration

ODD_VALUES: list[Any] = [
    None, True, 0, -1, 2**63, 1.5e308, "", " ", "a" * 5000, "é\u0000\ud7ff☃", "../../etc",
    "%00", "client_analyst", "operator_admin", [], [None], {}, {"$ne": 1}, ["a"] * 100,
]  # fmt: skip
ODD_SEGMENTS = ["x", "..", "%2e%2e", "a" * 300, "0", "-1", "☃", "%00", "plt_x"]


def odd_body(rng: random.Random, schema: dict[str, Any], components: dict[str, Any]) -> Any:
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    properties = schema.get("properties")
    if not properties or rng.random() < 0.2:
        return rng.choice(ODD_VALUES)
    body = {}
    for name in properties:
        if rng.random() < 0.8:
            body[name] = rng.choice(ODD_VALUES)
    return body


async def test_no_operation_answers_a_server_error_to_odd_input(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    rng = random.Random(6)
    async with gateway(
        service_pool, service_schema.schema, principal_limiter=RateLimiter(100_000)
    ) as gw:
        user_id = await gw.user("fuzz.admin", role=Role.OPERATOR_ADMIN, tenant="operator")
        async with gw.client() as client:
            spec = (await client.get("/api/v1/openapi.json")).json()
        components = spec["components"]["schemas"]
        seen = []
        cases = 0
        for path, operations in sorted(spec["paths"].items()):
            for method, operation in operations.items():
                for _ in range(12):
                    # Odd codes and passwords count as failures: each case starts afresh,
                    # from its own address.
                    cases += 1
                    await gw.service.repository.set_account_failures(user_id, FailureRecord())
                    async with gw.client(f"10.1.{cases // 250}.{cases % 250}") as client:
                        started = await login(client, "fuzz.admin")
                        assert started.status_code == 200, started.text
                        csrf = started.json()["csrf_token"]
                        url = path
                        while "{" in url:
                            start, end = url.index("{"), url.index("}")
                            url = url[:start] + quote(rng.choice(ODD_SEGMENTS)) + url[end + 1 :]
                        params = {
                            p["name"]: str(rng.choice(ODD_VALUES))[:200]
                            for p in operation.get("parameters", [])
                            if p["in"] == "query" and rng.random() < 0.7
                        }
                        body_schema = (
                            operation.get("requestBody", {})
                            .get("content", {})
                            .get("application/json", {})
                            .get("schema")
                        )
                        kwargs: dict[str, Any] = {"params": params}
                        if body_schema is not None:
                            kwargs["json"] = odd_body(rng, body_schema, components)
                        response = await client.request(
                            method.upper(), url, headers={"x-csrf-token": csrf}, **kwargs
                        )
                        seen.append((method, path, response.status_code))
                        assert response.status_code < 500, (method, url, kwargs, response.text)
                        if response.status_code >= 400:
                            assert response.headers["content-type"] == "application/problem+json"
        assert len({(m, p) for m, p, _ in seen}) >= 15
