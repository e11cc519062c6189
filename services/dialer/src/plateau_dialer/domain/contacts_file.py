"""Reading a client's customer file: what may become dialable contacts, and why not the rest.

Clients hand over what their tools export: CSV from Excel (often `;`-separated and cp1252 or
Latin-1 in French-speaking offices), UTF-8 with or without a byte-order mark, tabs from
databases, or an XLSX workbook. Numbers are written the way people write them
(``06 612 34 56``, ``+242 06 612 34 56``, ``00242066123456``), sometimes with letters,
sometimes as spreadsheet formulas.

The rules, in the order they apply to a row:

* a blank line is skipped (counted, not reported);
* the phone cell must hold a number: empty, letters or anything ``phonenumbers`` cannot
  read is rejected and says so; numbers are normalised to E.164 with the default region
  (``CG``: Congo-Brazzaville) and must be valid for their region;
* a number outside the campaign's allowed regions is rejected (a foreign number);
* a number on the do-not-call list is rejected (scrubbed);
* a number already accepted earlier in the file is merged into the first row that had it
  (its empty attributes are filled from the later row) and reported as a duplicate;
* any other cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab,
  carriage return first) is kept as text, neutralised with a leading apostrophe, and the
  row carries a warning — the contact stays, the formula can never run in an export.

A file that cannot be read as a whole is refused with :class:`ContactFileRefused` and a
reason a person can act on (not a CSV or XLSX file, mixed encodings, no phone column, a
mapping naming a missing column, too many rows); the caller then keeps nothing of it.

The reader streams: it never holds the file, only the numbers seen so far (for duplicates),
so a 200,000-row file is read in bounded memory. It is pure: bytes in, rows out; storing
contacts and publishing the allow-list belong to the application layer.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import unicodedata
import zipfile
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import BinaryIO, Literal

import phonenumbers

#: Header names (normalised: case, accents, spaces and punctuation removed) understood as
#: the phone column, the customer's name and the client's own reference.
PHONE_HEADERS = frozenset(
    {
        "phone",
        "phonenumber",
        "telephone",
        "tel",
        "numtel",
        "msisdn",
        "mobile",
        "portable",
        "cellphone",
        "gsm",
        "numero",
        "number",
        "numerodetelephone",
        "contact",
    }
)
NAME_HEADERS = frozenset({"name", "nom", "fullname", "nomcomplet", "client", "customer"})
REFERENCE_HEADERS = frozenset(
    {"id", "ref", "reference", "customerid", "clientid", "externalid", "idclient", "account"}
)

#: First characters that make a spreadsheet evaluate a cell (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_SAMPLE_BYTES = 64 * 1024
_CHUNK_BYTES = 256 * 1024
_DELIMITERS = (";", ",", "\t")

Record = tuple[int, list[str], list[bool]]  # line, cells, which cells were numbers


class ContactFileRefused(ValueError):
    """The whole file is refused; nothing of it may be imported."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RowOutcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class RejectReason(StrEnum):
    NO_NUMBER = "no_number"
    HAS_LETTERS = "has_letters"
    NOT_A_NUMBER = "not_a_number"
    INVALID_NUMBER = "invalid_number"
    FOREIGN_NUMBER = "foreign_number"
    DO_NOT_CALL = "do_not_call"


@dataclass(frozen=True)
class Limits:
    """What a file may hold at most; beyond that it is refused whole."""

    max_rows: int = 1_000_000
    max_columns: int = 200
    max_cell_chars: int = 2_000


@dataclass(frozen=True)
class ContactRules:
    """How numbers are read and which ones a campaign may take."""

    default_region: str = "CG"
    #: Regions whose numbers may be dialled; a number of any other region is foreign.
    allowed_regions: frozenset[str] = frozenset({"CG"})
    do_not_call: Container[str] = frozenset()
    limits: Limits = field(default_factory=Limits)


_ROLES = ("phone", "name", "reference")


