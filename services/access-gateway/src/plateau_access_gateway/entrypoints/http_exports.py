"""Signed exports of reports and call detail records (CSV and XLSX), and the public key.

Every file carries its provenance (event positions and chain heads of each source) and an
Ed25519 signature that ``plateau verify-export FILE`` checks against ``GET
/api/v1/signing-key``. Rows stream from a server-side cursor: CSV chunks go out as they are
made, XLSX rows spill to a temporary file; memory stays bounded either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.export_files import XlsxExport
from plateau_access_gateway.adapters.read_models import (
    COMPLIANCE_COLUMNS,
    Provenance,
    Reading,
    ReadModels,
    Row,
)
from plateau_access_gateway.domain.exports import CsvExport, cell
from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.domain.reports import (
    CALL_COLUMNS,
    REPORT_COLUMNS,
    Granularity,
    ReportKind,
    report_cells,
)
from plateau_access_gateway.domain.signing import ExportSigner
from plateau_access_gateway.entrypoints.http_calls import CallFilterQuery, resolve_call_filter
from plateau_access_gateway.entrypoints.http_compliance import (
    REPORT as COMPLIANCE_REPORT,
)
from plateau_access_gateway.entrypoints.http_compliance import (
    ComplianceFilterQuery,
    compliance_filters,
    resolve_compliance_filter,
)
from plateau_access_gateway.entrypoints.http_principal import current_principal
from plateau_access_gateway.entrypoints.http_reports import (
    FromQuery,
    GranularityQuery,
    IdsQuery,
    ToQuery,
    resolve_report,
)
from plateau_contracts.events.access import ExportDownloaded

Caller = Annotated[Principal, Depends(current_principal)]
Format = Literal["csv", "xlsx"]
Separator = Annotated[
    Literal[",", ";"], Query(alias="sep", description="CSV separator (`;` for Excel in French).")
]

#: Bytes gathered before a CSV chunk is sent.
CHUNK = 64 * 1024

MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


class SigningKey(BaseModel):
    """The public half of the key that signs exports."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str = Field(description="First 16 hex digits of the sha256 of the raw key.")
    public_key: str = Field(description="The 32 raw bytes of the key, base64.")


RowSource = Callable[[], AbstractAsyncContextManager[Reading]]


def _provenance(
    export: str, principal: Principal, filters: dict[str, str], provenance: Provenance
) -> dict[str, object]:
    """What a file says it was computed from (signed with it)."""
    return {
        "export": export,
        "tenant": principal.tenant,
        "filters": filters,
        "formula_versions": provenance.formula_versions,
        "computed_up_to": [
            {
                "source": s["source"],
                "position": s["position"],
                "chain_head": s["chain_head"],
                "applied_at": s["applied_at"].isoformat() if s["applied_at"] else None,
            }
            for s in provenance.sources
        ],
    }


def exports_router(read_models: ReadModels, audit: AuditTrail, signer: ExportSigner) -> APIRouter:
    """``GET /api/v1/exports/{report|calls|compliance}.{csv|xlsx}`` and
    ``GET /api/v1/signing-key``."""
    router = APIRouter(tags=["exports"])

    async def deliver(  # noqa: PLR0917 - what to export, in what form
        principal: Principal,
        export: str,
        file_format: Format,
        separator: str,
        header: tuple[str, ...],
        rows: RowSource,
        to_cells: Callable[[Row], list[object]],
        filters: dict[str, str],
        filename: str,
    ) -> StreamingResponse | FileResponse:
        async def audited(rows_written: int, sha256: str) -> None:
            await audit.record(
                principal.tenant,
                ExportDownloaded(
                    user_id=principal.user_id,
                    session_id=principal.credential_id,
                    export=export,
                    format=file_format,
                    filters=filters,
                    rows=rows_written,
                    sha256=sha256,
                ),
            )

        disposition = {"Content-Disposition": f'attachment; filename="{filename}.{file_format}"'}
        if file_format == "xlsx":
            book = XlsxExport(header)
            async with rows() as reading:
                async for row in reading.rows:
                    book.row([cell(v) for v in to_cells(row)])
            provenance = _provenance(export, principal, filters, reading.provenance)
            # Saving and hashing a large workbook takes a while: off the event loop.
            path = await asyncio.to_thread(book.finish, provenance, signer)
            try:
                await audited(book.rows, await asyncio.to_thread(_sha256, path))
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return FileResponse(
                path,
                media_type=MEDIA_TYPES["xlsx"],
                headers=disposition,
                background=BackgroundTask(os.unlink, path),
            )

        csv_file = CsvExport(header, separator)

        async def body() -> AsyncIterator[bytes]:
            pending = [csv_file.start()]
            size = len(pending[0])
            async with rows() as reading:
                async for row in reading.rows:
                    line = csv_file.row([cell(v) for v in to_cells(row)])
                    pending.append(line)
                    size += len(line)
                    if size >= CHUNK:
                        yield b"".join(pending)
                        pending, size = [], 0
            provenance = _provenance(export, principal, filters, reading.provenance)
            pending.append(csv_file.finish(provenance, signer))
            yield b"".join(pending)
            # Recorded once the whole file is out, with the digest of what was served.
            await audited(csv_file.rows, csv_file.sha256)

        return StreamingResponse(body(), media_type=MEDIA_TYPES["csv"], headers=disposition)

    for file_format in ("csv", "xlsx"):
        _add_routes(router, read_models, audit, deliver, file_format)
        _add_compliance_routes(router, read_models, audit, deliver, file_format)

    @router.get(
        "/signing-key",
        response_model=SigningKey,
        summary="The public key exports are signed with",
        description="Public, on purpose: anyone holding an export can check it.",
    )
    async def signing_key() -> SigningKey:
        return SigningKey(key_id=signer.key_id, public_key=signer.public_key_base64)

    return router


