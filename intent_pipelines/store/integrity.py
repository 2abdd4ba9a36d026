"""The state store's SQLite file: refused when damaged or gone, and a full disk named as such (see the ADR)."""

import errno
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from intent_pipelines.audit.checkpoint import read_dir
from intent_pipelines.errors import StorageFull, StoreDamaged
from intent_pipelines.settings import settings

# Beside the database, written before its first write: the store had (or may have had) a chain.
MARKER_SUFFIX = ".chain"
# A disk I/O error (SQLITE_IOERR_*: WAL, shared memory, mmap on a full tmpfs) with less than this
# left is a full disk: SQLite reports ENOSPC as SQLITE_FULL only on its plain write path.
LOW_SPACE_BYTES = 16 * 1024 * 1024
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")

FULL_HINT = ("Free space there, then run `intent status`: a request cut short shows CRASHED with its lock freed, and "
             "`intent resume <request>` continues it; nothing recorded before is lost.")


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for another database or an in-memory one."""
    parsed = sa.engine.make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def storage_full(exc: BaseException, *, paths: Sequence[Path], what: str) -> StorageFull | None:
    """``exc`` (or an error it was raised from) as StorageFull when it means no space is left.

    ``paths`` are where the state is kept (their filesystems' free space is reported); ``what``
    names them in the message, e.g. "the state store /x/state.db".
    """
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            cause = error.strerror or type(error).__name__
            if error.filename:
                return _full(str(error.filename), [Path(os.fsdecode(error.filename))], cause)
            return _full(what, paths, cause)
        name = getattr(error, "sqlite_errorname", "")
        if isinstance(error, sqlite3.Error) and name == "SQLITE_FULL":
            return _full(what, paths, str(error))
        if isinstance(error, sqlite3.Error) and name.startswith("SQLITE_IOERR") \
                and (free := _free(paths)) is not None and free < LOW_SPACE_BYTES:
            return _full(what, paths, f"{error} ({name})")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver error under a SQLAlchemy one, and what each was raised from or during."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        todo += [e for e in (getattr(error, "orig", None), error.__cause__, error.__context__)
                 if isinstance(e, BaseException)]


def _full(what: str, paths: Sequence[Path], cause: str) -> StorageFull:
    free = _free(paths)
    there = f" ({_size(free)} free there)" if free is not None else ""
    return StorageFull(f"no space left for {what}{there}: {cause}", hint=FULL_HINT)


def _free(paths: Sequence[Path]) -> int | None:
    """The least free space of the filesystems holding ``paths`` (their nearest existing parents); None if unknown."""
    free: list[int] = []
    for path in paths:
        try:
            existing = next((p for p in (path, *path.parents) if p.exists()), None)
            if existing is not None:
                free.append(shutil.disk_usage(existing).free)
        except OSError:
            continue  # a path too long to look at says nothing about space
    return min(free, default=None)


def _size(count: int) -> str:
    for scale, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


class FileGuard:
    """What the store checks about its SQLite file: on open, before its first write, and on every error."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.marker = db.with_name(db.name + MARKER_SUFFIX)
        self.checked = False  # quick_check passed and the marker exists: this engine may write

    def refuse_vanished_chain(self) -> None:
        """Refuse an empty or missing file where a chain was kept: SQLite would start a new one at seq 0."""
        size = self.db.stat().st_size if self.db.exists() else None
        if size:
            return
        traces = self._traces()
        if not traces:
            return  # a brand-new store
        state = "missing" if size is None else "empty (0 bytes)"
        wal = self.db.with_name(self.db.name + "-wal")
        # SQLite would delete it on opening an empty file: it may hold the newest records.
        kept = f"; keep {wal.name} ({_size(wal.stat().st_size)}), it may hold its newest records" \
            if wal.exists() and wal.stat().st_size else ""
        raise StoreDamaged(
            f"the state store {self.db} is {state}, but a chain was kept there "
            f"({'; '.join(what for _, what in traces)}): opening it would start a new audit chain at seq 0{kept}",
            hint=f"Restore {self.db.name} from a copy and check it with `intent audit verify`; to start a new chain "
                 f"on purpose, move {self.db.name} (with its -wal and -shm) and "
                 f"{' and '.join(str(path) for path, _ in traces)} aside first.")

    def _traces(self) -> list[tuple[Path, str]]:
        """What shows a chain existed (path, description): the marker, the home's checkpoint files, the anchor's."""
        traces: list[tuple[Path, str]] = []
        if self.marker.exists():
            traces.append((self.marker, f"{self.marker.name} since {self._marker_time()}"))
        # The default store sits at the root of INTENT_HOME, whose checkpoint copies are in audit/checkpoints.
        for directory in (self.db.parent / "audit" / "checkpoints", settings().audit_anchor_dir):
            if directory is not None and (numbers := read_dir(directory)):
                traces.append((directory, f"checkpoint {max(numbers)} in {directory}"))
        return traces

    def _marker_time(self) -> str:
        try:
            return str(json.loads(self.marker.read_text())["since"])
        except (OSError, ValueError, KeyError, TypeError):
            return "an unreadable marker"

    def before_first_write(self, dbapi_conn: Any) -> None:
        """Refuse to write to a damaged file; note that a chain may exist from now on. Once per engine."""
        if self.checked:
            return
        try:
            rows = dbapi_conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:  # a damaged page can stop the check itself
            raise self.damaged(str(exc)) from None
        result = "; ".join(str(r[0]) for r in rows)
        if result != "ok":
            raise self.damaged(f"PRAGMA quick_check: {result.replace(chr(10), ' ')[:200]}")
        self._write_marker()
        self.checked = True

    def _write_marker(self) -> None:
        body = json.dumps({"store": self.db.name, "since": datetime.now(UTC).isoformat(timespec="seconds"),
                           "why": "a chain is kept in this store: an empty or missing store here is refused"})
        try:
            with self.marker.open("x", encoding="utf-8") as fh:  # "x": another process may have just written it
                fh.write(body + "\n")
        except FileExistsError:
            return
        except OSError as exc:  # even a marker cut short by a full disk still exists, and counts
            raise self.translate(exc) or exc from None

    def damaged(self, detail: str) -> StoreDamaged:
        return StoreDamaged(
            f"the state store {self.db} is damaged ({detail}); nothing more is written to it",
            hint="Stop intent here, move it and its -wal and -shm files aside, restore the last good copy and run "
                 "`intent audit verify`; without one, INTENT_HOME/warehouse/audit_events holds the exported days "
                 "(`intent audit verify --parquet`) and audit/checkpoints how far the chain went.")

    def translate(self, exc: BaseException) -> StorageFull | StoreDamaged | None:
        """A driver error (or OSError) as the StoreError it means for this file; None for any other."""
        damaged = next((e for e in _chain(exc) if getattr(e, "sqlite_errorname", "") in _DAMAGED), None)
        if damaged is not None:
            self.checked = False  # every later write re-checks the file, and is refused while it is damaged
            return self.damaged(str(damaged))
        return storage_full(exc, paths=[self.db], what=f"the state store {self.db}")
