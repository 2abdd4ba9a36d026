"""Verify exported days, in this process or split across processes and stitched: links, hashes, columns."""

import itertools
import multiprocessing
from collections.abc import Generator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from intent_pipelines.audit.checkpoint import Checkpoint
from intent_pipelines.audit.columns import ColumnFindings, checked_tables
from intent_pipelines.audit.export import records_of
from intent_pipelines.audit.record import GENESIS_PREV
from intent_pipelines.audit.verify import (
    BreakKind,
    ChainBreak,
    RecordTuple,
    VerifyResult,
    check_checkpoints,
    verify_records,
)


@dataclass
class FilesVerified:
    """What verification of some files saw; the column findings apart, so they do not hold back the checkpoints."""

    result: VerifyResult = field(default_factory=VerifyResult)
    columns: ColumnFindings = field(default_factory=ColumnFindings)
    first_prev: bytes = GENESIS_PREV  # the stored prev of the first record: its link to the records before

    def breaks(self) -> list[ChainBreak]:
        """Every break: the chain's, then the columns'."""
        return self.result.breaks + self.columns.resolved()


def verify_files(files: Sequence[Path], *, checkpoints: Sequence[Checkpoint] = (),
                 keep_hashes_at: frozenset[int] = frozenset()) -> FilesVerified:
    """Verify files in order in this process: every link, hash and typed column.

    The first record's prev is trusted as the link to the records before the files, unless it is
    seq 0 (then it must be genesis).
    """
    verified = FilesVerified()
    with closing(_records(files, verified.columns)) as records:
        first = next(records, None)
        if first is not None:
            verified.first_prev = first[1]
            verified.result = verify_records(itertools.chain([first], records), checkpoints=checkpoints,
                                             start_seq=first[0], start_prev=first[1] if first[0] > 0 else GENESIS_PREV,
                                             keep_hashes_at=keep_hashes_at)
    return verified


def _records(files: Sequence[Path], columns: ColumnFindings) -> Generator[RecordTuple, None, None]:
    with closing(checked_tables((pq.read_table(path) for path in files), columns)) as tables:
        for table in tables:
            yield from records_of(table)


def _verify_piece(paths: list[str], keep: frozenset[int]) -> FilesVerified:
    return verify_files([Path(p) for p in paths], keep_hashes_at=keep)


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


def verify_files_parallel(files: Sequence[Path], checkpoints: Sequence[Checkpoint], *, workers: int) -> FilesVerified:
    """Verify groups of files in ``workers`` processes; links between groups and checkpoint heads here.

    A valid chain that reaches a checkpoint's head contains exactly the checkpointed records, so
    heads suffice; the Merkle root is left to the single-process path (and to take_checkpoint).
    """
    keep = frozenset(c.size - 1 for c in checkpoints if c.size > 0)
    # fork: the workers inherit the imported modules instead of importing pyarrow again.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pieces = [p for p in pool.map(_verify_piece, [[str(f) for f in g] for g in split(files, workers)],
                                      itertools.repeat(keep)) if p.result.first_seq is not None]
    merged = FilesVerified()
    if not pieces:
        return merged
    merged.first_prev = pieces[0].first_prev
    merged.result.first_seq = pieces[0].result.first_seq
    for before, after in itertools.pairwise(pieces):
        expected = (before.result.last_seq or 0) + 1
        first_seq = after.result.first_seq or 0
        if first_seq != expected:
            kind = BreakKind.SEQ_GAP if first_seq > expected else BreakKind.SEQ_REORDER
            merged.result.breaks.append(ChainBreak(min(first_seq, expected), kind,
                                                   f"expected seq {expected}, found {first_seq}"))
        elif after.first_prev != before.result.head:
            merged.result.breaks.append(ChainBreak(first_seq, BreakKind.PREV_MISMATCH,
                                                   "prev is not the hash of the record before"))
    for piece in pieces:
        merged.result.records += piece.result.records
        merged.result.breaks += piece.result.breaks
        merged.result.hashes_at.update(piece.result.hashes_at)
        merged.columns.merge(piece.columns)
    merged.result.last_seq, merged.result.head = pieces[-1].result.last_seq, pieces[-1].result.head
    merged.result.breaks.sort(key=lambda b: b.seq)
    if merged.result.ok and merged.result.first_seq == 0:
        hashes_at = merged.result.hashes_at
        check_checkpoints(merged.result, checkpoints, lambda size: hashes_at.get(size - 1) if size else GENESIS_PREV)
    return merged
