"""The copies of each checkpoint (store row, file, anchor) reconciled: missing, altered, not chaining.

What is expected: checkpoints are numbered 1, 2, 3, … with no gaps, and every copy holds every
number up to the newest any copy holds. The anchor is expected from the first number it holds on
(it may have been configured after the first checkpoints were taken). So a deleted copy is found
while another copy of it, or a later checkpoint, remains; the newest checkpoint deleted from every
copy is not (docs/audit-format.md).

Which version to check the records against: each checkpoint commits to the one before it
(``prev_digest``), so of copies that disagree the one the next checkpoint commits to is the
authentic one; for the newest, whichever copy the records match (the anchor's when it has one).
An edited copy is then reported as checkpoint_altered, not mistaken for a rewritten chain.
"""

from collections.abc import Mapping

from intent_pipelines.audit.checkpoint import GENESIS_DIGEST, Checkpoint
from intent_pipelines.audit.verify import BreakKind, ChainBreak

# Most protected first: the order copies are named in, and the anchor wins among those that chain.
SOURCES = ("anchor", "file", "store")


def resolve_checkpoints(copies: Mapping[str, Mapping[int, bytes]]) -> tuple[list[Checkpoint], list[ChainBreak]]:
    """The versions to check the records against (by number; several when copies disagree), and the breaks."""
    numbers = {n for bodies in copies.values() for n in bodies}
    if not numbers:
        return [], []
    sources = sorted(copies, key=SOURCES.index)
    newest = max(numbers)
    breaks: list[ChainBreak] = []
    versions: dict[int, list[tuple[str, Checkpoint]]] = {}
    for number in range(1, newest + 1):
        versions[number] = _read(number, {s: copies[s][number] for s in sources if number in copies[s]}, breaks)
        missing = [s for s in sources if number not in copies[s] and _expects(s, copies[s], number)]
        if missing:
            breaks.append(_missing(number, missing, versions, all_gone=len(missing) == len(sources)))
    trusted = _chained(versions, breaks)
    return [c for number in sorted(trusted) for c in trusted[number]], breaks


def _expects(source: str, bodies: Mapping[int, bytes], number: int) -> bool:
    """Whether ``source`` should hold checkpoint ``number`` (the anchor only from its first one on)."""
    return source != "anchor" or bool(bodies) and number > min(bodies)


def _read(number: int, present: Mapping[str, bytes], breaks: list[ChainBreak]) -> list[tuple[str, Checkpoint]]:
    """The readable copies of one checkpoint; unreadable or disagreeing copies are checkpoint_altered."""
    readable: list[tuple[str, Checkpoint]] = []
    for source, body in present.items():
        try:
            checkpoint = Checkpoint.from_json(body)
        except (ValueError, KeyError, TypeError) as exc:
            breaks.append(ChainBreak(0, BreakKind.CHECKPOINT_ALTERED,
                                     f"checkpoint {number}: the {source} copy is unreadable: {exc}"))
            continue
        if checkpoint.number != number:
            breaks.append(ChainBreak(checkpoint.size, BreakKind.CHECKPOINT_ALTERED,
                                     f"checkpoint {number}: the {source} copy says it is checkpoint "
                                     f"{checkpoint.number}"))
            continue
        readable.append((source, checkpoint))
    if len({c for _, c in readable}) > 1:
        groups: dict[Checkpoint, list[str]] = {}
        for source, checkpoint in readable:
            groups.setdefault(checkpoint, []).append(source)
        breaks.append(ChainBreak(readable[0][1].size, BreakKind.CHECKPOINT_ALTERED,
                                 f"checkpoint {number} altered: its copies differ "
                                 f"({' ≠ '.join(', '.join(names) for names in groups.values())})"))
    return readable


def _missing(number: int, missing: list[str], versions: Mapping[int, list[tuple[str, Checkpoint]]], *,
             all_gone: bool) -> ChainBreak:
    """checkpoint_missing at the checkpoint's size (from a remaining copy), else where the one before ends."""
    if all_gone:
        before = next((v[0][1].size for n in range(number - 1, 0, -1) if (v := versions.get(n))), 0)
        return ChainBreak(before, BreakKind.CHECKPOINT_MISSING,
                          f"checkpoint {number} is missing from every copy ({', '.join(missing)}) although "
                          f"a later checkpoint exists")
    return ChainBreak(versions[number][0][1].size if versions[number] else 0, BreakKind.CHECKPOINT_MISSING,
                      f"checkpoint {number}: the {' and '.join(missing)} copy is missing")


def _chained(versions: Mapping[int, list[tuple[str, Checkpoint]]],
             breaks: list[ChainBreak]) -> dict[int, list[Checkpoint]]:
    """Newest first, keep the versions the next checkpoint commits to; the anchor's among them when it has one."""
    trusted: dict[int, list[Checkpoint]] = {}
    committed: set[bytes] | None = None  # prev_digest of the next checkpoint's trusted versions
    next_size = 0
    for number in sorted(versions, reverse=True):
        candidates = versions[number]
        if committed is not None and candidates:
            chaining = [(s, c) for s, c in candidates if c.digest in committed]
            if not chaining:
                breaks.append(ChainBreak(next_size, BreakKind.CHECKPOINT_ALTERED,
                                         f"checkpoint {number + 1} does not chain to checkpoint {number}"))
            candidates = chaining
        anchored = [c for s, c in candidates if s == "anchor"]
        trusted[number] = anchored or list(dict.fromkeys(c for _, c in candidates))
        committed = {c.prev_digest for c in trusted[number]} if trusted[number] else None
        next_size = trusted[number][0].size if trusted[number] else 0
    if committed is not None and GENESIS_DIGEST not in committed:
        breaks.append(ChainBreak(trusted[1][0].size, BreakKind.CHECKPOINT_ALTERED,
                                 "checkpoint 1 does not start from genesis"))
        trusted[1] = []
    return trusted
