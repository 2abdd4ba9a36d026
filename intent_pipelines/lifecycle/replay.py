"""What a replay starts from: the original request as the verified audit log recorded it."""

from dataclasses import dataclass
from typing import Any

from intent_pipelines.errors import AuditBroken, UsageError
from intent_pipelines.home import IntentHome
from intent_pipelines.spec.params import REDACTED
from intent_pipelines.store import StateStore


@dataclass(frozen=True)
class Original:
    """The original's request.start body and the exact intent file it ran."""

    request_id: str
    start: dict[str, Any]
    content: str

    def params(self) -> dict[str, Any]:
        """The recorded params a replay reuses; secrets are read from the environment again."""
        return {k: v for k, v in self.start["params"].items() if not (isinstance(v, str) and v.startswith(REDACTED))}


def original_request(store: StateStore, home: IntentHome, request_id: str) -> Original:
    """The original from the audit log alone; its part of the chain is verified first.

    A replay of tampered history is refused, and so is one of a request refused before it started
    (it recorded no params).
    """
    from intent_pipelines.audit.integrity import verify_store

    records = list(store.audit_records(request_id=request_id))
    start = next((r for r in records if r.kind == "request.start"), None)
    if start is None:
        refused = next((r for r in records if r.kind == "request.refused"), None)
        if refused is not None:
            intent = refused.data().get("intent", "INTENT")
            raise UsageError(f"request {request_id} was refused before it started, so it has no params to replay",
                             hint=f"Start a new request: `intent run {intent} -p NAME=VALUE ...`.")
        raise UsageError(f"request {request_id} is not in the audit log",
                         hint="Check the id: it is the run id `intent run` prints and the UI shows.")
    result = verify_store(store, home, first_seq=0, last_seq=records[-1].seq)
    if not result.ok:
        first = result.first_break
        assert first is not None
        raise AuditBroken(f"the audit chain is broken at seq {first.seq} ({first.kind.value}): request "
                          f"{request_id} cannot be trusted for replay", hint="Run `intent audit verify`.")
    body = start.data()
    sha = body["intent_sha256"]
    file_record = next((r for r in store.audit_records_of_kind("intent.file")
                        if r.data().get("intent_sha256") == sha), None)
    if file_record is None:
        raise UsageError(f"the intent file of request {request_id} ({sha[:12]}) is not in the audit log",
                         hint="Requests from before intent files were recorded cannot be replayed exactly.")
    return Original(request_id, body, str(file_record.data()["content"]))
