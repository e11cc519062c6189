"""Signed export files without a database: the CSV layout, the XLSX canonical digest, keys
and pagination cursors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from openpyxl import load_workbook

from plateau_access_gateway.adapters.export_files import XlsxExport, verify_export
from plateau_access_gateway.adapters.signing_keys import load_or_create, signer_from_setting
from plateau_access_gateway.domain.exports import CsvExport, cell, inert
from plateau_access_gateway.domain.reports import (
    CursorError,
    Granularity,
    decode_cursor,
    encode_cursor,
    period_problem,
)
from plateau_access_gateway.domain.signing import (
    ExportSigner,
    VerificationError,
    public_key_from_text,
)

pytestmark = pytest.mark.unit

PROVENANCE = {"export": "t", "computed_up_to": [{"source": "acd", "position": 7}]}
ROWS = [
    ["c1", "Brazzaville é", 1200, 0.25, None],
    ["c2", 'a;b,c"d', 0, 1.0, "x"],
    ["c3", "", None, 2, ""],
    ["c4", '=HYPERLINK("http://x")', -5, -0.5, "+242066000009"],
    ["c5", "two\nlines", 1, 0.0, "x"],
]


def signer() -> ExportSigner:
    return ExportSigner(Ed25519PrivateKey.generate())


def write_csv(path: Path, key: ExportSigner, delimiter: str = ",") -> bytes:
    export = CsvExport(["id", "name", "ms", "rate", "note"], delimiter)
    content = export.start() + b"".join(export.row(r) for r in ROWS)
    content += export.finish(PROVENANCE, key)
    path.write_bytes(content)
    return content


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_a_csv_export_verifies_with_its_key_and_says_what_it_holds(
    tmp_path: Path, delimiter: str
) -> None:
    key = signer()
    content = write_csv(tmp_path / "e.csv", key, delimiter)
    assert content.startswith(b"\xef\xbb\xbfid" + delimiter.encode() + b"name")
    verified = verify_export(tmp_path / "e.csv", key.public_key)
    assert (verified.file_format, verified.rows, verified.key_id) == ("csv", 5, key.key_id)
    assert verified.provenance == PROVENANCE


def test_every_changed_byte_of_a_csv_export_is_detected(tmp_path: Path) -> None:
    key = signer()
    content = write_csv(tmp_path / "e.csv", key)
    signature_line = content.rindex(b"#signature")
    for offset in range(0, signature_line, 7):
        changed = bytearray(content)
        changed[offset] ^= 0x01
        (tmp_path / "x.csv").write_bytes(bytes(changed))
        with pytest.raises(VerificationError):
            verify_export(tmp_path / "x.csv", key.public_key)


def test_another_key_is_named_as_such(tmp_path: Path) -> None:
    write_csv(tmp_path / "e.csv", signer())
    with pytest.raises(VerificationError, match="not with the given key"):
        verify_export(tmp_path / "e.csv", signer().public_key)


def test_an_xlsx_export_verifies_and_a_changed_cell_does_not(tmp_path: Path) -> None:
    key = signer()
    book = XlsxExport(["id", "name", "ms", "rate", "note"])
    for row in ROWS:
        book.row(row)
    path = book.finish(PROVENANCE, key)
    try:
        verified = verify_export(path, key.public_key)
        assert (verified.file_format, verified.rows, verified.provenance) == ("xlsx", 5, PROVENANCE)
        workbook = load_workbook(path)
        workbook["data"]["C2"] = 1201
        workbook.save(tmp_path / "x.xlsx")
        with pytest.raises(VerificationError, match="changed after it was signed"):
            verify_export(tmp_path / "x.xlsx", key.public_key)
    finally:
        path.unlink()


def test_no_cell_of_an_export_runs_as_a_formula(tmp_path: Path) -> None:
    content = write_csv(tmp_path / "e.csv", signer()).decode("utf-8-sig")
    assert '"\'=HYPERLINK(""http://x"")"' in content  # quoted, with its apostrophe
    assert ",-5,-0.5,+242066000009\r\n" in content  # numbers and phone numbers untouched
    assert [inert(v) for v in ("@SUM(A1)", "-cmd", "+x", "\tx")] == [
        "'@SUM(A1)",
        "'-cmd",
        "'+x",
        "'\tx",
    ]
    book = XlsxExport(["formula"])
    book.row(["=1+2"])
    path = book.finish(PROVENANCE, signer())
    try:
        cell_ = load_workbook(path)["data"]["A2"]
        assert (cell_.value, cell_.data_type) == ("=1+2", "s")
    finally:
        path.unlink()


def test_cells_are_written_as_spreadsheets_read_them() -> None:
    at = datetime(2026, 5, 4, 8, 15, tzinfo=UTC)
    assert cell(at) == "2026-05-04T08:15:00+00:00"
    assert cell(Decimal("0.5")) == 0.5
    assert cell(["q1", "q2"]) == "q1 q2"
    assert cell(None) is None


def test_the_signing_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = load_or_create(tmp_path / "home" / "key.pem")
    again = load_or_create(tmp_path / "home" / "key.pem")
    assert first.key_id == again.key_id
    assert (tmp_path / "home" / "key.pem").stat().st_mode & 0o077 == 0
    raw = base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()
    assert signer_from_setting(raw, tmp_path).key_id != first.key_id
    assert public_key_from_text(first.public_key_base64) == first.public_key
    pem = first.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert public_key_from_text(pem.decode()) == first.public_key
    with pytest.raises(VerificationError):
        public_key_from_text("not a key")


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    at = datetime(2026, 5, 4, 8, 15, 3, 250000, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "c-1")) == (at, "c-1")
    for bad in ("", "nonsense", base64.urlsafe_b64encode(b'["2026-05-04", 3]').decode()):
        with pytest.raises(CursorError):
            decode_cursor(bad)


def test_report_periods_are_bounded() -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    assert period_problem(start, start.replace(day=2), Granularity.QUARTER_HOUR) is None
    assert period_problem(start, start, Granularity.DAY) == "to must be after from"
    problem = period_problem(start, start.replace(year=2027), Granularity.QUARTER_HOUR)
    assert problem is not None and "coarser granularity" in problem
    assert period_problem(start.replace(tzinfo=None), start, Granularity.DAY) is not None
