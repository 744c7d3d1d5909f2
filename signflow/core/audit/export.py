"""Reading the audit log out: the auditor's search, one request's entries with their
inclusion proofs, and the export bundle that signflow.auditverify checks offline."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.auditverify import (
    CHECKPOINTS_DIR,
    ENTRIES_FILE,
    KEY_FILE,
    inclusion_ranges,
    verifier_key,
    verify_inclusion,
)
from signflow.core.audit.checkpoints import (
    SignedHead,
    head_size,
    latest_checkpoint,
    sign_head,
    write_checkpoint,
)
from signflow.core.audit.log import Actor, append, require_aware, stream_column
from signflow.core.audit.tree import StoredTree
from signflow.core.errors import AuditIntegrityError, Conflict, InvalidInput
from signflow.core.i18n import N_
from signflow.models import AuditAction, AuditEntry, Checkpoint

MAX_PAGE = 500


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size: int
    root_hash: bytes
    checkpoint_count: int
    verifier_key: str


def _request_entries(session: Session, request_id: int, size: int) -> list[AuditEntry]:
    """The request's entries among the first `size` of the log, in log order."""
    return list(session.execute(
        select(AuditEntry)
        .where(AuditEntry.request_id == request_id, AuditEntry.seq < size)
        .order_by(AuditEntry.seq)
    ).scalars())


def _proved(entries: list[AuditEntry], paths: list[list[tuple[int, int]]], walker: StoredTree,
            size: int, root: bytes) -> list[tuple[AuditEntry, list[bytes]]]:
    """Each entry with its inclusion proof (read off `walker` along its `path`), checked
    against `root` before it is handed out: a proof that does not verify is tampering."""
    out: list[tuple[AuditEntry, list[bytes]]] = []
    for entry, path in zip(entries, paths, strict=True):
        proof = [walker.range_hash(a, b) for a, b in path]
        if not verify_inclusion(bytes(entry.leaf_hash), entry.seq, size, proof, root):
            raise AuditIntegrityError(N_("audit entry %(seq)s does not match its leaf hash"),
                                      params={'seq': entry.seq})
        out.append((entry, proof))
    return out


def evidence_for_request(session: Session, request_id: int) -> list[tuple[AuditEntry, list[bytes]]]:
    """The request's entries covered by the latest checkpoint, each with its
    inclusion proof against that checkpoint (see latest_checkpoint), read from the
    stored tree state in O(log n) per entry.

    Entries newer than the latest checkpoint are left out: call
    write_checkpoint first to cover everything. Proofs are checked before
    they are returned.
    """
    checkpoint = latest_checkpoint(session)
    if checkpoint is None:
        return []
    size = checkpoint.size
    entries = _request_entries(session, request_id, size)
    if not entries:
        return []
    paths = [inclusion_ranges(entry.seq, size) for entry in entries]
    stored = StoredTree.load(session, size, [(0, size), *(r for path in paths for r in path)])
    root = bytes(checkpoint.root_hash)
    if stored.range_hash(0, size) != root:
        raise AuditIntegrityError(N_("the stored audit tree differs from the latest checkpoint"))
    return _proved(entries, paths, stored, size, root)


def prove_request(
    session: Session, request_id: int, *, signing_key: Ed25519PrivateKey, origin: str
) -> tuple[SignedHead, list[tuple[AuditEntry, list[bytes]]]]:
    """A tree head over every committed entry, signed now, and the request's entries
    with their inclusion proofs against it, all read without any lock: the log below
    the head never changes. Store the head with store_head when done."""
    size = head_size(session)
    entries = _request_entries(session, request_id, size)
    paths = [inclusion_ranges(entry.seq, size) for entry in entries]
    head, walker = sign_head(session, signing_key=signing_key, origin=origin, size=size,
                             extra_ranges=[r for path in paths for r in path])
    return head, _proved(entries, paths, walker, size, head.root)


