"""Tamper suite: every kind of edit to the chain is detected with the right kind and first bad seq.

Each case runs against a SQLite store, a PostgreSQL store and the exported Parquet files. The
chain under test is 16 records of three interleaved requests, written with the typed events the
engine emits, with checkpoint 1 at size 8 and checkpoint 2 at size 12, so a rewrite is localized
between two checkpoints and a truncation cuts into checkpointed records. The attacker edits the
raw rows directly (SQL or pyarrow), never through the package's API.
"""

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from intent_pipelines.audit import events as ev
from intent_pipelines.audit.checkpoint import ANCHOR_ENV, Checkpoint
from intent_pipelines.audit.export import SCHEMA, export_day, parquet_files, partition_path
from intent_pipelines.audit.integrity import ALERT_FILE, checkpoint_dir, take_checkpoint, verify_parquet, verify_store
from intent_pipelines.audit.record import canonical_body, record_hash
from intent_pipelines.audit.verify import BreakKind, VerifyResult, verify_records
from intent_pipelines.cli.main import main
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore
from intent_pipelines.store import schema as store_schema

Row = dict[str, Any]  # one raw audit_events row: seq, v, ts, request_id, run_id, kind, prev, hash, body (+ typed)
COLUMNS = [c.name for c in store_schema.audit_events.columns]
FIRST_CHECKPOINT, SECOND_CHECKPOINT, RECORDS = 8, 12, 16

# (request id, intent, lock) of the three requests the chain records.
DEPLOY, RESTART, SCALE = ("req-deploy", "deploy-app", "app:web"), ("req-restart", "restart-service", "app:api"), \
    ("req-scale", "scale-app", None)
FAILED_COMPLETE = 14  # seq of req-restart's request.complete: the outcome an attacker would hide


def _start(request: tuple[str, str, str | None], who: str) -> ev.RequestStart:
    _, intent, lock = request
    return ev.RequestStart(intent=intent, version="3", intent_sha256="5" * 64, params={"app": "web"},
                           context={"env": "prod"}, plan_hash="7" * 64, who=who, reason="OPS-101", lock=lock)


# What the engine writes for a success, a failed step and a policy refusal, interleaved.
STORY: list[tuple[tuple[str, str, str | None], ev.Event]] = [
    (DEPLOY, _start(DEPLOY, "alice")),
    (DEPLOY, ev.LockAcquire(lock="app:web")),
    (DEPLOY, ev.PhaseChange(phase="STEP build")),
    (RESTART, _start(RESTART, "bob")),
    (DEPLOY, ev.StepStart(step="build", action="run: make image")),
    (RESTART, ev.LockAcquire(lock="app:api")),
    (DEPLOY, ev.StepComplete(step="build", outputs=["image"], duration_ms=1200)),
    (RESTART, ev.StepStart(step="restart", action="run: systemctl restart api")),
    (DEPLOY, ev.VerifyPass(check="health")),
    (RESTART, ev.StepFail(step="restart", error="exit status 1", failure_class="deterministic",
                          error_class="StepFailed", exit_code=1, duration_ms=300)),
    (DEPLOY, ev.LockRelease(lock="app:web")),
    (DEPLOY, ev.RequestComplete(status="SUCCEEDED", duration_ms=1800, intent="deploy-app")),
    (SCALE, ev.RequestRefused(intent="scale-app", who="carol", reason="OPS-103", error="policy denies 12 replicas",
                              error_class="PolicyDenied")),
    (RESTART, ev.LockRelease(lock="app:api")),
    (RESTART, ev.RequestComplete(status="FAILED", reason="step_failed", error="exit status 1",
                                 error_class="StepFailed", exit_code=10, step="restart", signature="restart:exit-1",
                                 duration_ms=900, intent="restart-service")),
    (SCALE, ev.RequestComplete(status="REFUSED", reason="policy", error="policy denies 12 replicas",
                               error_class="PolicyDenied", exit_code=5, step="preflight", intent="scale-app")),
]
assert len(STORY) == RECORDS and STORY[FAILED_COMPLETE][1].KIND == "request.complete"


def record_story(store: StateStore, count: int) -> None:
    """Append the next ``count`` events of STORY, creating each request's row before its first record."""
    done = sum(1 for _ in store.audit_raw())
    for (request_id, intent, lock), event in STORY[done:done + count]:
        if store.request(request_id) is None:
            store.create_request(request_id=request_id, intent=intent, run_id=f"run-{request_id}", params={},
                                 context={}, plan_hash="", intent_sha256="5" * 64, lock_key=lock, dry_run=False,
                                 reason="", who="")
        store.append_event(event, request_id=request_id, run_id=f"run-{request_id}")


