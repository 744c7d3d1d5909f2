"""The service seal: the key and certificate with which signflow signs its own
evidence reports ("signflow evidence seal", issued by the issuing CA).

The certificate has the physicians' signing profile (KU digitalSignature +
nonRepudiation, EKU emailProtection + documentSigning + Adobe), because poppler
and NSS judge every PDF signer by that profile. Its files live in the keys
folder next to the other service keys: `seal.key` (PKCS#8, encrypted with the
keys passphrase) and `seal.crt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signflow.core.errors import ConfigurationError
from signflow.core.i18n import N_
from signflow.core.pki import certificates as certs
from signflow.core.pki import keyfiles
from signflow.core.pki import keystore as pki

SEAL_CERT, SEAL_KEY = "seal.crt", "seal.key"
SEAL_NAME = "signflow evidence seal"
# Renewed this long before it expires, so that a report sealed today is not
# sealed by a certificate that relying parties see expire next week.
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class Seal:
    key: certs.PrivateKey = field(repr=False)
    certificate: x509.Certificate


def _issue_seal(
    keys: pki.KeyMaterial, key: ec.EllipticCurvePrivateKey, now: datetime
) -> x509.Certificate:
    if not keys.base_url:
        raise ConfigurationError(N_("the PKI base URL is not configured"))
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, SEAL_NAME),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "signflow"),
                ]
            )
        )
        .issuer_name(keys.issuing_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + certs.CERT_VALIDITY, keys.issuing_cert.not_valid_after_utc))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(keys.issuing_key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.EMAIL_PROTECTION,
                    certs.DOCUMENT_SIGNING_EKU,
                    certs.ADOBE_AUTHENTIC_DOCUMENTS_EKU,
                ]
            ),
            critical=False,
        )
    )
    for extension in certs.ca_links(keys.base_url, "issuing"):
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(keys.issuing_key, hashes.SHA256())


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _still_good(cert: x509.Certificate, keys: pki.KeyMaterial, now: datetime) -> bool:
    return _issued_by(cert, keys.issuing_cert) and now + RENEW_BEFORE < cert.not_valid_after_utc


def ensure_seal(
    keys_path: Path, keys: pki.KeyMaterial, *, passphrase: bytes, now: datetime
) -> bool:
    """Create (or renew) the seal; False, and nothing written, when the current
    one is usable. A replaced seal is kept as seal-<serial>.key/.crt: reports it
    sealed stay verifiable, and its key is not lost."""
    if now.utcoffset() is None:
        raise ConfigurationError(N_("the seal needs an aware time"))
    cert_path, key_path = keys_path / SEAL_CERT, keys_path / SEAL_KEY
    if cert_path.exists() != key_path.exists():
        raise ConfigurationError(
            N_("keys folder is inconsistent: %(seal_cert)s and %(seal_key)s must both exist "
               "or neither"), params={'seal_cert': SEAL_CERT, 'seal_key': SEAL_KEY}
        )
    if cert_path.exists():
        current = load_seal(keys_path, passphrase=passphrase)
        if _still_good(current.certificate, keys, now):
            return False
        retired = format(current.certificate.serial_number, "x")
        key_path.rename(keys_path / f"seal-{retired}.key")
        cert_path.rename(keys_path / f"seal-{retired}.crt")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _issue_seal(keys, key, now)
    # Key first: a crash in between leaves a key without certificate, which
    # load_seal reports, never a certificate whose key is gone.
    keyfiles.write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        ),
    )
    keyfiles.write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    return True


def load_seal(keys_path: Path, *, passphrase: bytes) -> Seal:
    cert_path, key_path = keys_path / SEAL_CERT, keys_path / SEAL_KEY
    if not cert_path.is_file() or not key_path.is_file():
        raise ConfigurationError(
            N_("the evidence seal is missing from the keys folder: run `signflow init`")
        )
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise ConfigurationError(N_("%(seal_cert)s in the keys folder is not a certificate"),
                                 params={'seal_cert': SEAL_CERT}) from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=passphrase)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            N_("cannot decrypt %(seal_key)s: wrong keys passphrase or damaged file"),
               params={'seal_key': SEAL_KEY}
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigurationError(N_("%(seal_key)s holds an unsupported key type"),
                                 params={'seal_key': SEAL_KEY})
    if key.public_key() != certificate.public_key():
        raise ConfigurationError(N_("%(seal_key)s does not match %(seal_cert)s"),
                                 params={'seal_key': SEAL_KEY, 'seal_cert': SEAL_CERT})
    return Seal(key=key, certificate=certificate)
