"""Typed columns against their bodies: what the export writes for every event kind verifies, and any edit is found.

Records are appended to a real SQLite store with the typed events (every kind, every field set)
and exported with export_day; the attacker then edits one value of the Parquet file.
"""

import dataclasses
import types
import typing
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from intent_pipelines.audit import events as ev
from intent_pipelines.audit.export import SCHEMA, TYPED_COLUMNS, export_day, parquet_files
from intent_pipelines.audit.integrity import verify_parquet
from intent_pipelines.audit.verify import BreakKind
from intent_pipelines.store import StateStore

REQUEST, INTENT = "req-1", "deploy-app"
CHECKED = ["v", "request_id", "run_id", "kind", *TYPED_COLUMNS]


def example(cls: type[ev.Event]) -> ev.Event:
    """An event of ``cls`` with every field set to a value of its type (the intent: the request's)."""
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        kind = spec.type
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        origin = typing.get_origin(kind) or kind
        values[spec.name] = {str: INTENT if spec.name == "intent" else f"{spec.name}-1", int: 7, bool: True,
                             list: ["a"], dict: {"k": "v"}}[origin]
    return cls(**values)


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """One file: an example of every event kind, for a request the store has a row of, then one with no row."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.create_request(request_id=REQUEST, intent=INTENT, run_id="run-1", params={}, context={}, plan_hash="",
                         intent_sha256="", lock_key=None, dry_run=False, reason="", who="")
    for cls in ev.KINDS.values():
        store.append_event(example(cls), request_id=REQUEST, run_id="run-1")
    store.append_event(ev.StepStart(step="build"), request_id="req-without-row", run_id="run-2")
    root = tmp_path / "export"
    for day in sorted({r.ts[:10] for r in store.audit_records()}):
        export_day(store, date.fromisoformat(day), root)
    return root


def _edit(root: Path, column: str, row: int, value: Any) -> None:
    (path,) = parquet_files(root)
    rows = pq.read_table(path).to_pylist()
    assert rows[row][column] != value
    rows[row][column] = value
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)


def test_every_event_kind_exports_columns_that_verify(exported: Path) -> None:
    """The export's columns of every kind agree with their bodies, and every query column is filled somewhere."""
    result = verify_parquet(exported, None)
    assert result.ok, result.breaks
    (path,) = parquet_files(exported)
    table = pq.read_table(path)
    assert all(table.column(name).null_count < table.num_rows for name in TYPED_COLUMNS)
    assert table.column("intent").to_pylist()[-1] is None, "no request row: the export leaves the intent null"


@pytest.mark.parametrize("column", CHECKED)
def test_any_changed_value_is_found(exported: Path, column: str) -> None:
    """Changing one row's value of any checked column, or filling one it left null, is column_mismatch there."""
    (path,) = parquet_files(exported)
    values = pq.read_table(path).column(column).to_pylist()
    filled = next(i for i, value in enumerate(values) if value is not None)
    # The only null intent is of a request no record states an intent for: nothing to check it against.
    empty = next((i for i, value in enumerate(values) if value is None), None) if column != "intent" else None
    changed = {str: "other", int: 99, bool: not values[filled]}[type(values[filled])]
    for row, value in [(filled, changed), *([(empty, changed)] if empty is not None else [])]:
        _edit(exported, column, row, value)
        first = verify_parquet(exported, None).first_break
        assert first is not None and (first.kind, first.seq, first.column) == (BreakKind.COLUMN_MISMATCH, row, column)
        _edit(exported, column, row, values[row])
        assert verify_parquet(exported, None).ok


def test_bodies_of_unexpected_types_are_checked_exactly(tmp_path: Path) -> None:
    """A body whose fields have other JSON types than their columns (older writers) still verifies, edits are found."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.append_event(ev.StepComplete(step="build", duration_ms=5), request_id="r", run_id="u")
    # Not what today's events emit: a field of another type, which Arrow's reader refuses for the whole file.
    store.append_audit("step.fail", request_id="r", run_id="u", body={"step": 3, "duration_ms": True, "error": None})
    root = tmp_path / "export"
    export_day(store, date.fromisoformat(next(store.audit_records()).ts[:10]), root)
    assert verify_parquet(root, None).ok
    _edit(root, "duration_ms", 0, 6)
    first = verify_parquet(root, None).first_break
    assert first is not None and (first.seq, first.column) == (0, "duration_ms")
