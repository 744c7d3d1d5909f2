"""Append-only audit log: entries, Merkle tree (RFC 9162), signed checkpoints
(C2SP tlog-checkpoint + signed-note, Ed25519), proofs, verification and export.

The tree, proof and note algorithms live in signflow.auditverify, the offline
verifier an auditor runs without the service: the service and the auditor run
the same code, so they cannot disagree about what a valid log is.

Concurrency: every writer locks the single `audit_head` row, so appends (and
checkpoints) are serialised by the database and seq has no gap and no fork,
whatever the number of app instances.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from signflow.auditverify import (
    CHECKPOINTS_DIR,
    EMPTY_ROOT,
    ENTRIES_FILE,
    KEY_FILE,
    NoteError,
    TreeWalker,
    VerifyResult,
    canonical_json,
    checkpoint_body,
    consistency_proof,
    inclusion_proof,
    inclusion_ranges,
    open_checkpoint,
    parse_canonical_line,
    sign_note,
    tree_root,
    verifier_key,
    verify_consistency,
    verify_inclusion,
    wanted_nodes,
)
from signflow.auditverify import hash_leaf as leaf_hash
from signflow.core.errors import AuditIntegrityError, Conflict, InvalidInput
from signflow.models import AuditEntry, AuditHead, Checkpoint

__all__ = [
    "EMPTY_ROOT",
    "SYSTEM",
    "Actor",
    "ExportResult",
    "VerifyResult",
    "append",
    "canonical_json",
    "consistency_proof",
    "evidence_for_request",
    "export_bundle",
    "inclusion_proof",
    "latest_checkpoint",
    "leaf_hash",
    "rfc3339",
    "search",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "write_checkpoint",
]

JsonValue = str | int | bool | None | list[Any] | dict[str, Any]

RESERVED_FIELDS = frozenset({"seq", "time", "actor", "action", "request"})
# Bulk reads go through the Core connection: ORM row handling tripled the
# cost of streaming a million rows.
STREAM_BATCH = 10_000
MAX_PAGE = 500

log = logging.getLogger("signflow.audit")


@dataclass(frozen=True)
class Actor:
    """Who did it, from where. `id` None means the service itself."""

    id: int | None
    name: str
    role: str
    ip: str | None = None

    def as_json(self) -> dict[str, JsonValue]:
        return {"id": self.id, "name": self.name, "role": self.role, "ip": self.ip}


SYSTEM = Actor(id=None, name="signflow", role="system")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size: int
    root_hash: bytes
    checkpoint_count: int
    verifier_key: str


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _require_aware(name: str, when: datetime | None) -> None:
    if when is not None and when.utcoffset() is None:
        raise InvalidInput(f"{name} must carry a time zone")


def _lock_head(session: Session) -> AuditHead:
    """The head row, locked until the caller's transaction ends."""
    # populate_existing: with expire_on_commit=False a session may still hold
    # the head from an earlier transaction; its size must come from this read.
    stmt = (
        select(AuditHead)
        .where(AuditHead.id == 1)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    head = session.execute(stmt).scalar_one_or_none()
    if head is None:
        # The migration creates the row; this covers a bare create_all. ON
        # CONFLICT DO NOTHING keeps two first writers from both inserting it.
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            session.execute(pg_insert(AuditHead).values(id=1, size=0).on_conflict_do_nothing())
        elif dialect == "sqlite":
            session.execute(sqlite_insert(AuditHead).values(id=1, size=0).on_conflict_do_nothing())
        else:
            session.execute(insert(AuditHead).values(id=1, size=0))
        head = session.execute(stmt).scalar_one()
    return head


def append(
    session: Session,
    *,
    now: datetime,
    actor: Actor,
    action: str,
    request_id: int | None = None,
    **details: JsonValue,
) -> AuditEntry:
    """Write one entry in the caller's transaction (only flushes)."""
    _require_aware("now", now)
    clash = RESERVED_FIELDS.intersection(details)
    if clash:
        raise ValueError(f"audit details may not use the reserved fields {sorted(clash)}")
    head = _lock_head(session)
    seq = head.size
    entry_json: dict[str, Any] = {
        **details,
        "seq": seq,
        "time": rfc3339(now),
        "actor": actor.as_json(),
        "action": action,
        "request": request_id,
    }
    line = canonical_json(entry_json)
    entry = AuditEntry(
        seq=seq,
        time=now,
        actor_id=actor.id,
        action=action,
        request_id=request_id,
        line=line,
        leaf_hash=leaf_hash(line.encode()),
    )
    head.size = seq + 1
    session.add(entry)
    session.flush()
    # Operators' log stream gets the same canonical (JSON-escaped, one-line) record:
    # user-supplied strings cannot forge a log line.
    log.info("%s", line)
    return entry


def _stream_leaves(session: Session, size: int) -> Iterator[bytes]:
    """Leaf hashes of seq 0..size-1 in order; AuditIntegrityError on a gap."""
    rows = session.connection().execute(
        select(AuditEntry.seq, AuditEntry.leaf_hash)
        .where(AuditEntry.seq < size)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=STREAM_BATCH)
    )
    expected = 0
    for seq, leaf in rows:
        if seq != expected:
            raise AuditIntegrityError(f"the audit log has no entry {expected}")
        expected += 1
        yield bytes(leaf)
    if expected != size:
        raise AuditIntegrityError(f"the audit log has no entry {expected}")


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
    _require_aware("now", now)
    head = _lock_head(session)
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
    for leaf in _stream_leaves(session, size):
        walker.add(leaf)
    if previous is not None and walker.range_hash(0, previous.size) != previous_root:
        raise AuditIntegrityError("audit entries changed since the latest checkpoint")
    root = walker.range_hash(0, size)
    note = sign_note(checkpoint_body(origin, size, root), origin, signing_key)
    checkpoint = Checkpoint(size=size, root_hash=root, note=note, created_at=now)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def _fail(size: int, problem: str, detail: str, seq: int | None = None) -> VerifyResult:
    return VerifyResult(ok=False, size=size, first_bad_seq=seq, problem=problem, detail=detail)


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
            return _fail(0, "checkpoint-signature", f"checkpoint {cp.id}: {exc}")
        if opened.size != cp.size or opened.root != bytes(cp.root_hash):
            return _fail(0, "checkpoint-modified", f"checkpoint {cp.id} differs from its note")
        if signed.setdefault(opened.size, opened.root) != opened.root:
            return _fail(0, "fork", f"two checkpoints of size {opened.size} differ")
        if opened.size < largest:
            return _fail(0, "rollback", f"checkpoint {cp.id} is smaller than an earlier one")
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
            return _fail(count, "gap", f"the entry with seq {count} is missing", count)
        raw = line.encode()
        leaf = leaf_hash(raw)
        if leaf != bytes(stored_leaf):
            return _fail(count, "entry-modified", "the entry differs from its leaf hash", seq)
        try:
            written_seq = parse_canonical_line(raw).get("seq")
        except (ValueError, TypeError) as exc:
            return _fail(count, "entry-malformed", str(exc), seq)
        if written_seq != seq:
            return _fail(count, "reordered", f"row {seq} holds the entry of seq {written_seq}", seq)
        walker.add(leaf)
        count += 1

    head = session.get(AuditHead, 1, populate_existing=True)
    head_size = 0 if head is None else head.size
    if head_size > count or largest > count:
        claimed = max(head_size, largest)
        return _fail(count, "truncated", f"{claimed} entries were written, {count} remain", count)
    if head_size < count:
        return _fail(count, "head-mismatch", f"the head says {head_size} entries", head_size)
    verified_below = 0
    for size in sorted(signed):
        if walker.range_hash(0, size) != signed[size]:
            return _fail(
                count,
                "entry-modified",
                f"seq {verified_below}..{size - 1} differ from what checkpoint {size} signed",
                verified_below,
            )
        verified_below = size
    return VerifyResult(ok=True, size=count)


