"""Internal PKI: service key material, physicians' certificates, PIN-wrapped keys, CRLs.

Trust chain: root CA (offline in spirit, path length 1) -> issuing CA (path
length 0) -> physicians' signing certificates and the TSA certificate.

A physician's private key exists only wrapped (AES-256-GCM) under a key
derived from BOTH their signing PIN (argon2id, memory-hard) and the server
pepper (kept in the keys folder, never in the database): a database dump
cannot sign, with or without the PIN, and the keys folder alone cannot sign
without the PIN.

With a PKCS#11 token (signflow.core.pki.hsm), the issuing CA key and the TSA key
live on the token, and the pepper is replaced by an HMAC computed on the token
with a non-extractable secret: the KEK then needs the PIN, the database row
and the token itself. Each credential records which pepper wraps it in its
`kdf_params`, so credentials wrapped before a move to the token keep working
(with pepper.key) until their next PIN change re-wraps them.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from argon2.low_level import Type as Argon2Type
from argon2.low_level import hash_secret_raw
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    ObjectIdentifier,
)
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from signflow.core.errors import (
    ConfigurationError,
    CredentialBlocked,
    InvalidInput,
    NotFound,
    WrongPin,
)
from signflow.core.pki import hsm as hsm
from signflow.models import Setting, SigningCredential, User

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

MAX_PIN_TRIES = 5
PIN_MIN_LENGTH = 6
CERT_VALIDITY = timedelta(days=3 * 365)
TSA_VALIDITY = timedelta(days=5 * 365)
CRL_VALIDITY = timedelta(days=7)
# A CRL is re-issued when revocations change or when it is this old, so that
# signing (which fetches CRLs each time) does not write to the database each time.
CRL_REFRESH = timedelta(hours=1)
ALGORITHMS = ("ec", "rsa")
# P-256 signs ~4x faster than RSA-3072 (see tests/test_signing.py::test_signing_speed).
DEFAULT_ALGORITHM = "ec"

DOCUMENT_SIGNING_EKU = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
ADOBE_AUTHENTIC_DOCUMENTS_EKU = ObjectIdentifier("1.2.840.113583.1.1.5")

# argon2id, 46 MiB / t=1 / p=1: OWASP's example setting, ~45 ms here.
ARGON2_MEMORY_KIB = 47104
ARGON2_TIME = 1
ARGON2_LANES = 1
KDF_PARAMS = f"argon2id:m={ARGON2_MEMORY_KIB},t={ARGON2_TIME},p={ARGON2_LANES}"
KDF_PARAMS_TOKEN = KDF_PARAMS + ";pepper=pkcs11"
WRAP_VERSION = b"\x01"
SALT_LEN = 16
NONCE_LEN = 12

REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
}

# Files of the keys folder. Private keys are encrypted PEM; raw secrets are
# AES-GCM under scrypt(passphrase).
ROOT_CERT, ROOT_KEY = "root.crt", "root.key"
ISSUING_CERT, ISSUING_KEY = "issuing.crt", "issuing.key"
TSA_CERT, TSA_KEY = "tsa.crt", "tsa.key"
AUDIT_KEY, AUDIT_PUB = "audit.key", "audit.pub"
MASTER_KEY, PEPPER = "storage-master.key", "pepper.key"
PKI_CONFIG = "pki.json"
SECRET_MAGIC = b"SFSECRET1"


@dataclass(frozen=True)
class KeyMaterial:
    """The service's key material, loaded once at start from the keys folder."""

    root_cert: x509.Certificate
    issuing_cert: x509.Certificate
    issuing_key: PrivateKey = field(repr=False)
    tsa_cert: x509.Certificate
    tsa_key: rsa.RSAPrivateKey = field(repr=False)
    audit_key: Ed25519PrivateKey = field(repr=False)
    master_key: bytes = field(repr=False)
    pepper: bytes = field(repr=False)
    # CRL distribution points and AIA URLs of new certificates: {base_url}/pki/...
    base_url: str | None = None
    # Only used to sign the root CRL; None where the root key is kept offline.
    root_key: PrivateKey | None = field(default=None, repr=False)
    # The PKCS#11 token holding the issuing CA key, the TSA key and the pepper
    # secret; None when they are files in the keys folder.
    token: hsm.Token | None = None

    @property
    def kdf_params(self) -> str:
        """The PIN key-derivation new wraps use: the token's pepper when there is one."""
        return KDF_PARAMS_TOKEN if self.token is not None else KDF_PARAMS


