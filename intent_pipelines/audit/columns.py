"""Typed columns beside the hashed body must say what the body says: an edited one could hide a record.

The store keeps ``v``, ``ts``, ``request_id``, ``run_id`` and ``kind`` beside each body, and the
Parquet export adds the query columns of ``export.TYPED``. The writer copies request_id, run_id
and kind into the body before hashing (store/state.py) and the query columns are derived from the
body, so each can be recomputed from the authenticated bytes; ``v`` must be the format the record
is hashed as. ``ts`` is not compared: the specification keeps that column as an index, not as
evidence (docs/audit-format.md).

Bodies are decoded a table at a time by Arrow's JSON reader, several times faster than json.loads
(only the keys the table's columns come from). It is trusted to pass rows, not to fail them: a
table it cannot read (a field of another JSON type than its column's) and every row it flags are
decoded again with json.loads before a finding is made, so the findings are those of the exact
rules in ``export.TypedColumn``.
"""

import json
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from intent_pipelines.audit.export import TYPED, TypedColumn, holds
from intent_pipelines.audit.record import FORMAT_VERSION, AuditRecord
from intent_pipelines.audit.verify import MAX_BREAKS, BreakKind, ChainBreak

# Copied into every body by the writer.
RECORD_KEYS = ("request_id", "run_id", "kind")
_INTENT = next(column for column in TYPED if column.request_fallback)
_STORE_COLUMNS = pa.schema([("seq", pa.int64()), ("v", pa.int64()), *((key, pa.string()) for key in RECORD_KEYS),
                            ("body", pa.binary())])
# One thread: the caller already decodes beside hashing (checked_tables), or in one process per CPU.
_READ = pj.ReadOptions(use_threads=False)


@dataclass
class ColumnFindings:
    """What the column checks of one verification found; merged across tables and worker processes."""

    breaks: list[ChainBreak] = field(default_factory=list)
    # A record whose body names no intent carries its request's: the intent its request's own records
    # state. Most are checked within their table; the rest are claims, checked once every table is
    # read, since a request can span days.
    stated: dict[str, str] = field(default_factory=dict)
    claims: dict[tuple[str, str], int] = field(default_factory=dict)  # (request_id, intent column) -> first seq

    def merge(self, other: "ColumnFindings") -> None:
        self.breaks += other.breaks
        self.stated.update(other.stated)
        for (request_id, intent), seq in other.claims.items():
            self.claim(request_id, intent, seq)

    def claim(self, request_id: str, intent: str, seq: int) -> None:
        self.claims[(request_id, intent)] = min(seq, self.claims.get((request_id, intent), seq))

    def resolved(self) -> list[ChainBreak]:
        """Every column_mismatch, the intents of records without their own included (at most MAX_BREAKS)."""
        found = list(self.breaks)
        for (request_id, intent), seq in self.claims.items():
            stated = self.stated.get(request_id)
            if stated is not None and intent != stated:
                found.append(ChainBreak(seq, BreakKind.COLUMN_MISMATCH,
                                        f"the intent column says {_shown(intent)} but the records of request "
                                        f"{request_id} say {_shown(stated)}", column=_INTENT.name))
        return sorted(found, key=lambda b: b.seq)[:MAX_BREAKS]


def check_table(table: pa.Table, findings: ColumnFindings) -> None:
    """Compare the typed columns of ``table`` (any of them; ``seq`` and ``body`` required) with its bodies."""
    if not table.num_rows:
        return
    schema = _decoded_schema(table)
    decoded = _decode(table.column("body"), schema)
    disagree = pc.indices_nonzero(pc.invert(_all(_agreement(table, decoded).values())))
    if len(disagree) and len(findings.breaks) < MAX_BREAKS:
        subset = table.take(disagree)
        findings.breaks += _breaks(subset, _decode_exactly(subset.column("body"), schema))
        del findings.breaks[MAX_BREAKS:]
    if _INTENT.name in table.column_names:
        _check_carried_intents(table, decoded, findings)


