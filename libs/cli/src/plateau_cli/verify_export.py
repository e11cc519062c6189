"""``plateau verify-export FILE``: check an export's Ed25519 signature and show its provenance.

The public key comes from ``--public-key`` (base64 of the 32 raw bytes, PEM, or a file
holding either), from ``--url`` (the gateway's ``GET /api/v1/signing-key``), or else from the
embedded default's own key in PLATEAU_HOME.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from plateau_runtime.errors import PlateauError

EXIT_OK = 0
EXIT_MISMATCH = 1

#: The embedded default's key file in PLATEAU_HOME (the access gateway writes it at first start).
KEY_FILE = "export-signing-key.pem"


def _gateway(module: str) -> Any:
    # The CLI ships with the services; it imports the gateway's pure verification code
    # rather than keeping a second copy of the file formats.
    return importlib.import_module(f"plateau_access_gateway.{module}")


def _public_key(args: argparse.Namespace, home: Path) -> Any:
    signing = _gateway("domain.signing")
    if args.public_key:
        candidate = Path(args.public_key)
        text = candidate.read_text() if candidate.is_file() else args.public_key
        return signing.public_key_from_text(text)
    if args.url:
        try:
            with urllib.request.urlopen(args.url, timeout=10) as response:  # noqa: S310
                answer = json.load(response)
        except (OSError, ValueError) as exc:
            raise PlateauError(
                f"cannot read the signing key from {args.url}: {exc}",
                "give the gateway's /api/v1/signing-key URL, or --public-key",
            ) from None
        return signing.public_key_from_text(str(answer.get("public_key", "")))
    key_file = home / KEY_FILE
    if not key_file.is_file():
        raise PlateauError(
            f"no public key given and no embedded key in {key_file}",
            "pass --public-key KEY or --url https://GATEWAY/api/v1/signing-key",
        )
    keys = _gateway("adapters.signing_keys")
    return keys.private_key_from_text(key_file.read_text()).public_key()


def run(args: argparse.Namespace, home: Path) -> int:
    """Verify ``args.file``; print what was verified, or what does not match (exit 1)."""
    signing = _gateway("domain.signing")
    files = _gateway("adapters.export_files")
    path: Path = args.file
    if not path.is_file():
        raise PlateauError(f"no file {path}", "give the path of a downloaded export")
    try:
        key = _public_key(args, home)
        verified = files.verify_export(path, key)
    except signing.VerificationError as exc:
        print(f"NOT VERIFIED {path}: {exc}", file=sys.stderr)
        return EXIT_MISMATCH
    provenance = verified.provenance
    print(
        f"verified {path}: {verified.file_format}, {verified.rows} rows, "
        f"signed with key {verified.key_id}"
    )
    print(f"  export {provenance.get('export')} of tenant {provenance.get('tenant')}")
    print(f"  filters {json.dumps(provenance.get('filters', {}), sort_keys=True)}")
    for source in provenance.get("computed_up_to", []):
        print(
            f"  computed up to {source['source']} position {source['position']} "
            f"chain head {source['chain_head']}"
        )
    return EXIT_OK


def add_parser(commands: Any, handler: Any) -> None:
    """Register ``verify-export`` on the CLI's sub-command parsers."""
    parser = commands.add_parser(
        "verify-export",
        help="check an export's signature and show what it was computed from",
        description="Check the Ed25519 signature of a CSV or XLSX export of the access "
        "gateway, then print its rows and provenance (event positions and chain heads). "
        "Exit 0 when it verifies, 1 naming what does not match (a changed byte, another "
        "key). Without --public-key or --url, uses the embedded default's key.",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the downloaded export")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--public-key",
        metavar="K",
        help="the public key: base64 of its 32 raw bytes, PEM, or a file holding either",
    )
    source.add_argument(
        "--url", metavar="URL", help="the gateway's signing-key URL (…/api/v1/signing-key)"
    )
    parser.set_defaults(handler=handler)
