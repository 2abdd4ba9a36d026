"""ChainStore: what the audit code reads and writes where the chain is kept (the state store implements it).

The store depends on the audit record format, never the reverse: the export and the integrity
checks take any object with these methods, so ``intent_pipelines.audit`` does not import
``intent_pipelines.store`` (intent_pipelines_tests/unit/audit/test_layering.py).
"""

from collections.abc import Iterator
from typing import Protocol

from intent_pipelines.audit.record import AuditRecord


class ChainStore(Protocol):
    """The audit chain and its checkpoints, as the state store (store/state.py) keeps them."""

    def audit_records(self, *, request_id: str | None = None, after_seq: int = -1) -> Iterator[AuditRecord]:
        """Records in chain order, optionally of one request (by its request_id column)."""
        ...

    def audit_record(self, seq: int) -> AuditRecord | None:
        """One record by sequence number."""
        ...

    def audit_records_between(self, first_seq: int, last_seq: int) -> Iterator[AuditRecord]:
        """Records with first_seq <= seq <= last_seq, in order."""
        ...

    def audit_raw(self, first_seq: int = 0, last_seq: int | None = None,
                  batch: int = 50_000) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """(seq, prev, hash, body) in seq order, streamed in batches."""
        ...

    def audit_seq_range(self, ts_from: str, ts_to: str) -> tuple[int, int] | None:
        """First and last seq of records with ts_from <= ts < ts_to (ISO strings), if any."""
        ...

    def request_intents(self) -> dict[str, str]:
        """Intent name of every request."""
        ...

    def checkpoint_bodies(self) -> dict[int, bytes]:
        """Stored checkpoints (canonical JSON) by number."""
        ...

    def add_checkpoint(self, number: int, size: int, body: bytes) -> None:
        """Store a checkpoint's canonical JSON."""
        ...
