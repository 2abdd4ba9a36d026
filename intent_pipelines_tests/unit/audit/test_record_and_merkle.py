"""Golden vectors for the record hash and the RFC 6962 Merkle root, and the canonical body rules.

The record-hash vectors were computed outside Python, from bytes built with ``printf`` and hashed
with ``sha256sum`` (GNU coreutils), so they pin the format rather than echo the implementation.
Each record hashes ``"intent-audit/v1\\0" ‖ u64be(seq) ‖ prev ‖ body``::

    Z32='\\000' x 32                                   # genesis prev: 32 zero bytes

    # vector 1: seq 0, genesis prev, body {"a":1}    (16 + 8 + 32 + 7 = 63 bytes)
    printf 'intent-audit/v1\\000''\\000\\000\\000\\000\\000\\000\\000\\000'"$Z32"'{"a":1}' | sha256sum
    -> 968649ab7792931abee564b7f905a05ef39894cf0424df20e59522138246fb0d

    # vector 2: seq 1, prev = vector 1, body {"a":2}  (63 bytes)
    printf 'intent-audit/v1\\000''\\000\\000\\000\\000\\000\\000\\000\\001'"<vector 1 as 32 octal escapes>"'{"a":2}'
    -> 394108fb4c2f8eb582e92b742e4b188c66537f5e42a80d28e7da93873b795fbf

    # vector 3: seq 2, prev = vector 2, body {"n":18446744073709551617,"name":"Zoë ✓"}
    #   (2**64 + 1 is beyond u64 and doubles; ë = \\303\\253, ✓ = \\342\\234\\223; 16 + 8 + 32 + 44 = 100 bytes)
    -> 20fc86da5703aaa8340b554467e416e05773ca3dc3e100e69b074a3797e0575f

    # vector 4: seq 0x0102030405060708 (byte order), genesis prev, body {}  (58 bytes)
    printf 'intent-audit/v1\\000''\\001\\002\\003\\004\\005\\006\\007\\010'"$Z32"'{}' | sha256sum
    -> a83b7fa75778e62536ffc9fbe9f77388c3094a6777d1bb8f21c9e61b4d6ea901

docs/audit-format.md walks through vector 1 as the worked example.
"""

import hashlib
import json

import pytest

from intent_pipelines.audit.checkpoint import GENESIS_DIGEST, Checkpoint
from intent_pipelines.audit.merkle import EMPTY_ROOT, leaf_hash, merkle_root, node_hash
from intent_pipelines.audit.record import DOMAIN, GENESIS_PREV, canonical_body, record_hash
from intent_pipelines.audit.verify import verify_records

VECTOR_1 = "968649ab7792931abee564b7f905a05ef39894cf0424df20e59522138246fb0d"
VECTOR_2 = "394108fb4c2f8eb582e92b742e4b188c66537f5e42a80d28e7da93873b795fbf"
VECTOR_3 = "20fc86da5703aaa8340b554467e416e05773ca3dc3e100e69b074a3797e0575f"
VECTOR_4 = "a83b7fa75778e62536ffc9fbe9f77388c3094a6777d1bb8f21c9e61b4d6ea901"
BODY_3 = {"name": "Zoë ✓", "n": 2**64 + 1}
BODY_3_BYTES = b'{"n":18446744073709551617,"name":"Zo\xc3\xab \xe2\x9c\x93"}'

# RFC 6962 test vectors (as used by Certificate Transparency implementations).
RFC6962_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                  "606162636465666768696a6b6c6d6e6f"]
RFC6962_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_domain_and_genesis_are_the_documented_constants() -> None:
    """The domain tag is the 16 bytes "intent-audit/v1\\0" and genesis prev is 32 zero bytes."""
    assert DOMAIN == b"intent-audit/v1\x00"
    assert len(DOMAIN) == 16
    assert GENESIS_PREV == b"\x00" * 32


def test_record_hash_genesis_vector() -> None:
    """Seq 0 with the genesis prev and body {"a":1} hashes to the sha256sum-computed vector."""
    body = canonical_body({"a": 1})
    assert body == b'{"a":1}'
    assert record_hash(0, GENESIS_PREV, body).hex() == VECTOR_1


def test_record_hash_chained_vector() -> None:
    """Seq 1 chained to vector 1 with body {"a":2} hashes to the sha256sum-computed vector."""
    assert record_hash(1, bytes.fromhex(VECTOR_1), canonical_body({"a": 2})).hex() == VECTOR_2


def test_record_hash_non_ascii_and_big_integer_vector() -> None:
    """Non-ASCII text stays raw UTF-8 and a >64-bit integer stays exact in the hashed bytes."""
    body = canonical_body(BODY_3)
    assert body == BODY_3_BYTES
    assert record_hash(2, bytes.fromhex(VECTOR_2), body).hex() == VECTOR_3


