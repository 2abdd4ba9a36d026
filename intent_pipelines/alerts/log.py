"""The alert log: one JSON line per run that ended a request badly, in INTENT_HOME/logs/alerts/intent-failures.log.

Lines are appended under an exclusive file lock and deduplicated by run id, so a sensor tick that
is delivered twice (a daemon restart, two daemons) never writes the same failure twice. The log is
the source of truth; ``alerted-runs.idx`` beside it is only an index of the run ids already in it.
"""

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from intent_pipelines import secrets
from intent_pipelines.alerts.scrub import scrub
from intent_pipelines.home import IntentHome

LOG_NAME = "intent-failures.log"
INDEX_NAME = "alerted-runs.idx"
LOCK_NAME = ".intent-failures.lock"


@dataclass(frozen=True)
class AlertRecord:
    """One alert line (field names are the JSON keys; see docs/guides, "Failure alerts")."""

    ts: str
    request_id: str
    run_id: str
    intent: str
    step: str
    error_class: str
    exit_code: int | None
    message: str
    signature: str
    report: str
    reason: str = ""
    phase: str = ""
    status: str = ""  # the request's status (FAILED, ROLLED_BACK, ...)
    run_status: str = ""  # the Dagster run's status (FAILURE, CANCELED)
    process_exit_code: int | None = None
    forensics: str = ""
    # status.Category: failure | waiting pages; refused | stopped are on the record only. Lines
    # written before categories existed were all failures.
    category: str = "failure"

    def to_json(self) -> str:
        """The line as written (sorted keys, one line, message scrubbed once more)."""
        return json.dumps({**asdict(self), "message": scrub(self.message)}, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> "AlertRecord":
        """Parse a line; unknown keys (from a newer version) are ignored."""
        data: dict[str, Any] = json.loads(line)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def day(self) -> date:
        """The UTC day of the alert."""
        return datetime.fromisoformat(self.ts.replace("Z", "+00:00")).astimezone(UTC).date()


def alert_log_path(home: IntentHome) -> Path:
    """INTENT_HOME/logs/alerts/intent-failures.log."""
    return home.alerts / LOG_NAME


def now_ts() -> str:
    """UTC timestamp, seconds precision, as alert lines carry it."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextmanager
def _locked(home: IntentHome) -> Iterator[None]:
    home.alerts.mkdir(parents=True, exist_ok=True)
    with (home.alerts / LOCK_NAME).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _last_line(path: Path) -> str:
    """The file's last non-empty line (cheap: reads at most the last 64 KiB)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            chunk = fh.read()
    except FileNotFoundError:
        return ""
    lines = [line for line in chunk.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _indexed(home: IntentHome) -> set[str]:
    try:
        return set((home.alerts / INDEX_NAME).read_text(encoding="utf-8").split())
    except FileNotFoundError:
        return set()


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def find_alert(home: IntentHome, run_id: str) -> AlertRecord | None:
    """The alert already written for ``run_id``, if any."""
    for record in read_alerts(home):
        if record.run_id == run_id:
            return record
    return None


def _already_alerted(home: IntentHome, run_id: str) -> bool:
    if run_id in _indexed(home):
        return True
    # Only the last line can be missing from the index: the process died between the two appends.
    last = _last_line(alert_log_path(home))
    return bool(last) and f'"run_id": "{run_id}"' in last


def append_once(home: IntentHome, run_id: str, build: Callable[[], AlertRecord]) -> tuple[AlertRecord, bool]:
    """Write the alert ``build()`` makes unless ``run_id`` has one; returns (record, newly written).

    ``build`` runs under the lock and only for a new alert, so the report and forensics it writes
    are written once per run too.
    """
    with _locked(home):
        if _already_alerted(home, run_id):
            existing = find_alert(home, run_id)
            if existing is not None:
                return existing, False
        record = build()
        _append(alert_log_path(home), secrets.mask(record.to_json()))
        _append(home.alerts / INDEX_NAME, run_id)
        return record, True


def read_alerts(home: IntentHome) -> Iterator[AlertRecord]:
    """Every alert line in the log, oldest first; unreadable lines are skipped."""
    try:
        fh = alert_log_path(home).open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                yield AlertRecord.from_json(line)
            except (ValueError, TypeError):
                continue
