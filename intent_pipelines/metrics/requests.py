"""One row per request, derived from audit events: outcome, timing, failure signature, retries, rollback, cancel.

A request belongs to the UTC day its ``request.complete`` record was written (the day it *ended*):
a day's rows are final once the day is over, and the record carries the status and duration. Its
other records (``request.start`` above all) may lie on earlier days, so callers pass the events of
``LOOKBACK_DAYS`` more days before the first day they want; a request whose start is not among
them still gets a row, with ``started`` computed as ``ended - duration_ms`` and ``replay_of`` unknown.
Requests that have not ended (running, waiting for approval) have no row yet. Runs cancelled while
still queued never became requests (no ``request.complete``) and are not counted.

A request's outcome is its *last* ``request.complete`` (a request that failed and was resumed to
success is a success): the status there, and its category (status.Category) as the ``outcome``:
``dry_run``, ``refused`` (nothing ran: bad input, policy, confirmation, lock busy), ``waiting`` (a
manual gate), ``cancelled`` (stopped on purpose: STOPPED_BY_OPERATOR, REJECTED), ``success``, else
``failure`` (FAILED, ROLLED_BACK, ROLLBACK_FAILED, CRASHED, WATCHDOG_STUCK). The failed step,
error class, error, reason and signature are that event's own fields, written once by
lifecycle/finish.py; for chains written before those fields existed they come from the first
``step.fail``/``verify.fail``/``request.refused`` record instead (and a FAILED request with a
``request.refused`` record counts as refused). ``rolled_back`` is orthogonal: a ``rollback.start``
record or status ROLLED_BACK/ROLLBACK_FAILED.

Speed (8M events in seconds, not minutes): the export writes the few body fields metrics need as
typed columns (``audit.export.TYPED_COLUMNS``), so only those columns are read and ``body`` (most
of a file's bytes) never is; each file is reduced to the few kinds metrics read (``compact_events``:
about a quarter of the records), files in parallel threads. Files exported before those columns
existed are still read: their bodies are parsed, column-at-a-time, for the same fields. The
derivation itself works on integer codes of the request ids (numpy), not on strings or Python objects.
"""

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from intent_pipelines.metrics.signature_batch import signature_many
from intent_pipelines.status import Category, RequestStatus

LOOKBACK_DAYS: Final = 1
SUCCESS, FAILURE, CANCELLED, DRY_RUN = "success", "failure", "cancelled", "dry_run"
REFUSED, WAITING = "refused", "waiting"
OUTCOMES: Final = (SUCCESS, FAILURE, CANCELLED, DRY_RUN, REFUSED, WAITING)
# status.Category -> outcome name (the metrics' word for a stop is "cancelled").
_OUTCOME_OF_CATEGORY: Final = {Category.SUCCESS: SUCCESS, Category.FAILURE: FAILURE, Category.STOPPED: CANCELLED,
                               Category.DRY_RUN: DRY_RUN, Category.REFUSED: REFUSED, Category.WAITING: WAITING}
_OUTCOME_OF_STATUS: Final = {s.value: _OUTCOME_OF_CATEGORY[s.category] for s in RequestStatus}
UNKNOWN_INTENT: Final = "(unknown)"
PREFLIGHT_STEP: Final = "(preflight)"  # the failed_step of a request refused before any step ran

# The export columns the derivation reads: typed columns only (TYPED_EVENT_COLUMNS); files exported
# before the body fields had columns of their own are read with ``body`` instead (EVENT_COLUMNS).
EVENT_COLUMNS: Final = ["ts", "request_id", "kind", "intent", "step", "status", "duration_ms", "body"]
_START, _REFUSED, _COMPLETE = "request.start", "request.refused", "request.complete"
_FAIL_KINDS: Final = ("step.fail", "verify.fail", _REFUSED)
_RETRY, _ROLLBACK, _CANCELLED = "step.retry", "rollback.start", "run.cancelled"
METRIC_KINDS: Final = (_START, _REFUSED, _COMPLETE, "step.fail", "verify.fail", _RETRY, _ROLLBACK, _CANCELLED)

