"""The period a report covers: two calendar days in the site's time zone, both
included, as the half-open UTC interval [starts_at, ends_at) the queries filter on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_

# A year and a day: one report's weekly trend stays readable (53 bars at most).
MAX_DAYS = 366
DEFAULT_DAYS = 28


@dataclass(frozen=True)
class Period:
    first_day: date
    last_day: date
    starts_at: datetime
    ends_at: datetime

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def weeks(self) -> int:
        """Weeks of seven days from the first day; the last one may be shorter."""
        return (self.days + 6) // 7


def _day(raw: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(N_("Each day of the period must be a date (YYYY-MM-DD).")) from None


def make_period(first: date, last: date, tz: str) -> Period:
    if last < first:
        raise InvalidInput(N_("The period ends before it starts: swap the two days."))
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidInput(N_("Choose a period of at most %(days)s days."), params={"days": MAX_DAYS})
    # Beyond these, the end of the last day may not even be a datetime.
    if first.year < 2000 or last.year > 9998:
        raise InvalidInput(N_("Choose days between the years 2000 and 9998."))
    zone = ZoneInfo(tz)
    starts = datetime.combine(first, time(), zone)
    ends = datetime.combine(last + timedelta(days=1), time(), zone)
    return Period(first_day=first, last_day=last, starts_at=starts.astimezone(UTC),
                  ends_at=ends.astimezone(UTC))


def parse_period(raw_from: str | None, raw_to: str | None, *, tz: str, now: datetime) -> Period:
    """Both days, or neither (then the last DEFAULT_DAYS days up to today); one alone
    leaves the period unbounded, which is refused."""
    raw_from, raw_to = (raw_from or "").strip(), (raw_to or "").strip()
    if not raw_from and not raw_to:
        today = now.astimezone(ZoneInfo(tz)).date()
        return make_period(today - timedelta(days=DEFAULT_DAYS - 1), today, tz)
    if not raw_from or not raw_to:
        raise InvalidInput(N_("Give both the first and the last day of the period."))
    return make_period(_day(raw_from), _day(raw_to), tz)
