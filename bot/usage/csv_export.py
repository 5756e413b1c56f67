"""The Teams admin center's PSTN usage export, read as `UsageRow`s (DESIGN.md section 4).

The export is a zip holding one `PSTN.calls.<date>.csv` per day (or one such csv, unzipped): RFC 4180, a header
row, UTF-8 with or without a byte order mark, times in UTC ISO 8601. It is read as a stream, one record at a
time, in constant memory, whatever its size.

What is checked where:

* **The container and the headers** are checked before the first row is returned (`read_export` raises
  `ExportError`): a path that is neither a `.csv` nor a `.zip`, a damaged zip, a zip without a csv, an empty
  file, a header without a required column (`REQUIRED`) or naming a known column twice. So a broken export is
  refused as a whole rather than half read.
* **A row** that cannot be read becomes a `BadRow` (where: "<file> line <n>", why: in words, with the offending
  value) and reading goes on with the next one.
* **A broken stream** discovered while reading (text that is not UTF-8, a field running past the csv module's
  size limit because of an unmatched quote, a zip member failing its CRC) raises `ExportError` mid-way: what
  was returned before it is sound, what follows cannot be trusted.

Columns are found by their header name (trimmed, case-insensitive), never by position; unknown columns are
ignored, since Microsoft adds columns over time. Records whose cells are all blank are skipped.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from bot.usage.rows import BadRow, UsageRow

__all__ = ["COLUMNS", "REQUIRED", "MEMBER_PATTERN", "ExportError", "read_export", "export_size", "parse_time"]

#: The export's columns, in the admin center's order (DESIGN.md section 4). Only their names matter here.
COLUMNS = ("UsageId", "Call ID", "Conference ID", "User Location", "AAD ObjectId", "UPN", "User Display Name",
           "Caller ID", "Call Type", "Number Type", "Domestic/International", "Destination Dialed",
           "Destination Number", "Start Time", "End Time", "Duration Seconds", "Connection Fee", "Charge",
           "Currency", "Capability")

#: Columns without which a file is refused. "Connection Fee" is optional (absent or empty counts as 0).
REQUIRED = ("UsageId", "Start Time", "Charge", "Currency", "Capability")

#: Zip members read, matched case-insensitively against the member's base name, in member-name order.
MEMBER_PATTERN = "pstn.calls*.csv"

#: `UsageRow.details` key <- column; a key is left out when its cell is empty.
_DETAILS = (("user_id", "AAD ObjectId"), ("user_name", "User Display Name"), ("upn", "UPN"),
            ("call_type", "Call Type"), ("destination", "Destination Dialed"), ("call_id", "Call ID"),
            ("caller", "Caller ID"), ("callee", "Destination Number"))

_BY_KEY = {name.casefold(): name for name in COLUMNS}
_SHOWN = 40              # characters of an offending value quoted in a reason
_HEADER_SHOWN = 300      # characters of "columns found: ..." in an ExportError
_READ_BUFFER = 64 * 1024
_ZERO = Decimal(0)

# A plain decimal: optional sign, digits, optional fraction. Bounded so that charge + connection fee is exact
# in Decimal's default 28-digit context.
_AMOUNT = re.compile(r"[+-]?[0-9]{1,15}(?:\.[0-9]{1,12})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DIGITS = re.compile(r"[0-9]{1,9}")
_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?"
                   r"(?:[Zz]|([+-])([0-9]{2}):?([0-9]{2}))?")


class ExportError(Exception):
    """The export as a whole cannot be read: not a csv or zip, damaged, empty, without a csv, a header missing
    a required column, or a stream that breaks while being read. The message names the file (and zip member)
    and says what is wrong, in words an admin can act on."""


# --- where the bytes come from ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Source:
    """One csv to read: the file itself (`member` None) or one member of the zip at `path`. `name` is what
    `BadRow.where` shows; `label` is what an `ExportError` shows; `size` is its (uncompressed) byte count."""

    path: Path
    member: zipfile.ZipInfo | None
    name: str
    label: str
    size: int


class _CountingReader(io.RawIOBase):
    """A raw byte stream over `inner` that counts the bytes read through it (for `progress`)."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return n

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def _sources(path: Path) -> list[_Source]:
    """The csv files `path` stands for, in reading order; `ExportError` when there is none to read."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return [_csv_source(path)]
    if suffix == ".zip":
        return _zip_sources(path)
    raise ExportError(f"{path.name} is neither a .csv file nor a .zip of PSTN.calls.<date>.csv files")


def _csv_source(path: Path) -> _Source:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ExportError(f"cannot read {path.name}: {error.strerror or error}") from None
    if size == 0:
        raise ExportError(f"{path.name} is empty")
    return _Source(path, None, path.name, path.name, size)


def _zip_sources(path: Path) -> list[_Source]:
    """The zip's `PSTN.calls*.csv` members in name order (case-insensitive), or its only csv member when none
    matches."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [info for info in archive.infolist() if not info.is_dir()]
    except zipfile.BadZipFile:
        raise ExportError(f"{path.name} is not a zip archive (or it is damaged)") from None
    except OSError as error:
        raise ExportError(f"cannot read {path.name}: {error.strerror or error}") from None
    csvs = [info for info in infos if _is_csv(info.filename)]
    chosen = sorted((info for info in csvs if _is_pstn_calls(info.filename)),
                    key=lambda info: (info.filename.casefold(), info.filename))
    if not chosen and len(csvs) == 1:
        chosen = csvs
    if not chosen:
        held = ", ".join(info.filename for info in infos[:10]) or "nothing"
        what = "no .csv file" if not csvs else f"no PSTN.calls*.csv file and {len(csvs)} other .csv files"
        raise ExportError(f"{path.name} holds {what} (it holds: {held})")
    return [_Source(path, info, info.filename, f"{info.filename} in {path.name}", info.file_size)
            for info in chosen]