def _add_routes(
    router: APIRouter,
    read_models: ReadModels,
    audit: AuditTrail,
    deliver: Callable[..., Any],
    file_format: Format,
) -> None:
    errors: dict[int | str, dict[str, Any]] = {
        200: {"content": {MEDIA_TYPES[file_format].split(";")[0]: {}}},
        404: {"description": "An id outside the caller's tenant or scope."},
        422: {"description": "An invalid period, granularity or filter."},
    }

    @router.get(
        f"/exports/report.{file_format}",
        summary=f"Signed interval report ({file_format.upper()})",
        response_class=StreamingResponse,
        responses=errors,
        name=f"export_report_{file_format}",
    )
    async def export_report(
        *,
        principal: Caller,
        request: Request,
        kind: Annotated[ReportKind, Query(description="What to report on.")],
        start: FromQuery,
        end: ToQuery,
        granularity: GranularityQuery = Granularity.HOUR,
        ids: IdsQuery = None,
        separator: Separator = ",",
    ) -> Any:
        asked = await resolve_report(
            read_models, audit, principal, request, kind, ids, start, end, granularity
        )

        def rows() -> AbstractAsyncContextManager[Reading]:
            return read_models.report(
                principal, kind.dimension, asked.ids, start, end, granularity.value
            )

        return await deliver(
            principal,
            f"{kind.dimension}_intervals",
            file_format,
            separator,
            REPORT_COLUMNS,
            rows,
            report_cells,
            {"kind": kind.value, **asked.filters()},
            f"{kind.dimension}-report",
        )

    @router.get(
        f"/exports/calls.{file_format}",
        summary=f"Signed call detail records ({file_format.upper()})",
        response_class=StreamingResponse,
        responses=errors,
        name=f"export_calls_{file_format}",
    )
    async def export_calls(
        *,
        principal: Caller,
        request: Request,
        asked: CallFilterQuery,
        separator: Separator = ",",
    ) -> Any:
        where = await resolve_call_filter(read_models, audit, principal, request, asked)
        filters = {
            k: v.isoformat() if isinstance(v, datetime) else str(v)
            for k, v in {
                "from": where.start,
                "to": where.end,
                "queue": where.queue,
                "agent": where.agent,
                "outcome": where.outcome,
                "direction": where.direction,
            }.items()
            if v is not None
        }
        return await deliver(
            principal,
            "call_detail_records",
            file_format,
            separator,
            CALL_COLUMNS,
            lambda: read_models.calls(principal, where),
            lambda row: [row[c] for c in CALL_COLUMNS],
            filters,
            "calls",
        )


def _add_compliance_routes(
    router: APIRouter,
    read_models: ReadModels,
    audit: AuditTrail,
    deliver: Callable[..., Any],
    file_format: Format,
) -> None:
    @router.get(
        f"/exports/compliance.{file_format}",
        summary=f"Signed compliance ledger ({file_format.upper()})",
        response_class=StreamingResponse,
        responses={
            200: {"content": {MEDIA_TYPES[file_format].split(";")[0]: {}}},
            404: {"description": "A campaign outside the caller's tenant or scope."},
            422: {"description": "An invalid period or filter."},
        },
        name=f"export_compliance_{file_format}",
    )
    async def export_compliance(
        *,
        principal: Caller,
        request: Request,
        asked: ComplianceFilterQuery,
        separator: Separator = ",",
    ) -> Any:
        where = await resolve_compliance_filter(read_models, audit, principal, request, asked)
        return await deliver(
            principal,
            COMPLIANCE_REPORT,
            file_format,
            separator,
            COMPLIANCE_COLUMNS,
            lambda: read_models.compliance(principal, where),
            lambda row: [row[c] for c in COMPLIANCE_COLUMNS],
            compliance_filters(where),
            "compliance",
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
