"""The admin center's PSTN usage export (`bot.usage.csv_export`) and the invented one (`bot.usage.demo`).

Files are written byte for byte here (not with the module's own column list), so a change in what the reader
accepts shows up as a failing test.
"""

from __future__ import annotations

import csv
import io
import random
import re
import tracemalloc
import zipfile
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from bot.usage.csv_export import ExportError, export_size, read_export
from bot.usage.demo import DemoSummary, write_demo_csv
from bot.usage.rows import BadRow, UsageRow

# The layout of DESIGN.md section 4, written out rather than imported.
HEADER = ["UsageId", "Call ID", "Conference ID", "User Location", "AAD ObjectId", "UPN", "User Display Name",
          "Caller ID", "Call Type", "Number Type", "Domestic/International", "Destination Dialed",
          "Destination Number", "Start Time", "End Time", "Duration Seconds", "Connection Fee", "Charge",
          "Currency", "Capability"]

RECORDS = [
    {"UsageId": "7d1f7c5e-0001-4c1e-9a0b-000000000001", "Call ID": "call-0001", "Conference ID": "",
     "User Location": "US", "AAD ObjectId": "0b3c7a52-1111-4d2e-8f00-0000000000a1",
     "UPN": "ada.fenwick@contoso.example", "User Display Name": "Ada Fenwick", "Caller ID": "+14255550101",
     "Call Type": "user_out_international", "Number Type": "user", "Domestic/International": "International",
     "Destination Dialed": "United Kingdom", "Destination Number": "+447700900123",
     "Start Time": "2026-11-01T10:00:00Z", "End Time": "2026-11-01T10:05:00Z", "Duration Seconds": "300",
     "Connection Fee": "0.0500", "Charge": "0.1125", "Currency": "usd", "Capability": "MCOPSTNPP"},
    {"UsageId": "7d1f7c5e-0002-4c1e-9a0b-000000000002", "Call ID": "call-0002", "Conference ID": "",
     "User Location": "US", "AAD ObjectId": "0b3c7a52-2222-4d2e-8f00-0000000000a2",
     "UPN": "kwame.ashdown@contoso.example", "User Display Name": "Kwame Ashdown", "Caller ID": "",
     "Call Type": "user_out_domestic", "Number Type": "user", "Domestic/International": "Domestic",
     "Destination Dialed": "", "Destination Number": "+12025550142",
     "Start Time": "2026-11-01T11:30:15.1234567Z", "End Time": "2026-11-01T11:31:00Z", "Duration Seconds": "",
     "Connection Fee": "", "Charge": "0.0120", "Currency": "USD", "Capability": "MCOPSTN1"},
    {"UsageId": " 7d1f7c5e-0003-4c1e-9a0b-000000000003 ", "Call ID": "", "Conference ID": "",
     "User Location": "GB", "AAD ObjectId": "", "UPN": "", "User Display Name": "", "Caller ID": "+447700900456",
     "Call Type": "user_in", "Number Type": "user", "Domestic/International": "Domestic",
     "Destination Dialed": "Inbound", "Destination Number": "+14255550101",
     "Start Time": "2026-11-01 23:59:59", "End Time": "2026-11-02 00:00:44", "Duration Seconds": "45.5",
     "Connection Fee": "0", "Charge": "0", "Currency": " USD ", "Capability": " MCOPSTNPP "},
]

UTC = timezone.utc