def _is_csv(member: str) -> bool:
    """A csv member that is not macOS resource-fork clutter ("__MACOSX/...", "._name.csv")."""
    parts = PurePosixPath(member).parts
    return bool(parts) and parts[-1].lower().endswith(".csv") and not parts[-1].startswith("._") \
        and "__MACOSX" not in parts


def _is_pstn_calls(member: str) -> bool:
    return fnmatchcase(PurePosixPath(member).name.lower(), MEMBER_PATTERN)


@contextmanager
def _open_text(source: _Source) -> Iterator[tuple[io.TextIOWrapper, _CountingReader]]:
    """The source as text for `csv` (UTF-8, an optional BOM dropped, newlines untranslated), and the counter of
    the bytes read from it."""
    try:
        if source.member is None:
            inner: BinaryIO = open(source.path, "rb", buffering=0)
        else:
            archive = zipfile.ZipFile(source.path)
            try:
                inner = archive.open(source.member)
            finally:
                archive.close()  # the member stream keeps its own reference to the file
    except (RuntimeError, NotImplementedError) as error:  # encrypted member, unsupported compression
        raise ExportError(f"cannot read {source.label}: {error}") from None
    except (OSError, zipfile.BadZipFile) as error:
        raise ExportError(f"cannot read {source.label}: {error}") from None
    counter = _CountingReader(inner)
    text = io.TextIOWrapper(io.BufferedReader(counter, _READ_BUFFER), encoding="utf-8-sig", newline="")
    with text:
        yield text, counter


def _records(reader: Any, source: _Source) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each record; a stream that breaks while being read raises `ExportError`. The
    line number is `csv`'s: the last physical line of the record (the header is line 1)."""
    while True:
        done = reader.line_num  # lines read so far: the next record starts on the line after
        try:
            record = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise ExportError(f"{source.label} is not UTF-8 text: a byte after line {done} is not UTF-8 "
                              "(export it again, or save it as 'CSV UTF-8')") from None
        except csv.Error as error:  # e.g. an unmatched quote making a field run past csv's size limit
            raise ExportError(f"{source.label}: cannot read the record starting on line {done + 1}: {error} "
                              "(an unmatched quote?)") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # a damaged zip member
            raise ExportError(f"cannot read {source.label} (after line {done}): {error}") from None
        yield reader.line_num, record