class Chain:
    """A chain in a store, optionally exported to Parquet; the attacker's view of its raw rows."""

    def __init__(self, backend: str, store: StateStore, home: IntentHome, parquet_root: Path) -> None:
        self.backend, self.store, self.home, self.parquet_root = backend, store, home, parquet_root

    def append(self, count: int) -> None:
        record_story(self.store, count)

    def seal(self) -> None:
        """For the Parquet backend, export every day the records span (normally one)."""
        if self.backend != "parquet":
            return
        for day in sorted({date.fromisoformat(r.ts[:10]) for r in self.store.audit_records()}):
            export_day(self.store, day, self.parquet_root)

    def rows(self) -> list[Row]:
        if self.backend == "parquet":
            return [row for path in parquet_files(self.parquet_root) for row in pq.read_table(path).to_pylist()]
        table = store_schema.audit_events
        with self.store.engine.connect() as conn:
            return [{k: bytes(v) if isinstance(v, memoryview) else v for k, v in row._mapping.items()}
                    for row in conn.execute(sa.select(table).order_by(table.c.seq))]

    def write(self, rows: list[Row]) -> None:
        """Replace every stored record with ``rows`` (in this physical order)."""
        if self.backend == "parquet":
            for path in parquet_files(self.parquet_root):
                path.unlink()
            days: dict[str, list[Row]] = {}
            for row in rows:
                days.setdefault(row["ts"][:10], []).append(row)
            for day, day_rows in days.items():
                path = partition_path(self.parquet_root, date.fromisoformat(day))
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_pylist(day_rows, schema=SCHEMA), path)
            return
        with self.store.engine.begin() as conn:
            conn.execute(store_schema.audit_events.delete())
            conn.execute(store_schema.audit_events.insert(), [{k: row[k] for k in COLUMNS} for row in rows])

    def verify(self, *, with_checkpoints: bool = True) -> VerifyResult:
        if self.backend == "parquet":
            return verify_parquet(self.parquet_root, checkpoint_dir(self.home) if with_checkpoints else None)
        if with_checkpoints:
            return verify_store(self.store, self.home)
        return verify_records(self.store.audit_raw())


@pytest.fixture
def postgres_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], StateStore]]:
    """A factory of stores on fresh PostgreSQL databases, dropped afterwards."""
    created: list[tuple[str, StateStore]] = []
    admin: sa.Engine | None = None

    def make() -> StateStore:
        nonlocal admin
        base = request.getfixturevalue("postgres_url")
        admin = admin or sa.create_engine(base, isolation_level="AUTOCOMMIT")
        name = f"tamper_{time.time_ns()}"
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        store = StateStore(base.rsplit("/", 1)[0] + f"/{name}")
        created.append((name, store))
        return store

    yield make
    for name, store in created:
        store.engine.dispose()
        assert admin is not None
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name}"))
    if admin is not None:
        admin.dispose()


@pytest.fixture
def make_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               postgres_store: Callable[[], StateStore]) -> Callable[[str], Chain]:
    """Build the standard 16-record chain with checkpoints at 8 and 12 on the given backend."""
    monkeypatch.delenv(ANCHOR_ENV, raising=False)

    def build(backend: str) -> Chain:
        store = postgres_store() if backend == "postgresql" else StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        chain = Chain(backend, store, IntentHome(tmp_path / "home"), tmp_path / "parquet")
        chain.append(FIRST_CHECKPOINT)
        assert take_checkpoint(store, chain.home).size == FIRST_CHECKPOINT
        chain.append(SECOND_CHECKPOINT - FIRST_CHECKPOINT)
        assert take_checkpoint(store, chain.home).size == SECOND_CHECKPOINT
        chain.append(RECORDS - SECOND_CHECKPOINT)
        chain.seal()
        return chain

    return build


BACKENDS = ["sqlite", "postgresql", "parquet"]


# --- the attacker's edits (on rows in seq order) ------------------------------------------------

