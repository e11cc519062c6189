"""Signed XLSX files on disk, and the checks ``plateau verify-export`` runs on a file.

openpyxl's write-only mode spills rows to temporary files, so a large export never sits in
memory; the finished workbook is then streamed from its temporary file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from openpyxl import Workbook, load_workbook  # type: ignore[import-untyped, unused-ignore]
from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped, unused-ignore]

from plateau_access_gateway.domain.exports import XlsxDigest
from plateau_access_gateway.domain.signing import (
    CSV_PROVENANCE,
    CSV_SIGNATURE,
    DATA_SHEET,
    SIGNATURE_SHEET,
    Cell,
    ExportSigner,
    VerificationError,
    canonical_provenance,
    canonical_row,
    verify_statement,
)

__all__ = ["VerifiedExport", "XlsxExport", "verify_export"]


class XlsxExport:
    """A signed workbook written row by row into a temporary file."""

    def __init__(self, header: Sequence[str]) -> None:
        self._workbook = Workbook(write_only=True)
        self._data = self._workbook.create_sheet(DATA_SHEET)
        self._digest = XlsxDigest()
        self._data.append(list(header))
        self._digest.row(list(header), header=True)

    @property
    def rows(self) -> int:
        return self._digest.rows

    def row(self, cells: Sequence[Cell]) -> None:
        self._data.append([self._text_if_formula_like(c) for c in cells])
        self._digest.row(cells)

    def _text_if_formula_like(self, value: Cell) -> object:
        # openpyxl stores a string starting with "=" as a formula, which Excel would run
        # (formula injection): such a value is written as the text it is.
        if isinstance(value, str) and value.startswith("="):
            text = WriteOnlyCell(self._data, value=value)
            text.data_type = "s"
            return text
        return value

    def finish(self, provenance: Mapping[str, object], signer: ExportSigner) -> Path:
        """Sign, save into a temporary file (the caller deletes it) and return its path."""
        digest = self._digest.finish(provenance)
        sheet = self._workbook.create_sheet(SIGNATURE_SHEET)
        sheet.append(["format", "plateau-export/1 xlsx"])
        sheet.append(["provenance", json.dumps(provenance, sort_keys=True)])
        sheet.append(["key_id", signer.key_id])
        sheet.append(["signature", signer.sign("xlsx", digest)])
        handle = tempfile.NamedTemporaryFile(suffix=".xlsx", delete=False)  # noqa: SIM115
        handle.close()
        self._workbook.save(handle.name)
        return Path(handle.name)


@dataclass(frozen=True)
class VerifiedExport:
    """What a valid signature vouches for."""

    file_format: str
    rows: int
    key_id: str
    provenance: dict[str, Any]


def verify_export(path: Path, key: Ed25519PublicKey) -> VerifiedExport:
    """Check a CSV or XLSX export against ``key``; :class:`VerificationError` says what fails."""
    if zipfile.is_zipfile(path):
        return _verify_xlsx(path, key)
    return _verify_csv(path.read_bytes(), key)


def _verify_csv(content: bytes, key: Ed25519PublicKey) -> VerifiedExport:
    body, _, last = content.rstrip(b"\r\n").rpartition(b"\n")
    text = last.decode("utf-8", "replace").strip()
    if not text.startswith(CSV_SIGNATURE):
        raise VerificationError("the file has no signature line: it is not a signed export")
    try:
        signed_by, signature = text.removeprefix(CSV_SIGNATURE).split()
    except ValueError:
        raise VerificationError("the signature line is malformed") from None
    signed = body + b"\n"
    verify_statement(key, "csv", hashlib.sha256(signed).hexdigest(), signature, signed_by)
    text = signed.decode("utf-8-sig")
    table, _, last_line = text.rstrip("\r\n").rpartition("\n")
    if not last_line.startswith(CSV_PROVENANCE):
        raise VerificationError("the signed part has no provenance line")
    provenance = json.loads(last_line.removeprefix(CSV_PROVENANCE))
    header = table.split("\n", 1)[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    records = sum(1 for _ in csv.reader(io.StringIO(table + "\n"), delimiter=delimiter))
    return VerifiedExport("csv", max(records - 1, 0), signed_by, provenance)


def _verify_xlsx(path: Path, key: Ed25519PublicKey) -> VerifiedExport:
    try:
        workbook = load_workbook(path, read_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a damaged file
        raise VerificationError(f"the workbook cannot be read: {exc}") from None
    try:
        if DATA_SHEET not in workbook.sheetnames or SIGNATURE_SHEET not in workbook.sheetnames:
            raise VerificationError(
                f"the workbook lacks the {DATA_SHEET!r} or {SIGNATURE_SHEET!r} sheet"
            )
        fields = {
            str(row[0]): str(row[1])
            for row in workbook[SIGNATURE_SHEET].iter_rows(values_only=True)
            if row and row[0] is not None and len(row) > 1
        }
        missing = {"provenance", "key_id", "signature"} - fields.keys()
        if missing:
            raise VerificationError(f"the signature sheet lacks {', '.join(sorted(missing))}")
        provenance = json.loads(fields["provenance"])
        digest = hashlib.sha256()
        rows = -1  # the header is not a row
        for values in workbook[DATA_SHEET].iter_rows(values_only=True):
            digest.update(canonical_row([_read_cell(v) for v in values]))
            rows += 1
        digest.update(canonical_provenance(provenance).encode())
    finally:
        workbook.close()
    verify_statement(key, "xlsx", digest.hexdigest(), fields["signature"], fields["key_id"])
    return VerifiedExport("xlsx", max(rows, 0), fields["key_id"], provenance)


def _read_cell(value: object) -> Cell:
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)
