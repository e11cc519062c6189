"""Reading ugly, real-world customer files: what becomes a contact, what is refused, and why."""

from __future__ import annotations

import hashlib
import io

import openpyxl
import pytest

from plateau_dialer.domain.contacts_file import (
    Accepted,
    ContactFile,
    ContactFileRefused,
    ContactReader,
    ContactRules,
    FileHints,
    Limits,
    RejectReason,
    RowOutcome,
    read_contact_file,
)

pytestmark = pytest.mark.unit

RULES = ContactRules()


def read(
    data: bytes, rules: ContactRules = RULES, columns: dict[str, str] | None = None
) -> ContactFile:
    return read_contact_file(io.BytesIO(data), rules, FileHints(columns=columns or {}))


def test_an_excel_export_in_french_reads_as_cp1252_with_semicolons() -> None:
    text = (
        "Référence;Nom;Téléphone;Ville\r\n"
        "C-1;Élodie Mâbiala;06 612 34 56;Brazzaville\r\n"
        "C-2;Noël Ngoma;+242 05 512 34 56;Pointe-Noire\r\n"
        "C-3;Gaëlle;00242044444444;Dolisie\r\n"
    )
    result = read(text.encode("cp1252"))
    assert (result.summary.format, result.summary.encoding, result.summary.delimiter) == (
        "csv",
        "cp1252",
        ";",
    )
    assert [c.number for c in result.contacts] == [
        "+242066123456",
        "+242055123456",
        "+242044444444",
    ]
    first = result.contacts[0]
    assert (first.name, first.reference, first.line) == ("Élodie Mâbiala", "C-1", 2)
    assert first.attributes == {"Ville": "Brazzaville"}
    assert result.reports == []
    assert result.summary.accepted == 3 and result.summary.rows_total == 3


def test_utf8_with_a_byte_order_mark_and_commas() -> None:
    data = "\ufeffphone,name\n066123456,Ange\n".encode()
    result = read(data)
    assert result.summary.encoding == "utf-8 (BOM)"
    assert result.summary.delimiter == ","
    # The BOM is not part of the first header name, so "phone" is found.
    assert result.summary.mapping.header[0] == "phone"
    assert [c.number for c in result.contacts] == ["+242066123456"]


def test_tab_separated_and_blank_lines_are_skipped_not_reported() -> None:
    data = b"msisdn\tname\n\n066123456\tA\n   \n\t\n055123456\tB\n"
    result = read(data)
    assert result.summary.delimiter == "\t"
    assert [c.number for c in result.contacts] == ["+242066123456", "+242055123456"]
    assert result.summary.blank_lines == 3
    assert result.reports == []


def test_duplicates_written_differently_are_merged_into_the_first_row() -> None:
    data = b"phone;name;email\n06 612 34 56;;a@example.org\n+242066123456;Ange;\n"
    result = read(data)
    [contact] = result.contacts
    assert (contact.line, contact.name, contact.attributes) == (
        2,
        "Ange",
        {"email": "a@example.org"},
    )
    [report] = result.reports
    assert (report.outcome, report.line, report.duplicate_of) == (RowOutcome.DUPLICATE, 3, 2)
    assert result.summary.duplicates == 1 and result.summary.accepted == 1


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("", RejectReason.NO_NUMBER),
        ("06 61 CALL ME", RejectReason.HAS_LETTERS),
        ("n/a", RejectReason.HAS_LETTERS),
        ("---", RejectReason.NOT_A_NUMBER),
        ("0661234", RejectReason.INVALID_NUMBER),
        ("+33 6 12 34 56 78", RejectReason.FOREIGN_NUMBER),
        ('=HYPERLINK("http://evil.example","06")', RejectReason.NOT_A_NUMBER),
    ],
)
def test_a_row_without_a_dialable_number_is_rejected_with_its_reason(
    cell: str, reason: RejectReason
) -> None:
    data = f'phone;name\n"{cell.replace(chr(34), chr(34) * 2)}";X\n066123456;Y\n'.encode()
    result = read(data)
    [report] = result.reports
    assert (report.outcome, report.reason, report.line, report.value) == (
        RowOutcome.REJECTED,
        reason,
        2,
        cell,
    )
    assert report.detail
    assert [c.number for c in result.contacts] == ["+242066123456"]
    assert result.summary.rejected_by_reason == {reason: 1}


