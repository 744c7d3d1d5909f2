"""Recovery codes: ten single-use codes, shown once, that stand in for the second
factor at login when the phone (or the passkey) is lost, so nobody needs an
administrator at 3 a.m.

Stored as a keyed hash (HMAC-SHA256 under a key derived from the storage master key),
not argon2: each code carries 50 random bits, so there is no dictionary to slow down,
and a stolen database without the master key cannot even test a guess; a keyed hash
also lets a typed code be found by an index lookup instead of ten slow verifications.
A recovery code is not a fresh factor for signing (step-up asks for TOTP or a passkey):
it proves only that the person holds a piece of paper printed weeks ago.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from signflow.core.accounts import throttle
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import AuthenticationFailed, Throttled
from signflow.core.i18n import N_
from signflow.models import AuditAction, RecoveryCode, User

COUNT = 10
LENGTH = 10  # characters of ALPHABET: 50 bits each
# 32 symbols without 0/O and 1/I: a code is read off paper, at night.
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"signflow/recovery-codes", hashlib.sha256).digest()


def normalise(code: str) -> str:
    """What the user typed, without spaces, dashes or case."""
    return "".join(c for c in code.upper() if c.isalnum())


def code_hash(master_key: bytes, user_id: int, code: str) -> str:
    message = f"{user_id}:{normalise(code)}".encode()
    return hmac.new(_key(master_key), message, hashlib.sha256).hexdigest()


def _new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def generate(session: Session, master_key: bytes, *, actor: Actor, now: datetime) -> list[str]:
    """A new set of codes for the acting user (to show once); the previous set stops working."""
    user = acting_user(session, actor)
    replaced = session.scalar(select(func.count()).select_from(RecoveryCode)
                              .where(RecoveryCode.user_id == user.id)) or 0
    batch = (session.scalar(select(func.max(RecoveryCode.batch))
                            .where(RecoveryCode.user_id == user.id)) or 0) + 1
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_code() for _ in range(COUNT)]
    session.add_all(RecoveryCode(user_id=user.id, code_hash=code_hash(master_key, user.id, c),
                                 batch=batch, created_at=now) for c in codes)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.RECOVERY_CODES_GENERATED,
                 count=COUNT, batch=batch, replaced=replaced)
    return codes


def remaining(session: Session, user_id: int) -> int:
    """Codes of the current set not used yet."""
    return session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))) or 0


def has_codes(session: Session, user_id: int) -> bool:
    return session.scalar(select(RecoveryCode.id).where(RecoveryCode.user_id == user_id)
                          .limit(1)) is not None


def use(session: Session, master_key: bytes, *, actor: Actor, code: str, now: datetime,
        throttle_key: bytes, device: str | None = None) -> int:
    """A recovery code as the second factor at login (after the password). Returns the
    number of codes left. Failures count with the password's throttle."""
    user: User = acting_user(session, actor)
    attempt = throttle.Attempt(throttle_key, user.username, actor.ip, device)
    wait = throttle.remaining(session, attempt, now=now)
    if wait:
        audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_THROTTLED,
                     factor="recovery_code")
        raise Throttled(N_("Too many failed attempts: wait a moment and try again."), retry_after=wait)
    row = session.scalar(select(RecoveryCode).where(
        RecoveryCode.user_id == user.id,
        RecoveryCode.code_hash == code_hash(master_key, user.id, code)))
    if row is None:
        throttle.record_failure(session, attempt, now=now)
        audit.append(session, now=now, actor=actor,
                     action=AuditAction.LOGIN_SECOND_FACTOR_FAILED, factor="recovery_code")
        raise AuthenticationFailed(N_("Wrong recovery code."))
    # Single use even under two simultaneous requests: only one UPDATE finds it unused.
    taken = session.execute(update(RecoveryCode).where(
        RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None)).values(used_at=now))
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        throttle.record_failure(session, attempt, now=now)
        audit.append(session, now=now, actor=actor, action=AuditAction.RECOVERY_CODE_REFUSED,
                     code=row.id, problem="already-used")
        raise AuthenticationFailed(
            N_("This recovery code was already used: each code works once. Use another one "
               "from your list."))
    session.expire(row)
    throttle.record_success(session, attempt)
    left = remaining(session, user.id)
    audit.append(session, now=now, actor=actor, action=AuditAction.RECOVERY_CODE_USED,
                 code=row.id, remaining=left)
    audit.append(session, now=now, actor=actor, action=AuditAction.LOGIN_SUCCEEDED,
                 factors=["password", "recovery_code"])
    return left
