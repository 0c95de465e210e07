"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification (pure functions).

Hashing (RFC 6962 §2.1): ``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``,
the empty tree hashes to ``SHA-256("")``. Proof generation follows RFC 9162 §2.1.3.1 (PATH) and
§2.1.4.1 (SUBPROOF); verification follows §2.1.3.2 and §2.1.4.2 exactly, plus the two hygiene rules
the transparency-dev reference verifier enforces: a leaf hash must be 32 bytes, and a consistency
proof from tree size 0 is an error (equal non-zero sizes: the proof must be empty and the roots equal).

Proofs are generated from *complete subtrees*: a coordinate ``(level, idx)`` names the hash of leaves
``[idx * 2**level, (idx + 1) * 2**level)``. Every proof element is the right fold of at most
``log2(n)`` such coordinates, so a store that keeps the hash of every complete subtree (the ledger
keeps leaf hashes and one row per interior node) can answer any proof with one batched read:
:func:`inclusion_plan` / :func:`consistency_plan` say which coordinates to read, :func:`fold_plan`
turns what was read into the proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "Coord",
    "ProofError",
    "consistency_plan",
    "consistency_proof",
    "fold_plan",
    "hash_children",
    "hash_leaf",
    "inclusion_plan",
    "inclusion_proof",
    "range_coords",
    "root_from_frontier",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Coord = tuple[int, int]
"""``(level, idx)``: the complete subtree over leaves ``[idx << level, (idx + 1) << level)``."""


class ProofError(ValueError):
    """A proof does not verify (or its inputs are malformed)."""


def hash_leaf(data: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


# ---- compact range (the right edge of the tree) -----------------------------------------------


class CompactRange:
    """The hashes of the complete subtrees that make up a tree of ``size`` leaves (its right edge).

    ``hashes`` lists them from the largest (leftmost) to the smallest, one per set bit of ``size``.
    Appending a leaf merges equal-sized subtrees and reports every interior node it completes, which
    is exactly what a store must persist to answer proofs later.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(f"a compact range of size {size} has {size.bit_count()} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    @classmethod
    def decode(cls, size: int, blob: bytes) -> CompactRange:
        """Parse the concatenated-hashes form written by :meth:`encode`."""
        if len(blob) != HASH_SIZE * size.bit_count():
            raise ValueError(f"frontier of {len(blob)} bytes does not fit tree size {size}")
        return cls(size, [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)])

    def encode(self) -> bytes:
        return b"".join(self.hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def append(self, leaf_hash: bytes, new_nodes: list[tuple[int, int, bytes]] | None = None) -> None:
        """Add one leaf hash; completed interior nodes are appended to ``new_nodes`` as ``(level, idx, hash)``."""
        size = self.size
        cur = leaf_hash
        level = 0
        while (size >> level) & 1:
            cur = hash_children(self.hashes.pop(), cur)
            level += 1
            if new_nodes is not None:
                new_nodes.append((level, size >> level, cur))
        self.hashes.append(cur)
        self.size = size + 1

    def root(self) -> bytes:
        return root_from_frontier(self.hashes)


def root_from_frontier(hashes: Sequence[bytes]) -> bytes:
    """Root of a tree given its compact range (largest subtree first)."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = hash_children(h, root)
    return root


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash of a list of leaf hashes (iterative; O(n))."""
    cr = CompactRange()
    for h in leaf_hashes:
        cr.append(h)
    return cr.root()


# ---- proof plans ------------------------------------------------------------------------------


def range_coords(start: int, end: int) -> list[Coord]:
    """The complete subtrees whose right fold is ``MTH(D[start:end])``.

    Valid for every range the RFC 9162 recursion produces: ``start`` is a multiple of the smallest
    power of two that is ``>= end - start``, so the range splits into aligned subtrees of decreasing size.
    """
    width = end - start
    if width <= 0:
        raise ValueError(f"empty range [{start}, {end})")
    top = 1 << (width - 1).bit_length()
    if start % top:
        raise ValueError(f"range [{start}, {end}) is not one the RFC 9162 recursion produces")
    coords: list[Coord] = []
    pos = start
    for level in range(width.bit_length() - 1, -1, -1):
        if (width >> level) & 1:
            coords.append((level, pos >> level))
            pos += 1 << level
    return coords


def inclusion_plan(index: int, size: int) -> list[list[Coord]]:
    """RFC 9162 §2.1.3.1 ``PATH(index, D[0:size])`` as coordinate groups, from the leaf's sibling upward."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index - start < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return [range_coords(a, b) for a, b in reversed(ranges)]


def consistency_plan(old_size: int, new_size: int) -> list[list[Coord]]:
    """RFC 9162 §2.1.4.1 ``PROOF(old_size, D[0:new_size])`` as coordinate groups (0 < old <= new)."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    ranges: list[tuple[int, int]] = []
    start, end, complete = 0, new_size, True
    while True:
        if old_size == end:
            if not complete:
                ranges.append((start, end))
            break
        k = _largest_power_of_two_below(end - start)
        if old_size - start <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            complete = False
    return [range_coords(a, b) for a, b in reversed(ranges)]


def fold_plan(plan: Sequence[Sequence[Coord]], hashes: Mapping[Coord, bytes]) -> list[bytes]:
    """Turn a plan into proof hashes: each group is the right fold of its subtree hashes."""
    proof: list[bytes] = []
    for group in plan:
        acc = hashes[group[-1]]
        for coord in reversed(group[:-1]):
            acc = hash_children(hashes[coord], acc)
        proof.append(acc)
    return proof


def _subtree_oracle(leaf_hashes: Sequence[bytes]) -> Callable[[Iterable[Coord]], dict[Coord, bytes]]:
    levels: list[list[bytes]] = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([hash_children(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)])

    def get(coords: Iterable[Coord]) -> dict[Coord, bytes]:
        return {(lv, i): levels[lv][i] for lv, i in coords}

    return get


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Inclusion proof for leaf ``index`` in the tree of ``leaf_hashes`` (in memory)."""
    plan = inclusion_plan(index, len(leaf_hashes))
    return fold_plan(plan, _subtree_oracle(leaf_hashes)(c for g in plan for c in g))


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Consistency proof from ``old_size`` to ``len(leaf_hashes)`` (in memory)."""
    plan = consistency_plan(old_size, len(leaf_hashes))
    return fold_plan(plan, _subtree_oracle(leaf_hashes)(c for g in plan for c in g))


# ---- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) --------------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Verify an inclusion proof (RFC 9162 §2.1.3.2). Raises :class:`ProofError` if it does not hold."""
    _check_hash("leaf hash", leaf_hash)
    if index < 0 or index >= size:
        raise ProofError(f"index {index} is beyond tree size {size}")
    for p in proof:
        _check_hash("proof element", p)
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the path to the root")
    if r != root:
        raise ProofError("calculated root does not match the expected root")


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Verify a consistency proof (RFC 9162 §2.1.4.2). Raises :class:`ProofError` if it does not hold."""
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        raise ProofError("a consistency proof from an empty tree is meaningless")
    if old_size == new_size:
        if proof:
            raise ProofError("sizes are equal but the proof is not empty")
        if old_root != new_root:
            raise ProofError("sizes are equal but the roots differ")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    for p in proof:
        _check_hash("proof element", p)
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than needed")
    if fr != old_root:
        raise ProofError("calculated old root does not match")
    if sr != new_root:
        raise ProofError("calculated new root does not match")
