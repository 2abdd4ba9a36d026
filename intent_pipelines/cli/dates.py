"""Date options shared by the reporting commands: --date, --days, --from/--to (UTC days)."""

from datetime import UTC, date, datetime, timedelta

from intent_pipelines.errors import UsageError


def parse_date(value: str | None, option: str) -> date | None:
    """A YYYY-MM-DD option value, or a one-line UsageError naming the option."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r} is not a date", hint="Use YYYY-MM-DD.") from None


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
        if days < 1:
            raise UsageError("--days must be at least 1", hint="E.g. --days 7.")
        today = datetime.now(UTC).date()
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
