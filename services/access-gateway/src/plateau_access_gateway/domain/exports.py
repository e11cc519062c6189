"""Export files built row by row: the CSV encoder and the XLSX canonical digest.

Both keep only running digests, never the rows, so an export of any size streams in bounded
memory. The file layouts and what is signed are described in :mod:`.signing`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from plateau_access_gateway.domain.signing import (
    CSV_PROVENANCE,
    CSV_SIGNATURE,
    Cell,
    ExportSigner,
    canonical_provenance,
    canonical_row,
)

__all__ = ["CsvExport", "XlsxDigest", "cell", "inert"]

BOM = "\ufeff".encode()


def cell(value: object) -> Cell:
    """A value as an export cell: instants in ISO 8601 UTC, decimals as floats, lists joined."""
    if value is None or isinstance(value, str | int | float):
        return value  # bool is an int, and fine as one
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def inert(value: Cell) -> str | int | float:
    """A CSV cell a spreadsheet will not run as a formula (CSV injection): text that starts
    like one gets a leading apostrophe, which spreadsheets hide. Phone numbers (``+242…``)
    and negative numbers are left as they are."""
    if value is None:
        return ""
    if isinstance(value, str) and value:
        first, second = value[0], value[1:2]
        if first in "=@\t\r" or (first in "+-" and not (second.isdigit() or second == ".")):
            return "'" + value
    return value


class CsvExport:
    """A signed CSV file, produced as byte chunks: header, rows, provenance, signature.

    UTF-8 with a byte-order mark (so Excel reads accents right), ``,`` or ``;`` separated.
    """

    def __init__(self, header: Sequence[str], delimiter: str = ",") -> None:
        if delimiter not in (",", ";"):
            raise ValueError("the separator is ',' or ';'")
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, delimiter=delimiter, lineterminator="\r\n")
        self._signed = hashlib.sha256()  # the bytes the signature covers
        self._file = hashlib.sha256()  # every byte served
        self.rows = 0
        self._header = list(header)

    def _emit(self, data: bytes, *, signed: bool = True) -> bytes:
        if signed:
            self._signed.update(data)
        self._file.update(data)
        return data

    def _line(self, cells: Iterable[Cell]) -> bytes:
        self._writer.writerow([inert(c) for c in cells])
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()

    def start(self) -> bytes:
        return self._emit(BOM + self._line(self._header))

    def row(self, cells: Iterable[Cell]) -> bytes:
        self.rows += 1
        return self._emit(self._line(cells))

    def finish(self, provenance: Mapping[str, object], signer: ExportSigner) -> bytes:
        """The provenance line (signed) and the signature line that ends the file."""
        tail = self._emit(f"{CSV_PROVENANCE}{canonical_provenance(provenance)}\r\n".encode())
        signature = signer.sign("csv", self._signed.hexdigest())
        return tail + self._emit(
            f"{CSV_SIGNATURE}{signer.key_id} {signature}\r\n".encode(), signed=False
        )

    @property
    def sha256(self) -> str:
        """The digest of every byte produced so far (the whole file once finished)."""
        return self._file.hexdigest()


class XlsxDigest:
    """The canonical digest of an XLSX export's data sheet, fed row by row."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.rows = 0

    def row(self, cells: Sequence[Cell], *, header: bool = False) -> None:
        if not header:
            self.rows += 1
        self._digest.update(canonical_row(cells))

    def finish(self, provenance: Mapping[str, object]) -> str:
        self._digest.update(canonical_provenance(provenance).encode())
        return self._digest.hexdigest()
