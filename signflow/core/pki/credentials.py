"""Physicians' signing credentials: PIN policy, PIN-wrapped private keys,
enrolment, unlocking for one signature and PIN change.

A physician's private key exists only wrapped (AES-256-GCM) under a key
derived from BOTH their signing PIN (argon2id, memory-hard) and the server
pepper (kept in the keys folder, never in the database): a database dump
cannot sign, with or without the PIN, and the keys folder alone cannot sign
without the PIN. With a PKCS#11 token the pepper is an HMAC computed on the
token (see signflow.core.pki.keystore).
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import Type as Argon2Type
from argon2.low_level import hash_secret_raw
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from signflow.core.errors import ConfigurationError, CredentialBlocked, InvalidInput, WrongPin
from signflow.core.i18n import N_
from signflow.core.pki import certificates as certs
from signflow.core.pki import crl as revocation
from signflow.core.pki import hsm as hsm
from signflow.core.pki import keystore as keystore
from signflow.models import SigningCredential, User

MAX_PIN_TRIES = 5
# Wrong unblock codes before only an administrator's re-enrolment helps.
MAX_PUK_TRIES = 10
PUK_GROUPS = 4
_PUK_HASHER = PasswordHasher(time_cost=1, memory_cost=47104, parallelism=1)
PIN_MIN_LENGTH = 6
ALGORITHMS = ("ec", "rsa")
# P-256 signs ~4x faster than RSA-3072 (see tests/test_signing.py::test_signing_speed).
DEFAULT_ALGORITHM = "ec"
# A wrapped key: version byte, salt, nonce, AES-GCM ciphertext.
WRAP_VERSION = b"\x01"
SALT_LEN = 16
NONCE_LEN = 12


def validate_pin_policy(pin: str) -> None:
    """Refuse PINs that a colleague or a thief guesses in a few tries."""
    if len(pin) < PIN_MIN_LENGTH:
        raise InvalidInput(N_("the signing PIN must have at least %(pin_min_length)s characters"),
                           params={'pin_min_length': PIN_MIN_LENGTH})
    if len(set(pin)) == 1:
        raise InvalidInput(N_("the signing PIN must not repeat a single character"))
    if pin.isdigit():
        steps = {int(b) - int(a) for a, b in zip(pin, pin[1:], strict=False)}
        if steps in ({1}, {-1}, {-9, 1}, {9, -1}):
            raise InvalidInput(N_("the signing PIN must not be a sequence like 123456"))
        if len(set(pin)) <= 2 and len(pin) <= 8:
            raise InvalidInput(N_("the signing PIN is too simple"))
    if pin.lower() in {"password", "azerty", "qwerty", "abcdef", "motdepasse"}:
        raise InvalidInput(N_("the signing PIN is too common"))


def _pepper(keys: keystore.KeyMaterial, salt: bytes, params: str) -> bytes:
    if params == keystore.KDF_PARAMS_TOKEN:
        if keys.token is None:
            raise ConfigurationError(
                N_("this signing credential is bound to the PKCS#11 token, which is not configured")
            )
        # Per-credential pepper from the token: the token's secret never leaves it,
        # so no file or dump replaces the token.
        return keys.token.hmac_sha256(hsm.PEPPER_KEY_LABEL, b"signflow pin pepper v1|" + salt)
    if params == keystore.KDF_PARAMS:
        if not keys.pepper:
            raise ConfigurationError(
                N_("this signing credential needs pepper.key, which is not in the keys folder")
            )
        return keys.pepper
    raise ConfigurationError(N_("unsupported PIN key-derivation parameters"))


def _kek(pin: str, salt: bytes, keys: keystore.KeyMaterial, params: str) -> bytes:
    pepper = _pepper(keys, salt, params)
    stretched = hash_secret_raw(
        secret=pin.encode(),
        salt=salt,
        time_cost=keystore.ARGON2_TIME,
        memory_cost=keystore.ARGON2_MEMORY_KIB,
        parallelism=keystore.ARGON2_LANES,
        hash_len=32,
        type=Argon2Type.ID,
    )
    # The pepper enters as the HKDF salt: without it, the PIN (even brute-forced
    # against a DB dump) yields nothing.
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=pepper, info=b"signflow signing-key kek v1"
    ).derive(stretched)


def _wrap_aad(serial: str) -> bytes:
    # Bound to the certificate serial: a wrapped key moved to another row fails.
    return b"signflow-credential:" + serial.encode()


def _wrap(private_key: certs.PrivateKey, pin: str, keys: keystore.KeyMaterial, serial: str) -> bytes:
    """Wrapped under `keys.kdf_params` (store that next to the result)."""
    salt, nonce = os.urandom(SALT_LEN), os.urandom(NONCE_LEN)
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    sealed = AESGCM(_kek(pin, salt, keys, keys.kdf_params)).encrypt(
        nonce, der, _wrap_aad(serial)
    )
    return WRAP_VERSION + salt + nonce + sealed


def _unwrap(
    wrapped: bytes, pin: str, keys: keystore.KeyMaterial, serial: str, params: str
) -> certs.PrivateKey | None:
    """The private key, or None when the PIN (or pepper) is wrong."""
    if not wrapped.startswith(WRAP_VERSION) or len(wrapped) < 1 + SALT_LEN + NONCE_LEN + 16:
        raise ConfigurationError(N_("signing credential is damaged"))
    salt = wrapped[1 : 1 + SALT_LEN]
    nonce = wrapped[1 + SALT_LEN : 1 + SALT_LEN + NONCE_LEN]
    try:
        der = AESGCM(_kek(pin, salt, keys, params)).decrypt(
            nonce, wrapped[1 + SALT_LEN + NONCE_LEN :], _wrap_aad(serial)
        )
    except InvalidTag:
        return None
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigurationError(N_("signing credential holds an unsupported key type"))
    return key


def credential_certificate(credential: SigningCredential) -> x509.Certificate:
    return x509.load_pem_x509_certificate(credential.certificate_pem.encode())


def enrol(
    session: Session,
    keys: keystore.KeyMaterial,
    user: User,
    pin: str,
    *,
    now: datetime,
    algorithm: str = DEFAULT_ALGORITHM,
    puk: str | None = None,
) -> SigningCredential:
    """New key pair and certificate for `user`, key wrapped under PIN + pepper (and
    under the unblock code `puk`, when given).

    Any earlier credential of the user is revoked (superseded). Only flushes."""
    if algorithm not in ALGORITHMS:
        raise InvalidInput(N_("unknown key algorithm %(algorithm)s (use 'ec' or 'rsa')"),
                           params={'algorithm': repr(algorithm)})
    if not keys.base_url:
        raise ConfigurationError(N_("the PKI base URL is not configured"))
    if not user.display_name.strip():
        raise InvalidInput(N_("the physician needs a display name before enrolment"))
    validate_pin_policy(pin)
    private_key: certs.PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=3072)
    )
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (certs.key_usage(signing=True), True),
        (
            # emailProtection: NSS (poppler, Firefox) judges PDF signers as e-mail signers.
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.EMAIL_PROTECTION,
                    certs.DOCUMENT_SIGNING_EKU,
                    certs.ADOBE_AUTHENTIC_DOCUMENTS_EKU,
                ]
            ),
            False,
        ),
        *((ext, False) for ext in certs.ca_links(keys.base_url, "issuing")),
    ]
    # RFC822Name is ASCII only (internationalised addresses need SmtpUTF8Mailbox,
    # which few validators read): such addresses are left out of the certificate.
    if user.email and user.email.isascii():
        extensions.append((x509.SubjectAlternativeName([x509.RFC822Name(user.email)]), False))
    professional_id = (user.professional_id or "").strip()
    # serialNumber is a PrintableString: ids are validated digits at account creation;
    # one from before that rule that would not encode is refused here, clearly.
    if professional_id and not (professional_id.isascii() and professional_id.isalnum()):
        raise InvalidInput(N_("the professional id on this account is not valid: ask the "
                           "administrators to correct it"))
    scheme = "ADELI" if len(professional_id) == 9 and professional_id.isdigit() else "RPPS"
    certificate = certs.issue(
        subject=certs.subject_name(
            " ".join(user.display_name.split()),
            serial_number=f"{scheme}:{professional_id}" if professional_id else None,
        ),
        public_key=private_key.public_key(),
        issuer_cert=keys.issuing_cert,
        issuer_key=keys.issuing_key,
        not_before=now,
        not_after=now + certs.CERT_VALIDITY,
        extensions=extensions,
    )
    serial = format(certificate.serial_number, "x")
    for previous in session.scalars(
        select(SigningCredential).where(
            SigningCredential.user_id == user.id, SigningCredential.revoked_at.is_(None)
        )
    ):
        revocation.revoke(session, previous, reason="superseded", now=now)
    credential = SigningCredential(
        user_id=user.id,
        algorithm=algorithm,
        certificate_pem=certs.cert_pem(certificate).decode(),
        serial=serial,
        not_after=certificate.not_valid_after_utc,
        wrapped_key=_wrap(private_key, pin, keys, serial),
        kdf_params=keys.kdf_params,
        failed_pins=0,
        blocked_at=None,
        revoked_at=None,
        created_at=now,
        failed_puks=0,
    )
    if puk is not None:
        credential.puk_hash = _PUK_HASHER.hash(_normal_puk(puk))
        credential.puk_wrapped_key = (keys.kdf_params.encode() + b"\0"
                                      + _wrap(private_key, _normal_puk(puk), keys, serial + ":puk"))
    session.add(credential)
    session.flush()
    return credential


def new_puk() -> str:
    """An unblock code: 16 random digits in groups of four."""
    digits = "".join(secrets.choice("0123456789") for _ in range(4 * PUK_GROUPS))
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def _normal_puk(puk: str) -> str:
    return "".join(c for c in puk if c.isdigit())


def unblock(
    session: Session, keys: keystore.KeyMaterial, credential: SigningCredential, puk: str,
    new_pin: str, *, now: datetime,
) -> None:
    """With the unblock code: the key re-wrapped under `new_pin`, the PIN counter reset.
    A wrong code is counted (flushed; the caller commits) and raises WrongPin."""
    validate_pin_policy(new_pin)
    if credential.puk_hash is None or credential.puk_wrapped_key is None:
        raise CredentialBlocked(N_("this signing key has no unblock code: ask an administrator "
                                "to re-enrol you"))
    if credential.failed_puks >= MAX_PUK_TRIES:
        raise CredentialBlocked(N_("too many wrong unblock codes: ask an administrator to re-enrol you"))
    code = _normal_puk(puk)
    ok: bool
    try:
        ok = _PUK_HASHER.verify(credential.puk_hash, code)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    params, _, wrapped = credential.puk_wrapped_key.partition(b"\0")
    key = _unwrap(wrapped, code, keys, credential.serial + ":puk", params.decode()) if ok else None
    if key is None:
        left = MAX_PUK_TRIES - _count_failure(session, credential, SigningCredential.failed_puks)
        raise WrongPin(N_("wrong unblock code: %(left)s try left") if left == 1
                       else N_("wrong unblock code: %(left)s tries left"), params={"left": max(left, 0)})
    if key.public_key() != credential_certificate(credential).public_key():
        raise ConfigurationError(N_("signing credential does not match its certificate"))
    credential.wrapped_key = _wrap(key, new_pin, keys, credential.serial)
    credential.kdf_params = keys.kdf_params
    credential.failed_pins = 0
    credential.failed_puks = 0
    credential.blocked_at = None
    session.flush()


def active_credential(session: Session, user_id: int) -> SigningCredential | None:
    """The user's newest non-revoked credential (it may be blocked or expired)."""
    return session.scalars(
        select(SigningCredential)
        .where(SigningCredential.user_id == user_id, SigningCredential.revoked_at.is_(None))
        .order_by(SigningCredential.created_at.desc(), SigningCredential.id.desc())
        .limit(1)
    ).first()


