"""RFC 6962 / 9162 conformance: the 196 transparency-dev vectors, the reference leaves, and property
tests of generation and verification against a naive recursive reference (straight from the RFC)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiveplane._ledger import _merkle as m
from tests.conftest import DATA

VECTORS = DATA / "rfc6962-merkle"
INCLUSION = sorted((VECTORS / "testdata" / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "testdata" / "consistency").rglob("*.json"))
REFERENCE = json.loads((VECTORS / "reference-leaves.json").read_text())
REF_LEAVES = [m.hash_leaf(bytes.fromhex(x)) for x in REFERENCE["leaf_inputs_hex"]]


def _b64(v: str | None) -> bytes:
    return base64.b64decode(v or "")


def _proof(d: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in d.get("proof") or []]


def _id(p: Path) -> str:
    return str(p.relative_to(VECTORS / "testdata"))


# ---- the naive reference (RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1, recursive) ----------------------


def ref_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(i: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if i < k:
        return ref_path(i, leaves[:k]) + [ref_mth(leaves[k:])]
    return ref_path(i - k, leaves[k:]) + [ref_mth(leaves[:k])]


def ref_subproof(mm: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if mm == n:
        return [] if b else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if mm <= k:
        return ref_subproof(mm, leaves[:k], b) + [ref_mth(leaves[k:])]
    return ref_subproof(mm - k, leaves[k:], False) + [ref_mth(leaves[:k])]


def ref_consistency(mm: int, leaves: list[bytes]) -> list[bytes]:
    return ref_subproof(mm, leaves, True)


def leaves_of(n: int) -> list[bytes]:
    return [m.hash_leaf(i.to_bytes(4, "big")) for i in range(n)]


# ---- vectors ------------------------------------------------------------------------------------


def test_vector_counts() -> None:
    assert len(INCLUSION) + len(CONSISTENCY) == 196


@pytest.mark.parametrize("path", INCLUSION, ids=_id)
def test_inclusion_vector(path: Path) -> None:
    d = json.loads(path.read_text())
    args = (_b64(d["leafHash"]), d["leafIdx"], d["treeSize"], _proof(d), _b64(d["root"]))
    if d["wantErr"]:
        with pytest.raises(m.ProofError):
            m.verify_inclusion(*args)
    else:
        m.verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_id)
def test_consistency_vector(path: Path) -> None:
    d = json.loads(path.read_text())
    args = (d["size1"], d["size2"], _proof(d), _b64(d["root1"]), _b64(d["root2"]))
    if d["wantErr"]:
        with pytest.raises(m.ProofError):
            m.verify_consistency(*args)
    else:
        m.verify_consistency(*args)


def test_hygiene_rules_are_what_the_raw_algorithm_lacks() -> None:
    # a leaf hash that is not 32 bytes, even where it would "match" (single-entry tree, empty leaf)
    with pytest.raises(m.ProofError, match="32"):
        m.verify_inclusion(b"", 0, 1, [], b"")
    # a consistency proof from size 0 is always an error, even 0 -> 0 with equal roots
    with pytest.raises(m.ProofError, match="empty tree"):
        m.verify_consistency(0, 0, [], m.EMPTY_ROOT, m.EMPTY_ROOT)


@pytest.mark.parametrize("n", range(9))
def test_reference_leaf_roots(n: int) -> None:
    assert m.root_hash(REF_LEAVES[:n]).hex() == REFERENCE["root_hashes_hex_by_size"][n]
    assert ref_mth(REF_LEAVES[:n]).hex() == REFERENCE["root_hashes_hex_by_size"][n]


def test_hasher_vectors() -> None:
    assert m.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert m.hash_leaf(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert m.hash_leaf(b"L123456") == hashlib.sha256(b"\x00L123456").digest()
    assert m.hash_children(b"N123", b"N456") == hashlib.sha256(b"\x01N123N456").digest()


@pytest.mark.parametrize("path", [p for p in INCLUSION if p.name == "happy-path.json"], ids=_id)
def test_generated_inclusion_proofs_equal_the_vectors(path: Path) -> None:
    d = json.loads(path.read_text())
    assert m.inclusion_proof(d["leafIdx"], REF_LEAVES[: d["treeSize"]]) == _proof(d)


@pytest.mark.parametrize("path", [p for p in CONSISTENCY if p.name == "happy-path.json"], ids=_id)
def test_generated_consistency_proofs_equal_the_vectors(path: Path) -> None:
    d = json.loads(path.read_text())
    assert m.consistency_proof(d["size1"], REF_LEAVES[: d["size2"]]) == _proof(d)


# ---- properties against the naive reference -----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1100))
def test_root_and_compact_range_match_reference(n: int) -> None:
    leaves = leaves_of(n)
    cr = m.CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    for h in leaves:
        cr.append(h, nodes)
    assert cr.root() == ref_mth(leaves) == m.root_hash(leaves)
    assert m.CompactRange.decode(n, cr.encode()).root() == cr.root()
    # every node reported is exactly a complete subtree, each reported once
    assert len({(lv, i) for lv, i, _ in nodes}) == len(nodes)
    for lv, i, h in nodes[-40:]:
        assert h == ref_mth(leaves[i << lv : (i + 1) << lv])


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, 1024))
    return n, draw(st.integers(0, n - 1))


@settings(max_examples=400, deadline=None)
@given(tree_and_index())
def test_inclusion_proofs_match_reference_and_verify(case: tuple[int, int]) -> None:
    n, i = case
    leaves = leaves_of(n)
    proof = m.inclusion_proof(i, leaves)
    assert proof == ref_path(i, leaves)
    root = ref_mth(leaves)
    m.verify_inclusion(leaves[i], i, n, proof, root)
    # another leaf, another index or a flipped bit fails
    with pytest.raises(m.ProofError):
        m.verify_inclusion(m.hash_leaf(b"other"), i, n, proof, root)
    if n > 1:
        with pytest.raises(m.ProofError):
            m.verify_inclusion(leaves[i], (i + 1) % n, n, proof, root)
    if proof:
        bad = [bytearray(p) for p in proof]
        bad[len(bad) // 2][5] ^= 0x10
        with pytest.raises(m.ProofError):
            m.verify_inclusion(leaves[i], i, n, [bytes(p) for p in bad], root)


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, 1024))
    return draw(st.integers(1, n)), n


@settings(max_examples=400, deadline=None)
@given(two_sizes())
def test_consistency_proofs_match_reference_and_verify(case: tuple[int, int]) -> None:
    old, new = case
    leaves = leaves_of(new)
    old_root, new_root = ref_mth(leaves[:old]), ref_mth(leaves)
    if old == new:
        m.verify_consistency(old, new, [], old_root, new_root)
        return
    proof = m.consistency_proof(old, leaves)
    assert proof == ref_consistency(old, leaves)
    m.verify_consistency(old, new, proof, old_root, new_root)
    with pytest.raises(m.ProofError):
        m.verify_consistency(old, new, proof, new_root, old_root)
    with pytest.raises(m.ProofError):
        m.verify_consistency(old, new, proof[:-1], old_root, new_root)
    bad = [bytearray(p) for p in proof]
    bad[0][0] ^= 1
    with pytest.raises(m.ProofError):
        m.verify_consistency(old, new, [bytes(p) for p in bad], old_root, new_root)


@settings(max_examples=200, deadline=None)
@given(tree_and_index(), st.integers(0, 2**30))
def test_plans_read_only_complete_subtrees(case: tuple[int, int], seed: int) -> None:
    """What a store must keep: every coordinate a plan asks for is a complete subtree inside the tree."""
    n, i = case
    old = 1 + seed % n
    for plan in (m.inclusion_plan(i, n), m.consistency_plan(old, n) if old < n else []):
        for group in plan:
            for lv, idx in group:
                assert (idx + 1) << lv <= n
