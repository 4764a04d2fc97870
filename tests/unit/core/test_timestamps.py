"""RFC 3339 timestamps in the ledger's one canonical form (audit_ledger.core.timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_ledger.core.timestamps import (
    format_timestamp,
    is_canonical_timestamp,
    normalise_timestamp,
    parse_timestamp,
)
from audit_ledger.errors import FormatError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T10:55:17.1234567+07:00", "2026-11-28T03:55:17.123456Z"),
        ("2026-11-28T03:55:17.123456Z", "2026-11-28T03:55:17.123456Z"),
        ("2026-11-28T03:55:17Z", "2026-11-28T03:55:17.000000Z"),
        ("2026-11-28T03:55:17.1Z", "2026-11-28T03:55:17.100000Z"),
        ("2026-11-28T03:55:17.000000Z", "2026-11-28T03:55:17.000000Z"),
        ("2026-11-28t03:55:17.5z", "2026-11-28T03:55:17.500000Z"),
        ("2026-11-28T03:55:17+00:00", "2026-11-28T03:55:17.000000Z"),
        ("2026-11-28T03:55:17-00:00", "2026-11-28T03:55:17.000000Z"),
        # Offsets move the date across day, month, year and leap-day boundaries.
        ("2026-11-27T23:00:00-05:00", "2026-11-28T04:00:00.000000Z"),
        ("2027-01-01T06:30:00+07:00", "2026-12-31T23:30:00.000000Z"),
        ("2028-02-29T23:59:59.5-00:01", "2028-03-01T00:00:59.500000Z"),
        ("2028-03-01T00:15:00+01:00", "2028-02-29T23:15:00.000000Z"),
        ("2026-06-01T12:00:00+05:45", "2026-06-01T06:15:00.000000Z"),
        ("2026-06-01T00:00:00+23:59", "2026-05-31T00:01:00.000000Z"),
        ("2026-06-01T00:00:00-23:59", "2026-06-01T23:59:00.000000Z"),
        # Truncation, not rounding: never crosses into the next second, day or year.
        ("2026-11-28T03:55:17.9999999Z", "2026-11-28T03:55:17.999999Z"),
        ("2026-12-31T23:59:59.99999999999+00:00", "2026-12-31T23:59:59.999999Z"),
        ("2026-11-28T03:55:17.1234565Z", "2026-11-28T03:55:17.123456Z"),
        ("2026-11-28T03:55:17.000000999Z", "2026-11-28T03:55:17.000000Z"),
        # Years below 1000 keep four digits.
        ("0999-01-01T00:00:00Z", "0999-01-01T00:00:00.000000Z"),
        ("0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00.000000Z"),
        ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise_timestamp(text) == expected
    assert is_canonical_timestamp(expected)
    assert normalise_timestamp(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T03:55:17",  # no offset
        "2026-11-28T03:55:17.123456",
        "2026-11-28 03:55:17Z",  # space separator
        "2026-11-28",
        "03:55:17Z",
        "2026-13-01T00:00:00Z",  # month 13
        "2026-00-01T00:00:00Z",
        "2026-02-30T00:00:00Z",  # Feb 30
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-04-31T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-11-28T24:00:00Z",
        "2026-11-28T23:60:00Z",
        "2026-11-28T23:59:60Z",  # leap seconds cannot be represented
        "0000-01-01T00:00:00Z",
        "2026-11-28T03:55:17+24:00",
        "2026-11-28T03:55:17+0700",
        "2026-11-28T03:55:17+07",
        "2026-11-28T03:55:17.Z",
        "2026-11-28T03:55:17,5Z",
        "2026-11-28T3:55:17Z",
        "26-11-28T03:55:17Z",
        "+2026-11-28T03:55:17Z",
        " 2026-11-28T03:55:17Z",
        "2026-11-28T03:55:17Z ",
        "2026-11-28T03:55:17Z\n",
        "2026-11-28T03:55:17ZZ",
        "2026-11-28T03:55:17UTC",
        "2026-11-28T03:55:17.\u0661\u0662\u0663Z",  # Arabic-Indic digits
        "\uff12\uff10\uff12\uff16-11-28T03:55:17Z",  # full-width digits
        "0001-01-01T00:00:00+00:01",  # before year 1 in UTC
        "9999-12-31T23:59:59-00:01",  # after year 9999 in UTC
        # The shape the offset fast path reads (6 digits and an offset), with a bad field:
        "0001-01-01T00:00:00.000000+00:01",
        "9999-12-31T23:59:59.999999-00:01",
        "2026-02-30T10:55:17.123456+07:00",
        "2026-11-28T24:00:00.000000+07:00",
        "2026-11-28T10:55:60.000000+07:00",
        "2026-11-28T10:55:17.123456+24:00",
        "2026-11-28T10:55:17.123456+07:60",
        "",
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(FormatError):
        parse_timestamp(text)
    with pytest.raises(FormatError):
        normalise_timestamp(text)
    assert not is_canonical_timestamp(text)


@pytest.mark.parametrize(
    "value", [None, 0, 1764301517, 1.5, b"2026-11-28T03:55:17Z", datetime.now(UTC), ["x"]]
)
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(FormatError):
        parse_timestamp(value)  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        normalise_timestamp(value)  # type: ignore[arg-type]
    assert not is_canonical_timestamp(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T03:55:17.123456Z",
        "0001-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.999999Z",
        "2028-02-29T12:00:00.000001Z",
    ],
)
def test_is_canonical(text: str) -> None:
    assert is_canonical_timestamp(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T03:55:17Z",
        "2026-11-28T03:55:17.12345Z",
        "2026-11-28T03:55:17.1234567Z",
        "2026-11-28T03:55:17.123456+00:00",
        "2026-11-28T03:55:17.123456z",
        "2026-11-28t03:55:17.123456Z",
        "2026-02-30T03:55:17.123456Z",
        "2026-11-28T03:55:60.000000Z",
        "0000-01-01T00:00:00.000000Z",
        "2026-11-28T03:55:17.12345\u0666Z",
    ],
)
def test_is_not_canonical(text: str) -> None:
    assert not is_canonical_timestamp(text)


def test_parse_returns_aware_utc() -> None:
    moment = parse_timestamp("2026-11-28T10:55:17.1234567+07:00")
    assert moment == datetime(2026, 11, 28, 3, 55, 17, 123456, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)


def test_format_requires_aware_datetime() -> None:
    with pytest.raises(FormatError):
        format_timestamp(datetime(2026, 11, 28, 3, 55, 17))  # noqa: DTZ001
    plus7 = timezone(timedelta(hours=7))
    assert format_timestamp(datetime(2026, 11, 28, 10, 55, 17, 5, tzinfo=plus7)) == (
        "2026-11-28T03:55:17.000005Z"
    )
    assert format_timestamp(datetime(5, 3, 1, tzinfo=UTC)) == "0005-03-01T00:00:00.000000Z"
    with pytest.raises(FormatError):
        format_timestamp(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))


_UTC_MOMENTS = st.datetimes(
    min_value=datetime(2, 1, 1),  # noqa: DTZ001  (naive bounds; the values are made aware)
    max_value=datetime(9998, 12, 31),  # noqa: DTZ001
)
_MICROS = st.one_of(st.integers(0, 999_999), st.sampled_from([0, 1, 999_999]))
_OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59)


@settings(max_examples=300, deadline=None)
@given(
    moment=_UTC_MOMENTS,
    micro=_MICROS,
    extra=st.text("0123456789", max_size=5),
    offset=_OFFSETS,
    zulu=st.booleans(),
)
def test_normalise_property(
    moment: datetime, micro: int, extra: str, offset: int, zulu: bool
) -> None:
    utc = moment.replace(microsecond=micro)
    if zulu:
        offset = 0
    local = utc + timedelta(minutes=offset)
    sign = "-" if offset < 0 else "+"
    tz = "Z" if zulu else f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}.{micro:06d}{extra}{tz}"
    )
    expected = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{micro:06d}Z"
    )
    assert normalise_timestamp(text) == expected
    assert is_canonical_timestamp(expected)
    assert parse_timestamp(text) == utc.replace(tzinfo=UTC)
    assert format_timestamp(parse_timestamp(text)) == expected


@settings(max_examples=200, deadline=None)
@given(a=_UTC_MOMENTS, b=_UTC_MOMENTS)
def test_canonical_strings_order_like_instants(a: datetime, b: datetime) -> None:
    # The chain verifier compares recorded_at as strings.
    sa = format_timestamp(a.replace(tzinfo=UTC))
    sb = format_timestamp(b.replace(tzinfo=UTC))
    assert (sa < sb) == (a < b)
    assert (sa == sb) == (a == b)
