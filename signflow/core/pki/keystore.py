"""The service keys folder: root, issuing CA, TSA and audit keys, the storage
master key and the PIN pepper, created, loaded and moved to a PKCS#11 token.

With a PKCS#11 token (signflow.core.pki.hsm), the issuing CA key and the TSA key
live on the token, and the pepper is replaced by an HMAC computed on the token
with a non-extractable secret: the KEK then needs the PIN, the database row
and the token itself. Each credential records which pepper wraps it in its
`kdf_params`, so credentials wrapped before a move to the token keep working
(with pepper.key) until their next PIN change re-wraps them.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from signflow.core.errors import ConfigurationError, NotFound
from signflow.core.i18n import N_
from signflow.core.pki import certificates as certs
from signflow.core.pki import hsm as hsm
from signflow.core.pki.certificates import PrivateKey
from signflow.core.pki.keyfiles import (
    AUDIT_KEY,
    AUDIT_PUB,
    ISSUING_CERT,
    ISSUING_KEY,
    MASTER_KEY,
    PEPPER,
    PKI_CONFIG,
    ROOT_CERT,
    ROOT_KEY,
    TSA_CERT,
    TSA_KEY,
    as_ca_key,
    check_issued_by,
    check_passphrase,
    load_cert,
    load_pem_key,
    open_secret,
    pem_key,
    read_config,
    seal_secret,
    write_private,
)

# argon2id, 46 MiB / t=1 / p=1: OWASP's example setting, ~45 ms here.
ARGON2_MEMORY_KIB = 47104
ARGON2_TIME = 1
ARGON2_LANES = 1
KDF_PARAMS = f"argon2id:m={ARGON2_MEMORY_KIB},t={ARGON2_TIME},p={ARGON2_LANES}"
KDF_PARAMS_TOKEN = KDF_PARAMS + ";pepper=pkcs11"


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
    check_passphrase(passphrase)
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(N_("the PKI base URL must start with http:// or https://"))
    keys_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = False

    def pair(cert_name: str, key_name: str, label: str | None = None) -> tuple[bool, bool]:
        has_cert = (keys_path / cert_name).exists()
        has_key = (keys_path / key_name).exists() or (
            token is not None and label is not None and token.has_object(label)
        )
        if has_cert != has_key:
            raise ConfigurationError(
                N_("keys folder is inconsistent: %(cert_name)s and %(key_name)s must both "
                   "exist or neither"), params={'cert_name': cert_name, 'key_name': key_name}
            )
        return has_cert, has_key

    config_path = keys_path / PKI_CONFIG
    if not config_path.exists():
        write_private(config_path, json.dumps({"base_url": base_url}).encode())
        created = True
    base_url = read_config(keys_path).get("base_url") or base_url

    if pair(ROOT_CERT, ROOT_KEY)[0]:
        root_cert = load_cert(keys_path / ROOT_CERT)
        root_key = as_ca_key(load_pem_key(keys_path / ROOT_KEY, passphrase), ROOT_KEY)
    else:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_cert = certs.issue_ca("signflow Root CA", root_key.public_key(), issuer_cert=None,
                                   issuer_key=root_key, now=now, years=20, path_length=1)
        write_private(keys_path / ROOT_KEY, pem_key(root_key, passphrase))
        write_private(keys_path / ROOT_CERT, certs.cert_pem(root_cert))
        created = True

    if pair(ISSUING_CERT, ISSUING_KEY, hsm.ISSUING_KEY_LABEL)[0]:
        issuing_cert = load_cert(keys_path / ISSUING_CERT)
        issuing_key = _service_key(
            keys_path, ISSUING_KEY, hsm.ISSUING_KEY_LABEL, issuing_cert, passphrase, token
        )
    else:
        issuing_key = ec.generate_private_key(ec.SECP256R1())
        issuing_cert = certs.issue_ca("signflow Issuing CA", issuing_key.public_key(),
                                      issuer_cert=root_cert, issuer_key=root_key, now=now,
                                      years=10, path_length=0,
                                      links=certs.ca_links(base_url, "root"))
        _store_service_key(keys_path, ISSUING_KEY, hsm.ISSUING_KEY_LABEL, issuing_key,
                           passphrase, token)
        write_private(keys_path / ISSUING_CERT, certs.cert_pem(issuing_cert))
        created = True
    check_issued_by(issuing_cert, root_cert, ISSUING_CERT)

    if not pair(TSA_CERT, TSA_KEY, hsm.TSA_KEY_LABEL)[0]:
        # RSA: pyHanko's token builder and most TSA clients expect RSA TSAs.
        tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        tsa_cert = certs.issue(
            subject=certs.subject_name("signflow Time Stamping Authority"),
            public_key=tsa_key.public_key(),
            issuer_cert=issuing_cert,
            issuer_key=issuing_key,
            not_before=now,
            not_after=now + certs.TSA_VALIDITY,
            extensions=[
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (certs.key_usage(signing=True), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
                *((ext, False) for ext in certs.ca_links(base_url, "issuing")),
            ],
        )
        _store_service_key(keys_path, TSA_KEY, hsm.TSA_KEY_LABEL, tsa_key, passphrase, token)
        write_private(keys_path / TSA_CERT, certs.cert_pem(tsa_cert))
        created = True

    if not (keys_path / AUDIT_KEY).exists():
        audit_key = Ed25519PrivateKey.generate()
        write_private(keys_path / AUDIT_KEY, pem_key(audit_key, passphrase))
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
                keys_path / filename, seal_secret(secrets.token_bytes(32), passphrase, purpose)
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
        write_private(keys_path / filename, pem_key(key, passphrase))
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
            raise ConfigurationError(N_("token key %(label)s: unsupported certificate key type"),
                                     params={'label': repr(label)})
    except InvalidSignature as exc:
        raise ConfigurationError(
            N_("token key %(label)s does not match the certificate in the keys folder"),
               params={'label': repr(label)}
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
                N_("%(filename)s is still in the keys folder although a PKCS#11 token is "
                   "configured: run `signflow pki hsm-init` to move it into the token"),
                       params={'filename': filename}
            )
        return _token_key(token, label, cert)
    key = as_ca_key(load_pem_key(keys_path / filename, passphrase), filename)
    if key.public_key() != cert.public_key():
        raise ConfigurationError(N_("%(filename)s does not match its certificate"),
                                 params={'filename': filename})
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
        cert = load_cert(keys_path / cert_name)
        key = as_ca_key(load_pem_key(path, passphrase), filename)
        if key.public_key() != cert.public_key():
            raise ConfigurationError(N_("%(filename)s does not match %(cert_name)s"),
                                     params={'filename': filename, 'cert_name': cert_name})
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
            N_("keys folder %(keys_path)s is incomplete (missing %(value)s): run `signflow "
               "init`"), params={'keys_path': keys_path, 'value': ', '.join(missing)}
        )
    root_cert = load_cert(keys_path / ROOT_CERT)
    issuing_cert = load_cert(keys_path / ISSUING_CERT)
    tsa_cert = load_cert(keys_path / TSA_CERT)
    check_issued_by(issuing_cert, root_cert, ISSUING_CERT)
    check_issued_by(tsa_cert, issuing_cert, TSA_CERT)
    issuing_key = _service_key(
        keys_path, ISSUING_KEY, hsm.ISSUING_KEY_LABEL, issuing_cert, passphrase, token
    )
    tsa_key = _service_key(keys_path, TSA_KEY, hsm.TSA_KEY_LABEL, tsa_cert, passphrase, token)
    if not isinstance(tsa_key, rsa.RSAPrivateKey):
        raise ConfigurationError(N_("%(tsa_key)s is not an RSA private key"), params={'tsa_key': TSA_KEY})
    if token is not None:
        # Fail at start, not at the first physician's signature.
        token.hmac_sha256(hsm.PEPPER_KEY_LABEL, b"signflow pepper check")
    audit_key = load_pem_key(keys_path / AUDIT_KEY, passphrase)
    if not isinstance(audit_key, Ed25519PrivateKey):
        raise ConfigurationError(N_("%(audit_key)s is not an Ed25519 private key"),
                                 params={'audit_key': AUDIT_KEY})
    if issuing_key.public_key() != issuing_cert.public_key():
        raise ConfigurationError(N_("%(issuing_key)s does not match %(issuing_cert)s"),
                                 params={'issuing_key': ISSUING_KEY, 'issuing_cert': ISSUING_CERT})
    if tsa_key.public_key() != tsa_cert.public_key():
        raise ConfigurationError(N_("%(tsa_key)s does not match %(tsa_cert)s"),
                                 params={'tsa_key': TSA_KEY, 'tsa_cert': TSA_CERT})
    return KeyMaterial(
        root_cert=root_cert,
        issuing_cert=issuing_cert,
        issuing_key=issuing_key,
        tsa_cert=tsa_cert,
        tsa_key=tsa_key,
        audit_key=audit_key,
        master_key=open_secret(keys_path / MASTER_KEY, passphrase, "storage-master-key"),
        # With a token, pepper.key only serves credentials wrapped before the move.
        pepper=open_secret(keys_path / PEPPER, passphrase, "pin-pepper")
        if (keys_path / PEPPER).is_file()
        else b"",
        base_url=base_url or read_config(keys_path).get("base_url"),
        root_key=as_ca_key(load_pem_key(keys_path / ROOT_KEY, passphrase), ROOT_KEY)
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
    raise NotFound(N_("no such certificate authority"))