EXPECTED = [
    UsageRow(usage_id="7d1f7c5e-0001-4c1e-9a0b-000000000001", charge=Decimal("0.1625"), currency="USD",
             occurred_at=datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC), capability="MCOPSTNPP",
             details={"user_id": "0b3c7a52-1111-4d2e-8f00-0000000000a1", "user_name": "Ada Fenwick",
                      "upn": "ada.fenwick@contoso.example", "call_type": "user_out_international",
                      "destination": "United Kingdom", "duration_s": 300, "call_id": "call-0001",
                      "caller": "+14255550101", "callee": "+447700900123"}),
    UsageRow(usage_id="7d1f7c5e-0002-4c1e-9a0b-000000000002", charge=Decimal("0.0120"), currency="USD",
             occurred_at=datetime(2026, 11, 1, 11, 30, 15, 123456, tzinfo=UTC), capability="MCOPSTN1",
             details={"user_id": "0b3c7a52-2222-4d2e-8f00-0000000000a2", "user_name": "Kwame Ashdown",
                      "upn": "kwame.ashdown@contoso.example", "call_type": "user_out_domestic",
                      "call_id": "call-0002", "callee": "+12025550142"}),
    UsageRow(usage_id="7d1f7c5e-0003-4c1e-9a0b-000000000003", charge=Decimal("0"), currency="USD",
             occurred_at=datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC), capability="MCOPSTNPP",
             details={"call_type": "user_in", "destination": "Inbound", "caller": "+447700900456",
                      "callee": "+14255550101"}),
]


def csv_text(header: list[str], rows: list[list[str]], *, newline: str = "\r\n") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=newline).writerows([header, *rows])
    return out.getvalue()


def cells(record: dict[str, str], header: list[str]) -> list[str]:
    return [record.get(name.strip(), "") for name in header]


def write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def design_csv(path: Path, records: list[dict[str, str]] = RECORDS) -> Path:
    return write(path, csv_text(HEADER, [cells(r, HEADER) for r in records]))


def assert_same_rows(actual: list[UsageRow | BadRow], expected: list[UsageRow]) -> None:
    assert actual == expected
    for got, want in zip(actual, expected):
        assert isinstance(got, UsageRow)
        assert str(got.charge) == str(want.charge)  # exactly as written, not just numerically equal
        assert got.occurred_at.utcoffset().total_seconds() == 0
        assert dict(got.details) == dict(want.details)


# --- the layout ---------------------------------------------------------------------------------------------------

def test_the_design_layout_gives_exact_rows(tmp_path):
    rows = list(read_export(design_csv(tmp_path / "PSTN.calls.2026-11-01.csv")))
    assert_same_rows(rows, EXPECTED)
    assert isinstance(rows[0].details["duration_s"], int)


def test_columns_are_found_by_name_in_any_order_and_unknown_ones_ignored(tmp_path):
    header = [*HEADER, "Tenant Country"]
    random.Random(3).shuffle(header)
    assert header[:len(HEADER)] != HEADER
    records = [{**r, "Tenant Country": "DK"} for r in RECORDS]
    rows = [cells(r, header) for r in records]
    # Header names are trimmed and matched case-insensitively.
    mangled = [f"  {name.upper()} " if name in ("Charge", "UsageId", "Connection Fee") else name for name in header]
    path = write(tmp_path / "shuffled.csv", csv_text(mangled, rows))
    assert_same_rows(list(read_export(path)), EXPECTED)


def test_connection_fee_column_is_optional(tmp_path):
    header = [name for name in HEADER if name != "Connection Fee"]
    path = write(tmp_path / "nofee.csv", csv_text(header, [cells(RECORDS[0], header)]))
    [row] = read_export(path)
    assert row.charge == Decimal("0.1125") and str(row.charge) == "0.1125"


def test_bom_crlf_and_a_quoted_field_with_a_comma_and_a_newline(tmp_path):
    first = {**RECORDS[0], "User Display Name": "Holmgaard, Freja\nSales, \"EMEA\""}
    text = csv_text(HEADER, [cells(first, HEADER), cells(RECORDS[1], HEADER),
                             cells({**RECORDS[2], "Charge": "abc"}, HEADER)])
    assert text.count("\r\n") == 4 and "\"Holmgaard, Freja\nSales, \"\"EMEA\"\"\"" in text
    rows = list(read_export(write(tmp_path / "bom.csv", text, bom=True)))
    assert rows[0] == UsageRow(**{**_fields(EXPECTED[0]),
                                  "details": {**EXPECTED[0].details, "user_name": "Holmgaard, Freja\nSales, \"EMEA\""}})
    assert rows[0].usage_id == EXPECTED[0].usage_id  # the BOM is not part of the first header name or cell
    assert rows[1] == EXPECTED[1]
    # Line numbers are csv's: the record spanning lines 2-3 ends on line 3, so the next ones are on 4 and 5.
    assert rows[2] == BadRow("bom.csv line 5", "Charge is not a plain decimal number: 'abc'")