# ---------------------------------------------------------------- keys folder


def write_private(path: Path, data: bytes) -> None:
    # O_EXCL: never silently overwrite key material that appeared meanwhile.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _pem_key(key: PrivateKey | Ed25519PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _secret_kek(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase)


def _seal_secret(secret: bytes, passphrase: bytes, purpose: str) -> bytes:
    salt, nonce = os.urandom(SALT_LEN), os.urandom(NONCE_LEN)
    # The purpose is authenticated so that the master key and the pepper files
    # cannot be swapped for one another.
    sealed = AESGCM(_secret_kek(passphrase, salt)).encrypt(nonce, secret, purpose.encode())
    return SECRET_MAGIC + salt + nonce + sealed


def _open_secret(path: Path, passphrase: bytes, purpose: str) -> bytes:
    blob = path.read_bytes()
    if not blob.startswith(SECRET_MAGIC):
        raise ConfigurationError(f"{path.name} in the keys folder is not a signflow secret file")
    body = blob[len(SECRET_MAGIC) :]
    salt, nonce, sealed = (
        body[:SALT_LEN],
        body[SALT_LEN : SALT_LEN + NONCE_LEN],
        body[SALT_LEN + NONCE_LEN :],
    )
    try:
        return AESGCM(_secret_kek(passphrase, salt)).decrypt(nonce, sealed, purpose.encode())
    except InvalidTag as exc:
        raise ConfigurationError(
            f"cannot decrypt {path.name}: wrong keys passphrase or damaged file"
        ) from exc


def _load_pem_key(path: Path, passphrase: bytes) -> object:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot decrypt {path.name}: wrong keys passphrase or damaged file"
        ) from exc


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise ConfigurationError(f"{path.name} in the keys folder is not a certificate") from exc


def _name(common_name: str, *, serial_number: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if serial_number:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "signflow"))
    return x509.Name(attrs)


def _url(base_url: str, leaf: str) -> str:
    return f"{base_url.rstrip('/')}/pki/{leaf}"


def ca_links(base_url: str, parent: str) -> list[x509.ExtensionType]:
    """CRL distribution point and AIA caIssuers of the CA named `parent`."""
    return [
        x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(_url(base_url, f"{parent}.crl"))],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        ),
        x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(_url(base_url, f"{parent}.crt")),
                )
            ]
        ),
    ]


