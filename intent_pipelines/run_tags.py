"""The Dagster run tags the product sets and reads, in one place (names, and the outcome tags)."""

from collections.abc import Mapping
from typing import Any

NAME = "intent/name"  # the intent's own name (the job name is its snake_case form)
SOURCE = "intent/source"  # cli | submit | (absent: the UI, a schedule)
LOCK = "intent/lock"  # the lock target: the run queue serializes runs per value
REPLAY_OF = "intent/replay_of"
OWNER = "intent/owner"  # host:pid:start of the process that executes the run in place (`intent run`)
STEP = "intent/step"  # on step ops

# Set when the request ends, so the Runs list filters by outcome (derived from request.complete).
REQUEST = "intent/request"
STATUS = "intent/status"
REASON = "intent/reason"
DRY_RUN = "intent/dry_run"

SOURCE_CLI = "cli"
SOURCE_SUBMIT = "submit"


def outcome_tags(row: Mapping[str, Any]) -> dict[str, str]:
    """The outcome tags of an ended request's row (empty while it runs)."""
    if row["status"] == "RUNNING":
        return {}
    return {REQUEST: str(row["request_id"]), STATUS: str(row["status"]), REASON: str(row.get("reason_code") or ""),
            DRY_RUN: "true" if row["dry_run"] else "false"}
