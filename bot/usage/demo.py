"""A made-up admin center PSTN usage export, for demos and tests: `write_demo_csv`.

Everything in it is invented: the people (names, `@contoso.example` UPNs, random object ids) and the phone
numbers, which come only from ranges reserved for fiction and documentation:

* North America: +1 NPA 555-0100..0199 (NANPA's fictitious numbers), here with the US area codes 202, 312 and
  425 and the Canadian ones 416 and 604;
* United Kingdom: +44 7700 900000..900999 (mobile) and +44 20 7946 0000..0999 (London), Ofcom's drama ranges.

(Denmark and Australia were left out: Denmark has no range for fiction that we know of, and Australia's is a
short list of single numbers rather than a range.)

The file is written row by row (constant memory) and is a pure function of the arguments: the same seed gives
the same bytes (only `random.Random(seed)` is used, never the clock or `uuid4`).
"""

from __future__ import annotations

import csv
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from itertools import accumulate
from pathlib import Path

from bot.usage.csv_export import COLUMNS
from bot.usage.rows import DEFAULT_BILLED_CAPABILITIES

__all__ = ["DemoSummary", "write_demo_csv", "DEMO_DOMAIN"]

DEMO_DOMAIN = "contoso.example"

_PAYG = "MCOPSTNPP"        # pay-as-you-go: paid from Communications Credits
_CALLING_PLAN = "MCOPSTN1"  # a calling plan: not paid from the credits
_FOUR_PLACES = Decimal("0.0001")

#: (display name, UPN local part, usage location). Invented; one "Last, First" name exercises csv quoting and
#: two exercise UTF-8.
_PEOPLE = (
    ("Ada Fenwick", "ada.fenwick", "US"),
    ("Bram Okonkwo-Hale", "bram.okonkwohale", "US"),
    ("Chiara Vellutino", "chiara.vellutino", "GB"),
    ("Holmgaard, Freja", "freja.holmgaard", "GB"),
    ("Dov Rainsford", "dov.rainsford", "US"),
    ("Ezinne Marlowe", "ezinne.marlowe", "CA"),
    ("Søren Tvedebrink", "soren.tvedebrink", "GB"),
    ("Gwendolyn Apari", "gwendolyn.apari", "US"),
    ("Hiroko Quillfeather", "hiroko.quillfeather", "CA"),
    ("Ines Barrowclough", "ines.barrowclough", "US"),
    ("Jörg Pemberly", "jorg.pemberly", "GB"),
    ("Kwame Ashdown", "kwame.ashdown", "US"),
)


@dataclass(frozen=True, slots=True)
class _Destination:
    """A kind of call: its Call Type, Domestic/International, Destination Dialed, price per started minute,
    connection fee, and how often it is picked (relative weight)."""

    call_type: str
    scope: str
    dialed: str
    per_minute: Decimal
    connection_fee: Decimal
    weight: int
    country: str  # which fictional range the other party's number comes from


_DESTINATIONS = (
    _Destination("user_out_domestic", "Domestic", "United States", Decimal("0.0120"), Decimal(0), 30, "US"),
    _Destination("user_out_international", "International", "United Kingdom", Decimal("0.0225"), Decimal(0),
                 14, "GB"),
    _Destination("user_out_international", "International", "United Kingdom (mobile)", Decimal("0.1150"),
                 Decimal("0.0500"), 6, "GB-mobile"),
    _Destination("user_out_international", "International", "Canada", Decimal("0.0150"), Decimal("0.0300"),
                 9, "CA"),
    _Destination("user_out_tollfree", "Domestic", "United States (toll free)", Decimal(0), Decimal(0), 4, "US"),
    _Destination("user_in", "Domestic", "Inbound", Decimal(0), Decimal(0), 22, "US"),
    _Destination("conf_out_international", "International", "United Kingdom", Decimal("0.0225"), Decimal(0),
                 4, "GB"),
)

_CUMULATIVE_WEIGHTS = tuple(accumulate(d.weight for d in _DESTINATIONS))


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What `write_demo_csv` wrote: `rows` in all; `billed_rows` of them with a billed capability
    (`DEFAULT_BILLED_CAPABILITIES`, zero-charge ones included); `total_billed` the sum of Charge + Connection
    Fee over those; `first_call` / `last_call` the earliest and latest Start Time (aware UTC; None when no
    row was written)."""

    rows: int
    billed_rows: int
    total_billed: Decimal
    first_call: datetime | None
    last_call: datetime | None


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    upn: str
    location: str
    object_id: str
    number: str  # the person's own (fictional) direct number


def _uuid(rng: random.Random) -> str:
    """A version-4-shaped UUID from `rng` (deterministic, unlike `uuid.uuid4`)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _number(rng: random.Random, country: str) -> str:
    """A phone number from a range reserved for fiction, in E.164."""
    if country == "US":
        return f"+1{rng.choice(('202', '312', '425'))}5550{rng.randrange(100, 200)}"
    if country == "GB":
        return f"+442079460{rng.randrange(0, 1000):03d}"
    if country == "GB-mobile":
        return f"+447700900{rng.randrange(0, 1000):03d}"
    if country == "CA":
        return f"+1{rng.choice(('416', '604'))}5550{rng.randrange(100, 200)}"
    raise ValueError(country)


