"""Daily Parquet export of the audit chain: the stored bytes plus typed columns for queries.

The typed columns are copies of body fields (and the request's intent), so queries such as the
metrics never decode ``body`` (most of a file's bytes): Parquet reads only the columns asked for.
They are not hashed; ``body`` stays the authenticated copy, and verification checks that every
typed column still says what the body says (audit/columns.py), so an edited column is found.
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from intent_pipelines.audit.chain_store import ChainStore
from intent_pipelines.audit.events import RequestComplete
from intent_pipelines.audit.verify import RecordTuple

_INT64 = range(-(2**63), 2**63)


def holds(kind: pa.DataType, value: Any) -> bool:
    """Whether a decoded JSON value is of the column type ``kind`` (bools are not integers here)."""
    if pa.types.is_string(kind):
        return isinstance(value, str)
    if pa.types.is_boolean(kind):
        return isinstance(value, bool)
    return isinstance(value, int) and not isinstance(value, bool) and value in _INT64


@dataclass(frozen=True)
class TypedColumn:
    """A query column copied from the body: the first of ``keys`` that holds a non-empty value of its type.

    A value of another JSON type counts as absent, so the column holds only what the body says.
    When no key holds a non-empty value, the column takes the last key's value (an empty string,
    0, false) or null. The export (typed_values) and verification (audit/columns.py) both read
    these rules from here.
    """

    name: str
    type: pa.DataType
    keys: tuple[str, ...]
    kind: str | None = None  # only records of this kind fill the column
    request_fallback: bool = False  # a body without a value takes its request's (the intent)

    def value(self, data: Mapping[str, Any], kind: str, request_value: Any = None) -> Any:
        """The column's value for one decoded body."""
        if self.kind is not None and kind != self.kind:
            return None
        candidates = [data.get(key) for key in self.keys] + ([request_value] if self.request_fallback else [])
        found = None
        for candidate in candidates:
            found = candidate if holds(self.type, candidate) else None
            if found:
                break
        return found


TYPED = (
    TypedColumn("intent", pa.string(), ("intent",), request_fallback=True),
    TypedColumn("step", pa.string(), ("step", "check")),  # verify records name their check
    TypedColumn("status", pa.string(), ("status",)),
    TypedColumn("duration_ms", pa.int64(), ("duration_ms",)),
    TypedColumn("dry_run", pa.bool_(), ("dry_run",)),
    TypedColumn("replay_of", pa.string(), ("replay_of",)),
    TypedColumn("error", pa.string(), ("error",)),
    TypedColumn("error_class", pa.string(), ("error_class",)),
    TypedColumn("latency_ms", pa.int64(), ("latency_ms",)),
    # Of request.complete only (the reason category and failure signature of the ending).
    TypedColumn("reason", pa.string(), ("reason",), kind=RequestComplete.KIND),
    TypedColumn("signature", pa.string(), ("signature",), kind=RequestComplete.KIND),
)
SCHEMA = pa.schema([
    ("seq", pa.int64()),
    ("v", pa.int32()),
    ("ts", pa.string()),
    ("request_id", pa.string()),
    ("run_id", pa.string()),
    ("kind", pa.string()),
    ("prev", pa.binary(32)),
    ("hash", pa.binary(32)),
    ("body", pa.binary()),
    *((column.name, column.type) for column in TYPED),
])
# The typed query columns, in SCHEMA order: everything after the record's own fields.
TYPED_COLUMNS = [column.name for column in TYPED]
FILE_NAME = "audit_events.parquet"


def day_bounds(day: date) -> tuple[str, str]:
    """ISO timestamps [start, end) of a UTC day, comparable with the records' ts strings."""
    return f"{day.isoformat()}T00:00:00.000Z", f"{(day + timedelta(days=1)).isoformat()}T00:00:00.000Z"


def partition_path(root: Path, day: date) -> Path:
    """Where one day's file lives: <root>/date=YYYY-MM-DD/audit_events.parquet."""
    return root / f"date={day.isoformat()}" / FILE_NAME


def typed_values(data: Mapping[str, Any], intent: str | None, kind: str = "") -> tuple[Any, ...]:
    """The TYPED_COLUMNS of one decoded body (``intent``: the request's, for bodies without their own)."""
    return tuple(column.value(data, kind, intent) for column in TYPED)


def day_table(store: ChainStore, day: date, intents: Mapping[str, str] | None = None) -> pa.Table:
    """The records of one UTC day as an Arrow table (empty table for a quiet day)."""
    bounds = store.audit_seq_range(*day_bounds(day))
    intents = intents if intents is not None else store.request_intents()
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    if bounds is not None:
        for record in store.audit_records_between(*bounds):
            data = record.data()
            columns["seq"].append(record.seq)
            columns["v"].append(record.v)
            columns["ts"].append(record.ts)
            columns["request_id"].append(record.request_id)
            columns["run_id"].append(record.run_id)
            columns["kind"].append(record.kind)
            columns["prev"].append(record.prev)
            columns["hash"].append(record.hash)
            columns["body"].append(record.body)
            typed = typed_values(data, intents.get(record.request_id), record.kind)
            for name, value in zip(TYPED_COLUMNS, typed, strict=True):
                columns[name].append(value)
    return pa.table(columns, schema=SCHEMA)


def export_day(store: ChainStore, day: date, root: Path) -> tuple[Path, int]:
    """Write one day's partition atomically; returns (path, rows)."""
    table = day_table(store, day)
    path = partition_path(root, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path, table.num_rows


def parquet_files(root: Path) -> list[Path]:
    """Every exported day under ``root`` (or ``root`` itself when it is one file), oldest first."""
    if root.is_file():
        return [root]
    return sorted(root.glob(f"date=*/{FILE_NAME}")) or sorted(root.glob("*.parquet"))


def records_of(table: pa.Table) -> Iterator[RecordTuple]:
    """(seq, prev, hash, body) of a table in its stored order, column-at-a-time for speed.

    Rows are taken in the order they are stored (the export writes them in seq order), so a
    reordered file shows up as a break instead of being silently sorted back.
    """
    # Fixed-size binary converts to Python ~5x slower than plain binary; cast first.
    yield from zip(table.column("seq").to_numpy().tolist(),
                   table.column("prev").cast(pa.binary()).to_pylist(),
                   table.column("hash").cast(pa.binary()).to_pylist(),
                   table.column("body").to_pylist(), strict=True)


def read_records(files: list[Path]) -> Iterator[RecordTuple]:
    """(seq, prev, hash, body) from Parquet files in file order."""
    for path in files:
        yield from records_of(pq.read_table(path, columns=["seq", "prev", "hash", "body"]))


def request_timeline(store: ChainStore, request_id: str) -> list[dict[str, Any]]:
    """The decoded records of one request, for `intent audit show`."""
    return [{"seq": r.seq, "ts": r.ts, "kind": r.kind, "run_id": r.run_id, **json.loads(r.body)}
            for r in store.audit_records(request_id=request_id)]
