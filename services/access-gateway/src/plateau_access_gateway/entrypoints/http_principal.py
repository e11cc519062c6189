"""FastAPI dependencies that hand a route its authenticated :class:`Principal`.

The authentication layer (session cookie or API token) sets ``request.state.principal``;
routes never look at cookies or tokens themselves, they declare what they need here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, status

from plateau_access_gateway.domain.principal import Principal, Role

#: Where the versioned API lives; every API router is mounted under it.
API_PREFIX = "/api/v1"


async def current_principal(request: Request) -> Principal:
    """The principal of this request; 401 when the request is not authenticated."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required")
    return principal


def require_roles(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that admits only principals holding one of ``roles`` (403 otherwise)."""

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this role may not do that")
        return principal

    return dependency
