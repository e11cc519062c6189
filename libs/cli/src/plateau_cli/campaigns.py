"""``plateau campaign …``: outbound campaigns and customer files, through the dialer's
``Campaigns`` gRPC service (the same API integrators use; this tool has no back door).

Exit status: 0 done; 2 refused (a file that cannot be read, a setting out of range, a
command the campaign's state forbids — the reason is printed); 3 the dialer is not
reachable; 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import grpc

from plateau_cli.home import Home
from plateau_cli.settings import load_cli_settings
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2 as pb
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2_grpc as pb_grpc
from plateau_runtime.services import service

_CHUNK = 1024 * 1024  # the proto's limit per message
_BAD_INPUT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DATA_LOSS,
}
_PACING = {
    "predictive": pb.PACING_MODE_PREDICTIVE,
    "progressive": pb.PACING_MODE_PROGRESSIVE,
    "preview": pb.PACING_MODE_PREVIEW,
}
_STATES = {
    pb.CAMPAIGN_STATE_CREATED: "created",
    pb.CAMPAIGN_STATE_RUNNING: "running",
    pb.CAMPAIGN_STATE_PAUSED: "paused",
    pb.CAMPAIGN_STATE_STOPPED: "stopped",
}

T = TypeVar("T")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``plateau campaign`` and its actions."""
    campaign = commands.add_parser(
        "campaign",
        help="outbound campaigns and their customer files (through the dialer's gRPC API)",
        description="Create and drive outbound campaigns and import customer files, through "
        "the dialer's Campaigns gRPC service (default: the embedded default's).",
    )
    actions = campaign.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = add_dialer_options

    create = actions.add_parser("create", help="create a campaign (idempotent on its id)")
    create.add_argument("campaign_id", metavar="CAMPAIGN")
    create.add_argument("--queue", required=True, help="queue live answers are offered to")
    create.add_argument(
        "--skill",
        action="append",
        default=[],
        dest="skills",
        metavar="NAME",
        help="skill an agent needs for this campaign, on top of the queue's (repeatable)",
    )
    create.add_argument("--name", default="")
    create.add_argument("--pacing", choices=sorted(_PACING), default="progressive")
    create.add_argument("--caller-id", default="", help="number presented, E.164")
    create.add_argument("--window", default="08:00-20:00", help="calling window, HH:MM-HH:MM")
    create.add_argument("--days", default="mon,tue,wed,thu,fri,sat", help="e.g. mon,tue")
    create.add_argument("--time-zone", default="", help="IANA zone (default: the tenant's)")
    create.add_argument(
        "--holidays", default="", help="dates with no dialling, e.g. 2026-08-15,2026-12-25"
    )
    create.add_argument("--max-attempts", type=int, default=3)
    create.add_argument("--retry-after", type=int, default=3600, metavar="SECONDS")
    create.add_argument("--ring-timeout", type=int, default=25, metavar="SECONDS")
    create.add_argument("--max-abandon-rate", type=float, default=0.03)
    common(create)
    create.set_defaults(handler=cmd_create)

    upload = actions.add_parser(
        "import",
        help="import a customer file (CSV or XLSX) as the campaign's next list version",
        description="Stream FILE to the dialer, which reads it whole (encoding, separator "
        "and phone column detected unless given), then records it as the next list version: "
        "only its accepted numbers may then be dialled. Prints the report of rejected rows.",
    )
    upload.add_argument("file", type=Path, metavar="FILE")
    upload.add_argument("--campaign", required=True)
    upload.add_argument("--separator", default="", help="',', ';' or 'tab'")
    upload.add_argument("--encoding", default="", help="utf-8, cp1252, latin-1…")
    upload.add_argument("--phone-column", default="", help="header name or 1-based index")
    upload.add_argument("--country-code", default="", help="for numbers without one, e.g. 242")
    common(upload)
    upload.set_defaults(handler=cmd_import)

    for name, text in (
        ("show", "show a campaign's state and list"),
        ("start", "start dialling"),
        ("pause", "stop placing new dials for now"),
        ("resume", "dial again after a pause"),
        ("stop", "end the campaign for good (its numbers are withdrawn)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("campaign_id", metavar="CAMPAIGN")
        if name in ("pause", "stop"):
            action.add_argument("--reason", default="")
        common(action)
        action.set_defaults(handler=cmd_lifecycle)


def add_dialer_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that talks to the dialer: tenant, address, user."""
    parser.add_argument("--tenant", default="demo", help="tenant (default: demo)")
    parser.add_argument(
        "--target",
        default=None,
        help="host:port of the dialer's Campaigns service (default: the running "
        "embedded default's dialer)",
    )
    parser.add_argument("--user", default="cli", help="who asks, for the record")


def _target(args: argparse.Namespace) -> str:
    """The address given, else the running embedded default's dialer, else its setting."""
    if args.target:
        return str(args.target)
    settings = load_cli_settings()
    dialer = service("dialer")
    state = Home(settings.home).read_state() or {}
    entry = (state.get("services") or {}).get(dialer.name) or {}
    port = int(entry.get("grpc_port") or settings.grpc_port(dialer))
    return f"{entry.get('grpc_host') or '127.0.0.1'}:{port}"


def dialer_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return (("x-plateau-tenant", args.tenant), ("x-plateau-user", args.user))


def call_dialer(
    args: argparse.Namespace, work: Callable[[pb_grpc.CampaignsStub], Awaitable[T]]
) -> T | int:
    """``work`` done on the dialer's Campaigns service: its result, or the exit status
    after printing why it failed."""
    target = _target(args)

    async def run() -> T:
        async with grpc.aio.insecure_channel(target) as channel:
            return await work(pb_grpc.CampaignsStub(channel))

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            print(
                f"plateau: the dialer is not reachable at {target} (is `plateau up` running?)",
                file=sys.stderr,
            )
            return 3
        print(f"plateau: {exc.details()}", file=sys.stderr)
        return 2 if exc.code() in _BAD_INPUT else 1


def _print_campaign(campaign: pb.Campaign) -> None:
    settings = campaign.settings
    window = settings.calling_window
    print(
        f"campaign {campaign.campaign_id}: {_STATES.get(campaign.state, '?')}, "
        f"list version {campaign.list_version}, {campaign.contacts_total} contacts, "
        f"queue {settings.queue_id}"
        + (f" (skills {', '.join(settings.required_skills)})" if settings.required_skills else "")
        + f", window {window.start}-{window.end} "
        f"{','.join(window.days)} ({window.time_zone})"
    )
    print(
        f"  {campaign.contacts_remaining} to dial or retry, dial level "
        f"{campaign.dial_level:.2f}, abandoned {campaign.abandon_rate_today:.1%} today, "
        f"{campaign.abandon_rate_30d:.1%} over 30 days"
    )


def cmd_create(args: argparse.Namespace) -> int:
    start, _, end = args.window.partition("-")
    settings = pb.CampaignSettings(
        name=args.name,
        queue_id=args.queue,
        required_skills=args.skills,
        pacing=_PACING[args.pacing],
        caller_id=args.caller_id,
        max_abandon_rate=args.max_abandon_rate,
        max_attempts=args.max_attempts,
        calling_window=pb.CallingWindow(
            start=start,
            end=end,
            days=args.days.split(","),
            time_zone=args.time_zone,
            holidays=[d for d in args.holidays.split(",") if d],
        ),
    )
    settings.retry_after.FromTimedelta(timedelta(seconds=args.retry_after))
    settings.ring_timeout.FromTimedelta(timedelta(seconds=args.ring_timeout))
    request = pb.CreateCampaignRequest(campaign_id=args.campaign_id, settings=settings)
    result = call_dialer(
        args, lambda stub: stub.CreateCampaign(request, metadata=dialer_metadata(args))
    )
    if isinstance(result, int):
        return result
    _print_campaign(result)
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    campaign_id, meta = args.campaign_id, dialer_metadata(args)

    async def act(stub: pb_grpc.CampaignsStub) -> pb.Campaign:
        answer: pb.Campaign
        match args.action:
            case "start":
                request = pb.StartCampaignRequest(campaign_id=campaign_id)
                answer = await stub.StartCampaign(request, metadata=meta)
            case "pause":
                paused = pb.PauseCampaignRequest(campaign_id=campaign_id, reason=args.reason)
                answer = await stub.PauseCampaign(paused, metadata=meta)
            case "resume":
                resumed = pb.ResumeCampaignRequest(campaign_id=campaign_id)
                answer = await stub.ResumeCampaign(resumed, metadata=meta)
            case "stop":
                stopped = pb.StopCampaignRequest(campaign_id=campaign_id, reason=args.reason)
                answer = await stub.StopCampaign(stopped, metadata=meta)
            case _:
                shown = pb.GetCampaignRequest(campaign_id=campaign_id)
                answer = await stub.GetCampaign(shown, metadata=meta)
        return answer

    result = call_dialer(args, act)
    if isinstance(result, int):
        return result
    _print_campaign(result)
    return 0


def file_digest(path: Path) -> str:
    """The SHA-256 of a file the dialer is sent (it makes an import idempotent)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_format(args: argparse.Namespace) -> pb.FileFormat:
    """How the dialer should read the file, from the import options (empty: sniffed)."""
    return pb.FileFormat(
        delimiter="\t" if args.separator == "tab" else args.separator,
        encoding=args.encoding,
        number_column=args.phone_column,
        default_country_code=args.country_code,
    )


def file_chunks(path: Path) -> Iterator[bytes]:
    """The file in the pieces a streaming upload sends."""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def cmd_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"plateau: no file {path}", file=sys.stderr)
        return 2
    header = pb.ImportHeader(
        campaign_id=args.campaign,
        filename=path.name,
        sha256=file_digest(path),
        format=file_format(args),
    )

    async def parts() -> AsyncIterator[pb.ImportContactsRequest]:
        yield pb.ImportContactsRequest(header=header)
        for chunk in file_chunks(path):
            yield pb.ImportContactsRequest(chunk=chunk)

    result = call_dialer(
        args, lambda stub: stub.ImportContacts(parts(), metadata=dialer_metadata(args))
    )
    if isinstance(result, int):
        return result
    _print_report(result)
    return 0


def _print_report(report: pb.ImportReport) -> None:
    separator = {"\t": "tab"}.get(report.delimiter, report.delimiter)
    if report.list_version == 0:
        print(f"{report.campaign_id}: nothing imported — no row was accepted")
    else:
        print(f"{report.campaign_id}: list version {report.list_version}")
    print(
        f"  read as {report.encoding}, separator {separator!r}, sha256 {report.sha256}\n"
        f"  {report.rows_total} rows: {report.rows_accepted} accepted, "
        f"{report.rows_rejected} rejected, {report.rows_duplicate} duplicates merged; "
        f"{report.contacts_withdrawn} contacts of the previous list withdrawn"
    )
    for problem in report.problems:
        column = f" [{problem.column}]" if problem.column else ""
        print(f"  line {problem.line}{column}: {problem.code} — {problem.message}")
    if report.problems_truncated:
        print("  … more problems than listed")
