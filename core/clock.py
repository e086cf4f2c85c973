"""Time helpers: everything is stored in UTC; callers may pass `now` (tests do, instead of patching)."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import ValidationError


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def resolve(now: datetime | None) -> datetime:
    return utcnow() if now is None else now.astimezone(timezone.utc)


def zone(name: str) -> ZoneInfo:
    """An IANA zone, or a clear error naming the bad value."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("error.timezone", value=name) from None


def format_local(value: datetime | None, tz: str, with_seconds: bool = True) -> str:
    """A stored UTC time shown in the user's timezone."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")