# --- the header -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the known columns are: `index` maps a name of `COLUMNS` to its position in a record; `details`
    lists (`UsageRow.details` key, position) for the detail columns present; `width` is the number of header
    cells."""

    index: dict[str, int]
    details: tuple[tuple[str, int], ...]
    duration: int | None
    width: int
    usage_id: int
    start: int
    charge: int
    fee: int | None
    currency: int
    capability: int

    def cell(self, record: list[str], column: str) -> str:
        """The trimmed cell of `column` in `record`; "" when the header has no such column."""
        position = self.index.get(column)
        return record[position].strip() if position is not None else ""


def _layout(header: list[str] | None, source: _Source) -> _Layout:
    """The header's layout; `ExportError` for no header, a known column named twice, or a missing required
    column."""
    if header is None:
        raise ExportError(f"{source.label} has no header row")
    index: dict[str, int] = {}
    for position, cell in enumerate(header):
        name = _BY_KEY.get(cell.strip().casefold())
        if name is None:
            continue
        if name in index:
            raise ExportError(f"{source.label} has the column {name!r} twice")
        index[name] = position
    missing = [name for name in REQUIRED if name not in index]
    if missing:
        found = ", ".join(cell.strip() for cell in header)
        if len(found) > _HEADER_SHOWN:
            found = found[:_HEADER_SHOWN] + "..."
        names = ", ".join(repr(name) for name in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise ExportError(f"{source.label} has no {noun} {names} (columns found: {found})")
    details = tuple((key, index[column]) for key, column in _DETAILS if column in index)
    return _Layout(index, details, index.get("Duration Seconds"), len(header), usage_id=index["UsageId"],
                   start=index["Start Time"], charge=index["Charge"], fee=index.get("Connection Fee"),
                   currency=index["Currency"], capability=index["Capability"])


def _header(records: Iterator[tuple[int, list[str]]]) -> list[str] | None:
    """The first record that is not blank, or None when there is none."""
    for _line, record in records:
        if not _blank(record):
            return record
    return None


def _check_header(source: _Source) -> None:
    """Open `source` and check its header (see `_layout`); nothing is kept."""
    with _open_text(source) as (text, _counter):
        _layout(_header(_records(csv.reader(text), source)), source)


# --- one record -------------------------------------------------------------------------------------------------

class _CellError(Exception):
    """A cell that cannot be read; the message is the reason shown in `BadRow.reason`."""


def _show(value: str) -> str:
    """`value` quoted for a reason, cut to `_SHOWN` characters."""
    return repr(value[:_SHOWN]) + ("..." if len(value) > _SHOWN else "")


def _amount(text: str, column: str, *, optional: bool = False) -> Decimal:
    """A plain decimal ("0.0225", "-1", "12.50"): no exponent, no grouping, no currency, finite. Empty is 0
    when `optional`, else an error."""
    if not text:
        if optional:
            return _ZERO
        raise _CellError(f"{column} is empty")
    if not _AMOUNT.fullmatch(text):
        raise _CellError(f"{column} is not a plain decimal number: {_show(text)}")
    return Decimal(text)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime: "2026-11-01T10:00:00Z", with up to 9 fractional digits
    (truncated to microseconds), with an offset ("+00:00", "+0100", converted to UTC) or with none (UTC), and
    "T" or a space between date and time. Anything else raises `ValueError`."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(text)
    day, time, fraction, sign, off_h, off_m = match.groups()
    moment = datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=timezone.utc)
    if fraction:
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if offset >= timedelta(hours=24):
            raise ValueError(text)
        moment = moment - offset if sign == "+" else moment + offset
    return moment


def _time(text: str, column: str) -> datetime:
    if not text:
        raise _CellError(f"{column} is empty")
    try:
        return parse_time(text)
    except (ValueError, OverflowError):
        raise _CellError(f"{column} is not an ISO 8601 time: {_show(text)}") from None


def _currency(text: str, column: str) -> str:
    code = text.upper()
    if not code:
        raise _CellError(f"{column} is empty")
    if not _CURRENCY.fullmatch(code):
        raise _CellError(f"{column} is not a three-letter currency code: {_show(text)}")
    return code


def _required(text: str, column: str) -> str:
    if not text:
        raise _CellError(f"{column} is empty")
    return text


def _details(record: list[str], layout: _Layout) -> dict[str, Any]:
    """`UsageRow.details` from the record, leaving out empty cells (and a duration that is not a whole number
    of seconds)."""
    details: dict[str, Any] = {key: value for key, position in layout.details if (value := record[position].strip())}
    if layout.duration is not None:
        duration = record[layout.duration].strip()
        if _DIGITS.fullmatch(duration):
            details["duration_s"] = int(duration)
    return details


def _blank(record: list[str]) -> bool:
    """Every cell is empty or spaces (a blank line, or ",,,," from a spreadsheet)."""
    return not any(cell.strip() for cell in record)


def _misshapen(record: list[str], width: int) -> bool:
    """Fewer cells than the header, or more with something in the extra ones: a sign that a comma or a quote
    is out of place, so that the cells cannot be trusted to be under their headers."""
    return len(record) < width or (len(record) > width and not _blank(record[width:]))


#: What each required or money column must hold, in the order problems are reported.
_CHECKS: tuple[tuple[str, Callable[[str, str], Any]], ...] = (
    ("UsageId", _required), ("Start Time", _time), ("Charge", _amount),
    ("Connection Fee", lambda text, column: _amount(text, column, optional=True)),
    ("Currency", _currency), ("Capability", _required))


def _usage_row(record: list[str], layout: _Layout) -> UsageRow:
    """The record as a `UsageRow`; `_CellError` at the first cell that cannot be read."""
    fee = _amount(record[layout.fee].strip(), "Connection Fee", optional=True) if layout.fee is not None \
        else _ZERO
    return UsageRow(usage_id=_required(record[layout.usage_id].strip(), "UsageId"),
                    charge=_amount(record[layout.charge].strip(), "Charge") + fee,
                    currency=_currency(record[layout.currency].strip(), "Currency"),
                    occurred_at=_time(record[layout.start].strip(), "Start Time"),
                    capability=_required(record[layout.capability].strip(), "Capability"),
                    details=_details(record, layout))


def _problems(record: list[str], layout: _Layout) -> list[str]:
    """Every reason the record's cells cannot be read, in `_CHECKS` order."""
    problems = []
    for column, check in _CHECKS:
        try:
            check(layout.cell(record, column), column)
        except _CellError as error:
            problems.append(str(error))
    return problems