# What compact_events keeps of each record: typed columns plus the body fields metrics need. Request
# ids and kinds are dictionary-encoded file by file (in the reading threads), so the derivation
# only merges small per-file dictionaries instead of hashing every row's id again.
_CODED = pa.dictionary(pa.int32(), pa.string())
TIMESTAMP = pa.timestamp("ms", tz="UTC")
COMPACT_SCHEMA = pa.schema([
    ("ts", TIMESTAMP), ("request_id", _CODED), ("kind", _CODED), ("intent", pa.string()),
    ("step", pa.string()), ("status", pa.string()), ("duration_ms", pa.int64()),
    ("dry_run", pa.bool_()), ("replay_of", pa.string()), ("error", pa.string()), ("error_class", pa.string()),
    ("latency_ms", pa.int64()), ("reason", pa.string()), ("signature", pa.string()),
])
_BODY_SCHEMA = pa.schema([(name, COMPACT_SCHEMA.field(name).type) for name in (
    "dry_run", "replay_of", "error", "error_class", "latency_ms", "reason", "signature")])
TYPED_EVENT_COLUMNS: Final = COMPACT_SCHEMA.names
_DICTIONARY_COLUMNS: Final = ["kind", "intent", "step", "status"]

REQUESTS_SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("intent", pa.string()),
    ("status", pa.string()),
    ("outcome", pa.string()),
    ("reason", pa.string()),
    ("started", TIMESTAMP),
    ("ended", TIMESTAMP),
    ("duration_ms", pa.int64()),
    ("failed_step", pa.string()),
    ("error_class", pa.string()),
    ("error", pa.string()),
    ("signature", pa.string()),
    ("retries", pa.int64()),
    ("rolled_back", pa.bool_()),
    ("cancelled", pa.bool_()),
    ("cancel_latency_ms", pa.int64()),
    ("dry_run", pa.bool_()),
    ("replay_of", pa.string()),
])
_ROLLED_BACK_STATUSES: Final = [RequestStatus.ROLLED_BACK.value, RequestStatus.ROLLBACK_FAILED.value]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def empty_requests() -> pa.Table:
    """A table with no requests and the full schema (a quiet day)."""
    return REQUESTS_SCHEMA.empty_table()


# --- reading and compacting -----------------------------------------------------------------------

def _plain(column: pa.ChunkedArray | pa.Array) -> Any:
    """Dictionary-encoded columns decoded to their value type."""
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _is_metric_kind(kinds: pa.ChunkedArray) -> Bools:
    """Which rows hold one of METRIC_KINDS; on dictionary columns (as read) only the dictionary is compared."""
    if not pa.types.is_dictionary(kinds.type):
        return _numpy_bool(pc.is_in(kinds, value_set=pa.array(METRIC_KINDS)))
    parts = []
    for chunk in kinds.chunks:
        wanted = np.append(_numpy_bool(pc.is_in(chunk.dictionary, value_set=pa.array(METRIC_KINDS))), False)
        codes = np.asarray(pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        parts.append(wanted[codes])  # code -1 (null kind) picks the appended False
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _typed(column: pa.ChunkedArray, type_: pa.DataType) -> pa.Array:
    """One array of ``type_``: strings dictionary-encoded for _CODED, dictionaries decoded otherwise."""
    plain = _plain(column).combine_chunks()
    if type_ == TIMESTAMP and not pa.types.is_timestamp(plain.type):
        return _ts_to_timestamp(plain)  # parsed here, in the reading threads, null where malformed
    if type_ == _CODED:
        return pc.dictionary_encode(plain.cast(pa.string())).cast(_CODED)
    return plain.cast(type_)


def _codes(column: pa.ChunkedArray) -> tuple[Ints, pa.Array]:
    """Integer codes (-1 for null) of a dictionary column and the one dictionary they index."""
    unified = column.unify_dictionaries() if column.num_chunks else column
    if not unified.num_chunks:
        return np.zeros(0, dtype=np.int64), pa.array([], type=pa.string())
    codes = np.concatenate([np.asarray(pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False),
                                       dtype=np.int64) for chunk in unified.chunks])
    return codes, unified.chunk(0).dictionary