def evidence_for_request(session: Session, request_id: int) -> list[tuple[AuditEntry, list[bytes]]]:
    """The request's entries covered by the latest checkpoint, each with its
    inclusion proof against that checkpoint (see latest_checkpoint).

    Entries newer than the latest checkpoint are left out: call
    write_checkpoint first to cover everything. Proofs are checked before
    they are returned.
    """
    checkpoint = latest_checkpoint(session)
    if checkpoint is None:
        return []
    size = checkpoint.size
    entries = list(
        session.execute(
            select(AuditEntry)
            .where(AuditEntry.request_id == request_id, AuditEntry.seq < size)
            .order_by(AuditEntry.seq)
        ).scalars()
    )
    if not entries:
        return []
    paths = [inclusion_ranges(entry.seq, size) for entry in entries]
    walker = TreeWalker(wanted_nodes([(0, size), *(r for path in paths for r in path)]))
    for leaf in _stream_leaves(session, size):
        walker.add(leaf)
    root = bytes(checkpoint.root_hash)
    if walker.range_hash(0, size) != root:
        raise AuditIntegrityError("audit entries differ from the latest checkpoint")
    out: list[tuple[AuditEntry, list[bytes]]] = []
    for entry, path in zip(entries, paths, strict=True):
        proof = [walker.range_hash(a, b) for a, b in path]
        if not verify_inclusion(bytes(entry.leaf_hash), entry.seq, size, proof, root):
            raise AuditIntegrityError(f"audit entry {entry.seq} does not match its leaf hash")
        out.append((entry, proof))
    return out


def search(
    session: Session,
    *,
    request_id: int | None = None,
    actor_id: int | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: int | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Newest first. Next page: pass the last returned seq as `after_seq`.

    Keyset pagination on seq (never OFFSET), so a deep page costs the same as
    the first; each equality filter has an index ending in seq. `since` is
    inclusive, `until` exclusive.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    _require_aware("since", since)
    _require_aware("until", until)
    stmt = select(AuditEntry)
    if request_id is not None:
        stmt = stmt.where(AuditEntry.request_id == request_id)
    if actor_id is not None:
        stmt = stmt.where(AuditEntry.actor_id == actor_id)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
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
        raise Conflict("the export destination already exists and is not empty")
    append(session, now=now, actor=actor, action="audit.exported", bundle=out.name)
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
    rows = session.connection().execute(
        select(AuditEntry.seq, AuditEntry.line)
        .where(AuditEntry.seq < size)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=STREAM_BATCH)
    )
    expected = 0
    with path.open("wb") as f:
        for seq, line in rows:
            if seq != expected:
                raise AuditIntegrityError(f"the audit log has no entry {expected}")
            f.write(line.encode() + b"\n")
            expected += 1
    if expected != size:
        raise AuditIntegrityError(f"the audit log has no entry {expected}")