def checked_tables(tables: Iterable[pa.Table], findings: ColumnFindings) -> Generator[pa.Table, None, None]:
    """Each table, its column check handed to a thread first: Arrow decodes while the caller hashes.

    The checks are all done once this generator is exhausted or closed.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="audit-columns") as pool:
        checks = []
        for table in tables:
            checks.append(pool.submit(check_table, table, findings))
            yield table
        for check in checks:
            check.result()


def records_table(records: Sequence[AuditRecord]) -> pa.Table:
    """Store records as the columns check_table reads; a value of another type (tampering) mismatches."""
    columns = {"seq": [r.seq for r in records], "v": [r.v for r in records],
               **{key: [getattr(r, key) for r in records] for key in RECORD_KEYS}, "body": [r.body for r in records]}
    try:
        return pa.table(columns, schema=_STORE_COLUMNS)
    except (pa.ArrowException, TypeError, ValueError):  # e.g. text written into v: only then row by row
        columns["v"] = [v if holds(pa.int64(), v) else None for v in columns["v"]]
        for key in RECORD_KEYS:
            columns[key] = [value if isinstance(value, str) else repr(value) for value in columns[key]]
        return pa.table(columns, schema=_STORE_COLUMNS)


def _typed(table: pa.Table) -> list[TypedColumn]:
    return [column for column in TYPED if column.name in table.column_names]


def _decoded_schema(table: pa.Table) -> pa.Schema:
    """The body keys the table's columns come from (each key a column's type)."""
    return pa.schema([*((key, pa.string()) for key in RECORD_KEYS),
                      *((key, column.type) for column in _typed(table) for key in column.keys)])


def _agreement(table: pa.Table, decoded: pa.Table) -> dict[str, Any]:
    """Per typed column present in ``table``: whether each row's value is what its body says."""
    agree: dict[str, Any] = {}
    if "v" in table.column_names:
        agree["v"] = pc.fill_null(pc.equal(table.column("v"), FORMAT_VERSION), False)
    for key in RECORD_KEYS:
        if key in table.column_names:
            agree[key] = _same(decoded.column(key), table.column(key))
    for column in _typed(table):
        expected = _expected(column, decoded)
        agree[column.name] = _same(expected, table.column(column.name))
        if column.request_fallback:  # a body without its own: the request's, see _check_carried_intents
            agree[column.name] = pc.or_(agree[column.name], pc.invert(_truthy(expected)))
    return agree


def _breaks(table: pa.Table, decoded: pa.Table) -> list[ChainBreak]:
    """One column_mismatch per disagreeing (row, column), in seq order."""
    expected = {"v": pa.repeat(FORMAT_VERSION, table.num_rows), **{k: decoded.column(k) for k in RECORD_KEYS},
                **{c.name: _expected(c, decoded) for c in _typed(table)}}
    seqs = table.column("seq").to_pylist()
    found: list[ChainBreak] = []
    for name, agree in _agreement(table, decoded).items():
        actual, wanted = table.column(name).to_pylist(), expected[name].to_pylist()
        for row in pc.indices_nonzero(pc.invert(agree)).to_pylist():
            found.append(ChainBreak(seqs[row], BreakKind.COLUMN_MISMATCH,
                                    f"the {name} column says {_shown(actual[row])} but the hashed record says "
                                    f"{_shown(wanted[row])}", column=name))
    return sorted(found, key=lambda b: b.seq)


