"""Where a period's audit events come from: exported daily Parquet files, or the store for days not exported yet.

`intent metrics` must answer for today without waiting for the 02:00 export, and the assets must not
fail because an export is late: finished days are read from their audit_events partition when it
exists, every other day (today, or a day never exported) straight from the store's chain with the
same code the export uses (`audit.export.day_table`), so both paths give identical tables.

Only days that can hold events are read: the days the store's chain spans and the exported days.
A period's cost follows the data, not its width (`--from 1970-01-01 --to 9999-12-30` reads what
the chain holds, not three million empty days).
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from intent_pipelines.audit.export import day_bounds, day_table, partition_path
from intent_pipelines.metrics.requests import (
    COMPACT_SCHEMA,
    LOOKBACK_DAYS,
    compact_events,
    derive_requests,
    read_compact,
)
from intent_pipelines.store import StateStore


def days(first: date, last: date) -> Iterator[date]:
    """Every day from first through last."""
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def read_partition_file(path: Any) -> pa.Table:
    """One audit_events file (a Path, or a UPath for object stores), compacted for metrics."""
    if isinstance(path, Path):
        return read_compact(path)
    with path.open("rb") as fh:
        return read_compact(fh)


def _day_of(ts: str) -> date:
    """The UTC day of an audit record's ts (ISO 8601, ``YYYY-MM-DDT...Z``)."""
    return date.fromisoformat(ts[:10])


@dataclass
class EventSource:
    """Audit events per day: the exported file under ``root`` for finished days, else the store."""

    store: StateStore
    root: Any = None  # Path or UPath of the audit_events partitions; None: always the store
    today: date | None = None  # days from here on are read from the store (their file may be partial)
    used: dict[str, str] = field(default_factory=dict)  # day -> "parquet" | "store", for metadata and tests

    def file(self, day: date) -> Any:
        """Where ``day``'s audit_events partition would be."""
        if isinstance(self.root, Path):
            return partition_path(self.root, day)
        return self.root / f"date={day.isoformat()}" / "audit_events.parquet"

    def day(self, day: date, intents: dict[str, str] | None = None) -> pa.Table:
        """One day's events, compacted (COMPACT_SCHEMA); ``intents``: the store's request intents, if read."""
        if self._exported(day):
            path = self.file(day)
            if path.exists():
                self.used[day.isoformat()] = "parquet"
                return read_partition_file(path)
        self.used[day.isoformat()] = "store"
        return compact_events(day_table(self.store, day, intents))

    def events(self, first: date, last: date) -> pa.Table:
        """The events of [first - LOOKBACK_DAYS, last], oldest day first."""
        wanted = self._days_with_events(first - timedelta(days=LOOKBACK_DAYS), last)
        intents = self.store.request_intents() if wanted else None  # once, not once per day
        tables = [self.day(day, intents) for day in wanted]
        return pa.concat_tables(tables) if tables else COMPACT_SCHEMA.empty_table()

    def _exported(self, day: date) -> bool:
        """Whether ``day`` is read from its file when there is one (a finished day)."""
        return self.root is not None and (self.today is None or day < self.today)

    def _days_with_events(self, first: date, last: date) -> list[date]:
        """The days of [first, last] that the store's chain spans or that have an exported file."""
        wanted: set[date] = set()
        seqs = self.store.audit_seq_range(day_bounds(first)[0], day_bounds(last)[1])
        if seqs is not None:
            # ts never goes backwards along the chain, so the lowest and highest seq bound the days.
            oldest, newest = (self.store.audit_record(seq) for seq in seqs)
            if oldest is not None and newest is not None:
                wanted.update(days(max(first, _day_of(oldest.ts)), min(last, _day_of(newest.ts))))
        if self.root is not None:
            for entry in self.root.glob("date=*"):
                try:
                    day = date.fromisoformat(entry.name.removeprefix("date="))
                except ValueError:
                    continue
                if first <= day <= last and self._exported(day):
                    wanted.add(day)
        return sorted(wanted)

    def requests(self, first: date, last: date) -> pa.Table:
        """One row per request that ended in [first, last]."""
        return derive_requests(self.events(first, last), first=first, last=last)
