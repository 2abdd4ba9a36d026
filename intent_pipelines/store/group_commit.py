"""Group commit: concurrent audit appends in one process share a transaction and its fsync."""

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from intent_pipelines.audit.record import AuditRecord


@dataclass(frozen=True)
class AuditEvent:
    """One event to append: its kind, whose it is, and its body (integers only)."""

    kind: str
    request_id: str
    run_id: str
    body: dict[str, Any] = field(default_factory=dict)


class _Waiter:
    __slots__ = ("error", "event", "record")

    def __init__(self, event: AuditEvent) -> None:
        self.event = event
        self.record: AuditRecord | None = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Batches appends: the first caller commits everything queued meanwhile, the rest wait.

    A lone caller pays one transaction, as before; under load, N callers pay about one. Each
    caller returns only after its own record is committed, so durability is unchanged.
    """

    def __init__(self, commit: Callable[[Sequence[AuditEvent]], list[AuditRecord]]) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._leader = False

    def append(self, event: AuditEvent) -> AuditRecord:
        """Append ``event`` and return its committed record (raises what the commit raised)."""
        waiter = _Waiter(event)
        with self._cond:
            self._queue.append(waiter)
            while waiter.record is None and waiter.error is None:
                if self._leader:
                    self._cond.wait()
                    continue
                self._leader = True
                batch, self._queue = self._queue, []
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._leader = False
                    self._cond.notify_all()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.record is not None
        return waiter.record

    def _run(self, batch: list[_Waiter]) -> None:
        try:
            records = self._commit([w.event for w in batch])
        except BaseException as exc:
            # One bad body must not sink its neighbours: retry them one by one.
            if len(batch) == 1:
                batch[0].error = exc
                return
            for waiter in batch:
                self._run([waiter])
            return
        for waiter, record in zip(batch, records, strict=True):
            waiter.record = record
