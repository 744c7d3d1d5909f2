"""Signed checkpoints of the audit log (C2SP tlog-checkpoint + signed-note, Ed25519)
over its Merkle tree (RFC 9162), and the verification of the whole log against them.

The tree, proof and note algorithms live in signflow.auditverify, the offline
verifier an auditor runs without the service: the service and the auditor run
the same code, so they cannot disagree about what a valid log is.
"""

from __future__ import annotations

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
from signflow.models import AuditEntry, AuditHead, Checkpoint


def latest_checkpoint(session: Session) -> Checkpoint | None:
    return session.execute(
        select(Checkpoint).order_by(Checkpoint.size.desc(), Checkpoint.id.desc()).limit(1)
    ).scalar_one_or_none()


def write_checkpoint(
    session: Session, *, signing_key: Ed25519PrivateKey, origin: str, now: datetime
) -> Checkpoint:
    """Sign the tree over every entry; return the latest one if nothing was appended.

    Before signing, the previous checkpoint is recomputed from the entries in
    the same pass: the service never signs a history that rewrites what it
    signed before (AuditIntegrityError instead).
    """
    require_aware("now", now)
    head = lock_head(session)
    size = head.size
    previous = latest_checkpoint(session)
    if previous is not None and previous.size == size:
        return previous
    ranges = [(0, size)]
    previous_root = None
    if previous is not None:
        if previous.size > size:
            raise AuditIntegrityError("the audit log is shorter than its latest checkpoint")
        try:
            previous_root = open_checkpoint(previous.note, origin, signing_key.public_key()).root
        except NoteError as exc:
            raise AuditIntegrityError("the latest audit checkpoint does not verify") from exc
        ranges.append((0, previous.size))
    walker = TreeWalker(wanted_nodes(ranges))
    for leaf in stream_leaves(session, size):
        walker.add(leaf)
    if previous is not None and walker.range_hash(0, previous.size) != previous_root:
        raise AuditIntegrityError("audit entries changed since the latest checkpoint")
    root = walker.range_hash(0, size)
    note = sign_note(checkpoint_body(origin, size, root), origin, signing_key)
    checkpoint = Checkpoint(size=size, root_hash=root, note=note, created_at=now)
    session.add(checkpoint)
    session.flush()
    return checkpoint


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