def check_usable(credential: SigningCredential, *, now: datetime) -> None:
    """Raise CredentialBlocked unless the credential may sign at `now`."""
    if credential.revoked_at is not None:
        raise CredentialBlocked(
            N_("your signing certificate is revoked: ask an administrator to re-enrol you"),
            code="certificate-revoked",
        )
    if now >= credential.not_after:
        raise CredentialBlocked(
            N_("your signing certificate has expired: ask an administrator to re-enrol you"),
            code="certificate-expired",
        )
    if credential.blocked_at is not None:
        raise CredentialBlocked(
            N_("your signing key is blocked after too many wrong PINs: "
            "ask an administrator to re-enrol you")
        )



def _count_failure(session: Session, credential: SigningCredential,
                   counter: InstrumentedAttribute[int]) -> int:
    """One more wrong guess, counted atomically in the database (two concurrent
    guesses both count); returns the new count."""
    session.execute(
        update(SigningCredential)
        .where(SigningCredential.id == credential.id)
        .values({counter: counter + 1})
        .execution_options(synchronize_session=False)
    )
    session.refresh(credential, [counter.key])
    count: int = getattr(credential, counter.key)
    return count

def unlock(
    session: Session,
    keys: keystore.KeyMaterial,
    credential: SigningCredential,
    pin: str,
    *,
    now: datetime,
) -> certs.PrivateKey:
    """The physician's private key, for this one signature.

    A wrong PIN is counted (flushed) and raises WrongPin, or CredentialBlocked at
    the MAX_PIN_TRIES-th: the caller must COMMIT even when this raises, or the
    counter is rolled back and the PIN can be brute-forced."""
    check_usable(credential, now=now)
    key = _unwrap(
        credential.wrapped_key, pin, keys, credential.serial, credential.kdf_params
    )
    if key is None:
        if _count_failure(session, credential, SigningCredential.failed_pins) >= MAX_PIN_TRIES:
            credential.blocked_at = now
            session.flush()
            raise CredentialBlocked(
                N_("wrong PIN: your signing key is now blocked; unblock it with your unblock code")
            )
        session.flush()
        left = MAX_PIN_TRIES - credential.failed_pins
        raise WrongPin(
            N_("wrong PIN: %(left)s try left before your signing key is blocked") if left == 1
            else N_("wrong PIN: %(left)s tries left before your signing key is blocked"),
            params={"left": left})
    if credential.failed_pins:
        credential.failed_pins = 0
        session.flush()
    if key.public_key() != credential_certificate(credential).public_key():
        raise ConfigurationError(N_("signing credential does not match its certificate"))
    return key


def change_pin(session: Session, keys: keystore.KeyMaterial, credential: SigningCredential,
               old_pin: str, new_pin: str, *, now: datetime) -> None:
    """Re-wrap the key under `new_pin`; the old PIN is checked (and counted) by unlock."""
    validate_pin_policy(new_pin)
    if new_pin == old_pin:
        raise InvalidInput(N_("the new PIN must differ from the old one"))
    key = unlock(session, keys, credential, old_pin, now=now)
    credential.wrapped_key = _wrap(key, new_pin, keys, credential.serial)
    credential.kdf_params = keys.kdf_params
    session.flush()
