"""``Retry-After`` (RFC 9110 section 10.2.3): seconds to wait, given as a number or as an HTTP date."""

from __future__ import annotations

import datetime as _dt
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None, now: _dt.datetime | None = None) -> float | None:
    """Seconds from ``now`` the header asks to wait (0 for a date past), or None if it is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, (when - (now or _dt.datetime.now(_dt.timezone.utc))).total_seconds())