def _key_usage(*, signing: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=signing,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    extensions: Iterable[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # A few minutes of slack for relying parties whose clock is slightly behind.
        .not_valid_before(not_before - timedelta(minutes=5))
        .not_valid_after(
            min(not_after, issuer_cert.not_valid_after_utc) if issuer_cert else not_after
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    issuer_public = issuer_key.public_key()
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _check_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < 8:
        raise ConfigurationError("the keys passphrase must be at least 8 bytes long")


def init_keys(
    keys_path: Path,
    *,
    passphrase: bytes,
    now: datetime,
    base_url: str,
    token: hsm.Token | None = None,
) -> bool:
    """Create whatever is missing in `keys_path`; return False (and change nothing)
    when everything already exists. Existing pieces are loaded (so the passphrase
    must be right) and must chain with the new ones.

    With a `token`, a missing issuing CA key, TSA key or pepper is created in the
    token instead of the keys folder (the certificates stay in the folder)."""
    _check_passphrase(passphrase)
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError("the PKI base URL must start with http:// or https://")
    keys_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = False

    def pair(cert_name: str, key_name: str, label: str | None = None) -> tuple[bool, bool]:
        has_cert = (keys_path / cert_name).exists()
        has_key = (keys_path / key_name).exists() or (
            token is not None and label is not None and token.has_object(label)
        )
        if has_cert != has_key:
            raise ConfigurationError(
                f"keys folder is inconsistent: {cert_name} and {key_name} "
                "must both exist or neither"
            )
        return has_cert, has_key

    config_path = keys_path / PKI_CONFIG
    if not config_path.exists():
        write_private(config_path, json.dumps({"base_url": base_url}).encode())
        created = True
    base_url = _read_config(keys_path).get("base_url") or base_url

    if pair(ROOT_CERT, ROOT_KEY)[0]:
        root_cert = _load_cert(keys_path / ROOT_CERT)
        root_key = _as_ca_key(_load_pem_key(keys_path / ROOT_KEY, passphrase), ROOT_KEY)
    else:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_cert = _issue(
            subject=_name("signflow Root CA"),
            public_key=root_key.public_key(),
            issuer_cert=None,
            issuer_key=root_key,
            not_before=now,
            not_after=now + timedelta(days=20 * 365),
            extensions=[
                (x509.BasicConstraints(ca=True, path_length=1), True),
                (_key_usage(ca=True), True),
            ],
        )
        write_private(keys_path / ROOT_KEY, _pem_key(root_key, passphrase))
        write_private(keys_path / ROOT_CERT, _cert_pem(root_cert))
        created = True

    if pair(ISSUING_CERT, ISSUING_KEY, hsm.ISSUING_KEY_LABEL)[0]:
        issuing_cert = _load_cert(keys_path / ISSUING_CERT)
        issuing_key = _service_key(
            keys_path, ISSUING_KEY, hsm.ISSUING_KEY_LABEL, issuing_cert, passphrase, token
        )
    else:
        issuing_key = ec.generate_private_key(ec.SECP256R1())
        issuing_cert = _issue(
            subject=_name("signflow Issuing CA"),
            public_key=issuing_key.public_key(),
            issuer_cert=root_cert,
            issuer_key=root_key,
            not_before=now,
            not_after=now + timedelta(days=10 * 365),
            extensions=[
                (x509.BasicConstraints(ca=True, path_length=0), True),
                (_key_usage(ca=True), True),
                *((ext, False) for ext in ca_links(base_url, "root")),
            ],
        )
        _store_service_key(keys_path, ISSUING_KEY, hsm.ISSUING_KEY_LABEL, issuing_key,
                           passphrase, token)
        write_private(keys_path / ISSUING_CERT, _cert_pem(issuing_cert))
        created = True
    _check_issued_by(issuing_cert, root_cert, ISSUING_CERT)

    if not pair(TSA_CERT, TSA_KEY, hsm.TSA_KEY_LABEL)[0]:
        # RSA: pyHanko's token builder and most TSA clients expect RSA TSAs.
        tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        tsa_cert = _issue(
            subject=_name("signflow Time Stamping Authority"),
            public_key=tsa_key.public_key(),
            issuer_cert=issuing_cert,
            issuer_key=issuing_key,
            not_before=now,
            not_after=now + TSA_VALIDITY,
            extensions=[
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (_key_usage(signing=True), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
                *((ext, False) for ext in ca_links(base_url, "issuing")),
            ],
        )
        _store_service_key(keys_path, TSA_KEY, hsm.TSA_KEY_LABEL, tsa_key, passphrase, token)
        write_private(keys_path / TSA_CERT, _cert_pem(tsa_cert))
        created = True

    if not (keys_path / AUDIT_KEY).exists():
        audit_key = Ed25519PrivateKey.generate()
        write_private(keys_path / AUDIT_KEY, _pem_key(audit_key, passphrase))
        if (keys_path / AUDIT_PUB).exists():
            (keys_path / AUDIT_PUB).unlink()
        write_private(
            keys_path / AUDIT_PUB,
            audit_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        created = True

    if token is not None and not token.has_object(hsm.PEPPER_KEY_LABEL):
        token.generate_hmac_key(hsm.PEPPER_KEY_LABEL)
        created = True
    for filename, purpose in ((MASTER_KEY, "storage-master-key"), (PEPPER, "pin-pepper")):
        if filename == PEPPER and token is not None:
            continue
        if not (keys_path / filename).exists():
            write_private(
                keys_path / filename, _seal_secret(secrets.token_bytes(32), passphrase, purpose)
            )
            created = True
    return created


def _store_service_key(
    keys_path: Path,
    filename: str,
    label: str,
    key: PrivateKey,
    passphrase: bytes,
    token: hsm.Token | None,
) -> None:
    if token is None:
        write_private(keys_path / filename, _pem_key(key, passphrase))
    else:
        # Generated in memory only long enough to be imported: it never touches the disk.
        token.import_private_key(label, key)


def _token_key(token: hsm.Token, label: str, cert: x509.Certificate) -> PrivateKey:
    """The token's key `label`, checked to be the private half of `cert`."""
    public = cert.public_key()
    key: PrivateKey
    challenge = b"signflow token key check " + os.urandom(16)
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            key = token.ec_key(label, public)
            public.verify(key.sign(challenge, ec.ECDSA(hashes.SHA256())), challenge,
                          ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            key = token.rsa_key(label, public)
            public.verify(key.sign(challenge, padding.PKCS1v15(), hashes.SHA256()), challenge,
                          padding.PKCS1v15(), hashes.SHA256())
        else:
            raise ConfigurationError(f"token key {label!r}: unsupported certificate key type")
    except InvalidSignature as exc:
        raise ConfigurationError(
            f"token key {label!r} does not match the certificate in the keys folder"
        ) from exc
    return key


def _service_key(
    keys_path: Path,
    filename: str,
    label: str,
    cert: x509.Certificate,
    passphrase: bytes,
    token: hsm.Token | None,
) -> PrivateKey:
    """A service key from the keys folder or, with a token, from the token.

    Both at once is refused: a copy left on disk defeats the token."""
    on_disk = (keys_path / filename).is_file()
    if token is not None:
        if on_disk:
            raise ConfigurationError(
                f"{filename} is still in the keys folder although a PKCS#11 token is "
                "configured: run `signflow pki hsm-init` to move it into the token"
            )
        return _token_key(token, label, cert)
    key = _as_ca_key(_load_pem_key(keys_path / filename, passphrase), filename)
    if key.public_key() != cert.public_key():
        raise ConfigurationError(f"{filename} does not match its certificate")
    return key


def migrate_to_token(keys_path: Path, *, passphrase: bytes, token: hsm.Token) -> list[str]:
    """Move the issuing CA key and the TSA key from the keys folder into `token`
    (non-extractable), create the token's pepper secret, and delete the key files.

    The certificates do not change, so every certificate and signature issued
    so far stays valid. pepper.key stays: credentials wrapped with it keep
    working and move to the token's pepper at their next PIN change.
    Returns what was moved or created; idempotent."""
    done: list[str] = []
    for cert_name, filename, label in (
        (ISSUING_CERT, ISSUING_KEY, hsm.ISSUING_KEY_LABEL),
        (TSA_CERT, TSA_KEY, hsm.TSA_KEY_LABEL),
    ):
        path = keys_path / filename
        if not path.is_file():
            continue
        cert = _load_cert(keys_path / cert_name)
        key = _as_ca_key(_load_pem_key(path, passphrase), filename)
        if key.public_key() != cert.public_key():
            raise ConfigurationError(f"{filename} does not match {cert_name}")
        if not token.has_object(label):
            token.import_private_key(label, key)
        # Only delete once the token has proven it signs for this certificate.
        _token_key(token, label, cert)
        path.unlink()
        done.append(f"{filename} -> token key {label}")
    if not token.has_object(hsm.PEPPER_KEY_LABEL):
        token.generate_hmac_key(hsm.PEPPER_KEY_LABEL)
        done.append(f"token pepper secret {hsm.PEPPER_KEY_LABEL}")
    return done


def issue_tsa_certificate(
    keys: KeyMaterial,
    public_key: rsa.RSAPublicKey,
    *,
    now: datetime,
    validity: timedelta = TSA_VALIDITY,
) -> x509.Certificate:
    """A TSA certificate (EKU timeStamping, critical, as RFC 3161 requires) for
    `public_key`, issued by the issuing CA (whose key may be on the token)."""
    if not keys.base_url:
        raise ConfigurationError("the PKI base URL is not configured")
    return _issue(
        subject=_name("signflow Time Stamping Authority"),
        public_key=public_key,
        issuer_cert=keys.issuing_cert,
        issuer_key=keys.issuing_key,
        not_before=now,
        not_after=now + validity,
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(signing=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
            *((ext, False) for ext in ca_links(keys.base_url, "issuing")),
        ],
    )


def renew_tsa_certificate(keys_path: Path, keys: KeyMaterial, *, now: datetime) -> x509.Certificate:
    """A new TSA certificate for the same TSA key (file or token), valid from `now`.

    Archive timestamps only extend a document's life if their TSA certificate
    outlives the previous one. The old certificate is kept as
    tsa-<serial>.crt: earlier tokens still name it. Reload the keys afterwards."""
    old = keys.tsa_cert
    certificate = issue_tsa_certificate(keys, keys.tsa_key.public_key(), now=now)
    if certificate.not_valid_after_utc <= old.not_valid_after_utc:
        raise ConfigurationError(
            "a new TSA certificate would not outlive the current one: "
            "the issuing CA expires first and must be renewed"
        )
    archived = keys_path / f"tsa-{old.serial_number:x}.crt"
    if not archived.exists():
        write_private(archived, _cert_pem(old))
    staged = keys_path / (TSA_CERT + ".new")
    staged.unlink(missing_ok=True)
    write_private(staged, _cert_pem(certificate))
    # Atomic: a crash leaves either the old certificate or the new one.
    staged.replace(keys_path / TSA_CERT)
    return certificate


def _read_config(keys_path: Path) -> dict[str, str]:
    try:
        loaded = json.loads((keys_path / PKI_CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: v for k, v in loaded.items() if isinstance(v, str)}


def _as_ca_key(key: object, filename: str) -> PrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigurationError(f"{filename} is not an EC or RSA private key")
    return key


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, filename: str) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigurationError(
            f"keys folder is inconsistent: {filename} was not issued by its parent CA"
        ) from exc


def load_keys(
    keys_path: Path,
    *,
    passphrase: bytes,
    base_url: str | None = None,
    token: hsm.Token | None = None,
) -> KeyMaterial:
    """Load (and decrypt) the key material; `base_url` overrides the one recorded at init.

    With a `token`, the issuing CA key, the TSA key and the pepper secret are
    the token's (logged in now, once for the process)."""
    required: tuple[str, ...] = (ROOT_CERT, ISSUING_CERT, TSA_CERT, AUDIT_KEY, MASTER_KEY)
    if token is None:
        required += (ISSUING_KEY, TSA_KEY, PEPPER)
    missing = [name for name in required if not (keys_path / name).is_file()]
    if missing:
        raise ConfigurationError(
            f"keys folder {keys_path} is incomplete (missing {', '.join(missing)}): "
            "run `signflow init`"
        )
    root_cert = _load_cert(keys_path / ROOT_CERT)
    issuing_cert = _load_cert(keys_path / ISSUING_CERT)
    tsa_cert = _load_cert(keys_path / TSA_CERT)
    _check_issued_by(issuing_cert, root_cert, ISSUING_CERT)
    _check_issued_by(tsa_cert, issuing_cert, TSA_CERT)
    issuing_key = _service_key(
        keys_path, ISSUING_KEY, hsm.ISSUING_KEY_LABEL, issuing_cert, passphrase, token
    )
    tsa_key = _service_key(keys_path, TSA_KEY, hsm.TSA_KEY_LABEL, tsa_cert, passphrase, token)
    if not isinstance(tsa_key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{TSA_KEY} is not an RSA private key")
    if token is not None:
        # Fail at start, not at the first physician's signature.
        token.hmac_sha256(hsm.PEPPER_KEY_LABEL, b"signflow pepper check")
    audit_key = _load_pem_key(keys_path / AUDIT_KEY, passphrase)
    if not isinstance(audit_key, Ed25519PrivateKey):
        raise ConfigurationError(f"{AUDIT_KEY} is not an Ed25519 private key")
    if issuing_key.public_key() != issuing_cert.public_key():
        raise ConfigurationError(f"{ISSUING_KEY} does not match {ISSUING_CERT}")
    if tsa_key.public_key() != tsa_cert.public_key():
        raise ConfigurationError(f"{TSA_KEY} does not match {TSA_CERT}")
    return KeyMaterial(
        root_cert=root_cert,
        issuing_cert=issuing_cert,
        issuing_key=issuing_key,
        tsa_cert=tsa_cert,
        tsa_key=tsa_key,
        audit_key=audit_key,
        master_key=_open_secret(keys_path / MASTER_KEY, passphrase, "storage-master-key"),
        # With a token, pepper.key only serves credentials wrapped before the move.
        pepper=_open_secret(keys_path / PEPPER, passphrase, "pin-pepper")
        if (keys_path / PEPPER).is_file()
        else b"",
        base_url=base_url or _read_config(keys_path).get("base_url"),
        root_key=_as_ca_key(_load_pem_key(keys_path / ROOT_KEY, passphrase), ROOT_KEY)
        if (keys_path / ROOT_KEY).is_file()
        else None,
        token=token,
    )


def ca_certificate_der(keys: KeyMaterial, issuer: str) -> bytes:
    """DER of the 'root' or 'issuing' CA certificate (served at /pki/<issuer>.crt)."""
    if issuer == "root":
        return keys.root_cert.public_bytes(serialization.Encoding.DER)
    if issuer == "issuing":
        return keys.issuing_cert.public_bytes(serialization.Encoding.DER)
    raise NotFound("no such certificate authority")


# ---------------------------------------------------------------- PIN and credentials


def validate_pin_policy(pin: str) -> None:
    """Refuse PINs that a colleague or a thief guesses in a few tries."""
    if len(pin) < PIN_MIN_LENGTH:
        raise InvalidInput(f"the signing PIN must have at least {PIN_MIN_LENGTH} characters")
    if len(set(pin)) == 1:
        raise InvalidInput("the signing PIN must not repeat a single character")
    if pin.isdigit():
        steps = {int(b) - int(a) for a, b in zip(pin, pin[1:], strict=False)}
        if steps in ({1}, {-1}, {-9, 1}, {9, -1}):
            raise InvalidInput("the signing PIN must not be a sequence like 123456")
        if len(set(pin)) <= 2 and len(pin) <= 8:
            raise InvalidInput("the signing PIN is too simple")
    if pin.lower() in {"password", "azerty", "qwerty", "abcdef", "motdepasse"}:
        raise InvalidInput("the signing PIN is too common")


def _pepper(keys: KeyMaterial, salt: bytes, params: str) -> bytes:
    if params == KDF_PARAMS_TOKEN:
        if keys.token is None:
            raise ConfigurationError(
                "this signing credential is bound to the PKCS#11 token, which is not configured"
            )
        # Per-credential pepper from the token: the token's secret never leaves it,
        # so no file or dump replaces the token.
        return keys.token.hmac_sha256(hsm.PEPPER_KEY_LABEL, b"signflow pin pepper v1|" + salt)
    if params == KDF_PARAMS:
        if not keys.pepper:
            raise ConfigurationError(
                "this signing credential needs pepper.key, which is not in the keys folder"
            )
        return keys.pepper
    raise ConfigurationError("unsupported PIN key-derivation parameters")


def _kek(pin: str, salt: bytes, keys: KeyMaterial, params: str) -> bytes:
    pepper = _pepper(keys, salt, params)
    stretched = hash_secret_raw(
        secret=pin.encode(),
        salt=salt,
        time_cost=ARGON2_TIME,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_LANES,
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


def _wrap(private_key: PrivateKey, pin: str, keys: KeyMaterial, serial: str) -> bytes:
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
    wrapped: bytes, pin: str, keys: KeyMaterial, serial: str, params: str
) -> PrivateKey | None:
    """The private key, or None when the PIN (or pepper) is wrong."""
    if not wrapped.startswith(WRAP_VERSION) or len(wrapped) < 1 + SALT_LEN + NONCE_LEN + 16:
        raise ConfigurationError("signing credential is damaged")
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
        raise ConfigurationError("signing credential holds an unsupported key type")
    return key


def credential_certificate(credential: SigningCredential) -> x509.Certificate:
    return x509.load_pem_x509_certificate(credential.certificate_pem.encode())


def enrol(
    session: Session,
    keys: KeyMaterial,
    user: User,
    pin: str,
    *,
    now: datetime,
    algorithm: str = DEFAULT_ALGORITHM,
) -> SigningCredential:
    """New key pair and certificate for `user`, key wrapped under PIN + pepper.

    Any earlier credential of the user is revoked (superseded). Only flushes."""
    if algorithm not in ALGORITHMS:
        raise InvalidInput(f"unknown key algorithm {algorithm!r} (use 'ec' or 'rsa')")
    if not keys.base_url:
        raise ConfigurationError("the PKI base URL is not configured")
    if not user.display_name.strip():
        raise InvalidInput("the physician needs a display name before enrolment")
    validate_pin_policy(pin)
    private_key: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=3072)
    )
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(signing=True), True),
        (
            # emailProtection: NSS (poppler, Firefox) judges PDF signers as e-mail signers.
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.EMAIL_PROTECTION,
                    DOCUMENT_SIGNING_EKU,
                    ADOBE_AUTHENTIC_DOCUMENTS_EKU,
                ]
            ),
            False,
        ),
        *((ext, False) for ext in ca_links(keys.base_url, "issuing")),
    ]
    # RFC822Name is ASCII only (internationalised addresses need SmtpUTF8Mailbox,
    # which few validators read): such addresses are left out of the certificate.
    if user.email and user.email.isascii():
        extensions.append((x509.SubjectAlternativeName([x509.RFC822Name(user.email)]), False))
    professional_id = (user.professional_id or "").strip()
    certificate = _issue(
        subject=_name(
            user.display_name.strip(),
            serial_number=f"RPPS:{professional_id}" if professional_id else None,
        ),
        public_key=private_key.public_key(),
        issuer_cert=keys.issuing_cert,
        issuer_key=keys.issuing_key,
        not_before=now,
        not_after=now + CERT_VALIDITY,
        extensions=extensions,
    )
    serial = format(certificate.serial_number, "x")
    for previous in session.scalars(
        select(SigningCredential).where(
            SigningCredential.user_id == user.id, SigningCredential.revoked_at.is_(None)
        )
    ):
        revoke(session, previous, reason="superseded", now=now)
    credential = SigningCredential(
        user_id=user.id,
        algorithm=algorithm,
        certificate_pem=_cert_pem(certificate).decode(),
        serial=serial,
        not_after=certificate.not_valid_after_utc,
        wrapped_key=_wrap(private_key, pin, keys, serial),
        kdf_params=keys.kdf_params,
        failed_pins=0,
        blocked_at=None,
        revoked_at=None,
        created_at=now,
    )
    session.add(credential)
    session.flush()
    return credential


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
            "your signing certificate is revoked: ask an administrator to re-enrol you",
            code="certificate-revoked",
        )
    if now >= credential.not_after:
        raise CredentialBlocked(
            "your signing certificate has expired: ask an administrator to re-enrol you",
            code="certificate-expired",
        )
    if credential.blocked_at is not None:
        raise CredentialBlocked(
            "your signing key is blocked after too many wrong PINs: "
            "ask an administrator to re-enrol you"
        )


