"""X.509 certificate building for the internal PKI: names, key usages, CA links
and the issuing of one certificate.

Trust chain: root CA (offline in spirit, path length 1) -> issuing CA (path
length 0) -> physicians' signing certificates, the TSA certificate and the seal.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID, ObjectIdentifier

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CERT_VALIDITY = timedelta(days=3 * 365)
TSA_VALIDITY = timedelta(days=5 * 365)
DOCUMENT_SIGNING_EKU = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
ADOBE_AUTHENTIC_DOCUMENTS_EKU = ObjectIdentifier("1.2.840.113583.1.1.5")


# X.509 upper bound of a commonName (RFC 5280 ub-common-name).
CN_MAX = 64
# id-at-name (RFC 5280, ub-name 32768): carries the full name when the CN is cut.
NAME_OID = ObjectIdentifier("2.5.4.41")


def subject_name(common_name: str, *, serial_number: str | None = None) -> x509.Name:
    """CN is limited to 64 (bytes, as cryptography counts): a longer name is cut (ending in "…") and
    the full name goes in the `name` attribute next to it."""
    if len(common_name.encode()) > CN_MAX:
        cut = common_name
        # cryptography counts UTF-8 bytes: cut until the name and "…" (3 bytes) fit.
        while len(cut.encode()) > CN_MAX - 3:
            cut = cut[:-1]
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cut.rstrip() + "…"),
                 x509.NameAttribute(NAME_OID, common_name)]
    else:
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


def key_usage(*, signing: bool = False, ca: bool = False) -> x509.KeyUsage:
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


def issue(
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


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_ca(
    name: str,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    *,
    issuer_cert: x509.Certificate | None,
    issuer_key: PrivateKey,
    now: datetime,
    years: int,
    path_length: int,
    links: Iterable[x509.ExtensionType] = (),
) -> x509.Certificate:
    """A CA certificate: self-signed when `issuer_cert` is None (the root)."""
    return issue(
        subject=subject_name(name),
        public_key=public_key,
        issuer_cert=issuer_cert,
        issuer_key=issuer_key,
        not_before=now,
        not_after=now + timedelta(days=years * 365),
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=path_length), True),
            (key_usage(ca=True), True),
            *((link, False) for link in links),
        ],
    )