def test_a_foreign_number_is_taken_when_the_campaign_allows_its_region() -> None:
    rules = ContactRules(allowed_regions=frozenset({"CG", "FR"}))
    result = read(b"phone\n+33 6 12 34 56 78\n", rules)
    assert [c.number for c in result.contacts] == ["+33612345678"]


def test_do_not_call_numbers_are_scrubbed() -> None:
    rules = ContactRules(do_not_call=frozenset({"+242055123456"}))
    result = read(b"phone\n066123456\n05 512 34 56\n", rules)
    assert [c.number for c in result.contacts] == ["+242066123456"]
    [report] = result.reports
    assert (report.reason, report.number) == (RejectReason.DO_NOT_CALL, "+242055123456")


def test_formula_cells_are_kept_as_inert_text_and_the_row_says_so() -> None:
    data = b"phone;name;note\n066123456;=cmd|' /C calc'!A0;@SUM(1+1)\n055123456;-2+3;ok\n"
    result = read(data)
    first, second = result.contacts
    assert first.name == "'=cmd|' /C calc'!A0"
    assert first.attributes == {"note": "'@SUM(1+1)"}
    assert second.name == "'-2+3"
    assert [r.outcome for r in result.reports] == [RowOutcome.ACCEPTED, RowOutcome.ACCEPTED]
    assert result.reports[0].warnings == (
        "name: formula-like cell kept as text",
        "note: formula-like cell kept as text",
    )


def test_a_mapping_names_the_columns_of_an_unusual_header() -> None:
    data = "Abonné;N° portable;Code\nAnge;066123456;K9\n".encode()
    result = read(data, columns={"phone": "N° portable", "name": "abonne", "reference": "3"})
    [contact] = result.contacts
    assert (contact.number, contact.name, contact.reference) == ("+242066123456", "Ange", "K9")


def test_an_unnamed_phone_column_is_found_by_its_values() -> None:
    data = "Client;Coordonnées;Ville\nAnge;06 612 34 56;Bzv\nBruno;05 512 34 56;PNR\n"
    result = read(data.encode())
    assert result.summary.mapping.phone == 1
    assert [c.number for c in result.contacts] == ["+242066123456", "+242055123456"]


def test_hints_override_what_would_be_sniffed() -> None:
    data = "phone,name\n066123456,Ren\xe9e\n".encode("latin-1")
    hints = FileHints(delimiter=",", encoding="latin-1", has_header=True)
    result = read_contact_file(io.BytesIO(data), RULES, hints)
    assert (result.summary.encoding, result.summary.delimiter) == ("latin-1", ",")
    assert result.contacts[0].name == "Renée"
    with pytest.raises(ContactFileRefused, match="separator"):
        read_contact_file(io.BytesIO(data), RULES, FileHints(delimiter="|"))
    with pytest.raises(ContactFileRefused, match="unknown encoding"):
        read_contact_file(io.BytesIO(data), RULES, FileHints(encoding="klingon"))


def test_a_file_without_header_is_read_from_its_first_row() -> None:
    result = read(b"066123456;Ange\n055123456;Bruno\n")
    assert not result.summary.mapping.has_header
    assert [(c.number, c.line) for c in result.contacts] == [
        ("+242066123456", 1),
        ("+242055123456", 2),
    ]
    assert result.contacts[0].attributes == {"column_2": "Ange"}


@pytest.mark.parametrize(
    ("data", "mapping", "says"),
    [
        (b"", None, "no rows"),
        (b"\n\n  \n", None, "no rows"),
        (b"\x00\x01\x02binary", None, "not a text file"),
        (b"nom;ville\nAnge;Brazzaville\n", None, "no phone column"),
        (b"phone\n066123456\n", {"phone": "portable"}, "not in the header"),
        (b"phone;nom\n066123456;A\n", {"name": "3"}, "does not exist"),
        (b"phone\n066123456\n", {"mobile_number": "phone"}, "unknown column roles"),
        (b"PK\x03\x04 not really a zip", None, "not a readable XLSX"),
    ],
)
def test_an_unreadable_file_is_refused_whole_with_a_reason(
    data: bytes, mapping: dict[str, str] | None, says: str
) -> None:
    with pytest.raises(ContactFileRefused, match=says):
        read(data, columns=mapping)


