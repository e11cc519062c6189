"""Every read router of the gateway, for the app factory: ``create_app(routers=read_routers(...))``.

The caller owns the pieces' lifetimes: ``feed.start()`` before serving, ``feed.stop()`` after.
"""

from __future__ import annotations

from fastapi import APIRouter

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.read_models import ReadModels
from plateau_access_gateway.domain.signing import ExportSigner
from plateau_access_gateway.entrypoints.http_calls import calls_router
from plateau_access_gateway.entrypoints.http_compliance import compliance_router
from plateau_access_gateway.entrypoints.http_exports import exports_router
from plateau_access_gateway.entrypoints.http_reports import reports_router
from plateau_access_gateway.entrypoints.http_stream import ChangeFeed, stream_router
from plateau_access_gateway.entrypoints.http_supervision import LiveViews, supervision_router


def read_routers(
    read_models: ReadModels,
    audit: AuditTrail,
    signer: ExportSigner,
    feed: ChangeFeed,
    *,
    heartbeat_s: float = 15.0,
) -> list[APIRouter]:
    """Supervision, stream, reports, call detail records and signed exports, under /api/v1."""
    live = LiveViews(read_models, feed)
    return [
        supervision_router(live, audit),
        stream_router(live, feed, heartbeat_s=heartbeat_s),
        reports_router(read_models, audit),
        calls_router(read_models, audit),
        compliance_router(read_models, audit),
        exports_router(read_models, audit, signer),
    ]
