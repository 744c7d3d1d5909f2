"""Files of the service keys folder: their names, owner-only writes, passphrase-encrypted
PEM keys, passphrase-sealed secrets, certificates and pki.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from signflow.core.errors import ConfigurationError
from signflow.core.i18n import N_
from signflow.core.pki.certificates import PrivateKey

SALT_LEN = 16
NONCE_LEN = 12


# Files of the keys folder. Private keys are encrypted PEM; raw secrets are
# AES-GCM under scrypt(passphrase).
ROOT_CERT, ROOT_KEY = "root.crt", "root.key"
ISSUING_CERT, ISSUING_KEY = "issuing.crt", "issuing.key"
TSA_CERT, TSA_KEY = "tsa.crt", "tsa.key"
AUDIT_KEY, AUDIT_PUB = "audit.key", "audit.pub"
MASTER_KEY, PEPPER = "storage-master.key", "pepper.key"
PKI_CONFIG = "pki.json"
SECRET_MAGIC = b"SFSECRET1"


def write_private(path: Path, data: bytes) -> None:
    # O_EXCL: never silently overwrite key material that appeared meanwhile.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def pem_key(key: PrivateKey | Ed25519PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _secret_kek(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase)


def seal_secret(secret: bytes, passphrase: bytes, purpose: str) -> bytes:
    salt, nonce = os.urandom(SALT_LEN), os.urandom(NONCE_LEN)
    # The purpose is authenticated so that the master key and the pepper files
    # cannot be swapped for one another.
    sealed = AESGCM(_secret_kek(passphrase, salt)).encrypt(nonce, secret, purpose.encode())
    return SECRET_MAGIC + salt + nonce + sealed


def open_secret(path: Path, passphrase: bytes, purpose: str) -> bytes:
    blob = path.read_bytes()
    if not blob.startswith(SECRET_MAGIC):
        raise ConfigurationError(N_("%(name)s in the keys folder is not a signflow secret file"),
                                 params={'name': path.name})
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
            N_("cannot decrypt %(name)s: wrong keys passphrase or damaged file"), params={'name': path.name}
        ) from exc


def load_pem_key(path: Path, passphrase: bytes) -> object:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            N_("cannot decrypt %(name)s: wrong keys passphrase or damaged file"), params={'name': path.name}
        ) from exc


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise ConfigurationError(N_("%(name)s in the keys folder is not a certificate"),
                                 params={'name': path.name}) from exc


def check_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < 8:
        raise ConfigurationError(N_("the keys passphrase must be at least 8 bytes long"))


def read_config(keys_path: Path) -> dict[str, str]:
    try:
        loaded = json.loads((keys_path / PKI_CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: v for k, v in loaded.items() if isinstance(v, str)}


def as_ca_key(key: object, filename: str) -> PrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigurationError(N_("%(filename)s is not an EC or RSA private key"),
                                 params={'filename': filename})
    return key


def check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, filename: str) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigurationError(
            N_("keys folder is inconsistent: %(filename)s was not issued by its parent CA"),
               params={'filename': filename}
        ) from exc
