"""Reconciling checkpoint copies: which are missing, which altered, and which version the records are checked against."""

import dataclasses

from intent_pipelines.audit.checkpoint import GENESIS_DIGEST, Checkpoint
from intent_pipelines.audit.copies import resolve_checkpoints
from intent_pipelines.audit.verify import BreakKind


def chained(count: int) -> list[Checkpoint]:
    """Checkpoints 1..count every 4 records, each committing to the one before."""
    found: list[Checkpoint] = []
    for number in range(1, count + 1):
        found.append(Checkpoint(number=number, size=4 * number, head=bytes([number]) * 32, root=bytes(32),
                                ts="2026-01-01T02:00:00Z", prev_digest=found[-1].digest if found else GENESIS_DIGEST))
    return found


def bodies(checkpoints: list[Checkpoint], *numbers: int) -> dict[int, bytes]:
    return {c.number: c.to_json() for c in checkpoints if c.number in numbers}


def test_agreeing_copies_and_a_late_anchor_are_intact() -> None:
    """Every copy holding every checkpoint, and an anchor configured from checkpoint 2 on, is no break."""
    cps = chained(3)
    trusted, breaks = resolve_checkpoints({"store": bodies(cps, 1, 2, 3), "file": bodies(cps, 1, 2, 3),
                                           "anchor": bodies(cps, 2, 3)})
    assert (trusted, breaks) == (cps, [])


def test_a_checkpoint_gone_from_every_copy_is_missing_where_the_one_before_ends() -> None:
    """Checkpoint 2 deleted everywhere while 3 remains is checkpoint_missing, not a chaining error."""
    cps = chained(3)
    trusted, breaks = resolve_checkpoints({"file": bodies(cps, 1, 3)})
    assert [(b.kind, b.seq) for b in breaks] == [(BreakKind.CHECKPOINT_MISSING, cps[0].size)]
    assert trusted == [cps[0], cps[2]]


def test_of_disagreeing_copies_the_committed_one_is_checked() -> None:
    """Checkpoint 1's file edited: altered, and only the store's version (the one 2 commits to) is checked."""
    cps = chained(2)
    edited = dataclasses.replace(cps[0], head=bytes(32))
    trusted, breaks = resolve_checkpoints({"store": bodies(cps, 1, 2),
                                           "file": {1: edited.to_json(), 2: cps[1].to_json()}})
    assert [(b.kind, b.seq) for b in breaks] == [(BreakKind.CHECKPOINT_ALTERED, cps[0].size)]
    assert "its copies differ (file ≠ store)" in breaks[0].detail
    assert trusted == cps


def test_the_newest_keeps_every_version_unless_the_anchor_has_one() -> None:
    """For the newest checkpoint nothing commits to a version: all are candidates, or the anchor's alone."""
    cps = chained(2)
    edited = dataclasses.replace(cps[1], head=bytes(32))
    copies = {"store": bodies(cps, 1, 2), "file": {1: cps[0].to_json(), 2: edited.to_json()}}
    trusted, breaks = resolve_checkpoints(copies)
    assert [b.kind for b in breaks] == [BreakKind.CHECKPOINT_ALTERED]
    assert trusted == [cps[0], edited, cps[1]]
    trusted, _ = resolve_checkpoints({**copies, "anchor": bodies(cps, 1, 2)})
    assert trusted == cps


def test_a_first_checkpoint_not_from_genesis_is_not_checked() -> None:
    """Checkpoint 1 whose prev_digest is not genesis is altered and left out of the records check."""
    forged = dataclasses.replace(chained(1)[0], prev_digest=bytes([1]) * 32)
    trusted, breaks = resolve_checkpoints({"file": {1: forged.to_json()}})
    assert [(b.kind, b.detail) for b in breaks] == [(BreakKind.CHECKPOINT_ALTERED,
                                                     "checkpoint 1 does not start from genesis")]
    assert trusted == []
