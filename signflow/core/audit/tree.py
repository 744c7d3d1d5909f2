"""The audit log's Merkle tree (RFC 9162) from stored state: roots and proofs in
O(log n) reads, whatever the size of the log.

Every complete perfect subtree of 2**level leaves with level >= STORED_LEVEL has
its hash in `audit_tree_nodes`, written by the append that completes it (under
the head lock, in the same transaction) and never changed afterwards. The pieces
below STORED_LEVEL are rehashed from their leaves: at most 2**STORED_LEVEL - 1
leaf hashes per piece group, read by primary key. So an append stores a node
only every 2**STORED_LEVEL entries (1/8 of a row per entry on average), and any
RFC 9162 range a root or proof needs costs one query per level plus one for the
leaves; nothing rereads the log.

The hashes are the same functions as signflow.auditverify's, and every root and
proof built here is checked against them by the tests (tests/vectors and a
from-scratch recomputation at every size up to a few hundred).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import cast

from sqlalchemy import Table, delete, insert, select, tuple_
from sqlalchemy.orm import Session

from signflow.auditverify import EMPTY_ROOT, Node, hash_children, wanted_nodes
from signflow.core.errors import AuditIntegrityError
from signflow.core.i18n import N_
from signflow.models import AuditEntry, AuditTreeNode

# 16-leaf groups: a proof rehashes at most 15 leaves per group it touches, and an
# append writes a node row once every 16 entries (cheap next to the entry itself).
STORED_LEVEL = 4
GROUP = 1 << STORED_LEVEL
# Bound parameters per IN list (SQLite's historical limit is 999).
CHUNK = 500


def perfect_root(leaves: list[bytes]) -> bytes:
    """MTH of a power-of-two number of leaf hashes."""
    level = leaves
    while len(level) > 1:
        level = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level), 2)
        ]
    return level[0]


def on_append(session: Session, seq: int, leaf: bytes) -> None:
    """Store the nodes that entry `seq` (leaf hash `leaf`, already flushed) completes.

    Called under the head lock: the leaves and nodes to its left are final."""
    size = seq + 1
    if size % GROUP:
        return
    top = (size & -size).bit_length() - 1  # the highest level completed by this leaf
    conn = session.connection()  # Core rows: this runs under the head lock
    earlier = conn.execute(
        select(AuditEntry.leaf_hash)
        .where(AuditEntry.seq >= size - GROUP, AuditEntry.seq < seq)
        .order_by(AuditEntry.seq)
    ).scalars().all()
    if len(earlier) != GROUP - 1:
        raise AuditIntegrityError(N_("the audit log has a gap before entry %(seq)s"), params={"seq": seq})
    node = perfect_root([*(bytes(x) for x in earlier), leaf])
    rows = [{"level": STORED_LEVEL, "idx": (size >> STORED_LEVEL) - 1, "hash": node}]
    if top > STORED_LEVEL:
        # Left siblings on the way up: level l, index (size >> l) - 2, all stored.
        wanted = [(level, (size >> level) - 2) for level in range(STORED_LEVEL, top)]
        lefts = {
            (level, idx): bytes(value)
            for level, idx, value in conn.execute(
                select(AuditTreeNode.level, AuditTreeNode.idx, AuditTreeNode.hash).where(
                    tuple_(AuditTreeNode.level, AuditTreeNode.idx).in_(wanted)
                )
            )
        }
        for level, idx in wanted:
            left = lefts.get((level, idx))
            if left is None:
                raise AuditIntegrityError(N_("the audit tree has no node %(level)s/%(idx)s"),
                                          params={"level": level, "idx": idx})
            node = hash_children(left, node)
            rows.append({"level": level + 1, "idx": (size >> (level + 1)) - 1, "hash": node})
    conn.execute(insert(cast(Table, AuditTreeNode.__table__)), rows)


class StoredTree:
    """Hashes of RFC 9162 ranges of the first `size` leaves, read from stored state.

    `load` fetches every piece the given ranges decompose into, in a handful of
    queries; `range_hash` then folds them (the same interface as
    signflow.auditverify.TreeWalker, so proofs are read off either alike)."""

    __slots__ = ("nodes", "size")

    def __init__(self, size: int, nodes: dict[Node, bytes]) -> None:
        self.size = size
        self.nodes = nodes

    @classmethod
    def load(cls, session: Session, size: int, ranges: Iterable[tuple[int, int]]) -> StoredTree:
        pieces = wanted_nodes(r for r in ranges if r[0] < r[1])
        for start, height in pieces:
            if start + (1 << height) > size:
                raise ValueError("a range reaches past the tree size")
        return cls(size, fetch_nodes(session, pieces))

    def range_hash(self, start: int, end: int) -> bytes:
        if end == start:
            return EMPTY_ROOT
        pieces = sorted(wanted_nodes([(start, end)]))
        acc = self.nodes[pieces[-1]]
        for piece in reversed(pieces[:-1]):
            acc = hash_children(self.nodes[piece], acc)
        return acc


def fetch_nodes(session: Session, pieces: set[Node]) -> dict[Node, bytes]:
    """The hash of each perfect subtree (start, height) in `pieces`: stored ones by
    key, lower ones rehashed from their leaves. AuditIntegrityError if one is missing."""
    out: dict[Node, bytes] = {}
    by_level: dict[int, list[int]] = defaultdict(list)
    low: list[Node] = []
    for start, height in pieces:
        if height >= STORED_LEVEL:
            by_level[height].append(start >> height)
        else:
            low.append((start, height))
    for level, idxs in by_level.items():
        for chunk in _chunks(sorted(idxs)):
            for idx, value in session.execute(
                select(AuditTreeNode.idx, AuditTreeNode.hash).where(
                    AuditTreeNode.level == level, AuditTreeNode.idx.in_(chunk)
                )
            ):
                out[(idx << level, level)] = bytes(value)
    missing = [(s, h) for s, h in pieces if h >= STORED_LEVEL and (s, h) not in out]
    if missing:
        start, height = min(missing)
        raise AuditIntegrityError(N_("the audit tree has no node for leaves %(first)s..%(last)s"),
                                  params={"first": start, "last": start + (1 << height) - 1})
    if low:
        seqs = sorted({i for start, height in low for i in range(start, start + (1 << height))})
        leaves = leaf_hashes(session, seqs)
        for start, height in low:
            out[(start, height)] = perfect_root([leaves[i] for i in range(start, start + (1 << height))])
    return out


def leaf_hashes(session: Session, seqs: list[int]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for chunk in _chunks(seqs):
        for seq, leaf in session.execute(
            select(AuditEntry.seq, AuditEntry.leaf_hash).where(AuditEntry.seq.in_(chunk))
        ):
            out[seq] = bytes(leaf)
    for seq in seqs:
        if seq not in out:
            raise AuditIntegrityError(N_("the audit log has no entry %(expected)s"), params={"expected": seq})
    return out


def _chunks(values: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(values), CHUNK):
        yield values[i:i + CHUNK]


def frontier(session: Session, size: int) -> list[tuple[int, bytes]]:
    """The right edge of the tree of `size` leaves, as (height, hash) from the left:
    the stack a left-to-right pass would hold after leaf size - 1 (see TreeWalker)."""
    pieces = sorted(wanted_nodes([(0, size)])) if size else []
    nodes = fetch_nodes(session, set(pieces))
    return [(height, nodes[(start, height)]) for start, height in pieces]


def fold(stack: list[tuple[int, bytes]]) -> bytes:
    """MTH from a right edge (see frontier)."""
    if not stack:
        return EMPTY_ROOT
    acc = stack[-1][1]
    for _, node in reversed(stack[:-1]):
        acc = hash_children(node, acc)
    return acc


def stored_root(session: Session, size: int) -> bytes:
    return fold(frontier(session, size))


def rebuild(session: Session, *, batch: int = 10_000) -> int:
    """Recompute every stored node from the entries' leaf hashes (for a log written
    without them: a bulk import, a database restored from before the node table).
    Returns the number of nodes stored. Only flushes."""
    session.execute(delete(AuditTreeNode))
    rows: list[dict[str, object]] = []
    stored = 0
    stack: list[tuple[int, bytes]] = []
    sha256 = hashlib.sha256
    result = session.connection().execute(
        select(AuditEntry.seq, AuditEntry.leaf_hash)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=batch)
    )
    for expected, (seq, leaf) in enumerate(result, start=1):
        if seq != expected - 1:
            # Only the operator's rebuild command gets here: its text stays English.
            raise AuditIntegrityError(f"the audit log has no entry {expected - 1}")
        node = bytes(leaf)
        height = 0
        while stack and stack[-1][0] == height:
            node = sha256(b"\x01" + stack.pop()[1] + node).digest()
            height += 1
            if height >= STORED_LEVEL:
                rows.append({"level": height, "idx": (expected >> height) - 1, "hash": node})
        stack.append((height, node))
        if len(rows) >= batch:
            session.execute(insert(AuditTreeNode), rows)
            stored += len(rows)
            rows.clear()
    if rows:
        session.execute(insert(AuditTreeNode), rows)
        stored += len(rows)
    return stored
