"""Signature activation data: a signed, short-lived, single-use authorisation to
sign one exact document with one credential.

Issuing one writes nothing (the sign page is a GET); single use is enforced
when it is consumed, by inserting its nonce as a primary key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from signflow.core.errors import Conflict, Forbidden
from signflow.core.i18n import N_
from signflow.models import SignatureActivation

ACTIVATION_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class Claims:
    nonce: str
    user_id: int
    request_id: int
    credential_id: int
    document_sha256: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: bytes, *, user_id: int, request_id: int, credential_id: int,
          document_sha256: str, now: datetime) -> str:
    claims = {
        "n": secrets.token_hex(16), "u": user_id, "r": request_id, "c": credential_id,
        "h": document_sha256, "e": int((now + ACTIVATION_TTL).timestamp()),
    }
    body = _b64(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def read(key: bytes, token: str, *, now: datetime) -> Claims:
    """Check the MAC and the expiry; the caller checks that the claims fit."""
    try:
        body, mac = token.split(".", 1)
        expected = hmac.new(key, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise ValueError("bad mac")
        raw = json.loads(_unb64(body))
        claims = Claims(
            nonce=str(raw["n"]), user_id=int(raw["u"]), request_id=int(raw["r"]),
            credential_id=int(raw["c"]), document_sha256=str(raw["h"]),
            expires_at=datetime.fromtimestamp(int(raw["e"]), UTC),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise Forbidden(N_("This signing form is invalid. Reload the document and sign again.")) from exc
    if now >= claims.expires_at:
        raise Forbidden(N_("This signing form has expired. Reload the document and sign again."))
    return claims


def consume(session: Session, claims: Claims, *, now: datetime) -> SignatureActivation:
    if session.get(SignatureActivation, claims.nonce) is not None:
        raise Conflict(N_("This signing form was already used. Reload the document."))
    row = SignatureActivation(
        id=claims.nonce, user_id=claims.user_id, request_id=claims.request_id,
        credential_id=claims.credential_id, document_sha256=claims.document_sha256,
        created_at=claims.expires_at - ACTIVATION_TTL, expires_at=claims.expires_at, used_at=now,
    )
    session.add(row)
    session.flush()
    return row
