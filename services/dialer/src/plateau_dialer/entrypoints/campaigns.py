"""``Campaigns`` over gRPC: campaign commands and customer-file uploads.

The tenant comes from metadata (``x-plateau-tenant``). Errors follow the proto's contract:
INVALID_ARGUMENT names the field (or, for an unreadable file, the reason: nothing was
imported), NOT_FOUND for an unknown campaign, ALREADY_EXISTS for a reused id with other
settings, FAILED_PRECONDITION when the campaign's state forbids the command,
RESOURCE_EXHAUSTED for an upload over the size limit, DATA_LOSS when the bytes received do
not match the digest announced.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, time
from typing import IO, Literal, NoReturn, Protocol, TypeVar

import grpc
import phonenumbers
from google.protobuf.duration_pb2 import Duration
from pydantic import ValidationError

from plateau_contracts.events.dialer import CallingWindow, CampaignCreated, PacingMode
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2 as pb
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2_grpc as pb_grpc
from plateau_dialer.campaigns import CampaignCommands, ImportOutcome
from plateau_dialer.dialing import CampaignProgress
from plateau_dialer.do_not_call import DoNotCallList
from plateau_dialer.domain.campaign import (
    Campaign,
    CampaignConflictError,
    CampaignError,
    CampaignNotFoundError,
    CampaignStatus,
)
from plateau_dialer.domain.contacts_file import (
    ContactFile,
    ContactFileRefused,
    FileHints,
    RowOutcome,
)
from plateau_dialer.domain.do_not_call import BadNumberError
from plateau_runtime.grpc_server import GrpcService, current_tenant

SERVICE_NAME = "plateau.campaigns.v1.Campaigns"

#: Problems listed in an import report at most (the proto's limit).
MAX_PROBLEMS = 1000
DEFAULT_TIME_ZONE = "Africa/Brazzaville"

_PACING = {
    pb.PACING_MODE_PREDICTIVE: PacingMode.PREDICTIVE,
    pb.PACING_MODE_PROGRESSIVE: PacingMode.PROGRESSIVE,
    pb.PACING_MODE_PREVIEW: PacingMode.PREVIEW,
}
_STATES = {
    CampaignStatus.CREATED: pb.CAMPAIGN_STATE_CREATED,
    CampaignStatus.RUNNING: pb.CAMPAIGN_STATE_RUNNING,
    CampaignStatus.PAUSED: pb.CAMPAIGN_STATE_PAUSED,
    CampaignStatus.STOPPED: pb.CAMPAIGN_STATE_STOPPED,
}

T = TypeVar("T")
H = TypeVar("H", pb.ImportHeader, pb.DoNotCallImportHeader)
H_co = TypeVar("H_co", covariant=True)


class Upload(Protocol[H_co]):
    """A message of an upload stream: a header, or a chunk of the file."""

    def WhichOneof(self, oneof_group: Literal["part"], /) -> str | None: ...

    @property
    def header(self) -> H_co: ...

    @property
    def chunk(self) -> bytes: ...


class WithCountryCode(Protocol):
    @property
    def default_country_code(self) -> str: ...


class ProgressSource(Protocol):
    """Where a campaign's progress comes from (the dialing loop)."""

    async def progress(self, tenant: str, campaign: CampaignCreated) -> CampaignProgress: ...


