"""RFC 3339 timestamps in the one form the ledger commits to: UTC, 6 fractional digits, ``Z``.

Example: ``2026-11-28T03:55:17.123456Z``. Inputs with an offset or fewer digits are normalised
to that form before hashing and before idempotency comparison (DESIGN §4).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from audit_ledger.errors import FormatError

_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z", re.ASCII)
# RFC 3339 §5.6 date-time; "T"/"Z" case-insensitive per the RFC's note; fraction of any length.
_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?P<frac>\.\d+)?"
    r"(?P<tz>[Zz]|[+-]\d{2}:[0-5]\d)\Z",
    re.ASCII,  # \d must not match non-ASCII digits (int() would accept them)
)
# The usual non-UTC input (a client's local time, e.g. WIB +07:00, to the microsecond), which
# datetime.fromisoformat reads as it stands.
_OFFSET_MICROS = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}[+-]\d{2}:[0-5]\d\Z", re.ASCII
)


def utc_now() -> datetime:
    """The ledger's default clock."""
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as the canonical ledger timestamp."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise FormatError("timestamp must carry a time zone")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise FormatError("timestamp is outside years 1..9999 in UTC") from None
    # Not strftime: glibc's %Y does not zero-pad years below 1000. isoformat ends in "+00:00".
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_timestamp(text: str) -> datetime:
    """Parse any RFC 3339 date-time (offset required) into an aware UTC datetime.

    Fractions beyond microseconds are truncated (not rounded) so that normalisation never moves
    a timestamp across a second boundary.
    """
    if not isinstance(text, str):
        raise FormatError("timestamp must be a string")
    match = _RFC3339.match(text)
    if match is None:
        raise FormatError("timestamp is not RFC 3339 with a time zone")
    frac = (match["frac"] or ".0")[1:]
    tz = match["tz"].upper()
    iso = f"{match['date']}T{match['time']}.{(frac + '000000')[:6]}{'+00:00' if tz == 'Z' else tz}"
    try:
        # OverflowError: the instant in UTC falls outside years 1..9999.
        moment = datetime.fromisoformat(iso).astimezone(UTC)
    except (ValueError, OverflowError):
        raise FormatError("timestamp has an out-of-range field") from None
    return moment


def normalise_timestamp(text: str) -> str:
    """Return the canonical form of any RFC 3339 timestamp."""
    if is_canonical_timestamp(text):
        return text  # the common case for clients that already send UTC: no round trip
    if isinstance(text, str) and _OFFSET_MICROS.match(text):
        # format_timestamp's steps without its checks: the pattern guarantees an offset.
        try:
            utc = datetime.fromisoformat(text).astimezone(UTC)
            return utc.isoformat(timespec="microseconds")[:-6] + "Z"
        except (ValueError, OverflowError):
            pass  # an out-of-range field: the general path words the error
    return format_timestamp(parse_timestamp(text))


def is_canonical_timestamp(text: str) -> bool:
    """True when ``text`` is already in canonical form (and denotes a real instant)."""
    if not isinstance(text, str) or _CANONICAL.match(text) is None:
        return False
    try:
        datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        return False
    return True