def test_record_hash_packs_seq_big_endian() -> None:
    """The sequence number enters the hash as an unsigned 64-bit big-endian integer."""
    assert record_hash(0x0102030405060708, GENESIS_PREV, b"{}").hex() == VECTOR_4
    manual = hashlib.sha256(DOMAIN + bytes(range(1, 9)) + GENESIS_PREV + b"{}").hexdigest()
    assert manual == VECTOR_4


def test_golden_vectors_form_a_chain_that_verifies() -> None:
    """The three chained vectors are a valid chain from genesis, and a checkpoint over them holds."""
    hashes = [bytes.fromhex(h) for h in (VECTOR_1, VECTOR_2, VECTOR_3)]
    bodies = [b'{"a":1}', b'{"a":2}', BODY_3_BYTES]
    prevs = [GENESIS_PREV, *hashes[:2]]
    records = list(zip(range(3), prevs, hashes, bodies, strict=True))
    checkpoint = Checkpoint(number=1, size=3, head=hashes[-1], root=merkle_root(hashes),
                            ts="2026-01-01T00:00:00Z", prev_digest=GENESIS_DIGEST)
    result = verify_records(records, checkpoints=[checkpoint])
    assert result.ok, result.breaks
    assert (result.records, result.head.hex(), result.checkpoints_checked) == (3, VECTOR_3, [1])


def test_canonical_body_sorts_keys_at_every_level_without_whitespace() -> None:
    """Keys are sorted recursively and separators are compact, so equal data gives equal bytes."""
    body = canonical_body({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": None}, "A": True})
    assert body == b'{"A":true,"a":{"c":null,"z":[1,{"x":3,"y":2}]},"b":1}'
    assert canonical_body({"a": 1, "b": 2}) == canonical_body({"b": 2, "a": 1})


def test_canonical_body_keeps_utf8_including_non_bmp_keys() -> None:
    """Non-ASCII and non-BMP characters are written as raw UTF-8, never as \\u escapes."""
    body = canonical_body({"𝄞clef": "ü", "é": "日本"})
    assert body == "{\"é\":\"日本\",\"𝄞clef\":\"ü\"}".encode()
    assert b"\\u" not in body
    assert json.loads(body) == {"𝄞clef": "ü", "é": "日本"}


def test_canonical_body_keeps_big_integers_exact() -> None:
    """Integers of any size are written digit for digit (no float rounding)."""
    assert canonical_body({"n": 2**64 + 1, "m": -(2**70)}) == b'{"m":-1180591620717411303424,"n":18446744073709551617}'


@pytest.mark.parametrize("body", [
    {"duration": 1.5},
    {"nested": {"deep": [1, 2, 0.0]}},
    {"list": [{"x": float("inf")}]},
    {"tuple": (1, 2.5)},
])
def test_canonical_body_rejects_floats_anywhere(body: dict[str, object]) -> None:
    """A float anywhere in the body is refused: integer milliseconds only."""
    with pytest.raises(ValueError, match="integers only"):
        canonical_body(body)


def test_merkle_leaf_and_node_use_rfc6962_prefixes() -> None:
    """Leaves hash as SHA256(0x00 ‖ d), interior nodes as SHA256(0x01 ‖ l ‖ r); empty is SHA256("")."""
    assert leaf_hash(b"ab") == hashlib.sha256(b"\x00ab").digest()
    assert node_hash(b"l" * 32, b"r" * 32) == hashlib.sha256(b"\x01" + b"l" * 32 + b"r" * 32).digest()
    assert EMPTY_ROOT.hex() == RFC6962_ROOTS[0]


@pytest.mark.parametrize("size", range(len(RFC6962_ROOTS)))
def test_merkle_root_rfc6962_vectors(size: int) -> None:
    """The Merkle root of the first ``size`` RFC 6962 test leaves is the published root."""
    leaves = [bytes.fromhex(h) for h in RFC6962_LEAVES[:size]]
    assert merkle_root(leaves).hex() == RFC6962_ROOTS[size]


def _reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 as written: split at the largest power of two strictly less than n."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_mth(leaves[:k]) + _reference_mth(leaves[k:])).digest()


def test_merkle_root_matches_recursive_reference_for_sizes_0_to_70() -> None:
    """The bottom-up implementation equals the recursive RFC definition for every size 0..70."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest()[: i % 33] for i in range(70)]
    for size in range(71):
        assert merkle_root(leaves[:size]) == _reference_mth(leaves[:size]), f"size {size}"


def test_merkle_root_depends_on_order_and_every_leaf() -> None:
    """Swapping or changing any leaf changes the root (what makes a checkpoint binding)."""
    leaves = [bytes([i]) * 32 for i in range(9)]
    root = merkle_root(leaves)
    assert merkle_root([leaves[1], leaves[0], *leaves[2:]]) != root
    for i in range(len(leaves)):
        changed = list(leaves)
        changed[i] = b"\xff" * 32
        assert merkle_root(changed) != root, f"leaf {i}"
