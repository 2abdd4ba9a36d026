"""StateStore: the one place runtime state lives; SQLite by default, PostgreSQL by URL."""

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from intent_pipelines import secrets
from intent_pipelines.audit.events import Event
from intent_pipelines.audit.record import (
    FORMAT_VERSION,
    GENESIS_PREV,
    AuditRecord,
    canonical_body,
    record_hash,
    reject_floats,
)
from intent_pipelines.errors import LockBusy, StoreError, UsageError
from intent_pipelines.status import RequestStatus, StepStatus
from intent_pipelines.store import schema
from intent_pipelines.store.group_commit import AuditEvent, GroupCommitter
from intent_pipelines.store.integrity import FileGuard, sqlite_file

# The execution option that marks a transaction as a writer's (SQLite: BEGIN IMMEDIATE).
_WRITER = "intent_writer"
# Postgres advisory-lock key that serializes audit appends across hosts.
_AUDIT_LOCK_KEY = 0x1A7E_17A0


# The shortest id prefix looked up as a prefix (shorter ones must match exactly).
MIN_ID_PREFIX = 4
# How long the ids `intent status` shows are (any unique prefix of MIN_ID_PREFIX or more works).
SHORT_ID = 8


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock lease, and until when."""

    key: str
    request_id: str
    run_id: str
    host: str
    pid: int
    acquired_at: float
    expires_at: float

    def describe(self) -> str:
        return (f"request {self.request_id} (run {self.run_id}, pid {self.pid} on {self.host}, "
                f"lease expires in {max(0, self.expires_at - time.time()):.0f}s)")


def _make_engine(url: str, guard: FileGuard | None) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit at the driver level so our BEGIN IMMEDIATE below is the transaction.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Writers take the write lock up front: read-then-write transactions (audit append, lock
            # acquire) must not interleave between processes. Readers do not: in WAL mode they never
            # block a writer, so a process frozen (SIGSTOP) in the middle of a read stops nobody.
            writer = conn.get_execution_options().get(_WRITER)
            if writer and guard is not None:
                # "Opened for writing": a damaged file is refused before anything is appended to it.
                guard.before_first_write(conn.connection.dbapi_connection)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        @sa.event.listens_for(engine, "handle_error")
        def _sqlite_fault(context: sa.engine.ExceptionContext) -> None:
            # A full disk or a damaged page is a StoreError that says so, wherever the statement ran.
            error = guard.translate(context.original_exception) if guard is not None else None
            if error is not None:
                raise error from None

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True)


def _check_columns(engine: Engine) -> None:
    """Add the nullable columns a newer version brought; refuse a store that lacks any other column."""
    inspector = sa.inspect(engine)
    for table in schema.metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        addable = [c for c in table.columns if c.name not in present and c.nullable and not c.primary_key]
        for column in addable:
            kind = column.type.compile(dialect=engine.dialect)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
        missing = sorted({c.name for c in table.columns} - present - {c.name for c in addable})
        if missing:
            raise StoreError(f"the state store's table {table.name} lacks columns {', '.join(missing)}: "
                             "it was created by an older version",
                             hint="Move the old INTENT_HOME/state.db and state.db.chain aside (they keep its audit "
                                  "chain), and audit/checkpoints with them, and run again.")


def safe_url(url: str) -> str:
    """``url`` with its password hidden; a URL SQLAlchemy cannot parse is named by its scheme only."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return f"{url.partition(':')[0][:40]}:… (not a valid URL)"


def store_error(exc: Exception, url: str) -> StoreError:
    """A SQLAlchemy (or database driver) error as a StoreError naming the store, never with SQL text.

    SQLAlchemy appends the statement and its parameters after the driver's message ("[SQL: ...]");
    only the driver's first line is kept, which says what went wrong without them.
    """
    cause = getattr(exc, "orig", None) or exc
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    detail = detail.partition("[SQL:")[0].strip()
    name = type(cause).__name__
    return StoreError(f"the state store at {safe_url(url)} failed: {name}" + (f": {detail}" if detail else ""),
                      hint="Check INTENT_STORE_URL / INTENT_HOME and that the database is up and writable.")


