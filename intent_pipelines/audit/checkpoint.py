"""Checkpoints: (size, head, Merkle root) of the chain at a moment, chained and kept in three places."""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intent_pipelines.settings import settings

CHECKPOINT_VERSION = 1
GENESIS_DIGEST = bytes(32)
ANCHOR_ENV = "INTENT_AUDIT_ANCHOR_DIR"


@dataclass(frozen=True)
class Checkpoint:
    """The chain's first ``size`` records end in ``head`` and have Merkle root ``root``."""

    number: int
    size: int
    head: bytes
    root: bytes
    ts: str
    prev_digest: bytes  # digest of checkpoint number-1: editing an old checkpoint breaks the next

    def to_json(self) -> bytes:
        """Canonical JSON: the bytes the digest covers and the file holds."""
        return json.dumps({
            "v": CHECKPOINT_VERSION, "number": self.number, "size": self.size, "head": self.head.hex(),
            "root": self.root.hex(), "ts": self.ts, "prev_digest": self.prev_digest.hex(),
        }, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.to_json()).digest()

    @classmethod
    def from_json(cls, data: bytes) -> "Checkpoint":
        """Parse a checkpoint file; ValueError when it is not one."""
        raw: dict[str, Any] = json.loads(data)
        if raw.get("v") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {raw.get('v')!r}")
        return cls(number=int(raw["number"]), size=int(raw["size"]), head=bytes.fromhex(raw["head"]),
                   root=bytes.fromhex(raw["root"]), ts=str(raw["ts"]),
                   prev_digest=bytes.fromhex(raw["prev_digest"]))

    @property
    def filename(self) -> str:
        return f"checkpoint-{self.number:06d}.json"


def anchor_dir() -> Path | None:
    """The export directory the writer cannot rewrite, when configured."""
    return settings().audit_anchor_dir


def write_once(directory: Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint file that is never overwritten (O_EXCL) and read-only afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint.filename
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        if path.read_bytes() != checkpoint.to_json():
            raise ValueError(f"{path} exists with different content") from None
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(checkpoint.to_json())
        fh.flush()
        os.fsync(fh.fileno())


def read_dir(directory: Path) -> dict[int, bytes]:
    """Raw checkpoint files in a directory, by number."""
    found: dict[int, bytes] = {}
    if directory.is_dir():
        for path in sorted(directory.glob("checkpoint-*.json")):
            try:
                found[int(path.stem.split("-")[1])] = path.read_bytes()
            except (ValueError, IndexError):
                continue
    return found
