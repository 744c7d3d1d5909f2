"""Which second factors an account has enrolled (read by the login, the guards and
the step-up before signing; kept apart so that `users` can ask without a cycle)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.models import User, WebAuthnCredential

TOTP = "totp"
PASSKEY = "passkey"
# Not enrolled here: the identity provider the session came through authenticates the
# person again at the level that stands for both factors (a step-up through it).
PROVIDER = "provider"


def enrolled(session: Session, user: User) -> list[str]:
    """The second factors `user` can use now: "totp", "passkey" (a recovery code is a
    stand-in for these, not a factor of its own)."""
    found = []
    if user.totp_secret_enc is not None:
        found.append(TOTP)
    if session.scalar(select(WebAuthnCredential.id).where(
            WebAuthnCredential.user_id == user.id, WebAuthnCredential.revoked_at.is_(None))
            .limit(1)) is not None:
        found.append(PASSKEY)
    return found


def has_second_factor(session: Session, user: User) -> bool:
    return bool(enrolled(session, user))