def _parse(record: list[str], layout: _Layout) -> UsageRow | str | None:
    """One record as a `UsageRow`, the reason it cannot be read (every problem found), or None for an
    all-blank record."""
    if len(record) != layout.width and _misshapen(record, layout.width):
        if _blank(record):
            return None
        return f"the row has {len(record)} fields but the header has {layout.width} (a comma or quote out of place?)"
    try:
        return _usage_row(record, layout)
    except _CellError:
        if _blank(record):
            return None
        return "; ".join(_problems(record, layout))


# --- the public functions ---------------------------------------------------------------------------------------

def export_size(path: Path) -> int:
    """The number of bytes `read_export(path)` reports through `progress` when read to the end: the file's
    size for a csv, the sum of the uncompressed sizes of the members it reads for a zip. `ExportError` as
    `read_export` for a path that is not an export."""
    return sum(source.size for source in _sources(Path(path)))


def read_export(path: Path, *, progress: Callable[[int], None] | None = None) -> Iterator[UsageRow | BadRow]:
    """The calls of the export at `path` (a `PSTN.calls.<date>.csv`, or a zip of them), one `UsageRow` or
    `BadRow` per record, files in member-name order and records in file order.

    The container and every file's header are checked at once (`ExportError`, see the module's docstring);
    the rows are then read lazily, one at a time. `progress(n)` is called with the number of bytes read since
    its last call, adding up to `export_size(path)` when the iterator is read to the end.
    """
    sources = _sources(Path(path))
    for source in sources:
        _check_header(source)
    return _read_all(sources, progress)


def _read_all(sources: list[_Source], progress: Callable[[int], None] | None) -> Iterator[UsageRow | BadRow]:
    for source in sources:
        yield from _read_one(source, progress)


def _read_one(source: _Source, progress: Callable[[int], None] | None) -> Iterator[UsageRow | BadRow]:
    """The rows of one csv; see `read_export`."""
    reported = 0
    with _open_text(source) as (text, counter):
        records = _records(csv.reader(text), source)
        layout = _layout(_header(records), source)
        for line, record in records:
            if progress is not None and counter.count != reported:
                progress(counter.count - reported)
                reported = counter.count
            item = _parse(record, layout)
            if isinstance(item, str):
                yield BadRow(f"{source.name} line {line}", item)
            elif item is not None:
                yield item
        if progress is not None and counter.count != reported:
            progress(counter.count - reported)
