"""Signed checkpoints of the audit log (C2SP tlog-checkpoint + signed-note, Ed25519)
over its Merkle tree (RFC 9162), read from the stored tree state (core.audit.tree),
and the verification of the log against them (core.audit.verify).

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
    VerifyResult,
    checkpoint_body,
    consistency_ranges,
    open_checkpoint,
    sign_note,
    verify_consistency,
)
from signflow.core.audit import verify
from signflow.core.audit.log import lock_head, require_aware
from signflow.core.audit.tree import StoredTree
from signflow.core.errors import AuditIntegrityError
from signflow.core.i18n import N_
from signflow.models import AuditHead, Checkpoint


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
) -> tuple[SignedHead, StoredTree]:
    """Sign the tree over entries 0..size-1, without locking anything; also returns
    the stored tree's hashes of `extra_ranges` (for inclusion proofs).

    Root and proofs come from the stored tree state (core.audit.tree): O(log n)
    reads. Before signing, the largest stored checkpoint not above `size` must be
    a prefix of the tree to sign, by an RFC 9162 consistency proof read from the
    same state: the service never signs a history that rewrites what it signed
    before (AuditIntegrityError instead). What the entries say is checked by
    verify_log (in full, or from the last verified checkpoint on)."""
    previous = latest_checkpoint_within(session, size)
    ranges = [(0, size), *extra_ranges]
    previous_root = None
    if previous is not None:
        try:
            previous_root = open_checkpoint(previous.note, origin, signing_key.public_key()).root
        except NoteError as exc:
            raise AuditIntegrityError(N_("the latest audit checkpoint does not verify")) from exc
        link = consistency_ranges(previous.size, size)
        ranges += link
    stored = StoredTree.load(session, size, ranges)
    root = stored.range_hash(0, size)
    if previous is not None and previous_root is not None:
        proof = [stored.range_hash(a, b) for a, b in link]
        if not verify_consistency(previous.size, size, previous_root, root, proof):
            raise AuditIntegrityError(N_("audit entries changed since the latest checkpoint"))
    note = sign_note(checkpoint_body(origin, size, root), origin, signing_key)
    return SignedHead(size=size, root=root, note=note), stored


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


def verify_log(
    session: Session, *, public_key: Ed25519PublicKey, origin: str, now: datetime | None = None
) -> VerifyResult:
    """Check the whole live log (see core.audit.verify.verify_full); with `now`, a
    pass is recorded as where the next incremental verification starts."""
    return verify.verify_full(session, public_key=public_key, origin=origin, now=now)


def verify_log_since_verified(
    session: Session, *, public_key: Ed25519PublicKey, origin: str, now: datetime
) -> VerifyResult:
    """Check only what was appended since the last verification that passed (see
    core.audit.verify.verify_incremental); in full when there was none."""
    return verify.verify_incremental(session, public_key=public_key, origin=origin, now=now)