@dataclass(frozen=True)
class FileHints:
    """What the uploader says about the file; anything left empty is detected."""

    delimiter: str = ""  # ",", ";" or "\t"
    encoding: str = ""  # "utf-8", "latin-1", "cp1252"...
    has_header: bool | None = None
    #: Columns by role (phone, name, reference): a header name or a 1-based index.
    columns: Mapping[str, str] = field(default_factory=dict)

    def checked(self) -> FileHints:
        """The hints, or ``ContactFileRefused`` naming the one that cannot be used."""
        if self.delimiter and self.delimiter not in _DELIMITERS:
            raise ContactFileRefused(
                f"separator {self.delimiter!r} not supported: use ',', ';' or a tab"
            )
        if self.encoding:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ContactFileRefused(f"unknown encoding {self.encoding!r}") from None
        unknown = set(self.columns) - set(_ROLES)
        if unknown:
            raise ContactFileRefused(
                f"unknown column roles {sorted(unknown)}: use phone, name and reference"
            )
        return self


@dataclass(frozen=True)
class ColumnMapping:
    """Which column holds what (0-based indexes into a row), and the header as read."""

    header: tuple[str, ...]
    phone: int
    name: int | None = None
    reference: int | None = None
    has_header: bool = True

    def attribute_names(self) -> list[tuple[int, str]]:
        taken = {self.phone, self.name, self.reference}
        return [(i, h) for i, h in enumerate(self.header) if i not in taken and h]


@dataclass(frozen=True)
class Contact:
    """A number that may be dialled, with what the client told about its customer."""

    number: str  # E.164
    line: int
    name: str | None = None
    reference: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def merged_with(self, later: Contact) -> Contact:
        """This contact with its empty fields filled from a later row of the same number."""
        attributes = dict(later.attributes)
        attributes.update({k: v for k, v in self.attributes.items() if v})
        return replace(
            self,
            name=self.name or later.name,
            reference=self.reference or later.reference,
            attributes=attributes,
        )


@dataclass(frozen=True)
class RowReport:
    """What happened to one row that was not simply accepted (or carried a warning)."""

    line: int
    outcome: RowOutcome
    value: str  # the phone cell as written
    number: str | None = None  # E.164 when it was read
    reason: RejectReason | None = None
    detail: str = ""
    duplicate_of: int | None = None  # the line of the first row with that number
    warnings: tuple[str, ...] = ()


