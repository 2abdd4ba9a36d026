"""Property tests: any single mutation of a random chain is reported; an untouched chain always verifies.

Chains are built in memory with ``record_hash`` and covered by one checkpoint over the whole chain
(what the daily job leaves behind). Each mutation also predicts the kind and first bad seq.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from intent_pipelines.audit.checkpoint import GENESIS_DIGEST, Checkpoint
from intent_pipelines.audit.merkle import merkle_root
from intent_pipelines.audit.record import GENESIS_PREV, canonical_body, record_hash
from intent_pipelines.audit.verify import BreakKind, RecordTuple, verify_records

PROPERTY = settings(max_examples=200, deadline=None, database=None)  # no .hypothesis dir in the repo

# Small canonical bodies: the verifier hashes bytes, so variety in size and content is what matters.
bodies = st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=10) | st.booleans(), max_size=3).map(canonical_body)


def build_chain(payloads: list[bytes]) -> list[RecordTuple]:
    """A valid chain from genesis over the given bodies."""
    records: list[RecordTuple] = []
    prev = GENESIS_PREV
    for seq, body in enumerate(payloads):
        digest = record_hash(seq, prev, body)
        records.append((seq, prev, digest, body))
        prev = digest
    return records


def checkpoint_of(records: list[RecordTuple]) -> Checkpoint:
    """The checkpoint the daily job would take over these records."""
    hashes = [r[2] for r in records]
    return Checkpoint(number=1, size=len(hashes), head=hashes[-1] if hashes else GENESIS_PREV,
                      root=merkle_root(hashes), ts="2026-01-01T02:00:00Z", prev_digest=GENESIS_DIGEST)


def flip_bit(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[(bit // 8) % len(changed)] ^= 1 << (bit % 8)
    return bytes(changed)


MUTATIONS = ["flip_body", "flip_prev", "flip_hash", "delete", "duplicate", "swap_positions", "swap_seqs",
             "truncate", "rewrite"]


def mutate(records: list[RecordTuple], how: str, data: st.DataObject) -> tuple[list[RecordTuple], BreakKind, int]:
    """Apply one mutation; return the chain and the (kind, seq) verification must report first."""
    n = len(records)
    chain = list(records)
    i = data.draw(st.integers(0, n - 1), label="index")
    seq, prev, digest, body = chain[i]
    if how in ("flip_body", "flip_prev", "flip_hash"):
        field = {"flip_body": body, "flip_prev": prev, "flip_hash": digest}[how]
        flipped = flip_bit(field, data.draw(st.integers(0, len(field) * 8 - 1), label="bit"))
        if how == "flip_body":
            chain[i] = (seq, prev, digest, flipped)
            return chain, BreakKind.HASH_MISMATCH, i
        if how == "flip_prev":
            chain[i] = (seq, flipped, digest, body)
            return chain, BreakKind.PREV_MISMATCH, i
        chain[i] = (seq, prev, flipped, body)
        return chain, BreakKind.HASH_MISMATCH, i
    if how == "delete":
        del chain[i]
        # The last record leaves a valid shorter chain: only the checkpoint sees it.
        return chain, (BreakKind.TRUNCATED if i == n - 1 else BreakKind.SEQ_GAP), i
    if how == "duplicate":
        chain.insert(i + 1, chain[i])
        return chain, BreakKind.SEQ_DUPLICATE, i
    if how == "truncate":
        keep = data.draw(st.integers(0, n - 1), label="keep")
        return chain[:keep], BreakKind.TRUNCATED, keep
    if how == "rewrite":
        # The attacker changes one body and recomputes every later prev and hash.
        chain[i] = (seq, prev, digest, body + b" ")
        for k in range(i, n):
            s, _, _, b = chain[k]
            p = chain[k - 1][2] if k else GENESIS_PREV
            chain[k] = (s, p, record_hash(s, p, b), b)
        assert verify_records(chain).ok, "a recomputed rewrite is a valid bare chain"
        return chain, BreakKind.REWRITTEN, 0
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="other")
    lo, hi = min(i, j), max(i, j)
    if how == "swap_positions":
        # Records read out of order: the later one shows up early, a gap at the first position.
        chain[lo], chain[hi] = chain[hi], chain[lo]
        return chain, BreakKind.SEQ_GAP, lo
    assert how == "swap_seqs"
    # Seq numbers exchanged and the rows re-sorted (what an ORDER BY seq reader sees).
    a, b = chain[lo], chain[hi]
    chain[lo], chain[hi] = (lo, *b[1:]), (hi, *a[1:])
    return chain, BreakKind.PREV_MISMATCH, lo


@PROPERTY
@given(payloads=st.lists(bodies, min_size=0, max_size=30))
def test_untouched_chain_always_verifies(payloads: list[bytes]) -> None:
    """Any chain built by the format's rules verifies, with and without its checkpoint."""
    records = build_chain(payloads)
    assert verify_records(records).ok
    result = verify_records(records, checkpoints=[checkpoint_of(records)])
    assert result.ok, result.breaks
    assert result.records == len(records)
    assert result.head == (records[-1][2] if records else GENESIS_PREV)


@PROPERTY
@given(payloads=st.lists(bodies, min_size=1, max_size=30), how=st.sampled_from(MUTATIONS), data=st.data())
def test_any_single_mutation_is_reported(payloads: list[bytes], how: str, data: st.DataObject) -> None:
    """One random mutation always yields a break of the predicted kind at the predicted first seq."""
    records = build_chain(payloads)
    if how.startswith("swap") and len(records) < 2:
        records = build_chain([*payloads, b"{}"])
    mutated, kind, seq = mutate(records, how, data)
    result = verify_records(mutated, checkpoints=[checkpoint_of(records)])
    assert not result.ok, f"{how} went unnoticed"
    first = result.first_break
    assert first is not None
    assert (first.kind, first.seq) == (kind, seq), result.breaks


@PROPERTY
@given(payloads=st.lists(bodies, min_size=2, max_size=30),
       how=st.sampled_from(["flip_body", "flip_prev", "flip_hash", "duplicate", "swap_positions", "swap_seqs"]),
       data=st.data())
def test_local_mutations_need_no_checkpoint(payloads: list[bytes], how: str, data: st.DataObject) -> None:
    """Edits inside the chain are caught by the links alone, before any checkpoint is consulted."""
    mutated, _, _ = mutate(build_chain(payloads), how, data)
    assert not verify_records(mutated).ok

