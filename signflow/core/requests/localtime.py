"""Wall-clock times typed or imported in the hospital's time zone, turned into instants.

Around a daylight-saving change a wall-clock time may not exist (02:30 on the last
Sunday of March in Europe/Paris) or exist twice (02:30 on the last Sunday of
October). Python's zoneinfo silently picks an offset for both; a rota must not: a
time that does not exist is refused, and an ambiguous one needs the caller to say
which occurrence (`fold` 0: the first, still summer time; 1: the second)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_


class NonexistentLocalTime(InvalidInput):
    """The clocks jump over this wall-clock time."""


class AmbiguousLocalTime(InvalidInput):
    """This wall-clock time happens twice; the caller must choose one."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (Europe/Paris), or InvalidInput naming it."""
    name = name.strip()
    try:
        if not name or name.startswith("/") or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(N_("Unknown time zone %(name)s: use a name such as Europe/Paris."),
                           params={'name': repr(name[:60])}) from None


def _fmt(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def is_ambiguous(wall: datetime, tz: ZoneInfo) -> bool:
    first, second = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    return first.utcoffset() != second.utcoffset() and _exists(first)


def _exists(aware: datetime) -> bool:
    """A wall-clock time exists when it survives the round trip through UTC."""
    back = aware.astimezone(UTC).astimezone(aware.tzinfo)
    return back.replace(tzinfo=None) == aware.replace(tzinfo=None, fold=0)


def instant(wall: datetime, tz: ZoneInfo, *, fold: int | None = None) -> datetime:
    """The UTC instant of the naive wall-clock time `wall` in `tz`.

    NonexistentLocalTime when the clocks skip it; AmbiguousLocalTime when it happens
    twice and `fold` is None (0 = first occurrence, 1 = second)."""
    if wall.tzinfo is not None:
        return wall.astimezone(UTC)
    first = wall.replace(tzinfo=tz, fold=0)
    if not _exists(first):
        raise NonexistentLocalTime(
            N_("%(wall)s does not exist in %(key)s: the clocks go forward that night "
               "(%(before)s to %(after)s). Enter a time before or after the change."),
            params={"wall": format(wall, "%Y-%m-%d %H:%M"), "key": tz.key, "before": _fmt(first.utcoffset()),
                    "after": _fmt(wall.replace(tzinfo=tz, fold=1).utcoffset())})
    if is_ambiguous(wall, tz):
        if fold not in (0, 1):
            second = wall.replace(tzinfo=tz, fold=1)
            raise AmbiguousLocalTime(
                N_("%(wall)s happens twice in %(key)s (the clocks go back that night): say "
                   "whether you mean the first occurrence (%(first)s) or the second "
                   "(%(second)s)."),
                params={"wall": format(wall, "%Y-%m-%d %H:%M"), "key": tz.key,
                        "first": _fmt(first.utcoffset()), "second": _fmt(second.utcoffset())})
        return wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
    return first.astimezone(UTC)


@dataclass(frozen=True)
class Span:
    """What a shift or an absence must be (whole sentences, for the catalogue)."""

    longest: timedelta
    reversed: str  # ends before it starts
    too_long: str
    over: str  # already over

    def between(self, starts_local: datetime, ends_local: datetime, timezone: str, *,
                fold: int | None, now: datetime) -> tuple[datetime, datetime]:
        """Two wall-clock times of the hospital's zone as instants, checked."""
        tz = zone(timezone)
        return self.check(instant(starts_local, tz, fold=fold), instant(ends_local, tz, fold=fold),
                          now=now)

    def check(self, starts: datetime, ends: datetime, *, now: datetime) -> tuple[datetime, datetime]:
        if ends <= starts:
            raise InvalidInput(self.reversed)
        if ends - starts > self.longest:
            raise InvalidInput(self.too_long)
        if ends <= now:
            raise InvalidInput(self.over)
        return starts, ends