def _bytes(value: Any) -> bytes:
    """Stored bytes as bytes; a value rewritten as TEXT (tampering) still verifies as a mismatch."""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def now_iso() -> str:
    """UTC timestamp with milliseconds, as written into audit records."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StateStore:
    """Requests, steps, locks, step outputs, stored intent files and the audit chain."""

    def __init__(self, url: str) -> None:
        self.url = url
        guard: FileGuard | None = None
        try:
            file = sqlite_file(url)
            guard = FileGuard(file) if file is not None else None
            if guard is not None:
                guard.refuse_vanished_chain()  # before SQLite creates an empty file there
            self.engine = _make_engine(url, guard)
            schema.metadata.create_all(self.engine)
            _check_columns(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            if guard is not None and (fault := guard.translate(exc)) is not None:
                raise fault from None  # e.g. a full disk while the connection sets up the WAL
            raise StoreError(f"cannot open the state store at {safe_url(url)}: {exc.__class__.__name__}",
                             hint="Check INTENT_STORE_URL / INTENT_HOME and that the database is up.") from None
        except ImportError as exc:  # a URL whose database driver is not installed (mysql://, ...)
            raise StoreError(f"cannot open the state store at {safe_url(url)}: no driver ({exc.name or exc})",
                             hint="Use sqlite:/// or postgresql:// in INTENT_STORE_URL.") from None
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._writer = self.engine.execution_options(**{_WRITER: True})
        self._committer = GroupCommitter(self.append_audit_many)

    def _begin(self) -> Any:
        return self._writer.begin()

    # --- audit chain ---------------------------------------------------------------------------

    def append_audit(self, kind: str, *, request_id: str, run_id: str, body: dict[str, Any]) -> AuditRecord:
        """Append one record to the global chain; durable when this returns.

        Concurrent callers in this process share one transaction and one fsync (group commit);
        across processes and hosts the write lock serializes the batches into one chain.
        """
        return self._committer.append(AuditEvent(kind, request_id, run_id, body))

    def append_event(self, event: Event, *, request_id: str, run_id: str) -> AuditRecord:
        """Append one typed event (audit/events.py): the way every writer records a fact."""
        return self.append_audit(event.KIND, request_id=request_id, run_id=run_id, body=event.body())

    def append_audit_many(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Append several records in one transaction, in order; known secrets are masked in every body."""
        # The chain can never be edited afterwards, so this is the last place a secret can be stopped.
        events = [dataclasses.replace(e, body=secrets.mask_data(e.body)) for e in events] if secrets.known() \
            else list(events)
        for event in events:
            reject_floats(event.body)  # before taking the write lock
        records: list[AuditRecord] = []
        with self._begin() as conn:
            if self.is_postgres:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _AUDIT_LOCK_KEY})
            head = conn.execute(
                sa.select(schema.audit_events.c.seq, schema.audit_events.c.hash, schema.audit_events.c.ts)
                .order_by(schema.audit_events.c.seq.desc()).limit(1)
            ).first()
            # Taken under the write lock, and never before the head's, so ts never goes backwards
            # along the chain, even when a host's clock does. It goes into the body too, so the hash
            # covers it; the ts column is only an index for queries.
            ts = max(now_iso(), head.ts) if head else now_iso()
            payloads = [canonical_body({**e.body, "kind": e.kind, "request_id": e.request_id,
                                        "run_id": e.run_id, "ts": ts}, checked=True) for e in events]
            seq = head.seq + 1 if head else 0
            prev = bytes(head.hash) if head else GENESIS_PREV
            for event, payload in zip(events, payloads, strict=True):
                record = AuditRecord(FORMAT_VERSION, seq, ts, event.request_id, event.run_id, event.kind, prev,
                                     record_hash(seq, prev, payload), payload)
                records.append(record)
                seq, prev = seq + 1, record.hash
            if records:
                # Driver-level executemany: SQLAlchemy's per-row parameter handling cost more than the insert.
                marker = "%s" if self.is_postgres else "?"
                conn.exec_driver_sql(
                    "INSERT INTO audit_events (seq, v, ts, request_id, run_id, kind, prev, hash, body) "
                    f"VALUES ({', '.join([marker] * 9)})",
                    [(r.seq, r.v, r.ts, r.request_id, r.run_id, r.kind, r.prev, r.hash, r.body) for r in records])
        return records

    def audit_records(self, *, request_id: str | None = None, after_seq: int = -1) -> Iterator[AuditRecord]:
        """Records in chain order, optionally of one request."""
        table = schema.audit_events
        query = sa.select(table).where(table.c.seq > after_seq).order_by(table.c.seq)
        if request_id:
            query = query.where(table.c.request_id == request_id)
        yield from self._audit_query(query)

    def audit_record(self, seq: int) -> AuditRecord | None:
        """One record by sequence number."""
        return next(self._audit_query(sa.select(schema.audit_events).where(schema.audit_events.c.seq == seq)),
                    None)

    def audit_seq_range(self, ts_from: str, ts_to: str) -> tuple[int, int] | None:
        """First and last seq of records with ts_from <= ts < ts_to (ISO strings), if any."""
        table = schema.audit_events
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sa.func.min(table.c.seq), sa.func.max(table.c.seq))
                               .where(table.c.ts >= ts_from, table.c.ts < ts_to)).first()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def audit_raw(self, first_seq: int = 0, last_seq: int | None = None,
                  batch: int = 50_000) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """(seq, prev, hash, body) in seq order, streamed in batches; what verification reads."""
        table = schema.audit_events
        cursor = first_seq - 1
        while True:
            query = (sa.select(table.c.seq, table.c.prev, table.c.hash, table.c.body)
                     .where(table.c.seq > cursor).order_by(table.c.seq).limit(batch))
            if last_seq is not None:
                query = query.where(table.c.seq <= last_seq)
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield int(row.seq), _bytes(row.prev), _bytes(row.hash), _bytes(row.body)
            if len(rows) < batch:
                return
            cursor = int(rows[-1].seq)

    def audit_records_of_kind(self, kind: str) -> Iterator[AuditRecord]:
        """Records of one kind, in chain order (e.g. the few `intent.file` records)."""
        table = schema.audit_events
        yield from self._audit_query(sa.select(table).where(table.c.kind == kind).order_by(table.c.seq))

    def audit_records_between(self, first_seq: int, last_seq: int) -> Iterator[AuditRecord]:
        """Records with first_seq <= seq <= last_seq, in order."""
        table = schema.audit_events
        yield from self._audit_query(sa.select(table).where(table.c.seq >= first_seq, table.c.seq <= last_seq)
                                     .order_by(table.c.seq))

    def request_intents(self) -> dict[str, str]:
        """Intent name of every request, for the typed columns of the Parquet export."""
        with self.engine.connect() as conn:
            return {r.request_id: r.intent for r in conn.execute(
                sa.select(schema.requests.c.request_id, schema.requests.c.intent))}

    def _audit_query(self, query: Any) -> Iterator[AuditRecord]:
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield AuditRecord(row.v, row.seq, row.ts, row.request_id, row.run_id, row.kind,
                                  _bytes(row.prev), _bytes(row.hash), _bytes(row.body))

    # --- audit checkpoints ---------------------------------------------------------------------

    def checkpoint_bodies(self) -> dict[int, bytes]:
        """Stored checkpoints (canonical JSON) by number."""
        table = schema.audit_checkpoints
        with self.engine.connect() as conn:
            return {int(r.number): bytes(r.body) for r in conn.execute(sa.select(table).order_by(table.c.number))}

    def add_checkpoint(self, number: int, size: int, body: bytes) -> None:
        with self._begin() as conn:
            conn.execute(schema.audit_checkpoints.insert().values(number=number, size=size, body=body))

    # --- approvals and plans -------------------------------------------------------------------

    def decide_gate(self, request_id: str, step_id: str, *, decision: str, who: str, reason: str) -> None:
        """Record (or replace) the decision on a manual gate."""
        table = schema.approvals
        with self._begin() as conn:
            conn.execute(table.delete().where(table.c.request_id == request_id, table.c.step_id == step_id))
            conn.execute(table.insert().values(request_id=request_id, step_id=step_id, decision=decision,
                                               who=who, reason=reason, decided_at=time.time()))

    def gate_decision(self, request_id: str, step_id: str) -> dict[str, Any] | None:
        table = schema.approvals
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.request_id == request_id,
                                                      table.c.step_id == step_id)).first()
        return dict(row._mapping) if row else None

    def save_plan(self, plan_hash: str, body: str) -> None:
        table = schema.plans
        with self._begin() as conn:
            if not conn.execute(sa.select(table.c.plan_hash).where(table.c.plan_hash == plan_hash)).first():
                conn.execute(table.insert().values(plan_hash=plan_hash, body=body, created_at=time.time()))

    def plan_body(self, plan_hash_prefix: str) -> str | None:
        """A stored plan by its hash or a unique prefix of it (as users type it)."""
        table = schema.plans
        with self.engine.connect() as conn:
            # A whole hash (what `intent run` hands its preflight) is found by the primary key; a
            # LIKE prefix match cannot use that index and would read every plan ever shown.
            exact = conn.execute(sa.select(table.c.body).where(table.c.plan_hash == plan_hash_prefix)).first()
            if exact is not None:
                return str(exact.body)
            rows = conn.execute(sa.select(table.c.body).where(table.c.plan_hash.startswith(plan_hash_prefix))
                                .limit(2)).all()
        return str(rows[0].body) if len(rows) == 1 else None

    # --- intent files --------------------------------------------------------------------------

    def put_intent_file(self, sha256: str, name: str, content: str) -> None:
        """Keep the exact intent file a request ran, so it can be shown or replayed later."""
        with self._begin() as conn:
            exists = conn.execute(sa.select(schema.intent_files.c.sha256)
                                  .where(schema.intent_files.c.sha256 == sha256)).first()
            if not exists:
                conn.execute(schema.intent_files.insert().values(sha256=sha256, name=name, content=content))

    def intent_file(self, sha256: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schema.intent_files.c.content)
                               .where(schema.intent_files.c.sha256 == sha256)).first()
        return row.content if row else None

    # --- requests ------------------------------------------------------------------------------

    def create_request(self, *, request_id: str, intent: str, run_id: str, params: dict[str, Any],
                       context: dict[str, str], plan_hash: str, intent_sha256: str,
                       lock_key: str | None, dry_run: bool, reason: str, who: str,
                       replay_of: str | None = None) -> bool:
        """Insert the request row; returns False when it already exists (a re-executed preflight)."""
        now = time.time()
        with self._begin() as conn:
            if conn.execute(sa.select(schema.requests.c.request_id)
                            .where(schema.requests.c.request_id == request_id)).first():
                return False
            conn.execute(schema.requests.insert().values(
                request_id=request_id, intent=intent, status=RequestStatus.RUNNING.value,
                phase="PREFLIGHT", run_id=run_id, params=params, context=secrets.mask_data(context),
                plan_hash=plan_hash,
                intent_sha256=intent_sha256, lock_key=lock_key, dry_run=dry_run, reason=reason,
                who=who, replay_of=replay_of or None, error="", exit_code=0, started_at=now, updated_at=now))
        return True

    def request(self, request_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schema.requests)
                               .where(schema.requests.c.request_id == request_id)).first()
        return dict(row._mapping) if row else None

    def recent_requests(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(schema.requests)
                                .order_by(schema.requests.c.started_at.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    def update_request(self, request_id: str, *, status: RequestStatus | None = None,
                       phase: str | None = None, run_id: str | None = None, error: str | None = None,
                       exit_code: int | None = None, attempt: int | None = None) -> None:
        now = time.time()
        values: dict[str, Any] = {"updated_at": now}
        if phase is not None:
            values["heartbeat_at"] = now  # a phase change is a sign of life too
        if attempt is not None:
            values["attempt"] = attempt
        if status is not None:
            values["status"] = status.value
            values["ended_at"] = time.time() if status.final else None
            if not status.final:
                values["reason_code"] = None  # a resumed request has no ending until it ends again
        if phase is not None:
            values["phase"] = phase
        if run_id is not None:
            values["run_id"] = run_id
        if error is not None:
            values["error"] = secrets.mask(error)
        if exit_code is not None:
            values["exit_code"] = exit_code
        with self._begin() as conn:
            conn.execute(schema.requests.update()
                         .where(schema.requests.c.request_id == request_id).values(**values))

    def end_request_row(self, request_id: str, *, status: RequestStatus, reason: str, error: str,
                        exit_code: int) -> bool:
        """Mark a RUNNING request ended; False when it is not running (someone else ended it first)."""
        now = time.time()
        table = schema.requests
        with self._begin() as conn:
            result = conn.execute(table.update().where(table.c.request_id == request_id,
                                                       table.c.status == RequestStatus.RUNNING.value)
                                  .values(status=status.value, phase=status.value, error=secrets.mask(error),
                                          exit_code=exit_code, reason_code=reason, updated_at=now, ended_at=now))
        return bool(result.rowcount == 1)

    def set_owner(self, request_id: str, *, host: str, pid: int, token: int | None) -> None:
        """Record the process that runs the request now (see schema.requests.owner_*)."""
        with self._begin() as conn:
            conn.execute(schema.requests.update().where(schema.requests.c.request_id == request_id)
                         .values(owner_host=host, owner_pid=pid, owner_token=token))

    def heartbeat(self, request_id: str, *, last_log_line: str | None = None, pgid: int | None = None,
                  host: str | None = None) -> None:
        """Record a sign of life (and, when given, the last output line and the step's process group)."""
        values: dict[str, Any] = {"heartbeat_at": time.time()}
        if last_log_line is not None:
            values["last_log_line"] = secrets.mask(last_log_line)[-500:]
        if pgid is not None:
            values["step_pgid"], values["step_host"] = pgid, host or socket.gethostname()
        with self._begin() as conn:
            conn.execute(schema.requests.update().where(schema.requests.c.request_id == request_id).values(**values))

    def clear_step_process(self, request_id: str) -> None:
        with self._begin() as conn:
            conn.execute(schema.requests.update().where(schema.requests.c.request_id == request_id)
                         .values(step_pgid=None, step_host=None))

    def request_cancel(self, request_id: str, *, grace_s: float, status: RequestStatus) -> bool:
        """Ask the running step to stop; False when the request is not running (or already asked)."""
        with self._begin() as conn:
            result = conn.execute(
                schema.requests.update()
                .where(schema.requests.c.request_id == request_id,
                       schema.requests.c.status == RequestStatus.RUNNING.value,
                       schema.requests.c.cancel_requested_at.is_(None))
                .values(cancel_requested_at=time.time(), cancel_grace_s=grace_s, cancel_status=status.value))
        return bool(result.rowcount == 1)

    def clear_cancel(self, request_id: str) -> None:
        """Forget a stop request (a resumed request starts afresh)."""
        with self._begin() as conn:
            conn.execute(schema.requests.update().where(schema.requests.c.request_id == request_id)
                         .values(cancel_requested_at=None, cancel_grace_s=None, cancel_status=None))

    def cancel_request_of(self, request_id: str) -> tuple[float, RequestStatus] | None:
        """(grace seconds, status to end in) when a stop was requested, else None."""
        table = schema.requests
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table.c.cancel_requested_at, table.c.cancel_grace_s, table.c.cancel_status)
                               .where(table.c.request_id == request_id)).first()
        if row is None or row.cancel_requested_at is None:
            return None
        return float(row.cancel_grace_s or 0), RequestStatus(row.cancel_status)

    def requests_by_status(self, *statuses: RequestStatus) -> list[dict[str, Any]]:
        """Requests in any of ``statuses``, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(schema.requests)
                                .where(schema.requests.c.status.in_([s.value for s in statuses]))
                                .order_by(schema.requests.c.started_at))
            return [dict(r._mapping) for r in rows]

    def replays_of(self, request_id: str) -> list[str]:
        """Ids of the requests that replayed ``request_id``, oldest first."""
        table = schema.requests
        with self.engine.connect() as conn:
            return [r.request_id for r in conn.execute(sa.select(table.c.request_id)
                                                       .where(table.c.replay_of == request_id)
                                                       .order_by(table.c.started_at))]

    def request_by_run(self, run_id: str) -> dict[str, Any] | None:
        """The request a Dagster run belongs to (its own id, or a re-execution's latest run)."""
        found = self.request(run_id)
        if found is not None:
            return found
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schema.requests).where(schema.requests.c.run_id == run_id)).first()
        return dict(row._mapping) if row else None

    def find_request(self, ident: str) -> dict[str, Any] | None:
        """The request ``ident`` names: its id, the id of its latest run, or a unique prefix of either.

        Short ids as `intent status` prints them are prefixes; a prefix of several requests is a
        UsageError listing them (so nothing acts on a guess). None when nothing matches.
        """
        found = self.request_by_run(ident)
        if found is not None or len(ident) < MIN_ID_PREFIX:
            return found
        table = schema.requests
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table).where(sa.or_(table.c.request_id.startswith(ident, autoescape=True),
                                              table.c.run_id.startswith(ident, autoescape=True)))
                .order_by(table.c.started_at.desc()).limit(11)).all()
        if len(rows) > 1:
            shown = ", ".join(f"{r.request_id} ({r.intent}, {r.status})" for r in rows[:10])
            raise UsageError(f"{ident!r} is the start of {'more than 10' if len(rows) > 10 else len(rows)} "
                             f"requests: {shown}", hint="Type more of the id.")
        return dict(rows[0]._mapping) if rows else None

    # --- steps ---------------------------------------------------------------------------------

    def step_state(self, request_id: str, step_id: str) -> dict[str, Any] | None:
        table = schema.step_states
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.request_id == request_id,
                                                      table.c.step_id == step_id)).first()
        return dict(row._mapping) if row else None

    def set_step(self, request_id: str, step_id: str, status: StepStatus, *, run_id: str,
                 attempt: int = 1, outputs: dict[str, Any] | None = None) -> None:
        """Upsert a step's state; a step that succeeds gets the next completion number."""
        table = schema.step_states
        now = time.time()
        with self._begin() as conn:
            existing = conn.execute(sa.select(table).where(table.c.request_id == request_id,
                                                           table.c.step_id == step_id)).first()
            values: dict[str, Any] = {"status": status.value, "run_id": run_id, "attempt": attempt}
            if outputs is not None:
                values["outputs"] = secrets.mask_data(outputs)
            if status is StepStatus.RUNNING:
                values["started_at"] = now
            else:
                values["ended_at"] = now
            if status is StepStatus.SUCCEEDED:
                top = conn.execute(sa.select(sa.func.max(table.c.completed_order))
                                   .where(table.c.request_id == request_id)).scalar()
                values["completed_order"] = (top or 0) + 1
            if existing:
                conn.execute(table.update().where(table.c.request_id == request_id,
                                                  table.c.step_id == step_id).values(**values))
            else:
                values.setdefault("outputs", {})
                conn.execute(table.insert().values(request_id=request_id, step_id=step_id, **values))

    def steps(self, request_id: str) -> list[dict[str, Any]]:
        """Every step state of a request, in completion order (unfinished last)."""
        table = schema.step_states
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.request_id == request_id))
            found = [dict(r._mapping) for r in rows]
        return sorted(found, key=lambda r: (r["completed_order"] is None, r["completed_order"] or 0,
                                            r["started_at"] or 0))

    def outputs(self, request_id: str) -> dict[str, dict[str, Any]]:
        """Outputs of the request's finished steps, by step id, for templates."""
        return {s["step_id"]: s["outputs"] for s in self.steps(request_id)
                if s["status"] == StepStatus.SUCCEEDED.value}

    # --- locks ---------------------------------------------------------------------------------

    def acquire_lock(self, key: str, *, request_id: str, run_id: str, ttl_s: float, wait_s: float = 0.0,
                     poll_s: float = 0.5, keeps_lock: Callable[[LockHolder], str | None] = lambda _h: None) -> None:
        """Take (or re-take, for the same request) the lease on ``key``; LockBusy names the holder.

        An expired lease is taken over unless ``keeps_lock(holder)`` says why its holder keeps it
        (a live process on this host is stuck, not gone): expiry alone proves nothing there.
        """
        deadline = time.monotonic() + wait_s
        while True:
            busy = self._try_lock(key, request_id=request_id, run_id=run_id, ttl_s=ttl_s, keeps_lock=keeps_lock)
            if busy is None:
                return
            holder, why = busy
            if time.monotonic() >= deadline:
                if why:
                    raise LockBusy(f"{key} is held by {holder.describe()}: {why}",
                                   hint=f"Stop it with `intent stop {holder.request_id}` if it is stuck.")
                raise LockBusy(f"{key} is held by {holder.describe()}",
                               hint=f"Wait for it to finish (`intent audit show {holder.request_id}`), "
                                    "or raise the intent's policy.lock_wait.")
            time.sleep(poll_s)

    def _try_lock(self, key: str, *, request_id: str, run_id: str, ttl_s: float,
                  keeps_lock: Callable[[LockHolder], str | None]) -> tuple[LockHolder, str] | None:
        now = time.time()
        table = schema.locks
        with self._begin() as conn:
            query = sa.select(table).where(table.c.key == key)
            if self.is_postgres:
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row and row.request_id != request_id:
                holder = LockHolder(**dict(row._mapping))
                if row.expires_at > now:
                    return holder, ""
                # Decided inside the transaction, so no one renews or takes the lease meanwhile.
                if why := keeps_lock(holder):
                    return holder, why
            values = {"request_id": request_id, "run_id": run_id, "host": socket.gethostname(),
                      "pid": os.getpid(), "acquired_at": now, "expires_at": now + ttl_s}
            if row:
                conn.execute(table.update().where(table.c.key == key).values(**values))
            else:
                conn.execute(table.insert().values(key=key, **values))
        return None

    def renew_lock(self, key: str, *, request_id: str, ttl_s: float) -> bool:
        """Extend our lease; False when we no longer hold it (the fencing check before every change)."""
        table = schema.locks
        with self._begin() as conn:
            result = conn.execute(table.update()
                                  .where(table.c.key == key, table.c.request_id == request_id)
                                  .values(expires_at=time.time() + ttl_s))
        return bool(result.rowcount == 1)

    def release_lock(self, key: str, *, request_id: str) -> bool:
        """Release our lease; False when we did not hold it."""
        table = schema.locks
        with self._begin() as conn:
            result = conn.execute(table.delete().where(table.c.key == key,
                                                       table.c.request_id == request_id))
        return bool(result.rowcount == 1)

    def lock_holder(self, key: str) -> LockHolder | None:
        table = schema.locks
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.key == key)).first()
        return LockHolder(**dict(row._mapping)) if row else None

    def locks(self) -> list[LockHolder]:
        with self.engine.connect() as conn:
            return [LockHolder(**dict(r._mapping)) for r in conn.execute(sa.select(schema.locks))]
