"""Append-only audit log: actors, entries and their canonical lines, the head lock.

Checkpoints and verification: signflow.core.audit.checkpoints; search, proofs
and export: signflow.core.audit.export.

Concurrency: every writer locks the single `audit_head` row, so appends (and
the storing of checkpoints) are serialised by the database and seq has no gap
and no fork, whatever the number of app instances. Readers never lock it: the
entries below the committed head size never change, so a checkpoint or an
evidence report reads and hashes them unlocked and takes the lock only to store
what it signed (core.audit.checkpoints.store_head).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import InstrumentedAttribute, Session

from signflow.auditverify import canonical_json
from signflow.auditverify import hash_leaf as leaf_hash
from signflow.core.audit import tree
from signflow.core.errors import AuditIntegrityError, InvalidInput
from signflow.core.i18n import N_
from signflow.models import AuditAction, AuditEntry, AuditHead, Role, ServiceRole, User

T = TypeVar("T")

__all__ = [
    "SYSTEM",
    "Actor",
    "append",
    "canonical_json",
    "leaf_hash",
    "rfc3339",
]

JsonValue = str | int | bool | None | list[Any] | dict[str, Any]

RESERVED_FIELDS = frozenset({"seq", "time", "actor", "action", "request"})
# Bulk reads go through the Core connection: ORM row handling tripled the
# cost of streaming a million rows.
STREAM_BATCH = 10_000
# The largest I-JSON integer: a seq stands in for it (see append).
SEQ_PLACEHOLDER = 2**53 - 1

log = logging.getLogger("signflow.audit")


@dataclass(frozen=True)
class Actor:
    """Who did it, from where: the first argument of every core operation, and the
    `actor` of its audit entry. `id` None means the service or an operator, not a user."""

    id: int | None
    name: str
    role: Role | ServiceRole
    ip: str | None = None

    @classmethod
    def of(cls, user: User, ip: str | None = None) -> Actor:
        return cls(id=user.id, name=user.username, role=user.role, ip=ip)

    def as_json(self) -> dict[str, JsonValue]:
        return {"id": self.id, "name": self.name, "role": str(self.role), "ip": self.ip}


SYSTEM = Actor(id=None, name="signflow", role=ServiceRole.SYSTEM)


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def require_aware(name: str, when: datetime | None) -> None:
    if when is not None and when.utcoffset() is None:
        raise InvalidInput(N_('%(name)s must carry a time zone'), params={'name': name})


def lock_head(session: Session) -> AuditHead:
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


_HEAD = cast(Table, AuditHead.__table__)
_ENTRIES = cast(Table, AuditEntry.__table__)
_BUMP = (
    update(_HEAD).where(_HEAD.c.id == 1).values(size=_HEAD.c.size + 1).returning(_HEAD.c.size)
)


def _next_seq(session: Session) -> int:
    """Take the head lock and the next seq in one statement (UPDATE ... RETURNING):
    the lock is held from here to the end of the caller's transaction."""
    # Core statements on the tables: the ORM's bulk machinery doubled the cost of an
    # append, all of it under the lock. Still through session.execute, so that the
    # session's listeners see the write (the web layer commits only sessions that
    # wrote). The head objects sessions hold are read again with populate_existing
    # wherever their size matters (lock_head, head_size).
    size = session.execute(_BUMP).scalar_one_or_none()
    if size is None:
        lock_head(session)  # creates the row (a bare create_all), then bump it
        size = session.execute(_BUMP).scalar_one()
    return int(size) - 1


def append(
    session: Session,
    *,
    now: datetime,
    actor: Actor,
    action: AuditAction,
    request_id: int | None = None,
    **details: JsonValue,
) -> AuditEntry:
    """Write one entry in the caller's transaction (only flushes). Returns the entry
    as written (a plain object, not added to the session).

    Everything that can be computed before the seq is known is: the canonical
    line is built with a placeholder seq, so the head lock (on SQLite: the write
    lock, for every writer) is held only for a text replace, one hash and the
    inserts, which is what lets 8 writers append nearly as fast as they insert."""
    require_aware("now", now)
    clash = RESERVED_FIELDS.intersection(details)
    if clash:
        raise ValueError(f"audit details may not use the reserved fields {sorted(clash)}")
    entry_json: dict[str, Any] = {
        **details,
        "seq": SEQ_PLACEHOLDER,
        "time": rfc3339(now),
        "actor": actor.as_json(),
        "action": action,
        "request": request_id,
    }
    # Keys are sorted whatever their values, and an integer's canonical text is its
    # digits: replacing the placeholder's digits gives the line canonical_json would.
    template = canonical_json(entry_json)
    marker = f'"seq":{SEQ_PLACEHOLDER}'
    seq = _next_seq(session)
    if template.count(marker) == 1:
        line = template.replace(marker, f'"seq":{seq}')
    else:  # the placeholder also appears nested in the details: build it again
        line = canonical_json({**entry_json, "seq": seq})
    leaf = leaf_hash(line.encode())
    values = {"seq": seq, "time": now, "actor_id": actor.id, "action": action,
              "request_id": request_id, "line": line, "leaf_hash": leaf}
    session.execute(_ENTRIES.insert(), values)
    tree.on_append(session, seq, leaf)
    # Operators' log stream gets the same canonical (JSON-escaped, one-line) record:
    # user-supplied strings cannot forge a log line.
    log.info("%s", line)
    return AuditEntry(**values)


def stream_column(session: Session, column: InstrumentedAttribute[T], size: int) -> Iterator[T]:
    """`column` of entries 0..size-1, in seq order, in batches; AuditIntegrityError
    on a gap (a deleted entry must not pass unnoticed)."""
    rows = session.connection().execute(
        select(AuditEntry.seq, column)
        .where(AuditEntry.seq < size)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=STREAM_BATCH)
    )
    expected = 0
    for seq, value in rows:
        if seq != expected:
            raise AuditIntegrityError(N_("the audit log has no entry %(expected)s"),
                                      params={'expected': expected})
        expected += 1
        yield value
    if expected != size:
        raise AuditIntegrityError(N_("the audit log has no entry %(expected)s"),
                                  params={'expected': expected})


def stream_leaves(session: Session, size: int) -> Iterator[bytes]:
    """Leaf hashes of seq 0..size-1 in order; AuditIntegrityError on a gap."""
    return (bytes(leaf) for leaf in stream_column(session, AuditEntry.leaf_hash, size))
