"""Audit record format: canonical JSON body written once, SHA-256 chained by sequence number."""

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1
DOMAIN = b"intent-audit/v1\0"
GENESIS_PREV = bytes(32)


def canonical_body(body: dict[str, Any], *, checked: bool = False) -> bytes:
    """Sorted keys, UTF-8, no whitespace, no floats (durations are integer ms): written once.

    ``checked`` skips the float walk for bodies already passed through reject_floats.
    """
    if not checked:
        reject_floats(body)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def reject_floats(value: Any) -> None:
    # Floats serialize differently across JSON libraries; the chain must be recomputable anywhere.
    if isinstance(value, float):
        raise ValueError(f"audit bodies hold integers only, got float {value!r}")
    if isinstance(value, dict):
        for item in value.values():
            reject_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            reject_floats(item)


def record_hash(seq: int, prev: bytes, body: bytes) -> bytes:
    r"""SHA256("intent-audit/v1\0" || u64be(seq) || prev || body)."""
    return hashlib.sha256(DOMAIN + struct.pack(">Q", seq) + prev + body).digest()


@dataclass(frozen=True)
class AuditRecord:
    """One stored record of the chain."""

    v: int
    seq: int
    ts: str
    request_id: str
    run_id: str
    kind: str
    prev: bytes
    hash: bytes
    body: bytes

    def data(self) -> dict[str, Any]:
        """The body decoded (for display and queries; never for hashing)."""
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded
