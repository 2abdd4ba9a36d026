"""The db.migrate action: numbered SQL migrations applied in order, each in its own transaction."""

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from intent_pipelines.actions.base import ActionInput, Outputs, action
from intent_pipelines.errors import FailureDetail, StepFailed
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.platforms.base import find_app
from intent_pipelines.platforms.local import code_dir, database_url
from intent_pipelines.retries import FailureClass, classify

_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.(up|down)\.sql$")

_metadata = MetaData()
SCHEMA_MIGRATIONS = Table(
    "schema_migrations",
    _metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", String(40), nullable=False),
)


class MigrateInput(ActionInput):
    app: str = Field(default="", description="take the database and migrations from this app")
    url: str = Field(default="", description="SQLAlchemy URL; overrides the app's database")
    dir: str = Field(default="", description="migrations directory; overrides the app's")
    action: Literal["status", "apply", "down"] = "status"
    target: str = Field(
        default="",
        pattern=r"^\d{0,4}$",
        description='apply: up to this version (inclusive); down: back to it (exclusive, "" = one)',
    )

    @model_validator(mode="after")
    def _has_source(self) -> "MigrateInput":
        if not self.app and not (self.url and self.dir):
            raise ValueError("give `app`, or both `url` and `dir`")
        return self


@dataclass(frozen=True)
class Migration:
    """One numbered migration and its files."""

    version: int
    name: str
    up: Path
    down: Path | None

    @property
    def id(self) -> str:
        return f"{self.version:04d}_{self.name}"


def load_migrations(directory: Path) -> list[Migration]:
    """Read NNNN_name.up.sql / .down.sql files, sorted by version; a stray .sql file is an error."""
    if not directory.is_dir():
        raise StepFailed(
            f"migrations directory {directory} does not exist",
            hint="Set `migrations` in fleet.yaml or pass `dir`.",
        )
    found: dict[int, dict[str, Path]] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise StepFailed(
                f"{path} is not named NNNN_name.up.sql or NNNN_name.down.sql",
                hint="Rename it so its version and direction are clear.",
            )
        version, name, direction = int(match.group(1)), match.group(2), match.group(3)
        if names.setdefault(version, name) != name:
            raise StepFailed(
                f"version {version:04d} is used by both {names[version]} and {name} in {directory}",
                hint="Give every migration its own number.",
            )
        found.setdefault(version, {})[direction] = path
    for files in found.values():
        if "up" not in files:
            raise StepFailed(
                f"{files['down']} has no matching .up.sql file",
                hint="Add it, or remove the stray down file.",
            )
    return [
        Migration(version, names[version], files["up"], files.get("down"))
        for version, files in sorted(found.items())
    ]


def _engine(url: str) -> Engine:
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise StepFailed(f"bad database URL: {exc}", hint="Use a SQLAlchemy URL.") from None
    if engine.dialect.name == "sqlite":
        # pysqlite commits before DDL by default; take over BEGIN so a migration's CREATE/ALTER
        # statements roll back with the rest of it.
        @event.listens_for(engine, "connect")
        def _autocommit_off(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection: object) -> None:
            connection.exec_driver_sql("BEGIN")  # type: ignore[attr-defined]

    return engine


def _statements(script: str, dialect: str) -> list[str]:
    """Split a script for SQLite, whose driver runs one statement per call; others take it whole."""
    if dialect != "sqlite":
        return [script]
    statements: list[str] = []
    buffer = ""
    pieces = script.split(";")
    for i, piece in enumerate(pieces):
        buffer += piece if i == len(pieces) - 1 else piece + ";"
        # complete_statement knows about quotes, comments and triggers, so a ";" inside them stays.
        if sqlite3.complete_statement(buffer) or i == len(pieces) - 1:
            if buffer.strip().strip(";").strip():
                statements.append(buffer)
            buffer = ""
    return statements


def _applied(engine: Engine) -> dict[int, str]:
    """Return applied versions and names; none when the bookkeeping table does not exist yet."""
    sqlite_file = engine.url.database if engine.dialect.name == "sqlite" else None
    if sqlite_file and sqlite_file != ":memory:" and not Path(sqlite_file).exists():
        return {}  # connecting would create the file, and a preview must not change anything
    if not inspect(engine).has_table(SCHEMA_MIGRATIONS.name):
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(SCHEMA_MIGRATIONS.c.version, SCHEMA_MIGRATIONS.c.name))
        return {int(version): str(name) for version, name in rows}


def _plan(
    migrations: list[Migration], applied: dict[int, str], inp: MigrateInput
) -> list[Migration]:
    """Return the migrations ``inp.action`` would run, in the order it would run them."""
    target = int(inp.target) if inp.target else None
    if inp.action == "apply":
        return [
            m
            for m in migrations
            if m.version not in applied and (target is None or m.version <= target)
        ]
    if inp.action == "down":
        by_version = {m.version: m for m in migrations}
        newest_first = sorted(applied, reverse=True)
        versions = newest_first[:1] if target is None else [v for v in newest_first if v > target]
        plan = []
        for version in versions:
            migration = by_version.get(version)
            if migration is None or migration.down is None:
                raise StepFailed(
                    f"applied migration {version:04d}_{applied[version]} has no .down.sql file",
                    hint="Add the down file or revert it by hand.",
                )
            plan.append(migration)
        return plan
    return []