class CampaignsServicer(pb_grpc.CampaignsServicer):
    def __init__(
        self,
        commands: CampaignCommands,
        dnc: DoNotCallList,
        progress: ProgressSource,
        *,
        max_upload_bytes: int,
    ) -> None:
        self._commands = commands
        self._dnc = dnc
        self._progress = progress
        self._max_upload = max_upload_bytes

    async def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.Campaign:
        tenant = await _tenant(context)
        created = await _checked(context, lambda: _created(request))
        campaign = await _run(context, self._commands.create(tenant, created))
        return await self._message(tenant, campaign)

    async def StartCampaign(
        self, request: pb.StartCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.Campaign:
        tenant = await _tenant(context)
        by = _caller(context)
        campaign = await _run(
            context, self._commands.command(tenant, request.campaign_id, lambda c: c.start(by))
        )
        return await self._message(tenant, campaign)

    async def PauseCampaign(
        self, request: pb.PauseCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.Campaign:
        tenant = await _tenant(context)
        by, reason = _caller(context), request.reason or None
        campaign = await _run(
            context,
            self._commands.command(tenant, request.campaign_id, lambda c: c.pause(by, reason)),
        )
        return await self._message(tenant, campaign)

    async def ResumeCampaign(
        self, request: pb.ResumeCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.Campaign:
        tenant = await _tenant(context)
        by = _caller(context)
        campaign = await _run(
            context, self._commands.command(tenant, request.campaign_id, lambda c: c.resume(by))
        )
        return await self._message(tenant, campaign)

    async def StopCampaign(
        self, request: pb.StopCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.Campaign:
        tenant = await _tenant(context)
        campaign = await _run(
            context,
            self._commands.stop(
                tenant, request.campaign_id, _caller(context), request.reason or None
            ),
        )
        return await self._message(tenant, campaign)

    async def GetCampaign(
        self, request: pb.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.Campaign:
        tenant = await _tenant(context)
        campaign = await self._commands.campaign(tenant, request.campaign_id)
        if campaign.created is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no campaign {request.campaign_id}")
        return await self._message(tenant, campaign)

    async def ImportContacts(
        self,
        request_iterator: AsyncIterator[pb.ImportContactsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.ImportReport:
        tenant = await _tenant(context)
        # The upload is spooled (memory, then disk): a workbook is read with seeks, and the
        # file must be whole before anything of it is recorded.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            header = await self._receive(context, request_iterator, spool, pb.ImportHeader)
            if not header.campaign_id:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "campaign_id: required")
            hints = await _checked(context, lambda: _hints(header.format))
            region = await _checked(context, lambda: _region(header.format))
            outcome = await _run(
                context,
                self._commands.import_file(
                    tenant,
                    header.campaign_id,
                    filename=header.filename or "upload",
                    source=spool,  # type: ignore[arg-type]
                    hints=hints,
                    imported_by=_caller(context),
                    region=region,
                ),
            )
        return _report(header.campaign_id, outcome)

    async def _receive(
        self,
        context: grpc.aio.ServicerContext,
        parts: AsyncIterator[Upload[H]],
        spool: IO[bytes],
        kind: type[H],
    ) -> H:
        """An upload's header, its chunks written to ``spool`` (checked against the size
        limit and the digest announced)."""
        header: H | None = None
        digest = hashlib.sha256()
        received = 0
        async for part in parts:
            if part.WhichOneof("part") == "header":
                if header is not None:
                    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "header: twice")
                header = part.header
                continue
            if header is None:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "header: must come first")
            received += len(part.chunk)
            if received > self._max_upload:
                await _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the file is larger than {self._max_upload} bytes",
                )
            digest.update(part.chunk)
            spool.write(part.chunk)
        if header is None:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "header: missing")
        if header.sha256 and header.sha256.lower() != digest.hexdigest():
            await _abort(
                context,
                grpc.StatusCode.DATA_LOSS,
                f"received bytes have SHA-256 {digest.hexdigest()}, not {header.sha256}",
            )
        spool.seek(0)
        assert isinstance(header, kind)
        return header

    # -- the do-not-call list ---------------------------------------------------------------

    async def AddDoNotCall(
        self, request: pb.AddDoNotCallRequest, context: grpc.aio.ServicerContext
    ) -> pb.DoNotCallChange:
        tenant = await _tenant(context)
        region = await _checked(context, lambda: _region(request))
        change = await _run(
            context,
            self._dnc.add(
                tenant,
                list(request.numbers),
                reason=request.reason or None,
                added_by=_caller(context),
                region=region,
            ),
        )
        return pb.DoNotCallChange(changed=change.changed, unchanged=change.unchanged)

    async def RemoveDoNotCall(
        self, request: pb.RemoveDoNotCallRequest, context: grpc.aio.ServicerContext
    ) -> pb.DoNotCallChange:
        tenant = await _tenant(context)
        region = await _checked(context, lambda: _region(request))
        change = await _run(
            context,
            self._dnc.remove(
                tenant,
                list(request.numbers),
                reason=request.reason or None,
                removed_by=_caller(context),
                region=region,
            ),
        )
        return pb.DoNotCallChange(changed=change.changed, unchanged=change.unchanged)

    async def ListDoNotCall(
        self, request: pb.ListDoNotCallRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DoNotCallEntry]:
        tenant = await _tenant(context)
        async for entry in self._dnc.entries(tenant):
            yield pb.DoNotCallEntry(
                number=entry.number,
                added_at=entry.added_at.astimezone(UTC).isoformat(timespec="seconds"),
                source=entry.source,
                reason=entry.reason or "",
            )

    async def ImportDoNotCall(
        self,
        request_iterator: AsyncIterator[pb.ImportDoNotCallRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.DoNotCallImportReport:
        tenant = await _tenant(context)
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            header = await self._receive(context, request_iterator, spool, pb.DoNotCallImportHeader)
            hints = await _checked(context, lambda: _hints(header.format))
            region = await _checked(context, lambda: _region(header.format))
            listed = await _run(
                context,
                self._dnc.import_file(
                    tenant,
                    filename=header.filename or "upload",
                    source=spool,  # type: ignore[arg-type]
                    hints=hints,
                    reason=header.reason or None,
                    added_by=_caller(context),
                    region=region,
                ),
            )
        summary = listed.file.summary
        problems = _problems(listed.file)
        return pb.DoNotCallImportReport(
            sha256=summary.sha256,
            encoding=summary.encoding,
            delimiter=summary.delimiter,
            rows_total=summary.rows_total,
            numbers_added=len(listed.change.events),
            numbers_already_listed=len(listed.change.unchanged),
            rows_rejected=summary.rejected,
            rows_duplicate=summary.duplicates,
            problems=problems[:MAX_PROBLEMS],
            problems_truncated=len(listed.file.reports) > MAX_PROBLEMS,
        )

    async def _message(self, tenant: str, campaign: Campaign) -> pb.Campaign:
        created = campaign.created
        assert created is not None
        total = await self._commands.allowed_count(tenant, campaign.campaign_id)
        progress = await self._progress.progress(tenant, created)
        return pb.Campaign(
            campaign_id=campaign.campaign_id,
            state=_STATES[campaign.status],
            settings=_settings(created),
            list_version=campaign.list_version,
            contacts_total=total,
            contacts_remaining=progress.contacts_remaining,
            dial_level=progress.dial_level,
            abandon_rate_today=progress.abandon_rate_today,
            abandon_rate_30d=progress.abandon_rate_30d,
        )


# -- requests to domain values ---------------------------------------------------------------


def _created(request: pb.CreateCampaignRequest) -> CampaignCreated:
    if not request.campaign_id:
        raise ValueError("campaign_id: required")
    settings = request.settings
    if settings.pacing not in _PACING:
        raise ValueError("settings.pacing: choose predictive, progressive or preview")
    window = settings.calling_window
    try:
        start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
    except ValueError:
        raise ValueError("settings.calling_window: start and end are HH:MM") from None
    try:
        holidays = tuple(sorted({date.fromisoformat(d) for d in window.holidays}))
    except ValueError:
        raise ValueError("settings.calling_window.holidays: dates are YYYY-MM-DD") from None
    ring_s = settings.ring_timeout.seconds if settings.HasField("ring_timeout") else 25
    if ring_s < 15:
        # Regulators (Ofcom, the FTC) want a dial to ring at least 15 s before giving up.
        raise ValueError("settings.ring_timeout: at least 15 s")
    skills = tuple(settings.required_skills)
    if len(set(skills)) != len(skills):
        raise ValueError("settings.required_skills: a skill is named twice")
    return CampaignCreated(
        campaign_id=request.campaign_id,
        name=settings.name or request.campaign_id,
        queue_id=settings.queue_id,
        required_skills=skills,
        pacing=_PACING[settings.pacing],
        caller_id=settings.caller_id or None,
        max_abandon_rate=settings.max_abandon_rate or 0.03,
        max_attempts=settings.max_attempts or 3,
        retry_after_s=settings.retry_after.seconds if settings.HasField("retry_after") else 3600,
        ring_timeout_s=ring_s,
        calling_window=CallingWindow(
            start=start,
            end=end,
            days=tuple(window.days) or ("mon", "tue", "wed", "thu", "fri", "sat"),
            time_zone=window.time_zone or DEFAULT_TIME_ZONE,
            holidays=holidays,
        ),
    )


def _settings(created: CampaignCreated) -> pb.CampaignSettings:
    window = created.calling_window
    return pb.CampaignSettings(
        name=created.name,
        queue_id=created.queue_id,
        required_skills=list(created.required_skills),
        pacing=next(k for k, v in _PACING.items() if v == created.pacing),
        caller_id=created.caller_id or "",
        max_abandon_rate=created.max_abandon_rate,
        max_attempts=created.max_attempts,
        retry_after=Duration(seconds=created.retry_after_s),
        ring_timeout=Duration(seconds=created.ring_timeout_s),
        calling_window=pb.CallingWindow(
            start=window.start.strftime("%H:%M"),
            end=window.end.strftime("%H:%M"),
            days=list(window.days),
            time_zone=window.time_zone,
            holidays=[d.isoformat() for d in window.holidays],
        ),
    )


def _region(fmt: WithCountryCode) -> str | None:
    """The region of the uploader's default country code (``242`` → ``CG``)."""
    if not fmt.default_country_code:
        return None
    code = fmt.default_country_code.lstrip("+")
    region = phonenumbers.region_code_for_country_code(int(code)) if code.isdigit() else "ZZ"
    if region == "ZZ":
        raise ValueError(f"format.default_country_code: unknown code {code!r}")
    return region


def _hints(fmt: pb.FileFormat) -> FileHints:
    columns = {"phone": fmt.number_column} if fmt.number_column else {}
    hints = FileHints(
        delimiter=fmt.delimiter,
        encoding=fmt.encoding,
        has_header=fmt.has_header_row if fmt.HasField("has_header_row") else None,
        columns=columns,
    )
    try:
        return hints.checked()
    except ContactFileRefused as exc:
        raise ValueError(f"format: {exc.reason}") from None


def _problems(file: ContactFile) -> list[pb.RowProblem]:
    """The report's rows, one more than the limit (so truncation shows)."""
    mapping = file.summary.mapping
    return [
        pb.RowProblem(
            line=r.line,
            column=mapping.header[mapping.phone] if r.outcome is not RowOutcome.ACCEPTED else "",
            code=(r.reason.value if r.reason else r.outcome.value),
            message=r.detail or "; ".join(r.warnings),
        )
        for r in file.reports[: MAX_PROBLEMS + 1]
    ]


def _report(campaign_id: str, outcome: ImportOutcome) -> pb.ImportReport:
    summary = outcome.file.summary
    problems = _problems(outcome.file)
    record = outcome.record
    return pb.ImportReport(
        campaign_id=campaign_id,
        list_version=record.list_version if record else 0,
        sha256=summary.sha256,
        encoding=summary.encoding,
        delimiter=summary.delimiter,
        rows_total=summary.rows_total,
        rows_accepted=summary.accepted,
        rows_rejected=summary.rejected,
        rows_duplicate=summary.duplicates,
        contacts_withdrawn=record.contacts_withdrawn
        if record and not outcome.already_imported
        else 0,
        problems=problems[:MAX_PROBLEMS],
        problems_truncated=len(outcome.file.reports) > MAX_PROBLEMS,
    )


# -- errors ------------------------------------------------------------------------------------


async def _tenant(context: grpc.aio.ServicerContext) -> str:
    tenant = current_tenant()
    if not tenant:
        await _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            "send the tenant in metadata x-plateau-tenant",
        )
    assert tenant is not None
    return tenant


def _caller(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-plateau-user" and isinstance(value, str) and value:
            return value
    return "integrator"


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("abort raises")  # pragma: no cover


async def _checked(context: grpc.aio.ServicerContext, build: Callable[[], T]) -> T:
    try:
        return build()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {first['msg']}")
    except ValueError as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))


async def _run(context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
    try:
        return await work
    except CampaignNotFoundError as exc:
        await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
    except CampaignConflictError as exc:
        await _abort(context, grpc.StatusCode.ALREADY_EXISTS, str(exc))
    except CampaignError as exc:
        await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except ContactFileRefused as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"file refused: {exc.reason}")
    except BadNumberError as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{exc}; nothing was changed")


def campaigns_service(
    commands: CampaignCommands,
    dnc: DoNotCallList,
    progress: ProgressSource,
    *,
    max_upload_bytes: int,
) -> GrpcService:
    """The servicer, ready for the host's gRPC server."""
    return GrpcService(
        SERVICE_NAME,
        pb_grpc.add_CampaignsServicer_to_server,
        CampaignsServicer(commands, dnc, progress, max_upload_bytes=max_upload_bytes),
    )
