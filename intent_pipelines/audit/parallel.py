"""Verify exported days in parallel processes, then stitch the pieces and check checkpoint heads."""

import itertools
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from intent_pipelines.audit.checkpoint import Checkpoint
from intent_pipelines.audit.export import read_records
from intent_pipelines.audit.record import GENESIS_PREV
from intent_pipelines.audit.verify import BreakKind, ChainBreak, VerifyResult, verify_records


@dataclass(frozen=True)
class _Piece:
    first_seq: int
    first_prev: bytes
    result: VerifyResult


def _verify_piece(paths: list[str], keep: frozenset[int]) -> _Piece | None:
    records = read_records([Path(p) for p in paths])
    first = next(records, None)
    if first is None:
        return None
    result = verify_records(itertools.chain([first], records), start_seq=first[0], start_prev=first[1],
                            keep_hashes_at=keep)
    return _Piece(first[0], first[1], result)


def split(files: Sequence[Path], parts: int) -> list[list[Path]]:
    """Contiguous groups of files of about equal total size, in order."""
    sizes = [f.stat().st_size for f in files]
    target = sum(sizes) / parts
    groups: list[list[Path]] = [[]]
    filled = 0.0
    for path, size in zip(files, sizes, strict=True):
        if groups[-1] and filled >= target and len(groups) < parts:
            groups.append([])
            filled = 0.0
        groups[-1].append(path)
        filled += size
    return groups


def verify_files_parallel(files: Sequence[Path], checkpoints: Sequence[Checkpoint], *, workers: int) -> VerifyResult:
    """Verify groups of files in ``workers`` processes; links between groups and checkpoint heads here.

    A valid chain that reaches a checkpoint's head contains exactly the checkpointed records, so
    heads suffice; the Merkle root is left to the single-process path (and to take_checkpoint).
    """
    keep = frozenset(c.size - 1 for c in checkpoints if c.size > 0)
    # fork: the workers inherit the imported modules instead of importing pyarrow again.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pieces = [p for p in pool.map(_verify_piece, [[str(f) for f in g] for g in split(files, workers)],
                                      itertools.repeat(keep)) if p is not None]
    merged = VerifyResult()
    if not pieces:
        return merged
    merged.first_seq = pieces[0].first_seq
    if pieces[0].first_seq == 0 and pieces[0].first_prev != GENESIS_PREV:
        merged.breaks.append(ChainBreak(0, BreakKind.PREV_MISMATCH, "the first record does not start from genesis"))
    for before, after in itertools.pairwise(pieces):
        expected = (before.result.last_seq or 0) + 1
        if after.first_seq != expected:
            kind = BreakKind.SEQ_GAP if after.first_seq > expected else BreakKind.SEQ_REORDER
            merged.breaks.append(ChainBreak(min(after.first_seq, expected), kind,
                                            f"expected seq {expected}, found {after.first_seq}"))
        elif after.first_prev != before.result.head:
            merged.breaks.append(ChainBreak(after.first_seq, BreakKind.PREV_MISMATCH,
                                            "prev is not the hash of the record before"))
    for piece in pieces:
        merged.records += piece.result.records
        merged.breaks += piece.result.breaks
        merged.hashes_at.update(piece.result.hashes_at)
    merged.last_seq, merged.head = pieces[-1].result.last_seq, pieces[-1].result.head
    merged.breaks.sort(key=lambda b: b.seq)
    if merged.ok and merged.first_seq == 0:
        _check_heads(merged, checkpoints)
    return merged


def _check_heads(result: VerifyResult, checkpoints: Sequence[Checkpoint]) -> None:
    previous_size = 0
    for checkpoint in sorted(checkpoints, key=lambda c: c.size):
        result.checkpoints_checked.append(checkpoint.number)
        if result.records < checkpoint.size:
            result.breaks.append(ChainBreak(result.records, BreakKind.TRUNCATED,
                                            f"checkpoint {checkpoint.number} covered {checkpoint.size} records, "
                                            f"only {result.records} remain"))
            return
        if checkpoint.size and result.hashes_at.get(checkpoint.size - 1) != checkpoint.head:
            result.breaks.append(ChainBreak(previous_size, BreakKind.REWRITTEN,
                                            f"records {previous_size}..{checkpoint.size - 1} no longer match "
                                            f"checkpoint {checkpoint.number}: rewritten since it was taken"))
            return
        previous_size = checkpoint.size
