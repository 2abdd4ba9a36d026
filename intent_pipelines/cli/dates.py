"""Date options shared by the reporting commands: --date, --days, --from/--to (UTC days).

Every day they accept lies in [FIRST_DAY, LAST_DAY] (docs/cli.md, "Limits"): the audit log's
timestamps start at the epoch, and the day after the last one must still be a date, so the
commands' day arithmetic can never overflow.
"""

from datetime import UTC, date, datetime, timedelta

from intent_pipelines.errors import UsageError

FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date.max - timedelta(days=1)


def parse_date(value: str | None, option: str) -> date | None:
    """A YYYY-MM-DD option value within [FIRST_DAY, LAST_DAY], or a one-line UsageError naming the option."""
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r} is not a date", hint="Use YYYY-MM-DD.") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise UsageError(f"{option} {day} is out of range", hint=f"Use a UTC day from {FIRST_DAY} to {LAST_DAY}.")
    return day


def day_span(day: date | None, days: int | None, first: date | None = None,
             last: date | None = None) -> tuple[date, date] | None:
    """First and last UTC day chosen by exactly one of --date, --days N, --from/--to; None if none."""
    chosen = [name for name, given in (("--date", day is not None), ("--days", days is not None),
                                       ("--from/--to", first is not None or last is not None)) if given]
    if len(chosen) > 1:
        conflict = f"{chosen[0]} or {chosen[1]}, not both" if len(chosen) == 2 else f"only one of {', '.join(chosen)}"
        raise UsageError(f"give {conflict}", hint="See the command's --help.")
    if day is not None:
        return day, day
    if days is not None:
        today = datetime.now(UTC).date()
        most = (today - FIRST_DAY).days + 1
        if days < 1:
            raise UsageError("--days must be at least 1", hint="E.g. --days 7.")
        if days > most:
            raise UsageError(f"--days {days} reaches back before {FIRST_DAY}", hint=f"Use at most --days {most}.")
        return today - timedelta(days=days - 1), today
    if first is not None or last is not None:
        if first is None or last is None:
            raise UsageError("--from and --to go together", hint="Give both dates.")
        if first > last:
            raise UsageError("--from is after --to", hint="Swap them.")
        return first, last
    return None


def each_day(span: tuple[date, date]) -> list[date]:
    """Every day of a span, oldest first."""
    first, last = span
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