def _numpy_bool(column: Any) -> Bools:
    return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=bool)


def compact_events(events: pa.Table) -> pa.Table:
    """Only the kinds metrics read (COMPACT_SCHEMA), with their body fields.

    Accepts export tables with the typed body-field columns (``body`` is then ignored), older export
    tables without them (the fields are parsed from ``body``; without ``body`` too they stay
    empty), and tables already compacted.
    """
    if events.column_names == COMPACT_SCHEMA.names:
        return events.cast(COMPACT_SCHEMA)  # already compacted
    return _compact(events)


def _compact(events: pa.Table) -> pa.Table:
    """compact_events of an export table (with or without the typed body-field columns)."""
    if events.num_rows == 0:
        return COMPACT_SCHEMA.empty_table()
    keep = np.flatnonzero(_is_metric_kind(events["kind"]))
    take = pa.array(keep)
    typed = all(name in events.column_names for name in _BODY_SCHEMA.names)
    columns: dict[str, Any] = {
        name: _typed(events[name].take(take), COMPACT_SCHEMA.field(name).type)
        for name in (COMPACT_SCHEMA.names if typed else COMPACT_SCHEMA.names[:7])}
    if typed:
        return pa.table(columns, schema=COMPACT_SCHEMA)
    n = len(keep)
    fields = {name: pa.nulls(n, field.type) for name, field in zip(_BODY_SCHEMA.names, _BODY_SCHEMA, strict=True)}
    if "body" in events.column_names and n:
        kinds = columns["kind"]
        bodies = events["body"]
        starts = np.flatnonzero(_numpy_bool(pc.is_in(kinds, value_set=pa.array([_START, _REFUSED]))))
        if len(starts):
            dry, replay = _dry_run_and_replay(bodies.take(pa.array(keep[starts])))
            fields["dry_run"] = _scatter(n, starts, pa.array(dry), pa.bool_())
            fields["replay_of"] = _scatter(n, starts, replay, pa.string())
        others = np.flatnonzero(_numpy_bool(pc.is_in(kinds, value_set=pa.array([*_FAIL_KINDS, _CANCELLED,
                                                                                   _COMPLETE]))))
        if len(others):
            parsed = _body_fields(bodies.take(pa.array(keep[others])))
            for name in ("error", "error_class", "latency_ms", "reason", "signature"):
                fields[name] = _scatter(n, others, parsed[name], fields[name].type)
    return pa.table({**columns, **fields}, schema=COMPACT_SCHEMA)


def read_compact(source: Any) -> pa.Table:
    """One audit_events Parquet file (a path or a binary file object), compacted (see compact_events).

    Only the typed columns are read when the file has them; ``body`` only from older files.
    """
    # Low-cardinality strings as dictionaries: cheaper to read and to compare.
    parquet = pq.ParquetFile(source, read_dictionary=_DICTIONARY_COLUMNS)
    names = set(parquet.schema_arrow.names)
    columns = TYPED_EVENT_COLUMNS if names.issuperset(TYPED_EVENT_COLUMNS) else EVENT_COLUMNS
    return _compact(parquet.read(columns=columns))


def read_events(files: Iterable[Path]) -> pa.Table:
    """The compacted events of daily audit_events files, in file order; files are read in parallel threads."""
    paths = list(files)
    if not paths:
        return COMPACT_SCHEMA.empty_table()
    # Parquet decoding and Arrow kernels release the GIL, so threads use every core.
    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        tables = list(pool.map(read_compact, paths))
    return pa.concat_tables(tables)