def _fields(row: UsageRow) -> dict:
    return {name: getattr(row, name) for name in ("usage_id", "charge", "currency", "occurred_at", "capability")}


def test_lf_only_and_blank_lines_are_accepted(tmp_path):
    text = csv_text(HEADER, [cells(r, HEADER) for r in RECORDS], newline="\n")
    text = text.replace("\n", "\n\n", 1) + ",,,,\n\n"
    assert_same_rows(list(read_export(write(tmp_path / "lf.csv", text))), EXPECTED)


def test_a_header_only_file_has_no_rows(tmp_path):
    assert list(read_export(write(tmp_path / "empty-day.csv", csv_text(HEADER, [])))) == []


# --- zip --------------------------------------------------------------------------------------------------------

def zip_of(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_a_zip_is_read_member_by_member_in_name_order(tmp_path):
    day2 = [{**RECORDS[1], "Start Time": "2026-11-02T08:00:00Z"}, {**RECORDS[2], "Charge": "abc"}]
    path = zip_of(tmp_path / "export.zip", {
        "PSTN.calls.2026-11-02.csv": csv_text(HEADER, [cells(r, HEADER) for r in day2]),
        "readme.txt": "not a csv",
        "pstn.CALLS.2026-11-01.csv": csv_text(HEADER, [cells(RECORDS[0], HEADER)]),
    })
    seen: list[int] = []
    rows = list(read_export(path, progress=seen.append))
    assert rows[0] == EXPECTED[0]
    assert rows[1] == UsageRow(**{**_fields(EXPECTED[1]), "occurred_at": datetime(2026, 11, 2, 8, tzinfo=UTC),
                                  "details": EXPECTED[1].details})
    assert rows[2] == BadRow("PSTN.calls.2026-11-02.csv line 3", "Charge is not a plain decimal number: 'abc'")
    assert len(rows) == 3
    with zipfile.ZipFile(path) as archive:
        expected_size = sum(archive.getinfo(n).file_size for n in archive.namelist() if n.endswith(".csv"))
    assert export_size(path) == expected_size == sum(seen)
    assert all(n > 0 for n in seen)


def test_progress_adds_up_to_the_file_size(tmp_path):
    path = write(tmp_path / "p.csv", csv_text(HEADER, [cells(r, HEADER) for r in RECORDS]), bom=True)
    seen: list[int] = []
    list(read_export(path, progress=seen.append))
    assert sum(seen) == export_size(path) == path.stat().st_size


def test_a_zip_with_one_csv_of_another_name_is_read(tmp_path):
    path = zip_of(tmp_path / "x.zip", {"usage/November.CSV": csv_text(HEADER, [cells(RECORDS[0], HEADER)]),
                                       "__MACOSX/usage/._November.CSV": b"\x00\x05\x16\x07"})
    assert list(read_export(path)) == [EXPECTED[0]]


def test_a_zip_without_a_csv_is_refused(tmp_path):
    path = zip_of(tmp_path / "x.zip", {"readme.txt": "hello"})
    with pytest.raises(ExportError, match=r"x\.zip holds no \.csv file \(it holds: readme\.txt\)"):
        read_export(path)


def test_a_zip_of_several_unrelated_csvs_is_refused(tmp_path):
    path = zip_of(tmp_path / "x.zip", {"a.csv": csv_text(HEADER, []), "b.csv": csv_text(HEADER, [])})
    with pytest.raises(ExportError, match="no PSTN.calls\\*.csv file and 2 other .csv files"):
        read_export(path)


def test_a_zip_that_is_not_a_zip_is_refused(tmp_path):
    path = write(tmp_path / "export.zip", csv_text(HEADER, []))
    with pytest.raises(ExportError, match=r"export\.zip is not a zip archive"):
        read_export(path)
    with pytest.raises(ExportError, match="not a zip archive"):
        export_size(path)


def test_every_header_is_checked_before_the_first_row(tmp_path):
    no_charge = [name for name in HEADER if name != "Charge"]
    path = zip_of(tmp_path / "export.zip", {
        "PSTN.calls.2026-11-01.csv": csv_text(HEADER, [cells(RECORDS[0], HEADER)]),
        "PSTN.calls.2026-11-02.csv": csv_text(no_charge, [cells(RECORDS[1], no_charge)]),
    })
    with pytest.raises(ExportError) as raised:
        read_export(path)  # raised at the call, before any row was handed out
    assert str(raised.value).startswith(
        "PSTN.calls.2026-11-02.csv in export.zip has no column 'Charge' (columns found: UsageId, Call ID, ")


# --- refused files ------------------------------------------------------------------------------------------------

def test_missing_required_columns_are_named(tmp_path):
    header = [name for name in HEADER if name not in ("Currency", "Start Time")]
    path = write(tmp_path / "PSTN.calls.2026-11-01.csv", csv_text(header, [cells(RECORDS[0], header)]))
    with pytest.raises(ExportError) as raised:
        list(read_export(path))
    message = str(raised.value)
    assert message.startswith("PSTN.calls.2026-11-01.csv has no columns 'Start Time', 'Currency' (columns found: ")
    assert "Destination Number, End Time, Duration Seconds" in message


def test_a_known_column_twice_is_refused(tmp_path):
    header = [*HEADER, "charge"]
    path = write(tmp_path / "twice.csv", csv_text(header, []))
    with pytest.raises(ExportError, match="twice.csv has the column 'Charge' twice"):
        read_export(path)


@pytest.mark.parametrize("content, message", [
    (b"", "empty.csv is empty"),
    (b"\xef\xbb\xbf\r\n\r\n", "empty.csv has no header row"),
])
def test_an_empty_file_is_refused(tmp_path, content, message):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(ExportError, match=message):
        list(read_export(path))


def test_an_empty_member_is_refused(tmp_path):
    path = zip_of(tmp_path / "x.zip", {"PSTN.calls.2026-11-01.csv": ""})
    with pytest.raises(ExportError, match="PSTN.calls.2026-11-01.csv in x.zip has no header row"):
        read_export(path)


def test_other_file_types_are_refused(tmp_path):
    path = write(tmp_path / "export.xlsx", "whatever")
    with pytest.raises(ExportError, match="neither a .csv file nor a .zip"):
        read_export(path)
    with pytest.raises(ExportError, match="cannot read missing.csv"):
        read_export(tmp_path / "missing.csv")


def test_text_that_is_not_utf8_stops_the_import(tmp_path):
    good = csv_text(HEADER, [cells(RECORDS[0], HEADER)] * 1000).encode("utf-8")
    bad = csv_text(HEADER, [cells({**RECORDS[1], "User Display Name": "Jörg"}, HEADER)]).split("\r\n", 1)[1]
    path = tmp_path / "latin1.csv"
    path.write_bytes(good + bad.encode("latin-1"))  # the header and the first rows decode; a later row does not
    rows = read_export(path)
    assert next(rows) == EXPECTED[0]
    with pytest.raises(ExportError, match=r"latin1.csv is not UTF-8 text: a byte after line \d+ is not UTF-8"):
        list(rows)


def test_an_unmatched_quote_stops_the_import_at_the_line_it_starts(tmp_path):
    rows = [cells(RECORDS[0], HEADER), cells({**RECORDS[1], "User Display Name": "Kwame"}, HEADER)]
    text = csv_text(HEADER, rows).replace(",Kwame,", ',"Kwame,') + csv_text(HEADER, [cells(RECORDS[2], HEADER)] * 3000)
    rows_read = read_export(write(tmp_path / "quote.csv", text))
    assert next(rows_read) == EXPECTED[0]
    with pytest.raises(ExportError, match=r"quote.csv: cannot read the record starting on line 3: field larger "
                                          r"than field limit \(131072\) \(an unmatched quote\?\)"):
        next(rows_read)


@pytest.mark.parametrize("where, error", [(0, "Error -3 while decompressing data"),  # the deflate stream breaks
                                          (-8, "Bad CRC-32")])  # it inflates, but to other bytes
def test_a_damaged_zip_member_stops_the_import(tmp_path, where, error):
    path = zip_of(tmp_path / "x.zip", {"PSTN.calls.2026-11-01.csv": csv_text(HEADER, [cells(RECORDS[0], HEADER)])})
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("PSTN.calls.2026-11-01.csv")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename)
    data[start + where if where >= 0 else start + info.compress_size + where] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError) as raised:
        list(read_export(path))
    assert str(raised.value).startswith(f"cannot read PSTN.calls.2026-11-01.csv in x.zip (after line 0): {error}")