def _resolve(ctx: ActionContext, inp: MigrateInput, *, create: bool) -> tuple[str, Path]:
    """Return the database URL and migrations directory, from explicit inputs or the app."""
    url, directory = inp.url, Path(inp.dir) if inp.dir else None
    if inp.app:
        app = find_app(ctx.home, inp.app)
        url = url or database_url(ctx.home, app, create=create)
        directory = directory or code_dir(ctx.home, ctx.home.fleet_file, app) / app.migrations
        if not url:
            raise StepFailed(
                f"app {app.name} has no `database` in fleet.yaml", hint="Add one or pass `url`."
            )
    assert directory is not None  # the input validator requires app or dir
    return url, directory


def _current(applied: dict[int, str]) -> str:
    return f"{max(applied):04d}" if applied else ""


def _pending(migrations: list[Migration], applied: dict[int, str]) -> list[str]:
    return [m.id for m in migrations if m.version not in applied]


def _run_one(engine: Engine, migration: Migration, direction: Literal["up", "down"]) -> None:
    """Run one migration's SQL and its bookkeeping row in a single transaction."""
    path = migration.up if direction == "up" else migration.down
    assert path is not None  # _plan only reverts migrations that have a down file
    try:
        with engine.begin() as conn:
            for statement in _statements(path.read_text(encoding="utf-8"), engine.dialect.name):
                conn.exec_driver_sql(statement)
            if direction == "up":
                row = {
                    "version": migration.version,
                    "name": migration.name,
                    "applied_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                conn.execute(insert(SCHEMA_MIGRATIONS).values(**row))
            else:
                version = SCHEMA_MIGRATIONS.c.version
                conn.execute(delete(SCHEMA_MIGRATIONS).where(version == migration.version))
    except SQLAlchemyError as exc:
        reason = _reason(exc)
        raise StepFailed(
            f"migration {migration.id} ({direction}) failed and was rolled back: {reason}",
            transient=classify(reason) is FailureClass.TRANSIENT,
            detail=FailureDetail(command=str(path), stderr_tail=str(exc)[:1000]),
            hint=f"Fix {path.name} and run again; earlier migrations stay applied.",
        ) from None


def _reason(exc: SQLAlchemyError) -> str:
    """Return the driver's own first line, without SQLAlchemy's statement dump."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _state(ctx: ActionContext, inp: MigrateInput, *, create: bool = False,
           ) -> tuple[Engine, list[Migration], dict[int, str]]:
    url, directory = _resolve(ctx, inp, create=create)
    migrations = load_migrations(directory)
    engine = _engine(url)
    try:
        return engine, migrations, _applied(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = _reason(exc)
        raise StepFailed(
            f"cannot read migrations from {_safe_url(url)}: {reason}",
            transient=classify(reason) is FailureClass.TRANSIENT,
            hint="Check the database URL and that the server is up.",
        ) from None


def _preview(ctx: ActionContext, inp: MigrateInput) -> str:
    engine, migrations, applied = _state(ctx, inp)
    try:
        plan = _plan(migrations, applied, inp)
    finally:
        engine.dispose()
    where = _safe_url(str(engine.url))
    current = _current(applied) or "none"
    if inp.action == "status":
        pending = ", ".join(_pending(migrations, applied)) or "none"
        return f"{where}: current {current}; pending: {pending}"
    verb = "apply" if inp.action == "apply" else "revert"
    if not plan:
        return f"{where}: current {current}; nothing to {verb}"
    return f"{where}: current {current}; would {verb} {', '.join(m.id for m in plan)}"


@action("db.migrate", MigrateInput, preview=_preview)
def migrate(ctx: ActionContext, inp: MigrateInput) -> Outputs:
    """Show, apply or revert numbered SQL migrations, each in its own transaction."""
    engine, migrations, applied = _state(ctx, inp, create=True)
    done: list[str] = []
    try:
        plan = _plan(migrations, applied, inp)
        if inp.action == "status":
            for migration in migrations:
                mark = "applied" if migration.version in applied else "pending"
                ctx.log(f"{mark:8} {migration.id}")
        if plan and inp.action == "apply":
            _metadata.create_all(engine)
        for migration in plan:
            direction: Literal["up", "down"] = "up" if inp.action == "apply" else "down"
            _run_one(engine, migration, direction)
            ctx.log(f"{'applied' if direction == 'up' else 'reverted'} {migration.id}")
            done.append(migration.id)
        applied = _applied(engine)
    finally:
        engine.dispose()
    ctx.log(f"current version: {_current(applied) or 'none'}")
    return {
        "applied": done if inp.action == "apply" else [],
        "reverted": done if inp.action == "down" else [],
        "current": _current(applied),
        "pending": _pending(migrations, applied),
    }