def _flip(value: bytes, bit: int = 3) -> bytes:
    changed = bytearray(value)
    changed[len(changed) // 2] ^= 1 << bit
    return bytes(changed)


def _edited(row: Row, **change: Any) -> bytes:
    """Row's body with fields changed, in the writer's canonical form (so its typed columns still agree)."""
    return canonical_body({**json.loads(row["body"]), **change})


def _forged(rows: list[Row], seq: int, prev: bytes) -> Row:
    """A well-formed record (correct hash for its own seq, prev and body) modelled on row ``seq``."""
    body = _edited(rows[seq], who="mallory")
    return {**rows[seq], "seq": seq, "prev": prev, "body": body, "hash": record_hash(seq, prev, body)}


def _shift_from(rows: list[Row], index: int) -> None:
    for row in rows[index:]:
        row["seq"] += 1


def flip_body(rows: list[Row]) -> None:
    rows[5]["body"] = _flip(rows[5]["body"])


def flip_prev(rows: list[Row]) -> None:
    rows[5]["prev"] = _flip(rows[5]["prev"])


def flip_hash(rows: list[Row]) -> None:
    rows[5]["hash"] = _flip(rows[5]["hash"])


def delete_middle(rows: list[Row]) -> None:
    del rows[5]


def insert_shifted(rows: list[Row]) -> None:
    """A forged record linked to seq 4 takes seq 5; the originals move up one seq to make room."""
    forged = _forged(rows, 5, rows[4]["hash"])
    _shift_from(rows, 5)
    rows.insert(5, forged)


def insert_same_seq(rows: list[Row]) -> None:
    """A forged record linked to seq 4 claims seq 5 next to the original seq 5."""
    rows.insert(5, _forged(rows, 5, rows[4]["hash"]))


def duplicate_same_seq(rows: list[Row]) -> None:
    rows.insert(6, dict(rows[5]))


def duplicate_shifted(rows: list[Row]) -> None:
    """A replayed copy of seq 5 takes seq 6; the originals move up one seq."""
    copy = {**rows[5], "seq": 6}
    _shift_from(rows, 6)
    rows.insert(6, copy)


def swap_seqs(rows: list[Row]) -> None:
    """Records 4 and 9 exchange sequence numbers (their content trades places in the chain)."""
    rows[4]["seq"], rows[9]["seq"] = rows[9]["seq"], rows[4]["seq"]
    rows.sort(key=lambda r: r["seq"])


def swap_adjacent_seqs(rows: list[Row]) -> None:
    rows[5]["seq"], rows[6]["seq"] = 6, 5
    rows.sort(key=lambda r: r["seq"])


def truncate_tail(rows: list[Row]) -> None:
    """Cut the tail back to 10 records: past checkpoint 1 (8) but short of checkpoint 2 (12)."""
    del rows[10:]


def rewrite_and_recompute(rows: list[Row]) -> None:
    """Change seq 10's body and recompute prev and hash of it and every later record."""
    rows[10]["body"] = _edited(rows[10], lock="app:other")
    for i in range(10, len(rows)):
        rows[i]["prev"] = rows[i - 1]["hash"]
        rows[i]["hash"] = record_hash(rows[i]["seq"], rows[i]["prev"], rows[i]["body"])


REFUSED = "refused"  # the store's primary key on seq refuses the edit outright
CASES: list[tuple[Callable[[list[Row]], None], dict[str, tuple[BreakKind, int] | str]]] = [
    (flip_body, {b: (BreakKind.HASH_MISMATCH, 5) for b in BACKENDS}),
    (flip_prev, {b: (BreakKind.PREV_MISMATCH, 5) for b in BACKENDS}),
    (flip_hash, {b: (BreakKind.HASH_MISMATCH, 5) for b in BACKENDS}),
    (delete_middle, {b: (BreakKind.SEQ_GAP, 5) for b in BACKENDS}),
    (insert_shifted, {b: (BreakKind.PREV_MISMATCH, 6) for b in BACKENDS}),
    (insert_same_seq, {"sqlite": REFUSED, "postgresql": REFUSED, "parquet": (BreakKind.SEQ_DUPLICATE, 5)}),
    (duplicate_same_seq, {"sqlite": REFUSED, "postgresql": REFUSED, "parquet": (BreakKind.SEQ_DUPLICATE, 5)}),
    (duplicate_shifted, {b: (BreakKind.PREV_MISMATCH, 6) for b in BACKENDS}),
    (swap_seqs, {b: (BreakKind.PREV_MISMATCH, 4) for b in BACKENDS}),
    (swap_adjacent_seqs, {b: (BreakKind.PREV_MISMATCH, 5) for b in BACKENDS}),
    (truncate_tail, {b: (BreakKind.TRUNCATED, 10) for b in BACKENDS}),
    (rewrite_and_recompute, {b: (BreakKind.REWRITTEN, FIRST_CHECKPOINT) for b in BACKENDS}),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_untouched_chain_verifies(make_chain: Callable[[str], Chain], backend: str) -> None:
    """An untouched chain verifies, with both checkpoints checked, on every backend."""
    chain = make_chain(backend)
    result = chain.verify()
    assert result.ok, result.breaks
    assert (result.records, result.first_seq, result.last_seq) == (RECORDS, 0, RECORDS - 1)
    assert result.checkpoints_checked == [1, 2]
    assert result.head == chain.rows()[-1]["hash"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("tamper", "expected"), CASES, ids=[case[0].__name__ for case in CASES])
def test_tampering_is_detected_with_kind_and_first_bad_seq(
        make_chain: Callable[[str], Chain], backend: str, tamper: Callable[[list[Row]], None],
        expected: dict[str, tuple[BreakKind, int] | str]) -> None:
    """Each edit is reported as the precise break kind at the first bad seq (or refused by the store)."""
    chain = make_chain(backend)
    rows = chain.rows()
    tamper(rows)
    outcome = expected[backend]
    if outcome == REFUSED:
        with pytest.raises(sa.exc.IntegrityError):
            chain.write(rows)
        assert chain.verify().ok, "a refused edit leaves the chain as it was"
        return
    chain.write(rows)
    result = chain.verify()
    assert not result.ok
    first = result.first_break
    assert first is not None
    assert (first.kind, first.seq) == outcome, result.breaks


@pytest.mark.parametrize("backend", BACKENDS)
def test_rewrite_passes_the_bare_chain_and_fails_the_checkpoints(make_chain: Callable[[str], Chain],
                                                                 backend: str) -> None:
    """A recomputed rewrite fools the hash chain alone; only the checkpoints catch it, naming checkpoint 2."""
    chain = make_chain(backend)
    rows = chain.rows()
    rewrite_and_recompute(rows)
    chain.write(rows)
    assert chain.verify(with_checkpoints=False).ok
    result = chain.verify()
    assert [(b.kind, b.seq) for b in result.breaks] == [(BreakKind.REWRITTEN, FIRST_CHECKPOINT)]
    assert "checkpoint 2" in result.breaks[0].detail


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncation_passes_the_bare_chain_and_fails_the_checkpoints(make_chain: Callable[[str], Chain],
                                                                    backend: str) -> None:
    """A cut tail is a valid shorter chain; the checkpoint that covered more records reports it."""
    chain = make_chain(backend)
    rows = chain.rows()
    truncate_tail(rows)
    chain.write(rows)
    assert chain.verify(with_checkpoints=False).ok
    result = chain.verify()
    assert [(b.kind, b.seq) for b in result.breaks] == [(BreakKind.TRUNCATED, 10)]
    assert "truncated since checkpoint 2" in result.breaks[0].detail


# --- checkpoints themselves altered -------------------------------------------------------------

def _backdated(body: bytes) -> bytes:
    """The same checkpoint with another timestamp, still canonical JSON (a careful forgery)."""
    return dataclasses.replace(Checkpoint.from_json(body), ts="2001-01-01T00:00:00Z").to_json()


def _rewrite_file(path: Path, content: bytes) -> None:
    os.chmod(path, 0o644)  # written read-only; the attacker owns the file anyway
    path.write_bytes(content)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize(("copy", "with_anchor"), [("store", False), ("file", False), ("store", True),
                                                   ("file", True), ("anchor", True)])
def test_altered_checkpoint_copy_is_detected(make_chain: Callable[[str], Chain], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, backend: str, copy: str,
                                             with_anchor: bool) -> None:
    """Editing any one copy of checkpoint 1 (store row, file, anchor) is checkpoint_altered at its size."""
    anchor = tmp_path / "anchor"
    if with_anchor:
        monkeypatch.setenv(ANCHOR_ENV, str(anchor))
    chain = make_chain(backend)
    filename = Checkpoint.from_json(chain.store.checkpoint_bodies()[1]).filename
    if copy == "store":
        original = chain.store.checkpoint_bodies()[1]
        table = store_schema.audit_checkpoints
        with chain.store.engine.begin() as conn:
            conn.execute(table.update().where(table.c.number == 1).values(body=_backdated(original)))
    else:
        path = (anchor if copy == "anchor" else checkpoint_dir(chain.home)) / filename
        _rewrite_file(path, _backdated(path.read_bytes()))
    result = chain.verify()
    first = result.first_break
    assert first is not None
    assert (first.kind, first.seq) == (BreakKind.CHECKPOINT_ALTERED, FIRST_CHECKPOINT), result.breaks
    assert all(b.kind is BreakKind.CHECKPOINT_ALTERED for b in result.breaks), result.breaks
    assert any("checkpoint 1 altered" in b.detail for b in result.breaks)


def test_altered_checkpoint_file_is_detected_from_parquet(make_chain: Callable[[str], Chain]) -> None:
    """With files alone, a backdated checkpoint 1 no longer chains to checkpoint 2 (reported at its size)."""
    chain = make_chain("parquet")
    path = checkpoint_dir(chain.home) / "checkpoint-000001.json"
    _rewrite_file(path, _backdated(path.read_bytes()))
    result = chain.verify()
    assert [(b.kind, b.seq) for b in result.breaks] == [(BreakKind.CHECKPOINT_ALTERED, SECOND_CHECKPOINT)]
    assert "does not chain" in result.breaks[0].detail


def test_unreadable_checkpoint_file_is_detected_from_parquet(make_chain: Callable[[str], Chain]) -> None:
    """A checkpoint file that is not a checkpoint any more is checkpoint_altered."""
    chain = make_chain("parquet")
    _rewrite_file(checkpoint_dir(chain.home) / "checkpoint-000002.json", b"{}")
    first = chain.verify().first_break
    assert first is not None
    assert first.kind is BreakKind.CHECKPOINT_ALTERED
    assert "unreadable" in first.detail


# --- typed columns edited ------------------------------------------------------------------------

# (column, seq, value): edits that leave every hash intact. The first moves req-restart's outcome to
# another request; with the second as well it is the edit that made `intent audit show` omit it.
RECORD_COLUMN_EDITS: list[tuple[str, int, Any]] = [
    ("request_id", FAILED_COMPLETE, "0" * 32),
    ("kind", FAILED_COMPLETE, "phase.change"),
    ("run_id", 7, "run-elsewhere"),
    ("v", 3, 2),
]
# The export's query columns (Parquet only): what the metrics read instead of the body.
QUERY_COLUMN_EDITS: list[tuple[str, int, Any]] = [
    ("status", FAILED_COMPLETE, "SUCCEEDED"),  # a failure counted as a success
    ("reason", FAILED_COMPLETE, None),
    ("error", 9, None),
    ("duration_ms", 6, 1),
    ("step", 8, None),  # the verify check's name
    ("dry_run", 0, True),
    ("intent", 0, "scale-app"),  # request.start names its own intent
    ("intent", 6, "scale-app"),  # step.complete carries its request's, as request.start states it
]


def _edit_column(chain: Chain, column: str, seq: int, value: Any) -> VerifyResult:
    rows = chain.rows()
    assert rows[seq][column] != value, "the edit must change something"
    rows[seq][column] = value
    chain.write(rows)
    return chain.verify()


def _only_column_mismatch(result: VerifyResult, seq: int, column: str) -> None:
    """The edit is found at its seq and column, and nothing else is wrong (hashes and checkpoints hold)."""
    assert not result.ok
    first = result.first_break
    assert first is not None and (first.kind, first.seq, first.column) == (BreakKind.COLUMN_MISMATCH, seq, column), \
        result.breaks
    assert {b.kind for b in result.breaks} == {BreakKind.COLUMN_MISMATCH}, result.breaks
    assert result.checkpoints_checked == [1, 2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("column", "seq", "value"), RECORD_COLUMN_EDITS, ids=[e[0] for e in RECORD_COLUMN_EDITS])
def test_edited_record_column_is_a_column_mismatch(make_chain: Callable[[str], Chain], backend: str, column: str,
                                                   seq: int, value: Any) -> None:
    """A typed column edited beside an intact body is column_mismatch at that seq, naming the column."""
    chain = make_chain(backend)
    _only_column_mismatch(_edit_column(chain, column, seq, value), seq, column)


def test_columns_rewritten_with_another_type_are_column_mismatches(make_chain: Callable[[str], Chain]) -> None:
    """SQLite keeps whatever type is written: text in v and bytes in request_id are mismatches, not crashes."""
    chain = make_chain("sqlite")
    table = store_schema.audit_events
    with chain.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_events SET v = 'one' WHERE seq = 2")
        conn.execute(table.update().where(table.c.seq == 4).values(request_id=sa.literal(b"req-deploy")))
    result = chain.verify()
    assert [(b.kind, b.seq, b.column) for b in result.breaks] == [(BreakKind.COLUMN_MISMATCH, 2, "v"),
                                                                   (BreakKind.COLUMN_MISMATCH, 4, "request_id")]


@pytest.mark.parametrize(("column", "seq", "value"), QUERY_COLUMN_EDITS,
                         ids=[f"{e[0]}-{e[1]}" for e in QUERY_COLUMN_EDITS])
def test_edited_query_column_is_a_column_mismatch(make_chain: Callable[[str], Chain], column: str, seq: int,
                                                  value: Any) -> None:
    """Each Parquet query column is recomputed from the body, so an edited one is found at its seq."""
    chain = make_chain("parquet")
    _only_column_mismatch(_edit_column(chain, column, seq, value), seq, column)


def test_intent_carried_from_another_days_start_is_checked(make_chain: Callable[[str], Chain]) -> None:
    """A record without its own intent is checked against its request's even when the start is in another file."""
    chain = make_chain("parquet")
    rows = chain.rows()
    for row in rows[:6]:  # req-deploy's request.start (seq 0) on the day before its step.complete (seq 6)
        row["ts"] = "2001-01-01" + row["ts"][10:]
    rows[6]["intent"] = "scale-app"
    chain.write(rows)
    assert len(parquet_files(chain.parquet_root)) == 2
    for workers in (1, 2):
        result = verify_parquet(chain.parquet_root, checkpoint_dir(chain.home), workers=workers)
        _only_column_mismatch(result, 6, "intent")
        assert "the records of request req-deploy say 'deploy-app'" in result.breaks[0].detail


# --- checkpoints deleted or edited --------------------------------------------------------------

def _other_head(body: bytes, head: bytes) -> bytes:
    """The same checkpoint claiming another head: what an edit to cover a rewrite would write."""
    return dataclasses.replace(Checkpoint.from_json(body), head=head).to_json()


def _checkpoint_file(chain: Chain, number: int, anchor: Path | None = None) -> Path:
    return (anchor or checkpoint_dir(chain.home)) / f"checkpoint-{number:06d}.json"


# The anchor is expected to hold every checkpoint from the first one it holds (it may be configured late).
DELETED_COPIES = [("file", 1), ("store", 1), ("file", 2), ("store", 2), ("anchor", 2)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize(("copy", "number"), DELETED_COPIES, ids=[f"{c}-{n}" for c, n in DELETED_COPIES])
def test_deleted_checkpoint_copy_is_missing(make_chain: Callable[[str], Chain], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, backend: str, copy: str,
                                            number: int) -> None:
    """Deleting one copy of a checkpoint (file, store row or anchor file) is checkpoint_missing at its size."""
    anchor = tmp_path / "anchor"
    monkeypatch.setenv(ANCHOR_ENV, str(anchor))
    chain = make_chain(backend)
    if copy == "store":
        table = store_schema.audit_checkpoints
        with chain.store.engine.begin() as conn:
            conn.execute(table.delete().where(table.c.number == number))
    else:
        _checkpoint_file(chain, number, anchor if copy == "anchor" else None).unlink()
    result = chain.verify()
    size = FIRST_CHECKPOINT if number == 1 else SECOND_CHECKPOINT
    assert [(b.kind, b.seq) for b in result.breaks] == [(BreakKind.CHECKPOINT_MISSING, size)]
    assert f"checkpoint {number}: the {copy} copy is missing" in result.breaks[0].detail
    assert result.checkpoints_checked == [1, 2], "the remaining copies still check the records"


def test_deleted_checkpoint_file_is_missing_from_parquet(make_chain: Callable[[str], Chain]) -> None:
    """With files alone, checkpoint 1 deleted while checkpoint 2 remains is checkpoint_missing."""
    chain = make_chain("parquet")
    _checkpoint_file(chain, 1).unlink()
    result = chain.verify()
    assert [(b.kind, b.seq) for b in result.breaks] == [(BreakKind.CHECKPOINT_MISSING, 0)]
    assert "checkpoint 1 is missing from every copy" in result.breaks[0].detail


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("number", [1, 2])
def test_edited_checkpoint_file_is_altered_not_a_rewrite(make_chain: Callable[[str], Chain], backend: str,
                                                         number: int) -> None:
    """A checkpoint file edited to another head is checkpoint_altered: the store copy still matches the records."""
    chain = make_chain(backend)
    path = _checkpoint_file(chain, number)
    _rewrite_file(path, _other_head(path.read_bytes(), chain.rows()[3]["hash"]))
    result = chain.verify()
    size = FIRST_CHECKPOINT if number == 1 else SECOND_CHECKPOINT
    assert [(b.kind, b.seq) for b in result.breaks] == [(BreakKind.CHECKPOINT_ALTERED, size)], result.breaks
    assert f"checkpoint {number} altered: its copies differ (file ≠ store)" in result.breaks[0].detail


def test_edited_checkpoint_file_is_altered_from_parquet(make_chain: Callable[[str], Chain]) -> None:
    """With files alone, checkpoint 1 edited to another head no longer chains to 2, and is not taken as a rewrite."""
    chain = make_chain("parquet")
    path = _checkpoint_file(chain, 1)
    _rewrite_file(path, _other_head(path.read_bytes(), chain.rows()[3]["hash"]))
    result = chain.verify()
    assert [(b.kind, b.seq) for b in result.breaks] == [(BreakKind.CHECKPOINT_ALTERED, SECOND_CHECKPOINT)]
    assert result.checkpoints_checked == [2]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rewrite_with_a_checkpoint_copy_edited_to_match_is_still_rewritten(make_chain: Callable[[str], Chain],
                                                                            backend: str) -> None:
    """Rewriting records and editing checkpoint 1's file to the new head: checkpoint 2 commits to the old one."""
    chain = make_chain(backend)
    rows = chain.rows()
    rows[5]["body"] = _edited(rows[5], lock="app:other")
    for i in range(5, len(rows)):
        rows[i]["prev"] = rows[i - 1]["hash"]
        rows[i]["hash"] = record_hash(rows[i]["seq"], rows[i]["prev"], rows[i]["body"])
    chain.write(rows)
    path = _checkpoint_file(chain, 1)
    _rewrite_file(path, _other_head(path.read_bytes(), rows[FIRST_CHECKPOINT - 1]["hash"]))
    kinds = [(b.kind, b.seq) for b in chain.verify().breaks]
    assert (BreakKind.REWRITTEN, 0) in kinds and (BreakKind.CHECKPOINT_ALTERED, FIRST_CHECKPOINT) in kinds, kinds


# --- the CLI ------------------------------------------------------------------------------------

@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> IntentHome:
    """INTENT_HOME with the default SQLite store and no anchor, as `intent` sees it."""
    home = IntentHome(tmp_path / "home")
    monkeypatch.setenv("INTENT_HOME", str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    for name in ("INTENT_STORE_URL", ANCHOR_ENV, "INTENT_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return home


def _alerts(home: IntentHome) -> list[dict[str, Any]]:
    path = home.alerts / ALERT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_cli_verify_exit_codes_output_and_alert(cli_home: IntentHome) -> None:
    """`intent audit verify` exits 0 when intact, 20 naming seq and kind when broken, and alerts once."""
    store = StateStore(cli_home.ensure().store_url())
    for i in range(6):
        store.append_audit("test.event", request_id="r", run_id="u", body={"i": i})
    runner = CliRunner()

    intact = runner.invoke(main, ["audit", "verify"])
    assert intact.exit_code == 0, intact.output
    assert "audit chain INTACT: 6 records (seq 0..5)" in intact.stdout
    intact_json = runner.invoke(main, ["audit", "verify", "--format", "json"])
    assert intact_json.exit_code == 0
    assert json.loads(intact_json.stdout)["ok"] is True
    assert _alerts(cli_home) == []

    with store.engine.begin() as conn:
        table = store_schema.audit_events
        conn.execute(table.update().where(table.c.seq == 3).values(body=b'{"i":333}'))

    broken = runner.invoke(main, ["audit", "verify"])
    assert broken.exit_code == 20, broken.output
    assert "audit chain BROKEN" in broken.stdout
    assert "seq 3: hash_mismatch" in broken.stdout
    error_lines = broken.stderr.strip().splitlines()
    assert len(error_lines) == 1 and "audit chain broken at seq 3: hash_mismatch" in error_lines[0]
    [alert] = _alerts(cli_home)
    assert (alert["alert"], alert["first_bad_seq"], alert["kind"], alert["records_checked"]) == \
        ("audit_chain_broken", 3, "hash_mismatch", 6)

    as_json = runner.invoke(main, ["audit", "verify", "--format", "json"])
    assert as_json.exit_code == 20
    document = json.loads(as_json.stdout)
    assert document["schema"] == "intent-audit-verify/v1"
    assert document["ok"] is False
    assert document["first_break"] == {"seq": 3, "kind": "hash_mismatch",
                                       "detail": "stored hash does not match the record's bytes"}
    assert set(document) == {"schema", "ok", "records_checked", "first_seq", "last_seq", "head",
                             "checkpoints_checked", "first_break", "breaks"}
    assert len(_alerts(cli_home)) == 2, "one alert line per failed verification"


@pytest.mark.parametrize("args", [
    ["--date", "2026-13-01"],
    ["--days", "0"],
    ["--date", "2026-01-01", "--days", "3"],
])
def test_cli_verify_bad_input_is_a_one_line_usage_error(cli_home: IntentHome, args: list[str]) -> None:
    """Malformed options exit 2 with one error line on stderr and no traceback."""
    result = CliRunner().invoke(main, ["audit", "verify", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert _alerts(cli_home) == []


def _story_with_checkpoints(home: IntentHome) -> StateStore:
    """The standard chain in INTENT_HOME's own store, checkpointed at 8 and 12 as make_chain does."""
    store = StateStore(home.ensure().store_url())
    record_story(store, FIRST_CHECKPOINT)
    take_checkpoint(store, home)
    record_story(store, SECOND_CHECKPOINT - FIRST_CHECKPOINT)
    take_checkpoint(store, home)
    record_story(store, RECORDS - SECOND_CHECKPOINT)
    return store


def _broken_with(result: Any, message: str) -> None:
    """Exit 20 with the one error line naming the first break, no traceback."""
    assert result.exit_code == 20, result.output
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert "Traceback" not in result.output


def test_cli_finds_a_request_outcome_moved_to_another_request(cli_home: IntentHome, tmp_path: Path) -> None:
    """The column edit that hid req-restart's outcome fails verify, verify --request and verify --parquet (exit 20)."""
    store = _story_with_checkpoints(cli_home)
    runner = CliRunner()
    intact = runner.invoke(main, ["audit", "verify", "--request", RESTART[0]])
    assert intact.exit_code == 0 and f"audit chain INTACT: {RECORDS} records" in intact.stdout, intact.output
    table = store_schema.audit_events
    with store.engine.begin() as conn:
        conn.execute(table.update().where(table.c.seq == FAILED_COMPLETE)
                     .values(request_id="0" * 32, kind="phase.change"))
    shown = runner.invoke(main, ["audit", "show", RESTART[0], "--json"])
    assert "request.complete" not in [event["kind"] for event in json.loads(shown.stdout)], "the symptom"

    expected = f"audit chain broken at seq {FAILED_COMPLETE}: column_mismatch"
    _broken_with(runner.invoke(main, ["audit", "verify"]), expected)
    _broken_with(runner.invoke(main, ["audit", "verify", "--request", RESTART[0]]), expected)
    document = json.loads(runner.invoke(main, ["audit", "verify", "--request", RESTART[0], "--format", "json"]).stdout)
    assert {k: document["first_break"][k] for k in ("seq", "kind", "column")} == \
        {"seq": FAILED_COMPLETE, "kind": "column_mismatch", "column": "request_id"}
    assert [b["column"] for b in document["breaks"]] == ["request_id", "kind"]

    export = tmp_path / "export"
    for day in sorted({r.ts[:10] for r in store.audit_records()}):
        assert runner.invoke(main, ["audit", "export", "--date", day, "--out", str(export)]).exit_code == 0
    _broken_with(runner.invoke(main, ["audit", "verify", "--parquet", str(export)]), expected)
    assert [a["kind"] for a in _alerts(cli_home)] == ["column_mismatch"] * 4


@pytest.mark.parametrize(("change", "kind"), [("delete", "checkpoint_missing"), ("edit", "checkpoint_altered")])
def test_cli_reports_a_deleted_or_edited_checkpoint_file(cli_home: IntentHome, change: str, kind: str) -> None:
    """A checkpoint file deleted or edited fails `intent audit verify` by name (exit 20); no checkpoint is taken over it."""
    store = _story_with_checkpoints(cli_home)
    path = checkpoint_dir(cli_home) / "checkpoint-000001.json"
    if change == "delete":
        path.unlink()
    else:
        other = store.audit_record(3)
        assert other is not None
        _rewrite_file(path, _other_head(path.read_bytes(), other.hash))
    runner = CliRunner()
    _broken_with(runner.invoke(main, ["audit", "verify"]), f"audit chain broken at seq {FIRST_CHECKPOINT}: {kind}")
    _broken_with(runner.invoke(main, ["audit", "checkpoint"]), kind)
    assert sorted(p.name for p in checkpoint_dir(cli_home).iterdir()) == \
        (["checkpoint-000002.json"] if change == "delete" else ["checkpoint-000001.json", "checkpoint-000002.json"])