# --- bad rows -----------------------------------------------------------------------------------------------------

def test_bad_rows_are_reported_with_line_and_reason_and_good_rows_come_through(tmp_path):
    bad = [
        {**RECORDS[1], "Charge": "abc"},                                          # line 3
        {**RECORDS[1], "Start Time": "2026-13-01T10:00:00Z"},                    # line 4
        {**RECORDS[1], "UsageId": "  "},                                          # line 5
        {**RECORDS[1], "Charge": "1e3"},                                          # line 6
        {**RECORDS[1], "Charge": "1,000.00"},                                     # line 7
        {**RECORDS[1], "Charge": "NaN", "Connection Fee": "Infinity"},            # line 8
        {**RECORDS[1], "Charge": "", "Currency": "", "Capability": ""},           # line 9
        {**RECORDS[1], "Start Time": "01/11/2026 10:00", "Currency": "US Dollar"},  # line 10
        {**RECORDS[1], "Charge": "x" * 60},                                       # line 11
    ]
    records = [cells(RECORDS[0], HEADER), *(cells(r, HEADER) for r in bad), cells(RECORDS[2], HEADER)]
    shifted = cells(RECORDS[1], HEADER)
    shifted[6] = "Ashdown"  # as if "Ashdown, Kwame" had been written without quotes
    shifted.insert(7, " Kwame")
    path = write(tmp_path / "bad.csv", csv_text(HEADER, [*records, shifted, cells(RECORDS[1], HEADER)]))
    rows = list(read_export(path))
    assert rows[0] == EXPECTED[0]
    assert rows[1:11] == [
        BadRow("bad.csv line 3", "Charge is not a plain decimal number: 'abc'"),
        BadRow("bad.csv line 4", "Start Time is not an ISO 8601 time: '2026-13-01T10:00:00Z'"),
        BadRow("bad.csv line 5", "UsageId is empty"),
        BadRow("bad.csv line 6", "Charge is not a plain decimal number: '1e3'"),
        BadRow("bad.csv line 7", "Charge is not a plain decimal number: '1,000.00'"),
        BadRow("bad.csv line 8", "Charge is not a plain decimal number: 'NaN'; "
                                 "Connection Fee is not a plain decimal number: 'Infinity'"),
        BadRow("bad.csv line 9", "Charge is empty; Currency is empty; Capability is empty"),
        BadRow("bad.csv line 10", "Start Time is not an ISO 8601 time: '01/11/2026 10:00'; "
                                  "Currency is not a three-letter currency code: 'US Dollar'"),
        BadRow("bad.csv line 11", "Charge is not a plain decimal number: '" + "x" * 40 + "'..."),
        EXPECTED[2],
    ]
    assert rows[11] == BadRow("bad.csv line 13", "the row has 21 fields but the header has 20 "
                                                 "(a comma or quote out of place?)")
    assert rows[12] == EXPECTED[1]
    assert len(rows) == 13


