"""Tables of the state store; created automatically on first use."""

import sqlalchemy as sa

metadata = sa.MetaData()

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("v", sa.Integer, nullable=False),
    sa.Column("ts", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False, index=True),
    sa.Column("prev", sa.LargeBinary(32), nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("intent", sa.String(128), nullable=False, index=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("phase", sa.String(128), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("plan_hash", sa.String(64), nullable=False),
    sa.Column("intent_sha256", sa.String(64), nullable=False),
    sa.Column("lock_key", sa.String(256)),
    sa.Column("dry_run", sa.Boolean, nullable=False, default=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("who", sa.String(128), nullable=False, default=""),
    sa.Column("replay_of", sa.String(64), index=True),
    sa.Column("error", sa.Text, nullable=False, default=""),
    # The status.Reason of the ending (lifecycle/finish.py); null while running.
    sa.Column("reason_code", sa.String(32)),
    # The CLI exit code the outcome maps to (errors.py table); 0 while running or on success.
    sa.Column("exit_code", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Telemetry: refreshed at every phase change and at least every 10 s while a step runs.
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("last_log_line", sa.Text, nullable=False, default=""),
    # Where the running step's process group lives, so stop and the watchdog can reach it.
    sa.Column("step_pgid", sa.Integer),
    sa.Column("step_host", sa.String(256)),
    # Set by `intent stop` / the watchdog; the running step polls it and stops its process group.
    sa.Column("cancel_requested_at", sa.Float),
    sa.Column("cancel_grace_s", sa.Float),
    sa.Column("cancel_status", sa.String(32)),
    # The process that runs the request (an `intent run`, a run worker): dead on its own host means
    # the request crashed, whatever its lease says. owner_token is the process start time (pids are reused).
    sa.Column("owner_host", sa.String(256)),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("owner_token", sa.BigInteger),
)

step_states = sa.Table(
    "step_states",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("step_id", sa.String(128), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    # Increments across the request, so rollback can undo in reverse completion order.
    sa.Column("completed_order", sa.Integer),
)

locks = sa.Table(
    "locks",
    metadata,
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

intent_files = sa.Table(
    "intent_files",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    # The checkpoint's canonical JSON, exactly as written to its files.
    sa.Column("body", sa.LargeBinary, nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("step_id", sa.String(128), primary_key=True),
    sa.Column("decision", sa.String(16), nullable=False),  # approved | rejected
    sa.Column("who", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("decided_at", sa.Float, nullable=False),
)

plans = sa.Table(
    "plans",
    metadata,
    # Every plan shown (intent plan, dry runs, preflight), so a confirmation can show what changed.
    sa.Column("plan_hash", sa.String(64), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