def search(
    session: Session, *, request_id: int | None = None, actor_id: int | None = None,
    action: str | None = None, since: datetime | None = None, until: datetime | None = None,
    after_seq: int | None = None, limit: int = 50, actions: Collection[str] | None = None,
) -> list[AuditEntry]:
    """Newest first. Next page: pass the last returned seq as `after_seq`.

    Keyset pagination on seq (never OFFSET), so a deep page costs the same as
    the first; each equality filter has an index ending in seq. `since` is
    inclusive, `until` exclusive.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(N_('limit must be between 1 and %(max_page)s'), params={'max_page': MAX_PAGE})
    require_aware("since", since)
    require_aware("until", until)
    stmt = select(AuditEntry)
    if request_id is not None:
        stmt = stmt.where(AuditEntry.request_id == request_id)
    if actor_id is not None:
        stmt = stmt.where(AuditEntry.actor_id == actor_id)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if actions is not None:
        stmt = stmt.where(AuditEntry.action.in_(sorted(actions)))
    if since is not None:
        stmt = stmt.where(AuditEntry.time >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.time < until)
    if after_seq is not None:
        stmt = stmt.where(AuditEntry.seq < after_seq)
    stmt = stmt.order_by(AuditEntry.seq.desc()).limit(limit)
    return list(session.execute(stmt).scalars())
README_TEXT = """\
signflow audit export bundle

entries.jsonl   the audit log, one canonical JSON (RFC 8785) entry per line, seq 0, 1, 2...
checkpoints/    signed tree heads (c2sp.org/tlog-checkpoint, signed as c2sp.org/signed-note)
audit-key.pub   line 1: the note verifier key <name>+<hash>+<key>; then the same Ed25519 key as PEM

Verify with Python 3.11+ and the `cryptography` package (auditverify.py also runs as a lone file):

    python -m signflow.auditverify BUNDLE --trusted-key VKEY --checkpoint OLD_CHECKPOINT

VKEY is the service's audit key obtained from the operator, not from this folder
(this bundle says: {vkey}). --checkpoint (repeatable) takes checkpoint files kept
from earlier exports and detects truncation and rollback. Exit 0: verified;
1: tampered; 2: usage. Leaf = SHA-256(0x00 || line), node = SHA-256(0x01 || left || right)
as in RFC 9162 section 2.1.
"""


def export_bundle(
    session: Session,
    out: Path,
    *,
    signing_key: Ed25519PrivateKey,
    origin: str,
    now: datetime,
    actor: Actor,
) -> ExportResult:
    """Append `audit.exported`, checkpoint every entry including it, then write the bundle.

    The folder appears complete or not at all (written aside, then renamed).
    The caller commits right after; if that commit fails, discard the folder.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Conflict(N_("the export destination already exists and is not empty"))
    append(session, now=now, actor=actor, action=AuditAction.AUDIT_EXPORTED, bundle=out.name)
    checkpoint = write_checkpoint(session, signing_key=signing_key, origin=origin, now=now)
    public_key = signing_key.public_key()
    vkey = verifier_key(origin, public_key)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()

    staging = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        _write_entries(session, staging / ENTRIES_FILE, checkpoint.size)
        cp_dir = staging / CHECKPOINTS_DIR
        cp_dir.mkdir()
        checkpoints = list(
            session.execute(select(Checkpoint).order_by(Checkpoint.size, Checkpoint.id)).scalars()
        )
        for cp in checkpoints:
            path = cp_dir / f"{cp.size:012d}"
            if path.exists():
                path = cp_dir / f"{cp.size:012d}-{cp.id}"
            path.write_text(cp.note, encoding="utf-8", newline="")
        (staging / KEY_FILE).write_text(f"{vkey}\n{pem}", encoding="utf-8", newline="")
        (staging / "README.txt").write_text(README_TEXT.format(vkey=vkey), encoding="utf-8")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return ExportResult(
        path=out,
        size=checkpoint.size,
        root_hash=bytes(checkpoint.root_hash),
        checkpoint_count=len(checkpoints),
        verifier_key=vkey,
    )


def _write_entries(session: Session, path: Path, size: int) -> None:
    with path.open("wb") as f:
        for line in stream_column(session, AuditEntry.line, size):
            f.write(line.encode() + b"\n")
