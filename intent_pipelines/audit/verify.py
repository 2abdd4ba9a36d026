"""Verify an audit chain from any source of records: links, hashes, order, and checkpoints."""

import hashlib
import itertools
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from intent_pipelines.audit.checkpoint import Checkpoint
from intent_pipelines.audit.merkle import merkle_root
from intent_pipelines.audit.record import DOMAIN, GENESIS_PREV


class BreakKind(str, Enum):
    """How a chain can be broken; each names what was changed."""

    HASH_MISMATCH = "hash_mismatch"  # a record's stored hash is not the hash of its bytes
    PREV_MISMATCH = "prev_mismatch"  # a record does not link to the one before it
    SEQ_GAP = "seq_gap"  # records are missing (deleted) in the middle
    SEQ_DUPLICATE = "seq_duplicate"  # a sequence number occurs twice
    SEQ_REORDER = "seq_reorder"  # a sequence number goes backwards (swapped records)
    TRUNCATED = "truncated"  # fewer records than a checkpoint covered: the tail was cut
    REWRITTEN = "rewritten"  # records a checkpoint covered changed (even if re-chained)
    COLUMN_MISMATCH = "column_mismatch"  # a typed column (request_id, kind, …) disagrees with the hashed body
    CHECKPOINT_ALTERED = "checkpoint_altered"  # a checkpoint differs from its other copies, or does not chain
    CHECKPOINT_MISSING = "checkpoint_missing"  # a copy of a checkpoint (or every copy) was deleted


@dataclass(frozen=True)
class ChainBreak:
    """One place the chain is broken; ``column`` names the typed column of a column_mismatch."""

    seq: int
    kind: BreakKind
    detail: str
    column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """{"seq", "kind", "detail"}, and "column" for a column_mismatch."""
        shown: dict[str, Any] = {"seq": self.seq, "kind": self.kind.value, "detail": self.detail}
        if self.column is not None:
            shown["column"] = self.column
        return shown


@dataclass
class VerifyResult:
    """What verification saw; ``ok`` when nothing is broken."""

    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: bytes = GENESIS_PREV
    checkpoints_checked: list[int] = field(default_factory=list)
    breaks: list[ChainBreak] = field(default_factory=list)
    # Hashes of chosen records (checkpoint heads), for verification split across processes.
    hashes_at: dict[int, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_break(self) -> ChainBreak | None:
        return min(self.breaks, key=lambda b: b.seq) if self.breaks else None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape documented in docs/audit-format.md."""
        first = self.first_break
        return {
            "schema": "intent-audit-verify/v1",
            "ok": self.ok,
            "records_checked": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head": self.head.hex(),
            "checkpoints_checked": self.checkpoints_checked,
            "first_break": None if first is None else first.to_dict(),
            "breaks": [b.to_dict() for b in self.breaks],
        }


RecordTuple = tuple[int, bytes, bytes, bytes]  # seq, prev, hash, body
MAX_BREAKS = 20  # of one kind of check: past that, more detail is noise


def verify_records(
    records: Iterable[RecordTuple],
    *,
    checkpoints: Sequence[Checkpoint] = (),
    start_seq: int = 0,
    start_prev: bytes = GENESIS_PREV,
    max_breaks: int = MAX_BREAKS,
    keep_hashes_at: frozenset[int] = frozenset(),
) -> VerifyResult:
    """Check every link and hash in order; then that each checkpoint still matches the records.

    Records are hashed from their stored bytes, never re-serialized. Checkpoints are checked only
    when verification starts at seq 0 (their Merkle roots cover the chain from its start).
    """
    result = VerifyResult()
    expected_seq, prev = start_seq, start_prev
    hashes: list[bytes] = []
    collect = bool(checkpoints) and start_seq == 0
    sha256, pack, domain = hashlib.sha256, struct.Struct(">Q").pack, DOMAIN

    def broken(seq: int, kind: BreakKind, detail: str) -> bool:
        result.breaks.append(ChainBreak(seq, kind, detail))
        return len(result.breaks) >= max_breaks

    for seq, rec_prev, rec_hash, body in records:
        if result.first_seq is None:
            result.first_seq = seq
        result.records += 1
        if seq != expected_seq:
            if seq > expected_seq:
                kind, detail = BreakKind.SEQ_GAP, f"expected seq {expected_seq}, found {seq}"
            elif seq == expected_seq - 1:
                kind, detail = BreakKind.SEQ_DUPLICATE, f"seq {seq} occurs twice"
            else:
                kind, detail = BreakKind.SEQ_REORDER, f"seq {seq} after seq {expected_seq - 1}"
            if broken(min(seq, expected_seq), kind, detail):
                break
        elif rec_prev != prev:
            if broken(seq, BreakKind.PREV_MISMATCH, "prev is not the hash of the record before"):
                break
        if sha256(domain + pack(seq) + rec_prev + body).digest() != rec_hash:
            if broken(seq, BreakKind.HASH_MISMATCH, "stored hash does not match the record's bytes"):
                break
        if collect:
            hashes.append(rec_hash)
        if seq in keep_hashes_at:
            result.hashes_at[seq] = rec_hash
        prev, expected_seq = rec_hash, seq + 1
        result.last_seq, result.head = seq, rec_hash
    if collect and result.ok:
        check_checkpoints(result, checkpoints, lambda size: hashes[size - 1] if size else GENESIS_PREV,
                          root_of=lambda size: merkle_root(hashes[:size]))
    return result


def check_checkpoints(result: VerifyResult, checkpoints: Sequence[Checkpoint], head_at: Callable[[int], bytes | None],
                      *, root_of: Callable[[int], bytes] | None = None) -> None:
    """Check each checkpoint, oldest first, against a chain from seq 0 whose links verified.

    ``head_at(size)`` is the hash of record size-1 (None when not kept). Heads localize a rewrite (a
    valid chain with the same head has the same past); with ``root_of``, the latest checkpoint's
    Merkle root is recomputed too, as a third party holding only it would. Several versions of one
    number are copies that disagree (already reported as checkpoint_altered): the records match the
    checkpoint when they match any of them, so an edited copy is not mistaken for a rewrite.
    """
    groups = [list(group) for _, group in itertools.groupby(sorted(checkpoints, key=lambda c: c.number),
                                                            key=lambda c: c.number)]
    previous_size = 0
    for versions in groups:
        number = versions[0].number
        result.checkpoints_checked.append(number)
        covered = [c for c in versions if c.size <= result.records]
        if not covered:
            size = min(c.size for c in versions)
            result.breaks.append(ChainBreak(
                result.records, BreakKind.TRUNCATED,
                f"checkpoint {number} covered {size} records, only {result.records} remain: "
                f"truncated since checkpoint {number}"))
            return
        latest = versions is groups[-1]
        matched = next((c for c in covered if head_at(c.size) == c.head
                        and (root_of is None or not latest or root_of(c.size) == c.root)), None)
        if matched is None:
            result.breaks.append(ChainBreak(
                previous_size, BreakKind.REWRITTEN,
                f"records {previous_size}..{covered[0].size - 1} no longer match checkpoint {number}: "
                "rewritten since it was taken"))
            return
        previous_size = matched.size
