"""Where a period's audit events come from: exported daily Parquet files, or the store for days not exported yet.

`intent metrics` must answer for today without waiting for the 02:00 export, and the assets must not
fail because an export is late: finished days are read from their audit_events partition when it
exists, every other day (today, or a day never exported) straight from the store's chain with the
same code the export uses (`audit.export.day_table`), so both paths give identical tables.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from intent_pipelines.audit.export import day_table, partition_path
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

    def day(self, day: date) -> pa.Table:
        """One day's events, compacted (COMPACT_SCHEMA)."""
        if self.root is not None and (self.today is None or day < self.today):
            path = self.file(day)
            if path.exists():
                self.used[day.isoformat()] = "parquet"
                return read_partition_file(path)
        self.used[day.isoformat()] = "store"
        return compact_events(day_table(self.store, day))

    def events(self, first: date, last: date) -> pa.Table:
        """The events of [first - LOOKBACK_DAYS, last], oldest day first."""
        tables = [self.day(day) for day in days(first - timedelta(days=LOOKBACK_DAYS), last)]
        return pa.concat_tables(tables) if tables else COMPACT_SCHEMA.empty_table()

    def requests(self, first: date, last: date) -> pa.Table:
        """One row per request that ended in [first, last]."""
        return derive_requests(self.events(first, last), first=first, last=last)
