"""Integrity checks of a live store or of exported files: verify, take checkpoints, raise the alert."""

import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path

from intent_pipelines.audit.chain_store import ChainStore
from intent_pipelines.audit.checkpoint import GENESIS_DIGEST, Checkpoint, anchor_dir, read_dir, write_once
from intent_pipelines.audit.columns import ColumnFindings, check_table, records_table
from intent_pipelines.audit.copies import resolve_checkpoints
from intent_pipelines.audit.export import day_bounds, parquet_files
from intent_pipelines.audit.merkle import merkle_root
from intent_pipelines.audit.parallel import verify_files, verify_files_parallel
from intent_pipelines.audit.record import GENESIS_PREV, AuditRecord
from intent_pipelines.audit.verify import BreakKind, ChainBreak, RecordTuple, VerifyResult, verify_records
from intent_pipelines.errors import AuditBroken, UsageError
from intent_pipelines.home import IntentHome

ALERT_FILE = "audit-integrity.log"
PAGE = 50_000  # records read from the store at a time


def checkpoint_dir(home: IntentHome) -> Path:
    return home.root / "audit" / "checkpoints"


def store_checkpoints(store: ChainStore, home: IntentHome) -> tuple[list[Checkpoint], list[ChainBreak]]:
    """The checkpoints to check the store's records against, and what is wrong with their copies."""
    copies = {"store": store.checkpoint_bodies(), "file": read_dir(checkpoint_dir(home))}
    anchor = anchor_dir()
    if anchor is not None:
        copies["anchor"] = read_dir(anchor)
    return resolve_checkpoints(copies)


def verify_store(store: ChainStore, home: IntentHome, *, first_seq: int | None = None,
                 last_seq: int | None = None) -> VerifyResult:
    """Verify the whole chain and its checkpoints, or the segment first_seq..last_seq.

    Every record's links, hash and typed columns (request_id, run_id, kind, v) are checked.
    """
    checkpoints, checkpoint_breaks = store_checkpoints(store, home)
    columns = ColumnFindings()
    if first_seq is None or first_seq == 0 and last_seq is None:
        result = verify_records(_checked_pages(store, 0, None, columns), checkpoints=checkpoints)
    else:
        before = store.audit_record(first_seq - 1) if first_seq > 0 else None
        result = verify_records(_checked_pages(store, first_seq, last_seq, columns), start_seq=first_seq,
                                start_prev=before.hash if before else GENESIS_PREV)
    result.breaks += columns.resolved() + checkpoint_breaks
    return result


def _checked_pages(store: ChainStore, first_seq: int, last_seq: int | None,
                   columns: ColumnFindings) -> Iterator[RecordTuple]:
    """(seq, prev, hash, body) in seq order, each page's typed columns checked against its bodies."""
    for page in _pages(store, first_seq, last_seq):
        check_table(records_table(page), columns)
        for record in page:
            yield record.seq, record.prev, record.hash, record.body


def _pages(store: ChainStore, first_seq: int, last_seq: int | None) -> Iterator[list[AuditRecord]]:
    """Whole records in seq order, PAGE seqs at a time (bounded memory on PostgreSQL too)."""
    low = first_seq
    while last_seq is None or low <= last_seq:
        high = low + PAGE - 1 if last_seq is None else min(low + PAGE - 1, last_seq)
        page = list(store.audit_records_between(low, high))
        if page:
            yield page
            low = high + 1
            continue
        # An empty page is the end of the chain, or a gap of deleted records to jump (and report).
        following = next(store.audit_raw(low, last_seq, batch=1), None)
        if following is None:
            return
        low = following[0]


# Below this much Parquet, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024


def verify_parquet(root: Path, checkpoints_from: Path | None, *, require_checkpoints: bool = False,
                   workers: int | None = None) -> VerifyResult:
    """Verify exported files alone (no database); checkpoints from a directory of checkpoint files.

    Checkpoints cover the chain from seq 0, so files that start later cannot be checked against
    them; with ``require_checkpoints`` that is a break (the head may have been deleted).
    """
    files = parquet_files(root)
    if not files:
        raise UsageError(f"no audit Parquet files under {root}",
                         hint="Point --parquet at the warehouse's audit_events directory or one file.")
    checkpoints, breaks = resolve_checkpoints({"file": read_dir(checkpoints_from)} if checkpoints_from else {})
    if workers is None:
        big = sum(f.stat().st_size for f in files) >= PARALLEL_MIN_BYTES
        workers = min(os.cpu_count() or 1, len(files)) if big else 1
    verified = verify_files_parallel(files, checkpoints, workers=workers) if workers > 1 \
        else verify_files(files, checkpoints=checkpoints)
    result = verified.result
    result.breaks = verified.breaks()
    start_seq = result.first_seq or 0
    if require_checkpoints and checkpoints and start_seq > 0:
        result.breaks.append(ChainBreak(0, BreakKind.SEQ_GAP, f"the files start at seq {start_seq}: records "
                                        f"0..{start_seq - 1} are missing, so no checkpoint can be checked"))
    result.breaks += breaks
    return result


def day_range(store: ChainStore, first: date, last: date) -> tuple[int, int] | None:
    """First and last seq of the records of the UTC days first..last."""
    start, _ = day_bounds(first)
    _, end = day_bounds(last)
    return store.audit_seq_range(start, end)


def take_checkpoint(store: ChainStore, home: IntentHome) -> Checkpoint:
    """Verify everything, then record (size, head, Merkle root) in the store, a file and the anchor."""
    result = verify_store(store, home)
    if not result.ok:
        raise_broken(home, result)
    checkpoints, _ = store_checkpoints(store, home)
    hashes = [record[2] for record in store.audit_raw()]
    checkpoint = Checkpoint(
        number=(checkpoints[-1].number + 1) if checkpoints else 1,
        size=len(hashes),
        head=hashes[-1] if hashes else GENESIS_PREV,
        root=merkle_root(hashes),
        ts=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        prev_digest=checkpoints[-1].digest if checkpoints else GENESIS_DIGEST,
    )
    write_once(checkpoint_dir(home), checkpoint)
    anchor = anchor_dir()
    if anchor is not None:
        write_once(anchor, checkpoint)
    store.add_checkpoint(checkpoint.number, checkpoint.size, checkpoint.to_json())
    return checkpoint


def write_alert(home: IntentHome, result: VerifyResult, *, extra: Mapping[str, str] | None = None) -> Path:
    """Append one JSON line naming the first break to INTENT_HOME/logs/alerts/audit-integrity.log."""
    first = result.first_break
    assert first is not None
    home.alerts.mkdir(parents=True, exist_ok=True)
    line = {"ts": datetime.now(UTC).isoformat(timespec="seconds"), "alert": "audit_chain_broken",
            "first_bad_seq": first.seq, "kind": first.kind.value, "detail": first.detail,
            "records_checked": result.records, **(extra or {})}
    path = home.alerts / ALERT_FILE
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    return path


def raise_broken(home: IntentHome, result: VerifyResult) -> None:
    """Append the alert line and raise AuditBroken naming the first break."""
    write_alert(home, result)
    first = result.first_break
    assert first is not None
    raise AuditBroken(f"audit chain broken at seq {first.seq}: {first.kind.value} ({first.detail})",
                      hint="Do not write to the store until it is investigated; see docs/audit-format.md.")
