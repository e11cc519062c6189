"""How a route refuses an object the principal may not see: 404, never 403, and audited.

Another tenant's object, or a queue or campaign outside the user's scope, must look exactly
like an object that does not exist (so ids cannot be probed), while the attempt is recorded
as ``access.denied`` in the audit trail. Routes raise what :func:`not_found` returns, and
answer a missing object the same way: row-level security hides other tenants' rows from the
gateway too, so for it an id of another tenant and an id of nothing look the same, on
purpose (both are ``other_tenant``).
"""

from __future__ import annotations

from fastapi import Request

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.entrypoints.http import ProblemError
from plateau_contracts.events.access import DeniedReason


async def not_found(  # noqa: PLR0917 - each argument says what was refused
    audit: AuditTrail,
    principal: Principal,
    request: Request,
    kind: str,
    object_id: str,
    reason: DeniedReason,
) -> ProblemError:
    """Record the refused attempt; the 404 problem (``not-found``) to raise."""
    await audit.denied(
        principal,
        method=request.method,
        path=request.url.path,
        kind=kind,
        object_id=object_id,
        reason=reason,
    )
    return ProblemError(404, f"no {kind} {object_id}", "not-found")