def test_a_file_that_changes_encoding_half_way_is_refused_whole() -> None:
    # Valid UTF-8 for far more than the sniffed sample, then a cp1252 'é'.
    body = "".join(f"0661{n:05d};Ange\n" for n in range(10_000)).encode()
    data = b"phone;name\n" + body + "066123456;Ren\xe9e\n".encode("latin-1")
    reader = ContactReader(io.BytesIO(data), RULES)
    with pytest.raises(ContactFileRefused, match="mixes encodings"):
        list(reader)


def test_limits_refuse_a_file_too_large_or_too_wide() -> None:
    rules = ContactRules(limits=Limits(max_rows=2, max_columns=3, max_cell_chars=50))
    with pytest.raises(ContactFileRefused, match="more than 2 rows"):
        read(b"phone\n066123456\n055123456\n044444444\n", rules)
    with pytest.raises(ContactFileRefused, match="more than 3"):
        read(b"phone;a;b;c\n066123456;1;2;3\n", rules)
    with pytest.raises(ContactFileRefused, match="more than 50"):
        read(b"phone;a\n066123456;" + b"x" * 60 + b"\n", rules)


def test_the_digest_is_the_files_and_the_same_bytes_give_the_same_digest() -> None:
    data = b"phone\n066123456\n"
    assert read(data).summary.sha256 == hashlib.sha256(data).hexdigest()
    assert read(data).summary.sha256 == read(data).summary.sha256
    assert read(data + b"\n").summary.sha256 != read(data).summary.sha256


def _workbook() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Téléphone", "Nom", "Montant"])
    sheet.append(["06 612 34 56", "Ange", 12.5])
    sheet.append([66123457, "Bruno", 3])  # Excel made the number a number: the 0 is gone
    sheet.append([None, None, None])
    sheet.append(["055123456", '=HYPERLINK("http://evil.example")', 1])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_an_xlsx_workbook_reads_its_first_sheet() -> None:
    data = _workbook()
    result = read(data)
    assert result.summary.format == "xlsx"
    assert result.summary.sha256 == hashlib.sha256(data).hexdigest()
    assert [c.number for c in result.contacts] == [
        "+242066123456",
        "+242066123457",
        "+242055123456",
    ]
    assert result.contacts[0].attributes == {"Montant": "12.5"}
    assert result.contacts[2].name == '\'=HYPERLINK("http://evil.example")'
    repaired = next(r for r in result.reports if r.line == 3)
    assert repaired.warnings == ("leading zero restored: the cell was stored as a number",)
    assert result.summary.blank_lines == 1


HEADER = b"phone;name;ville\n"


def row_of(n: int) -> bytes:
    return f"06{6_000_000 + n:07d};Client {n};Brazzaville\n".encode()


class _GeneratedFile(io.RawIOBase):
    """A large CSV produced on demand, remembering how far the reader has pulled it."""

    def __init__(self, rows: int) -> None:
        self._rows = iter(range(rows))
        self._buffer = HEADER
        self.produced = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while len(self._buffer) < len(target):
            n = next(self._rows, None)
            if n is None:
                break
            self._buffer += row_of(n)
        data, self._buffer = self._buffer[: len(target)], self._buffer[len(target) :]
        target[: len(data)] = data
        self.produced += len(data)
        self.digest.update(data)
        return len(data)


def test_a_200000_row_file_is_streamed_never_far_ahead_of_the_row_being_read() -> None:
    source = _GeneratedFile(200_000)
    reader = ContactReader(io.BufferedReader(source, buffer_size=8192), RULES)
    consumed = len(HEADER)
    ahead = 0
    for n, row in enumerate(reader):
        assert isinstance(row, Accepted)
        assert row.contact.name == f"Client {n}"
        consumed += len(row_of(n))
        ahead = max(ahead, source.produced - consumed)
    assert reader.summary.accepted == 200_000
    assert reader.summary.sha256 == source.digest.hexdigest()
    assert consumed == source.produced  # ≈ 7 MB went through
    # Read ahead of the row being handed out: at most the sniffed sample, a decoding chunk
    # and the buffer — never the file.
    assert ahead < 400_000, ahead
