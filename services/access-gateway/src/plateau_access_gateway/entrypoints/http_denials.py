"""How a route refuses an object the principal may not see: 404, never 403, and audited.

Another tenant's object, or a queue or campaign outside the user's scope, must look exactly
like an object that does not exist (so ids cannot be probed), while the attempt is recorded
as ``AccessDenied`` in the audit trail. Routes raise what :func:`not_found` returns.
"""

from __future__ import annotations

from fastapi import Request

from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.entrypoints.http import ProblemError
from plateau_access_gateway.handlers import AccessService


async def not_found(
    request: Request,
    principal: Principal,
    kind: str,
    object_id: str,
    *,
    object_tenant: str | None = None,
) -> ProblemError:
    """Record the refused attempt; the 404 problem to raise.

    ``object_tenant``: the tenant owning the object, when known (the reason is then
    ``other_tenant``); otherwise the reason is ``out_of_scope``.
    """
    service = request.app.state.access
    assert isinstance(service, AccessService)
    await service.denied(
        principal,
        method=request.method,
        path=request.url.path,
        kind=kind,
        object_id=object_id,
        object_tenant=object_tenant,
    )
    return ProblemError(404, f"no {kind} {object_id}", "not-found")