def _people(rng: random.Random) -> list[_Person]:
    numbers = rng.sample(range(100, 200), len(_PEOPLE))
    return [_Person(name, f"{local}@{DEMO_DOMAIN}", location, _uuid(rng), f"+14255550{number}")
            for (name, local, location), number in zip(_PEOPLE, numbers)]


def _charge(destination: _Destination, duration_s: int) -> Decimal:
    """Price per started minute times the minutes, to 4 decimals."""
    minutes = -(-duration_s // 60)
    return (destination.per_minute * minutes).quantize(_FOUR_PLACES)


def _time(moment: datetime) -> str:
    """"2026-11-01T10:00:00Z" (`moment` is UTC, whole seconds)."""
    return moment.isoformat()[:19] + "Z"


def _day_starts(rng: random.Random, day: datetime, calls: int) -> list[datetime]:
    """`calls` start times within the 24 hours from `day`, mostly in working hours, in order."""
    seconds = []
    for _ in range(calls):
        if rng.random() < 0.85:
            seconds.append(rng.randrange(7 * 3600, 19 * 3600))
        else:
            seconds.append(rng.randrange(0, 24 * 3600))
    return [day + timedelta(seconds=s) for s in sorted(seconds)]


def _row(rng: random.Random, person: _Person, start: datetime, call_id: str,
         currency: str) -> tuple[list[str], Decimal, str]:
    """One export row (in `COLUMNS` order), its Charge + Connection Fee, and its capability."""
    destination = rng.choices(_DESTINATIONS, cum_weights=_CUMULATIVE_WEIGHTS)[0]
    duration = rng.randrange(20, 1801)
    charge = _charge(destination, duration)
    fee = destination.connection_fee
    capability = _CALLING_PLAN if rng.random() < 0.15 else _PAYG
    other = _number(rng, destination.country)
    inbound = destination.call_type == "user_in"
    caller, callee = (other, person.number) if inbound else (person.number, other)
    conference = _uuid(rng) if destination.call_type.startswith("conf_") else ""
    row = [_uuid(rng), call_id, conference, person.location, person.object_id, person.upn, person.name, caller,
           destination.call_type, "user", destination.scope, destination.dialed, callee, _time(start),
           _time(start + timedelta(seconds=duration)), str(duration), str(fee.quantize(_FOUR_PLACES)),
           str(charge), currency, capability]
    return row, charge + fee, capability


def write_demo_csv(path: Path, *, start: datetime, days: int = 30, calls_per_day: int = 40, seed: int = 7,
                   currency: str = "USD") -> DemoSummary:
    """Write an invented admin center export (`COLUMNS`, header row, RFC 4180 with CRLF, UTF-8 without BOM,
    times as "...Z") of `days` days from `start` (naive means UTC; microseconds are dropped) with
    `calls_per_day` calls a day, and say what it holds. About 15% of the rows have the calling-plan
    capability (not billed from credits); inbound and toll-free calls cost 0; some international calls have a
    connection fee; a few rows share a Call ID (as transferred calls do)."""
    rng = random.Random(seed)
    origin = (start if start.tzinfo else start.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    origin = origin.replace(microsecond=0)
    people = _people(rng)
    rows = billed = 0
    total = Decimal(0)
    first: datetime | None = None
    last: datetime | None = None
    call_id = ""
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for day in range(days):
            for moment in _day_starts(rng, origin + timedelta(days=day), calls_per_day):
                call_id = call_id if call_id and rng.random() < 0.03 else _uuid(rng)
                row, debit, capability = _row(rng, rng.choice(people), moment, call_id, currency.upper())
                writer.writerow(row)
                rows += 1
                if capability in DEFAULT_BILLED_CAPABILITIES:
                    billed += 1
                    total += debit
                first = moment if first is None else first
                last = moment
    return DemoSummary(rows=rows, billed_rows=billed, total_billed=total, first_call=first, last_call=last)
