"""Signed checkpoints of the audit log (C2SP tlog-checkpoint + signed-note, Ed25519)
over its Merkle tree (RFC 9162), and the verification of the whole log against them.

The tree, proof and note algorithms live in signflow.auditverify, the offline
verifier an auditor runs without the service: the service and the auditor run
the same code, so they cannot disagree about what a valid log is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.auditverify import (
    NoteError,
    TreeWalker,
    VerifyResult,
    checkpoint_body,
    failure,
    modified_prefix,
    open_checkpoint,
    parse_canonical_line,
    sign_note,
    wanted_nodes,
)
from signflow.auditverify import hash_leaf as leaf_hash
from signflow.core.audit.log import STREAM_BATCH, lock_head, require_aware, stream_leaves
from signflow.core.errors import AuditIntegrityError
from signflow.core.i18n import N_
from signflow.models import AuditEntry, AuditHead, Checkpoint


def latest_checkpoint(session: Session) -> Checkpoint | None:
    return session.execute(
        select(Checkpoint).order_by(Checkpoint.size.desc(), Checkpoint.id.desc()).limit(1)
    ).scalar_one_or_none()


@dataclass(frozen=True)
class SignedHead:
    """A signed tree head over entries 0..size-1, computed without any lock; stored
    (or not, see store_head) as a Checkpoint at the end of the transaction."""

    size: int
    root: bytes
    note: str


def head_size(session: Session) -> int:
    """How many entries are committed (or written by this transaction), read without
    a lock. Entries below it never change: a slow reader may take its time over them."""
    head = session.get(AuditHead, 1, populate_existing=True)
    return 0 if head is None else head.size


def latest_checkpoint_within(session: Session, size: int) -> Checkpoint | None:
    return session.execute(
        select(Checkpoint)
        .where(Checkpoint.size <= size)
        .order_by(Checkpoint.size.desc(), Checkpoint.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def sign_head(
    session: Session,
    *,
    signing_key: Ed25519PrivateKey,
    origin: str,
    size: int,
    extra_ranges: Iterable[tuple[int, int]] = (),
) -> tuple[SignedHead, TreeWalker]:
    """Sign the tree over entries 0..size-1, without locking anything; also returns
    the walker, which holds the hashes of `extra_ranges` (for inclusion proofs).

    Before signing, the largest stored checkpoint not above `size` is recomputed
    from the entries in the same pass: the service never signs a history that
    rewrites what it signed before (AuditIntegrityError instead)."""
    previous = latest_checkpoint_within(session, size)
    ranges = [(0, size), *extra_ranges]
    previous_root = None
    if previous is not None:
        try:
            previous_root = open_checkpoint(previous.note, origin, signing_key.public_key()).root
        except NoteError as exc:
            raise AuditIntegrityError(N_("the latest audit checkpoint does not verify")) from exc
        ranges.append((0, previous.size))
    walker = TreeWalker(wanted_nodes(ranges))
    for leaf in stream_leaves(session, size):
        walker.add(leaf)
    if previous is not None and walker.range_hash(0, previous.size) != previous_root:
        raise AuditIntegrityError(N_("audit entries changed since the latest checkpoint"))
    root = walker.range_hash(0, size)
    note = sign_note(checkpoint_body(origin, size, root), origin, signing_key)
    return SignedHead(size=size, root=root, note=note), walker


def store_head(session: Session, head: SignedHead, *, now: datetime) -> Checkpoint | None:
    """Store `head` as the latest checkpoint, under the head lock, held from here to
    the end of the transaction (only this insert and what the caller appends after).

    None when a larger checkpoint was stored meanwhile: checkpoints are stored in
    increasing size (a smaller one after a larger one reads as a rollback), and
    `head` stays a true signed head of a prefix of the log."""
    require_aware("now", now)
    locked = lock_head(session)
    if locked.size < head.size:
        raise AuditIntegrityError(N_("the audit log is shorter than a tree head just signed"))
    latest = latest_checkpoint(session)
    if latest is not None and latest.size >= head.size:
        if latest.size == head.size and bytes(latest.root_hash) != head.root:
            raise AuditIntegrityError(N_("two tree heads of the same size differ"))
        return latest if latest.size == head.size else None
    checkpoint = Checkpoint(size=head.size, root_hash=head.root, note=head.note, created_at=now)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def write_checkpoint(
    session: Session, *, signing_key: Ed25519PrivateKey, origin: str, now: datetime
) -> Checkpoint:
    """Sign the tree over every entry; return the latest one if nothing was appended.

    The tree is read and signed without a lock (sign_head); the head lock is taken
    only to store the result (store_head)."""
    require_aware("now", now)
    previous = latest_checkpoint(session)
    size = head_size(session)
    if previous is not None and previous.size > size:
        raise AuditIntegrityError(N_("the audit log is shorter than its latest checkpoint"))
    if previous is not None and previous.size == size:
        return previous
    head, _ = sign_head(session, signing_key=signing_key, origin=origin, size=size)
    stored = store_head(session, head, now=now)
    if stored is None:  # a larger one was stored meanwhile: it covers every entry we saw
        stored = latest_checkpoint(session)
        if stored is None:
            raise AuditIntegrityError(N_("the latest audit checkpoint disappeared"))
    return stored


def verify_log(session: Session, *, public_key: Ed25519PublicKey, origin: str) -> VerifyResult:
    """Check the live log: entries, seq, leaf hashes, and every stored checkpoint.

    Checkpoints taken later (higher id) must not be smaller (a restore of an
    older backup), and two of the same size must agree (a fork). Every
    checkpoint's signed root must equal the tree recomputed at its size; as
    all are recomputed from one leaf sequence, they are then pairwise
    consistent. One streaming pass over the entries, O(log n) memory.
    """
    stored = list(session.execute(select(Checkpoint).order_by(Checkpoint.id)).scalars())
    signed: dict[int, bytes] = {}
    largest = 0
    for cp in stored:
        try:
            opened = open_checkpoint(cp.note, origin, public_key)
        except NoteError as exc:
            return failure(0, "checkpoint-signature", f"checkpoint {cp.id}: {exc}")
        if opened.size != cp.size or opened.root != bytes(cp.root_hash):
            return failure(0, "checkpoint-modified", f"checkpoint {cp.id} differs from its note")
        if signed.setdefault(opened.size, opened.root) != opened.root:
            return failure(0, "fork", f"two checkpoints of size {opened.size} differ")
        if opened.size < largest:
            return failure(0, "rollback", f"checkpoint {cp.id} is smaller than an earlier one")
        largest = opened.size

    walker = TreeWalker(wanted_nodes((0, s) for s in signed))
    rows = session.connection().execute(
        select(AuditEntry.seq, AuditEntry.line, AuditEntry.leaf_hash)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=STREAM_BATCH)
    )
    count = 0
    for seq, line, stored_leaf in rows:
        if seq != count:
            return failure(count, "gap", f"the entry with seq {count} is missing", count)
        raw = line.encode()
        leaf = leaf_hash(raw)
        if leaf != bytes(stored_leaf):
            return failure(count, "entry-modified", "the entry differs from its leaf hash", seq)
        try:
            written_seq = parse_canonical_line(raw).get("seq")
        except (ValueError, TypeError) as exc:
            return failure(count, "entry-malformed", str(exc), seq)
        if written_seq != seq:
            return failure(count, "reordered", f"row {seq} holds the entry of seq {written_seq}", seq)
        walker.add(leaf)
        count += 1

    head = session.get(AuditHead, 1, populate_existing=True)
    head_size = 0 if head is None else head.size
    if head_size > count or largest > count:
        claimed = max(head_size, largest)
        return failure(count, "truncated", f"{claimed} entries were written, {count} remain", count)
    if head_size < count:
        return failure(count, "head-mismatch", f"the head says {head_size} entries", head_size)
    return modified_prefix(walker, signed, count) or VerifyResult(ok=True, size=count)
