"""Revocation of signing credentials and the CRLs of the issuing and root CAs."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.errors import ConfigurationError, InvalidInput, NotFound
from signflow.core.i18n import N_
from signflow.core.pki import certificates as certs
from signflow.core.pki import keystore as keystore
from signflow.models import Setting, SigningCredential

CRL_VALIDITY = timedelta(days=7)
# A CRL is re-issued when revocations change or when it is this old, so that
# signing (which fetches CRLs each time) does not write to the database each time.
CRL_REFRESH = timedelta(hours=1)

REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


def revoke(session: Session, credential: SigningCredential, *, reason: str, now: datetime) -> None:
    """Revoke (idempotent: the first revocation date and reason stay)."""
    if reason not in REVOCATION_REASONS:
        raise InvalidInput(N_('unknown revocation reason %(reason)s'), params={'reason': repr(reason)})
    if credential.revoked_at is not None:
        return
    credential.revoked_at = now
    credential.revocation_reason = reason
    session.flush()


def _crl_setting(session: Session, issuer: str, *, lock: bool) -> Setting | None:
    stmt = select(Setting).where(Setting.name == f"crl.{issuer}")
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def _stored_crl(setting: Setting | None) -> dict[str, object]:
    if setting is None:
        return {}
    try:
        loaded = json.loads(setting.value)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _still_valid(
    stored: dict[str, object], state_digest: str, now: datetime, max_age: timedelta
) -> bytes | None:
    this_update_raw = stored.get("this_update")
    der_hex = stored.get("der")
    if (
        stored.get("state") == state_digest
        and isinstance(this_update_raw, str)
        and isinstance(der_hex, str)
    ):
        this_update = datetime.fromisoformat(this_update_raw)
        if this_update <= now < this_update + max_age:
            return bytes.fromhex(der_hex)
    return None


def crl(session: Session, keys: keystore.KeyMaterial, *, issuer: str, now: datetime,
        max_age: timedelta = CRL_REFRESH) -> bytes:
    """DER CRL of the 'issuing' CA (revoked signing credentials) or of the 'root' CA.

    The last CRL is kept in the `Setting` table (`crl.<issuer>`) with its number
    and the digest of the revocations it lists: it is returned as is until the
    revocations change or it is CRL_REFRESH old, then a new one with the next
    CRLNumber is issued (under a lock on that row). `max_age` up to CRL_VALIDITY: a
    reader that must not write (an evidence report) accepts an older, still valid
    CRL that lists the same revocations. Only flushes."""
    if not timedelta(0) < max_age <= CRL_VALIDITY:
        raise InvalidInput(N_("a CRL is re-used at most for its validity"))
    ca_key: certs.PrivateKey | None
    if issuer == "issuing":
        revoked = [
            (int(c.serial, 16), c.revoked_at, c.revocation_reason or "unspecified")
            for c in session.scalars(
                select(SigningCredential)
                .where(SigningCredential.revoked_at.is_not(None))
                .order_by(SigningCredential.id)
            )
            if c.revoked_at is not None
        ]
        ca_cert, ca_key = keys.issuing_cert, keys.issuing_key
    elif issuer == "root":
        # The issuing CA is never revoked by signflow itself (that is a re-init).
        revoked = []
        ca_cert, ca_key = keys.root_cert, keys.root_key
    else:
        raise NotFound(N_("no such certificate authority"))
    state_digest = hashlib.sha256(
        json.dumps(
            [ca_cert.fingerprint(hashes.SHA256()).hex()]
            + [[s, d.isoformat(), r] for s, d, r in revoked]
        ).encode()
    ).hexdigest()

    # Read without a lock: every signature and verification page asks, and the CRL
    # changes once an hour at most. Locked (and checked again) only to re-issue it.
    stored = _stored_crl(_crl_setting(session, issuer, lock=False))
    current = _still_valid(stored, state_digest, now, max_age)
    if current is not None:
        return current
    setting = _crl_setting(session, issuer, lock=True)
    stored = _stored_crl(setting)
    current = _still_valid(stored, state_digest, now, max_age)
    if current is not None:
        return current
    previous_number = stored.get("number")
    number = (previous_number if isinstance(previous_number, int) else 0) + 1
    if ca_key is None:
        raise ConfigurationError(N_("the root CA key is not loaded, so the root CRL cannot be issued"))
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, revoked_at, reason in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at)
            .add_extension(
                x509.CRLReason(REVOCATION_REASONS.get(reason, x509.ReasonFlags.unspecified)),
                critical=False,
            )
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    der = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    value = json.dumps(
        {"number": number, "state": state_digest, "this_update": now.isoformat(), "der": der.hex()}
    )
    if setting is None:
        session.add(Setting(name=f"crl.{issuer}", value=value))
    else:
        setting.value = value
    session.flush()
    return der