def _ts_to_timestamp(ts: Any) -> Any:
    """ISO 8601 ``YYYY-MM-DDTHH:MM:SS(.fff)Z`` strings as UTC millisecond timestamps (null if malformed)."""
    if len(ts) == 0:
        return pa.array([], type=TIMESTAMP)
    try:
        return ts.cast(TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([_parse_ts(value) for value in ts.to_pylist()], type=TIMESTAMP)


def _parse_ts(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _body_fields(bodies: Any) -> pa.Table:
    """The body fields metrics need, parsed by Arrow's JSON reader (one body per line).

    Canonical bodies hold no raw newlines (JSON escapes them), so joining them with newlines gives
    newline-delimited JSON. When Arrow cannot read them with these types, json.loads per body.
    """
    values = pc.cast(bodies, pa.binary()).to_pylist() if len(bodies) else []
    if not values:
        return _BODY_SCHEMA.empty_table()
    options = pa_json.ParseOptions(explicit_schema=_BODY_SCHEMA, unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(pa.BufferReader(b"\n".join(v or b"{}" for v in values) + b"\n"),
                                  read_options=pa_json.ReadOptions(block_size=1 << 24), parse_options=options)
        if table.num_rows == len(values):
            return table.select(_BODY_SCHEMA.names).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    return pa.Table.from_pylist([_body_row(value) for value in values], schema=_BODY_SCHEMA)


def _body_row(body: bytes | None) -> dict[str, Any]:
    """One body's fields, tolerating bad JSON and odd types (a field of the wrong type is dropped)."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}

    def typed(name: str, kind: type) -> Any:
        value = data.get(name)
        return value if isinstance(value, kind) and not (kind is int and isinstance(value, bool)) else None

    return {"dry_run": typed("dry_run", bool), "replay_of": typed("replay_of", str), "error": typed("error", str),
            "error_class": typed("error_class", str), "latency_ms": typed("latency_ms", int),
            "reason": typed("reason", str), "signature": typed("signature", str)}


def _dry_run_and_replay(bodies: Any) -> tuple[Bools, pa.Array]:
    """dry_run and replay_of of request.start / request.refused bodies.

    Canonical JSON escapes quotes inside strings, so the bytes ``"dry_run":true`` or ``"replay_of":"``
    can only be a key and its value (at some depth); bodies without either are decided without
    parsing, and only the rest (dry runs and replays, a few percent) go through the JSON reader.
    """
    candidates = pc.match_substring_regex(bodies, '"dry_run":true|"replay_of":"')
    where = np.flatnonzero(_numpy_bool(candidates))
    dry = np.zeros(len(bodies), dtype=bool)
    replay = pa.nulls(len(bodies), pa.string())
    if len(where):
        fields = _body_fields(bodies.take(pa.array(where)))
        dry[where] = _numpy_bool(fields["dry_run"])
        replay = _scatter(len(bodies), where, fields["replay_of"], pa.string())
    return dry, replay


def _scatter(n: int, positions: Ints, values: Any, type_: pa.DataType) -> pa.Array:
    """An array of length n holding ``values`` at ``positions`` and null elsewhere."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    source = np.full(n, -1, dtype=np.int64)
    source[positions] = np.arange(len(positions))
    return values.cast(type_).take(pa.array(source, mask=source < 0))


# --- the derivation -------------------------------------------------------------------------------

class _Requests:
    """Rows of the compact events grouped by request, as integer codes (no strings after the first pass)."""

    def __init__(self, events: pa.Table) -> None:
        self.codes, self.ids = _codes(events["request_id"])
        self.kind_codes, kind_names = _codes(events["kind"])
        self.kind_names = kind_names.to_pylist()
        self.position = np.full(len(self.ids) + 1, -1, dtype=np.int64)  # code -> request row (-1: none)

    def rows(self, *kinds: str) -> Ints:
        """Event rows of these kinds with a request id."""
        wanted = np.array([name in kinds for name in self.kind_names] + [False], dtype=bool)
        mask = wanted[self.kind_codes] & (self.codes >= 0)  # code -1 (null kind) picks the False
        return np.flatnonzero(mask)

    def last_rows(self, rows: Ints) -> Ints:
        """Of ``rows``, the last row (in event order) of each request id, in event order."""
        if not len(rows):
            return rows
        last = np.full(len(self.ids), -1, dtype=np.int64)
        np.maximum.at(last, self.codes[rows], rows)
        return np.sort(last[last >= 0])

    def first_rows(self, rows: Ints) -> Ints:
        """Of ``rows``, the first row (in event order) of each request id, in event order."""
        if not len(rows):
            return rows
        first = np.full(len(self.ids), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, self.codes[rows], rows)
        return np.sort(first[first != np.iinfo(np.int64).max])

    def adopt(self, rows: Ints) -> None:
        """Make the requests of ``rows`` (one row each) the output rows 0..n-1."""
        self.position[self.codes[rows]] = np.arange(len(rows))
        self.n = len(rows)

    def first_of(self, *kinds: str) -> tuple[Ints, Ints]:
        """(output row, event row) of the first event of these kinds per output request."""
        rows = self.rows(*kinds)
        target = self.position[self.codes[rows]]
        rows, target = rows[target >= 0], target[target >= 0]
        first = self.first_rows(rows)
        return self.position[self.codes[first]], first

    def count(self, *kinds: str) -> Ints:
        """How many events of these kinds each output request has."""
        target = self.position[self.codes[self.rows(*kinds)]]
        return np.bincount(target[target >= 0], minlength=self.n).astype(np.int64)


def _map_strings(values: Any, mapping: dict[str, str]) -> pa.Array:
    """``values`` mapped through ``mapping`` (null where a value has no entry)."""
    keys = pa.array(list(mapping))
    positions = pc.index_in(values, value_set=keys)
    return pa.array(list(mapping.values()), type=pa.string()).take(positions)


def _day_start_ms(day: date) -> int:
    """Milliseconds since the epoch at 00:00 UTC of ``day``."""
    return (day - date(1970, 1, 1)).days * 86_400_000


def derive_requests(events: pa.Table, *, first: date | None = None, last: date | None = None) -> pa.Table:
    """One row per request that ended in [first, last] (UTC days, inclusive; None = unbounded).

    ``events`` are export columns (TYPED_EVENT_COLUMNS; or, from files exported before the typed
    body-field columns, EVENT_COLUMNS: without ``body`` too, dry_run, replay_of, error texts,
    signatures and cancel latency stay empty) or the output of compact_events. Rows
    come in the order the requests' ``request.complete`` records were written (seq order), so the
    same chain always gives the same table.
    """
    events = compact_events(events)
    if events.num_rows == 0:
        return empty_requests()
    index = _Requests(events)
    # The last ending is the outcome: a request resumed after a failure ends again.
    complete = index.last_rows(index.rows(_COMPLETE))
    ended = events["ts"].take(pa.array(complete)).cast(pa.int64())
    ended_ms = np.asarray(pc.fill_null(ended, np.iinfo(np.int64).min).to_numpy(zero_copy_only=False),
                          dtype=np.int64)
    keep = ended_ms != np.iinfo(np.int64).min
    if first is not None:
        keep &= ended_ms >= _day_start_ms(first)
    if last is not None:
        keep &= ended_ms < _day_start_ms(last + timedelta(days=1))
    complete, ended_ms = complete[keep], ended_ms[keep]
    if not len(complete):
        return empty_requests()
    index.adopt(complete)
    n = len(complete)
    done = events.select(["request_id", "intent", "status", "duration_ms", "step", "error_class", "error",
                          "reason", "signature"]).take(pa.array(complete))
    status = _plain(done["status"])

    # request.start (or request.refused): started, intent, dry_run, replay_of.
    start_pos, start_rows = index.first_of(_START, _REFUSED)
    starts = events.select(["ts", "intent", "dry_run", "replay_of", "kind"]).take(pa.array(start_rows))
    start_ms = starts["ts"].cast(pa.int64())
    started = ended_ms - np.asarray(pc.fill_null(done["duration_ms"], 0).to_numpy(zero_copy_only=False),
                                    dtype=np.int64)
    has_start = np.asarray(pc.is_valid(start_ms).to_numpy(zero_copy_only=False), dtype=bool)
    started[start_pos[has_start]] = np.asarray(pc.fill_null(start_ms, 0).to_numpy(zero_copy_only=False),
                                               dtype=np.int64)[has_start]
    dry_run = np.zeros(n, dtype=bool)
    dry_run[start_pos] = _numpy_bool(starts["dry_run"])
    dry_run |= _numpy_bool(pc.equal(status, RequestStatus.DRY_RUN.value))
    # Chains from before REFUSED existed recorded a refusal as FAILED after a request.refused record.
    legacy_refused = np.zeros(n, dtype=bool)
    legacy_refused[start_pos] = _numpy_bool(pc.equal(_plain(starts["kind"]), _REFUSED))
    legacy_refused &= _numpy_bool(pc.equal(status, RequestStatus.FAILED.value))

    outcome_names = pc.fill_null(_map_strings(status, _OUTCOME_OF_STATUS), FAILURE)
    outcome = np.asarray(pc.index_in(outcome_names, value_set=pa.array(OUTCOMES)).to_numpy(zero_copy_only=False),
                         dtype=np.int64)
    outcome = np.where(dry_run, OUTCOMES.index(DRY_RUN), np.where(legacy_refused, OUTCOMES.index(REFUSED), outcome))
    ended_well = np.isin(outcome, [OUTCOMES.index(SUCCESS), OUTCOMES.index(DRY_RUN)])

    # The ending's own failure fields; for older chains, the first failure record (step or preflight).
    fail_pos, fail_rows = index.first_of(*_FAIL_KINDS)
    fails = events.select(["kind", "step", "error_class", "error"]).take(pa.array(fail_rows))
    legacy_steps = pc.if_else(pc.equal(_plain(fails["kind"]), _REFUSED), pa.scalar(PREFLIGHT_STEP), fails["step"])
    legacy_signatures = signature_many(legacy_steps.to_pylist(), fails["error_class"].to_pylist(),
                                       fails["error"].to_pylist())
    typed_ending = np.asarray(pc.is_valid(done["signature"]).to_numpy(zero_copy_only=False), dtype=bool)
    blank = ended_well | ~typed_ending

    def ending_field(own: Any, legacy: Any) -> pa.Array:
        legacy_values = _scatter(n, fail_pos, legacy, pa.string())
        own_values = pc.if_else(pa.array(blank), pa.nulls(n, pa.string()), _plain(own).cast(pa.string()))
        chosen = pc.if_else(pa.array(typed_ending), own_values, legacy_values)
        return pc.if_else(pa.array(ended_well), pa.nulls(n, pa.string()), chosen)

    own_steps = pc.if_else(pc.equal(done["step"], "preflight"), pa.scalar(PREFLIGHT_STEP), _plain(done["step"]))

    cancel_pos, cancel_rows = index.first_of(_CANCELLED)
    cancelled = np.zeros(n, dtype=bool)
    cancelled[cancel_pos] = True
    cancelled |= outcome == OUTCOMES.index(CANCELLED)
    rolled_back = (index.count(_ROLLBACK) > 0) | _numpy_bool(pc.is_in(status, value_set=pa.array(
        _ROLLED_BACK_STATUSES)))
    return pa.table({
        "request_id": _plain(done["request_id"]),
        "intent": pc.coalesce(_plain(done["intent"]), _scatter(n, start_pos, starts["intent"], pa.string()),
                              pa.scalar(UNKNOWN_INTENT)),
        "status": status,
        "outcome": pa.array(OUTCOMES).take(pa.array(outcome)),
        "reason": pc.if_else(pa.array(ended_well), pa.nulls(n, pa.string()), _plain(done["reason"])),
        "started": pa.array(started, type=pa.int64()).cast(TIMESTAMP),
        "ended": pa.array(ended_ms, type=pa.int64()).cast(TIMESTAMP),
        "duration_ms": done["duration_ms"],
        "failed_step": ending_field(own_steps, legacy_steps),
        "error_class": ending_field(done["error_class"], fails["error_class"]),
        "error": ending_field(done["error"], fails["error"]),
        "signature": ending_field(done["signature"], pa.array(legacy_signatures, type=pa.string())),
        "retries": pa.array(index.count(_RETRY)),
        "rolled_back": pa.array(rolled_back),
        "cancelled": pa.array(cancelled),
        "cancel_latency_ms": _scatter(n, cancel_pos, events["latency_ms"].take(pa.array(cancel_rows)), pa.int64()),
        "dry_run": pa.array(dry_run),
        "replay_of": _scatter(n, start_pos, starts["replay_of"], pa.string()),
    }, schema=REQUESTS_SCHEMA)