def unlock(
    session: Session,
    keys: KeyMaterial,
    credential: SigningCredential,
    pin: str,
    *,
    now: datetime,
) -> PrivateKey:
    """The physician's private key, for this one signature.

    A wrong PIN is counted (flushed) and raises WrongPin, or CredentialBlocked at
    the MAX_PIN_TRIES-th: the caller must COMMIT even when this raises, or the
    counter is rolled back and the PIN can be brute-forced."""
    check_usable(credential, now=now)
    key = _unwrap(
        credential.wrapped_key, pin, keys, credential.serial, credential.kdf_params
    )
    if key is None:
        # Atomic increment: two concurrent guesses both count.
        session.execute(
            update(SigningCredential)
            .where(SigningCredential.id == credential.id)
            .values(failed_pins=SigningCredential.failed_pins + 1)
            .execution_options(synchronize_session=False)
        )
        session.refresh(credential, ["failed_pins"])
        if credential.failed_pins >= MAX_PIN_TRIES:
            credential.blocked_at = now
            session.flush()
            raise CredentialBlocked(
                "wrong PIN: your signing key is now blocked; ask an administrator to re-enrol you"
            )
        session.flush()
        left = MAX_PIN_TRIES - credential.failed_pins
        raise WrongPin(
            f"wrong PIN: {left} {'try' if left == 1 else 'tries'} left before your signing key "
            "is blocked"
        )
    if credential.failed_pins:
        credential.failed_pins = 0
        session.flush()
    if key.public_key() != credential_certificate(credential).public_key():
        raise ConfigurationError("signing credential does not match its certificate")
    return key