def _check_carried_intents(table: pa.Table, decoded: pa.Table, findings: ColumnFindings) -> None:
    """The intent column of records without their own must be their request's, as its records state it."""
    own = _expected(_INTENT, decoded)
    stating = _truthy(own)
    said = pa.table({"request_id": decoded.column("request_id"), "intent": own}).filter(stating)
    findings.stated.update(zip(said.column("request_id").to_pylist(), said.column("intent").to_pylist(), strict=True))
    carried = pa.table({"request_id": decoded.column("request_id"), "intent": table.column(_INTENT.name),
                        "seq": table.column("seq")})
    # A null column is what the export writes for a request the store has no row of.
    carried = carried.filter(pc.and_(pc.invert(stating), pc.and_(pc.is_valid(carried.column("request_id")),
                                                                 pc.is_valid(carried.column("intent")))))
    where = pc.index_in(carried.column("request_id"), value_set=said.column("request_id"))
    differ = pc.fill_null(pc.not_equal(carried.column("intent"), pc.take(said.column("intent"), where)), False)
    # Those that differ from what the table states, and one per request the table states nothing for.
    unknown = carried.filter(pc.is_null(where)).group_by(["request_id", "intent"]).aggregate([("seq", "min")])
    for part, seq in ((carried.filter(differ), "seq"), (unknown, "seq_min")):
        for request_id, intent, first in zip(part.column("request_id").to_pylist(), part.column("intent").to_pylist(),
                                             part.column(seq).to_pylist(), strict=True):
            findings.claim(request_id, intent, first)


def _expected(column: TypedColumn, decoded: pa.Table) -> Any:
    """TypedColumn.value over decoded bodies (without the request fallback): the first non-empty key wins."""
    keys = [decoded.column(key) for key in column.keys]
    value = keys[-1]
    for earlier in reversed(keys[:-1]):
        value = pc.if_else(_truthy(earlier), earlier, value)
    if column.kind is not None:
        value = pc.if_else(pc.fill_null(pc.equal(decoded.column("kind"), column.kind), False), value,
                           pa.scalar(None, column.type))
    return value


def _truthy(values: Any) -> Any:
    if pa.types.is_boolean(values.type):
        test = values
    elif pa.types.is_string(values.type):
        test = pc.not_equal(values, "")
    else:
        test = pc.not_equal(values, 0)
    return pc.fill_null(test, False)


def _same(expected: Any, actual: Any) -> Any:
    """Equal, or both null; a column that cannot be read as the body's type disagrees everywhere."""
    try:
        actual = pc.cast(actual, expected.type)
    except pa.ArrowException:
        return pa.repeat(False, len(actual))
    both_null = pc.and_(pc.is_null(expected), pc.is_null(actual))
    return pc.coalesce(pc.equal(expected, actual), both_null)


def _all(agreements: Iterable[Any]) -> Any:
    combined = None
    for agree in agreements:
        combined = agree if combined is None else pc.and_(combined, agree)
    return combined


def _decode(bodies: pa.ChunkedArray, schema: pa.Schema) -> pa.Table:
    """The ``schema`` keys of each body, by Arrow's JSON reader (one line per body), else exactly."""
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    parts = []
    try:
        for chunk in pc.binary_join_element_wise(bodies, b"", b"\n").chunks:  # each body + "\n"
            size = pc.sum(pc.binary_length(chunk)).as_py() or 0
            if size:
                data = pa.BufferReader(chunk.buffers()[2].slice(0, size))
                parts.append(pj.read_json(data, read_options=_READ, parse_options=options))
    except pa.ArrowException:
        return _decode_exactly(bodies, schema)
    decoded = pa.concat_tables(parts) if parts else None
    # Blank or multi-object lines would shift rows; only bodies that already fail their hash have them.
    if decoded is None or decoded.num_rows != len(bodies):
        return _decode_exactly(bodies, schema)
    return decoded


def _decode_exactly(bodies: Any, schema: pa.Schema) -> pa.Table:
    """json.loads of each body; a value of another type than its column's counts as absent."""
    rows = [_loads(body) for body in bodies.to_pylist()]
    return pa.table({key: pa.array([row.get(key) if holds(kind, row.get(key)) else None for row in rows], kind)
                     for key, kind in zip(schema.names, schema.types, strict=True)})


def _loads(body: bytes | None) -> dict[str, Any]:
    try:
        data = json.loads(body) if body is not None else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