@dataclass
class FileSummary:
    """The file as a whole, complete once every row has been read."""

    format: Literal["csv", "xlsx"]
    encoding: str
    delimiter: str
    mapping: ColumnMapping
    sha256: str = ""
    rows_total: int = 0
    blank_lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: dict[RejectReason, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    """A row became a contact (``report`` set when it carries warnings)."""

    contact: Contact
    report: RowReport | None = None


@dataclass(frozen=True)
class Merged:
    """A row repeated an accepted number; ``contact`` is the later row, to merge."""

    contact: Contact
    report: RowReport


@dataclass(frozen=True)
class Rejected:
    report: RowReport


ReadRow = Accepted | Merged | Rejected


@dataclass
class ContactFile:
    """The result of reading a whole file: contacts (duplicates merged) and the report."""

    summary: FileSummary
    contacts: list[Contact]
    reports: list[RowReport]


def read_contact_file(
    source: BinaryIO, rules: ContactRules, hints: FileHints | None = None
) -> ContactFile:
    """Read a whole file into contacts and a report (convenience over :class:`ContactReader`)."""
    reader = ContactReader(source, rules, hints)
    by_number: dict[str, Contact] = {}
    reports: list[RowReport] = []
    for row in reader:
        match row:
            case Accepted(contact=contact, report=report):
                by_number[contact.number] = contact
                if report is not None:
                    reports.append(report)
            case Merged(contact=contact, report=report):
                by_number[contact.number] = by_number[contact.number].merged_with(contact)
                reports.append(report)
            case Rejected(report=report):
                reports.append(report)
    return ContactFile(reader.summary, list(by_number.values()), reports)


class ContactReader:
    """Rows of a customer file, one at a time; ``summary`` is complete after the last.

    ``hints.columns`` names the columns when the header does not say it plainly:
    ``{"phone": "N° portable", "name": "Abonné", "reference": "3"}``.
    """

    def __init__(
        self, source: BinaryIO, rules: ContactRules, hints: FileHints | None = None
    ) -> None:
        self._rules = rules
        self._hints = (hints or FileHints()).checked()
        self._digest = hashlib.sha256()
        self._source = _Hashing(source, self._digest)
        self._seen: dict[str, int] = {}
        self._records: Iterator[Record]
        head = self._source.peek(_SAMPLE_BYTES)
        if head.startswith(b"PK\x03\x04"):
            self._source.digest_whole()
            self._records = self._xlsx_records()
            self.summary = self._start("xlsx", "xlsx", "")
        else:
            encoding = self._hints.encoding or _sniff_encoding(head)
            lines = _decoded_lines(self._source, encoding)
            sample = _text_sample(head, encoding)
            delimiter = self._hints.delimiter or _sniff_delimiter(sample)
            self._records = self._csv_records(lines, delimiter)
            self.summary = self._start("csv", _encoding_name(encoding), delimiter)

    # -- reading ---------------------------------------------------------------------------

    def _start(self, fmt: Literal["csv", "xlsx"], encoding: str, delimiter: str) -> FileSummary:
        blank = 0
        for line, cells, numeric in self._records:
            if not any(c.strip() for c in cells):
                blank += 1
                continue
            # A few rows after the first tell which column holds numbers when the header
            # does not say; they are read again as data afterwards.
            ahead = self._lookahead(20)
            mapping = self._header(cells, [c for _, c, _ in ahead])
            summary = FileSummary(fmt, encoding, delimiter, mapping, blank_lines=blank)
            if not mapping.has_header:
                # The first row was already a customer: read it again as data.
                ahead.insert(0, (line, cells, numeric))
            self._records = _prepend(ahead, self._records)
            return summary
        raise ContactFileRefused("the file has no rows")

    def _lookahead(self, rows: int) -> list[Record]:
        ahead: list[Record] = []
        for record in self._records:
            ahead.append(record)
            if len(ahead) >= rows:
                break
        return ahead

    def __iter__(self) -> Iterator[ReadRow]:
        limits = self._rules.limits
        for line, cells, numeric in self._records:
            if not any(c.strip() for c in cells):
                self.summary.blank_lines += 1
                continue
            self.summary.rows_total += 1
            if self.summary.rows_total > limits.max_rows:
                raise ContactFileRefused(
                    f"more than {limits.max_rows} rows: split the file or raise the limit"
                )
            row = self._row(line, cells, numeric)
            self._count(row)
            yield row
        self.summary.sha256 = self._digest.hexdigest()

    def _count(self, row: ReadRow) -> None:
        summary = self.summary
        match row:
            case Accepted():
                summary.accepted += 1
            case Merged():
                summary.duplicates += 1
            case Rejected(report=report):
                summary.rejected += 1
                if report.reason is not None:
                    by = summary.rejected_by_reason
                    by[report.reason] = by.get(report.reason, 0) + 1

    def _csv_records(self, lines: Iterable[str], delimiter: str) -> Iterator[Record]:
        reader = csv.reader(lines, delimiter=delimiter or ",", quotechar='"', strict=False)
        try:
            for cells in reader:
                self._check_width(reader.line_num, cells)
                yield reader.line_num, cells, [False] * len(cells)
        except csv.Error as exc:
            # Typically an unbalanced quote that swallowed the rest of the file.
            raise ContactFileRefused(f"line {reader.line_num}: unreadable CSV ({exc})") from exc

    def _xlsx_records(self) -> Iterator[Record]:
        # openpyxl reads a workbook from a seekable file; an upload is spooled by the caller.
        import openpyxl  # a heavy import, only when a workbook comes

        try:
            book = openpyxl.load_workbook(self._source.raw, read_only=True, data_only=False)
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
            raise ContactFileRefused(f"not a readable XLSX workbook ({exc})") from exc
        try:
            sheet = book.worksheets[0] if book.worksheets else None
            if sheet is None:
                raise ContactFileRefused("the workbook has no sheet")
            for index, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                cells = [_cell_text(v) for v in values]
                while cells and not cells[-1]:
                    cells.pop()
                self._check_width(index, cells)
                yield index, cells, [isinstance(v, (int, float)) for v in values[: len(cells)]]
        finally:
            book.close()

    def _check_width(self, line: int, cells: list[str]) -> None:
        limits = self._rules.limits
        if len(cells) > limits.max_columns:
            raise ContactFileRefused(
                f"line {line}: {len(cells)} columns, more than {limits.max_columns}"
            )
        for cell in cells:
            if len(cell) > limits.max_cell_chars:
                raise ContactFileRefused(
                    f"line {line}: a cell of {len(cell)} characters, "
                    f"more than {limits.max_cell_chars}"
                )

    # -- the header ------------------------------------------------------------------------

    def _header(self, cells: list[str], following: list[list[str]]) -> ColumnMapping:
        hints = self._hints
        first = tuple(c.strip() for c in cells)
        numbers_first = [i for i, c in enumerate(first) if _looks_like_number(c, self._rules)]
        has_header = hints.has_header if hints.has_header is not None else not numbers_first
        # Without a header the first row is a customer; columns get positional names.
        header = first if has_header else tuple(f"column_{i + 1}" for i in range(len(first)))
        roles = {role: self._column(role, spec, header) for role, spec in hints.columns.items()}
        keys = [_header_key(h) for h in header]
        phone = roles.get("phone")
        if phone is None and has_header:
            phone = _first(keys, PHONE_HEADERS)
        if phone is None:
            phone = _numbers_column(([] if has_header else [list(first)]) + following, self._rules)
        if phone is None:
            raise ContactFileRefused(
                f"no phone column in the header {list(header)} and no column of phone "
                "numbers: name it phone, téléphone or msisdn, or say which column it is"
            )
        return ColumnMapping(
            header,
            phone,
            name=roles.get("name", _first(keys, NAME_HEADERS) if has_header else None),
            reference=roles.get(
                "reference", _first(keys, REFERENCE_HEADERS) if has_header else None
            ),
            has_header=has_header,
        )

    @staticmethod
    def _column(role: str, spec: str, header: tuple[str, ...]) -> int:
        """A column named by header or 1-based index."""
        if spec.strip().isdigit():
            index = int(spec) - 1
            if not 0 <= index < len(header):
                raise ContactFileRefused(
                    f"{role} column {spec} does not exist: the file has {len(header)} columns"
                )
            return index
        by_key = {_header_key(h): i for i, h in reversed(list(enumerate(header)))}
        index_by_name = by_key.get(_header_key(spec))
        if index_by_name is None:
            raise ContactFileRefused(f"{role} column {spec!r} is not in the header {list(header)}")
        return index_by_name

    # -- one row ---------------------------------------------------------------------------

    def _row(self, line: int, cells: list[str], numeric: list[bool]) -> ReadRow:
        mapping = self.summary.mapping
        value = _at(cells, mapping.phone).strip()
        warnings: list[str] = []
        number = _normalise(value, self._rules, numeric=_at_flag(numeric, mapping.phone))
        if isinstance(number, tuple):
            reason, detail = number
            return Rejected(RowReport(line, RowOutcome.REJECTED, value, None, reason, detail))
        if number.startswith("repaired:"):
            number = number.removeprefix("repaired:")
            warnings.append("leading zero restored: the cell was stored as a number")
        if number in self._rules.do_not_call:
            return Rejected(
                RowReport(
                    line,
                    RowOutcome.REJECTED,
                    value,
                    number,
                    RejectReason.DO_NOT_CALL,
                    "on the do-not-call list",
                )
            )
        contact = Contact(
            number,
            line,
            name=self._text(_at(cells, mapping.name), "name", warnings),
            reference=self._text(_at(cells, mapping.reference), "reference", warnings),
            attributes={
                name: text
                for i, name in mapping.attribute_names()
                if (text := self._text(_at(cells, i), name, warnings))
            },
        )
        first = self._seen.get(number)
        if first is not None:
            report = RowReport(
                line,
                RowOutcome.DUPLICATE,
                value,
                number,
                detail=f"same number as line {first}: merged into it",
                duplicate_of=first,
                warnings=tuple(warnings),
            )
            return Merged(contact, report)
        self._seen[number] = line
        warned = (
            RowReport(line, RowOutcome.ACCEPTED, value, number, warnings=tuple(warnings))
            if warnings
            else None
        )
        return Accepted(contact, warned)

    @staticmethod
    def _text(cell: str, name: str, warnings: list[str]) -> str | None:
        text = cell.strip()
        if not text:
            return None
        if cell.startswith(FORMULA_STARTS) or text.startswith(FORMULA_STARTS):
            warnings.append(f"{name}: formula-like cell kept as text")
            return "'" + text
        return text


# -- numbers -------------------------------------------------------------------------------


def _normalise(value: str, rules: ContactRules, *, numeric: bool) -> str | tuple[RejectReason, str]:
    """E.164 of a phone cell, or why it is not a dialable number for the campaign.

    A cell a spreadsheet stored as a number lost its leading zero (``66123456`` for
    ``066123456``): when only the zero makes it valid in the default region, it is restored
    and the row says so (prefix ``repaired:``).
    """
    unreadable = _unreadable(value)
    if unreadable is not None:
        return unreadable
    try:
        parsed = phonenumbers.parse(value, rules.default_region)
    except phonenumbers.NumberParseException:
        return RejectReason.NOT_A_NUMBER, "not a phone number"
    repaired = False
    if not phonenumbers.is_valid_number(parsed) and numeric and not value.startswith(("0", "+")):
        again = phonenumbers.parse("0" + value, rules.default_region)
        if phonenumbers.is_valid_number(again):
            parsed, repaired = again, True
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(parsed):
        return RejectReason.INVALID_NUMBER, f"{e164} is not a valid number"
    region = phonenumbers.region_code_for_number(parsed)
    if region not in rules.allowed_regions:
        allowed = ", ".join(sorted(rules.allowed_regions))
        return (
            RejectReason.FOREIGN_NUMBER,
            f"{e164} is a number of {region}; the campaign dials {allowed} only",
        )
    return f"repaired:{e164}" if repaired else e164


def normalise_number(value: str, rules: ContactRules) -> str | tuple[RejectReason, str]:
    """E.164 of a number typed by hand, or why it is not one: the rules of a file's phone
    cell (a number typed by hand never lost a leading zero to a spreadsheet)."""
    return _normalise(value.strip(), rules, numeric=False)


def _unreadable(value: str) -> tuple[RejectReason, str] | None:
    if not value:
        return RejectReason.NO_NUMBER, "the phone cell is empty"
    if value.startswith("="):
        return RejectReason.NOT_A_NUMBER, "a formula, not a phone number"
    if any(ch.isalpha() for ch in value):
        # phonenumbers would read letters as a keypad word (1-800-FLOWERS); a customer
        # file's number never has any.
        return RejectReason.HAS_LETTERS, "letters in the phone number"
    return None


def _looks_like_number(cell: str, rules: ContactRules) -> bool:
    return isinstance(_normalise(cell.strip(), rules, numeric=False), str)


# -- bytes to text -------------------------------------------------------------------------


class _Hashing:
    """A binary source that digests every byte read, with a look-ahead for sniffing."""

    def __init__(self, source: BinaryIO, digest: hashlib._Hash) -> None:
        self._source = source
        self._digest = digest
        self._ahead = b""

    def peek(self, size: int) -> bytes:
        while len(self._ahead) < size:
            more = self._source.read(size - len(self._ahead))
            if not more:
                break
            self._ahead += more
        return self._ahead[:size]

    def read(self, size: int = -1) -> bytes:
        if self._ahead:
            data = self._ahead if size < 0 else self._ahead[:size]
            self._ahead = self._ahead[len(data) :]
        else:
            data = self._source.read(size)
        self._digest.update(data)
        return data

    def digest_whole(self) -> None:
        """Digest the whole source (a workbook: openpyxl seeks around in it), then rewind."""
        if not self._source.seekable():
            raise ContactFileRefused("an XLSX workbook must be uploaded whole (seekable)")
        self._source.seek(0)
        self._ahead = b""
        while chunk := self._source.read(_CHUNK_BYTES):
            self._digest.update(chunk)
        self._source.seek(0)

    @property
    def raw(self) -> BinaryIO:
        return self._source


def _sniff_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in head:
        raise ContactFileRefused("not a text file (CSV) or an XLSX workbook")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        # Excel on Windows in French writes cp1252 (a superset of Latin-1's printable
        # characters); bytes cp1252 leaves undefined are read as Latin-1.
        return "cp1252"
    return "utf-8"


def _encoding_name(encoding: str) -> str:
    return {"utf-8-sig": "utf-8 (BOM)", "cp1252": "cp1252"}.get(encoding, encoding)


def _text_sample(head: bytes, encoding: str) -> str:
    return codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=False)