def change_pin(
    session: Session,
    keys: KeyMaterial,
    credential: SigningCredential,
    old_pin: str,
    new_pin: str,
    *,
    now: datetime,
) -> None:
    """Re-wrap the key under `new_pin`; the old PIN is checked (and counted) by unlock."""
    validate_pin_policy(new_pin)
    if new_pin == old_pin:
        raise InvalidInput("the new PIN must differ from the old one")
    key = unlock(session, keys, credential, old_pin, now=now)
    credential.wrapped_key = _wrap(key, new_pin, keys, credential.serial)
    credential.kdf_params = keys.kdf_params
    session.flush()


def revoke(session: Session, credential: SigningCredential, *, reason: str, now: datetime) -> None:
    """Revoke (idempotent: the first revocation date and reason stay)."""
    if reason not in REVOCATION_REASONS:
        raise InvalidInput(f"unknown revocation reason {reason!r}")
    if credential.revoked_at is not None:
        return
    credential.revoked_at = now
    credential.revocation_reason = reason
    session.flush()


# ---------------------------------------------------------------- CRLs


def _crl_setting(session: Session, issuer: str) -> Setting | None:
    return session.scalars(
        select(Setting).where(Setting.name == f"crl.{issuer}").with_for_update()
    ).first()


def crl(session: Session, keys: KeyMaterial, *, issuer: str, now: datetime) -> bytes:
    """DER CRL of the 'issuing' CA (revoked signing credentials) or of the 'root' CA.

    The last CRL is kept in the `Setting` table (`crl.<issuer>`) with its number
    and the digest of the revocations it lists: it is returned as is until the
    revocations change or it is CRL_REFRESH old, then a new one with the next
    CRLNumber is issued. Only flushes."""
    ca_key: PrivateKey | None
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
        raise NotFound("no such certificate authority")
    state_digest = hashlib.sha256(
        json.dumps(
            [ca_cert.fingerprint(hashes.SHA256()).hex()]
            + [[s, d.isoformat(), r] for s, d, r in revoked]
        ).encode()
    ).hexdigest()

    setting = _crl_setting(session, issuer)
    stored: dict[str, object] = {}
    if setting is not None:
        try:
            loaded = json.loads(setting.value)
            stored = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            stored = {}
    this_update_raw = stored.get("this_update")
    der_hex = stored.get("der")
    if (
        stored.get("state") == state_digest
        and isinstance(this_update_raw, str)
        and isinstance(der_hex, str)
    ):
        this_update = datetime.fromisoformat(this_update_raw)
        if this_update <= now < this_update + CRL_REFRESH:
            return bytes.fromhex(der_hex)

    previous_number = stored.get("number")
    number = (previous_number if isinstance(previous_number, int) else 0) + 1
    if ca_key is None:
        raise ConfigurationError("the root CA key is not loaded, so the root CRL cannot be issued")
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
