"""``plateau dnc …``: the tenant's do-not-call list, through the dialer's ``Campaigns`` gRPC
service (the API integrators use). A listed number is never dialled: every dial's
compliance check reads the list, and imports scrub it.

Exit status as ``plateau campaign``: 0 done; 2 refused (a number that is not a phone number,
a file that cannot be read — nothing is changed then); 3 the dialer is not reachable;
1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from plateau_cli.campaigns import (
    add_dialer_options,
    call_dialer,
    dialer_metadata,
    file_chunks,
    file_digest,
    file_format,
)
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2 as pb
from plateau_contracts.grpc.campaigns.v1 import campaigns_pb2_grpc as pb_grpc


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``plateau dnc`` and its actions."""
    dnc = commands.add_parser(
        "dnc",
        help="the tenant's do-not-call list (numbers no campaign may dial)",
        description="Add, remove, list and import the numbers of the tenant's do-not-call "
        "list, through the dialer's Campaigns gRPC service. Numbers may be written in E.164 "
        "(+242066123456) or as dialled in the dialer's default region (06 612 34 56).",
    )
    actions = dnc.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="put numbers on the list (all or none)")
    add.add_argument("numbers", nargs="+", metavar="NUMBER")
    add.add_argument("--reason", default="", help="why, for the record")
    add.add_argument("--country-code", default="", help="for numbers without one, e.g. 242")
    add_dialer_options(add)
    add.set_defaults(handler=cmd_add)

    remove = actions.add_parser("remove", help="take numbers off the list")
    remove.add_argument("numbers", nargs="+", metavar="NUMBER")
    remove.add_argument("--reason", default="", help="why, for the record")
    remove.add_argument("--country-code", default="", help="for numbers without one, e.g. 242")
    add_dialer_options(remove)
    remove.set_defaults(handler=cmd_remove)

    listing = actions.add_parser("list", help="print the list, one number a line")
    add_dialer_options(listing)
    listing.set_defaults(handler=cmd_list)

    upload = actions.add_parser(
        "import",
        help="put every number of a file (CSV or XLSX) on the list",
        description="Stream FILE to the dialer, which reads it as it reads customer files "
        "(encoding, separator and phone column detected unless given) and lists every "
        "readable number; rows without one are reported.",
    )
    upload.add_argument("file", type=Path, metavar="FILE")
    upload.add_argument("--reason", default="", help="why, for the record")
    upload.add_argument("--separator", default="", help="',', ';' or 'tab'")
    upload.add_argument("--encoding", default="", help="utf-8, cp1252, latin-1…")
    upload.add_argument("--phone-column", default="", help="header name or 1-based index")
    upload.add_argument("--country-code", default="", help="for numbers without one, e.g. 242")
    add_dialer_options(upload)
    upload.set_defaults(handler=cmd_import)


def _print_change(change: pb.DoNotCallChange, done: str, as_before: str) -> None:
    for number in change.changed:
        print(f"{number}: {done}")
    for number in change.unchanged:
        print(f"{number}: {as_before}")


def cmd_add(args: argparse.Namespace) -> int:
    request = pb.AddDoNotCallRequest(
        numbers=args.numbers, reason=args.reason, default_country_code=args.country_code
    )
    result = call_dialer(
        args, lambda stub: stub.AddDoNotCall(request, metadata=dialer_metadata(args))
    )
    if isinstance(result, int):
        return result
    _print_change(result, "added", "already on the list")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    request = pb.RemoveDoNotCallRequest(
        numbers=args.numbers, reason=args.reason, default_country_code=args.country_code
    )
    result = call_dialer(
        args, lambda stub: stub.RemoveDoNotCall(request, metadata=dialer_metadata(args))
    )
    if isinstance(result, int):
        return result
    _print_change(result, "removed", "was not on the list")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def entries(stub: pb_grpc.CampaignsStub) -> list[pb.DoNotCallEntry]:
        stream = stub.ListDoNotCall(pb.ListDoNotCallRequest(), metadata=dialer_metadata(args))
        return [entry async for entry in stream]

    result = call_dialer(args, entries)
    if isinstance(result, int):
        return result
    for entry in result:
        reason = f"\t{entry.reason}" if entry.reason else ""
        print(f"{entry.number}\t{entry.added_at}\t{entry.source}{reason}")
    count = f"{len(result)} number" + ("" if len(result) == 1 else "s")
    print(f"{count} on the do-not-call list of {args.tenant}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"plateau: no file {path}", file=sys.stderr)
        return 2
    header = pb.DoNotCallImportHeader(
        filename=path.name, sha256=file_digest(path), reason=args.reason, format=file_format(args)
    )

    async def parts() -> AsyncIterator[pb.ImportDoNotCallRequest]:
        yield pb.ImportDoNotCallRequest(header=header)
        for chunk in file_chunks(path):
            yield pb.ImportDoNotCallRequest(chunk=chunk)

    result = call_dialer(
        args, lambda stub: stub.ImportDoNotCall(parts(), metadata=dialer_metadata(args))
    )
    if isinstance(result, int):
        return result
    separator = {"\t": "tab"}.get(result.delimiter, result.delimiter)
    print(
        f"{path.name}: {result.numbers_added} numbers added, "
        f"{result.numbers_already_listed} already on the list\n"
        f"  read as {result.encoding}, separator {separator!r}, sha256 {result.sha256}\n"
        f"  {result.rows_total} rows: {result.rows_rejected} rejected, "
        f"{result.rows_duplicate} duplicates"
    )
    for problem in result.problems:
        column = f" [{problem.column}]" if problem.column else ""
        print(f"  line {problem.line}{column}: {problem.code} — {problem.message}")
    if result.problems_truncated:
        print("  … more problems than listed")
    return 0
