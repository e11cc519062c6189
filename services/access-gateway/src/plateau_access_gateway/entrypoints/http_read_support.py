"""What the read routes share: the 404 that also records the attempt, and common models."""

from __future__ import annotations

from fastapi import HTTPException, Request, status

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.domain.principal import Principal
from plateau_contracts.events.access import AccessDenied, DeniedReason


async def not_found(  # noqa: PLR0917 - each argument says what was refused
    audit: AuditTrail,
    principal: Principal,
    request: Request,
    kind: str,
    resource_id: str,
    reason: DeniedReason,
) -> HTTPException:
    """Record the refused read in the audit trail; the 404 to raise (never a 403, so that
    another tenant's or scope's objects cannot be told from missing ones).

    ``other_tenant`` stands for "not in the principal's tenant": row-level security hides
    other tenants' rows from the gateway too, so an id of another tenant and an id of
    nothing look the same, on purpose.
    """
    await audit.record(
        principal.tenant,
        AccessDenied(
            user_id=principal.user_id,
            session_id=principal.credential_id,
            method=request.method,
            path=request.url.path,
            resource_kind=kind,
            resource_id=resource_id,
            reason=reason,
        ),
    )
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {kind} {resource_id!r}")