def _decoded_lines(source: _Hashing, encoding: str) -> Iterator[str]:
    """Lines of text (ends kept, as ``csv`` wants them) decoded chunk by chunk."""
    errors = "cp1252_latin1" if encoding == "cp1252" else "strict"
    decoder = codecs.getincrementaldecoder(encoding)(errors=errors)
    pending = ""
    read = 0
    while True:
        chunk = source.read(_CHUNK_BYTES)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise ContactFileRefused(
                f"byte {read + exc.start} is not {encoding}: the file mixes encodings; "
                "save it again as UTF-8 or as one Windows encoding"
            ) from exc
        read += len(chunk)
        pending += text
        lines = pending.splitlines(keepends=True)
        # A chunk may end inside a line: keep the partial line for the next chunk.
        partial = chunk and lines and not lines[-1].endswith(("\n", "\r"))
        pending = lines.pop() if partial else ""
        yield from lines
        if not chunk:
            if pending:
                yield pending
            return


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("cp1252_latin1", _latin1_fallback)


def _sniff_delimiter(sample: str) -> str:
    """The separator that splits the first lines into the same number (> 1) of cells."""
    lines = [line for line in sample.splitlines()[:50] if line.strip()]
    if lines and len(sample) >= _SAMPLE_BYTES // 2:
        lines = lines[:-1]  # the last line of a cut sample may be partial
    best, best_score = "", 0.0
    for delimiter in _DELIMITERS:
        try:
            widths = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        except csv.Error:
            continue
        if not widths or max(widths) < 2:
            continue
        common = max(set(widths), key=widths.count)
        if common < 2:
            continue
        # Consistency first (most lines share the width), then more columns.
        score = widths.count(common) / len(widths) + common / 1000
        if score > best_score:
            best, best_score = delimiter, score
    return best


# -- small helpers ---------------------------------------------------------------------------


def _header_key(header: str) -> str:
    plain = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.casefold() if ch.isalnum())


def _first(keys: list[str], wanted: frozenset[str]) -> int | None:
    return next((i for i, key in enumerate(keys) if key in wanted), None)


def _at(cells: list[str], index: int | None) -> str:
    return cells[index] if index is not None and index < len(cells) else ""


def _at_flag(flags: list[bool], index: int) -> bool:
    return flags[index] if index < len(flags) else False


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _prepend(first: list[Record], rest: Iterator[Record]) -> Iterator[Record]:
    yield from first
    yield from rest


def _numbers_column(rows: list[list[str]], rules: ContactRules) -> int | None:
    """The first column where most non-empty cells of ``rows`` are dialable numbers."""
    width = max((len(r) for r in rows), default=0)
    for index in range(width):
        cells = [r[index].strip() for r in rows if index < len(r) and r[index].strip()]
        if cells and sum(_looks_like_number(c, rules) for c in cells) * 2 > len(cells):
            return index
    return None