@pytest.mark.parametrize("text, expected", [
    ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ("2026-11-01T10:00:00.1234567Z", datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2026-11-01T10:00:00.9999999Z", datetime(2026, 11, 1, 10, 0, 0, 999999, tzinfo=UTC)),  # truncated
    ("2026-11-01T10:00:00.5Z", datetime(2026, 11, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ("2026-11-01T10:00:00+00:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ("2026-11-01T10:00:00+01:00", datetime(2026, 11, 1, 9, tzinfo=UTC)),
    ("2026-11-01 10:00:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ("2026-11-01 10:00:00.1234567", datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)),
])
def test_start_time_forms(tmp_path, text, expected):
    path = write(tmp_path / "t.csv", csv_text(HEADER, [cells({**RECORDS[0], "Start Time": text}, HEADER)]))
    [row] = read_export(path)
    assert row.occurred_at == expected
    assert row.occurred_at.tzinfo is timezone.utc


@pytest.mark.parametrize("text", ["2026-11-01", "2026-11-01T10:00Z", "2026-11-01T25:00:00Z", "yesterday",
                                  "2026-11-01T10:00:00 Z", "2026-11-01T10:00:00+25:00"])
def test_start_time_rejects(tmp_path, text):
    path = write(tmp_path / "t.csv", csv_text(HEADER, [cells({**RECORDS[0], "Start Time": text}, HEADER)]))
    [row] = read_export(path)
    assert row == BadRow("t.csv line 2", f"Start Time is not an ISO 8601 time: {text!r}")


# --- constant memory ------------------------------------------------------------------------------------------

def write_simple_export(path: Path, rows: int) -> Decimal:
    """A `rows`-row export in the design layout, written quickly; returns the sum of its charges."""
    total = Decimal(0)
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(",".join(HEADER) + "\r\n")
        for i in range(rows):
            charge = Decimal(i % 10_000).scaleb(-4)
            total += charge
            out.write(f"u-{i:09d},c-{i},,US,oid-{i % 12},user{i % 12}@contoso.example,User {i % 12},"
                      f"+14255550100,user_out_domestic,user,Domestic,United States,+1202555{i % 100 + 100:04d},"
                      f"2026-11-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z,2026-11-01T10:59:59Z,{i % 1800 + 20},"
                      f"0,{charge},USD,MCOPSTNPP\r\n")
    return total


@pytest.mark.slow  # tracemalloc traces every allocation: about 20 s for 200,000 rows
def test_reading_200k_rows_keeps_memory_flat(tmp_path):
    path = tmp_path / "PSTN.calls.big.csv"
    expected_total = write_simple_export(path, 200_000)
    assert path.stat().st_size > 35_000_000
    count, total = 0, Decimal(0)
    tracemalloc.start()
    try:
        for row in read_export(path):
            count += 1
            total += row.charge
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (count, total) == (200_000, expected_total)
    assert peak < 3 * 1024 * 1024, f"peak {peak:,} bytes while reading"


# --- the invented export --------------------------------------------------------------------------------------

START = datetime(2026, 10, 1, tzinfo=UTC)

#: Ranges reserved for fiction (see bot/usage/demo.py).
FICTIONAL_NUMBER = re.compile(r"\+1(202|312|425|416|604)55501\d\d|\+447700900\d{3}|\+442079460\d{3}")


def test_the_demo_is_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert write_demo_csv(a, start=START, days=3) == write_demo_csv(b, start=START, days=3)
    assert a.read_bytes() == b.read_bytes()
    write_demo_csv(c, start=START, days=3, seed=8)
    assert a.read_bytes() != c.read_bytes()


def test_the_demo_is_invented_and_in_the_admin_center_layout(tmp_path):
    path = tmp_path / "PSTN.calls.demo.csv"
    write_demo_csv(path, start=START, days=10, calls_per_day=30, currency="dkk")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == HEADER
        records = list(reader)
    assert len(records) == 300
    assert len({r["UsageId"] for r in records}) == 300
    upns = {r["UPN"] for r in records}
    assert 8 <= len(upns) <= 12 and all(upn.endswith("@contoso.example") for upn in upns)
    numbers = {r[c] for r in records for c in ("Caller ID", "Destination Number")}
    assert all(FICTIONAL_NUMBER.fullmatch(n) for n in numbers), sorted(n for n in numbers
                                                                      if not FICTIONAL_NUMBER.fullmatch(n))
    assert {r["Capability"] for r in records} == {"MCOPSTNPP", "MCOPSTN1"}
    assert {r["Currency"] for r in records} == {"DKK"}
    assert any(r["Charge"] == "0.0000" for r in records)
    assert any(Decimal(r["Connection Fee"]) > 0 for r in records)
    assert all(20 <= int(r["Duration Seconds"]) <= 1800 for r in records)
    assert all(re.fullmatch(r"\d+\.\d{4}", r["Charge"]) for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["Start Time"]) for r in records)
    assert path.read_bytes().count(b"\r\n") >= 301


def test_the_demo_summary_agrees_with_what_is_read_back(tmp_path):
    path = tmp_path / "PSTN.calls.demo.csv"
    summary = write_demo_csv(path, start=START, days=30, calls_per_day=40, seed=11)
    rows = list(read_export(path))
    assert all(isinstance(r, UsageRow) for r in rows)
    billed = [r for r in rows if r.capability == "MCOPSTNPP"]
    assert isinstance(summary, DemoSummary)
    assert summary.rows == len(rows) == 1200
    assert summary.billed_rows == len(billed)
    assert 0 < summary.billed_rows < summary.rows
    assert summary.total_billed == sum((r.charge for r in billed), Decimal(0)) > 0
    assert summary.first_call == min(r.occurred_at for r in rows) >= START
    assert summary.last_call == max(r.occurred_at for r in rows)
    assert summary.last_call < datetime(2026, 10, 31, tzinfo=UTC)
    assert {r.currency for r in rows} == {"USD"}


async def test_a_parser_process_that_dies_is_an_error_not_a_hang(tmp_path: Path) -> None:
    import multiprocessing

    from bot.usage.files import ExportReaderDied, export_rows_in_a_process

    path = tmp_path / "PSTN.calls.big.csv"
    write_demo_csv(path, start=datetime(2026, 10, 1, tzinfo=timezone.utc), days=5, calls_per_day=200)
    rows = export_rows_in_a_process(path, step=10)
    first = await rows.__anext__()
    assert first.usage_id
    for child in multiprocessing.active_children():
        child.kill()
    with pytest.raises(ExportReaderDied):
        async for _ in rows:
            pass


async def test_rows_parsed_in_a_process_are_the_rows_read_directly(tmp_path: Path) -> None:
    from bot.usage.files import export_rows_in_a_process

    path = tmp_path / "PSTN.calls.small.csv"
    write_demo_csv(path, start=datetime(2026, 10, 1, tzinfo=timezone.utc), days=2, calls_per_day=30)
    consumed: list[int] = []
    via_process = [row async for row in export_rows_in_a_process(path, progress=consumed.append, step=7)]
    assert via_process == list(read_export(path))
    assert sum(consumed) == export_size(path)


def test_rows_survive_the_trip_from_the_parsing_process() -> None:
    """The child process pickles rows to the importer (UsageRow has a cheaper __reduce__ of its own)."""
    import pickle
    from datetime import datetime, timezone
    from decimal import Decimal

    from bot.usage.rows import BadRow, UsageRow

    rows = [UsageRow("u-1", Decimal("0.1230"), "USD", datetime(2026, 11, 1, 8, 30, tzinfo=timezone.utc), "MCOPSTNPP",
                     {"user_name": "Ådne Ørsted", "duration_s": 61}),
            UsageRow("u-2", Decimal("1E+2"), "DKK", datetime(2026, 11, 2, tzinfo=timezone.utc), "MCOPSTN1"),
            BadRow("line 7", "Charge is not a number: 'abc'")]
    back = pickle.loads(pickle.dumps(rows))
    assert back == rows and [type(r) for r in back] == [UsageRow, UsageRow, BadRow]
    assert str(back[1].charge) == "1E+2" and back[0].occurred_at.tzinfo is timezone.utc
