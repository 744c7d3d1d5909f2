"""pyHanko signers over signflow keys: an in-memory `cryptography` key, or a key that
never leaves a PKCS#11 token (calls serialised behind the token lock)."""

from __future__ import annotations

import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.sign import signers
from pyhanko.sign.general import SigningError
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signflow.core.errors import ConfigurationError, ServiceUnavailable, SignflowError
from signflow.core.i18n import N_
from signflow.core.pki import hsm as hsm
from signflow.core.pki.tsa import to_asn1_cert

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | signers.Signer


# PKCS#11 modules are not reliably thread-safe (SoftHSM2 crashed the process
# under 8 threads): every call into a token goes through this one lock, and a
# token is logged in once per process (a second login raises). Both live in hsm.
PKCS11_LOCK = hsm.PKCS11_LOCK


class KeySigner(signers.Signer):
    """pyHanko signer over an already parsed `cryptography` key.

    pyHanko's SimpleSigner re-parses its key for every raw signature (twice per
    PDF); an RSA parse costs ~27 ms of OpenSSL consistency checks."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        certificate: x509.Certificate,
        chain: list[x509.Certificate],
    ) -> None:
        if key.public_key() != certificate.public_key():
            raise ConfigurationError(N_("the signing key does not match its certificate"))
        self._key = key
        super().__init__(
            signing_cert=to_asn1_cert(certificate),
            cert_registry=_cert_store(chain),
        )

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        return self.sign_raw(data, digest_algorithm)

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        algorithm = _HASHES.get(digest_algorithm.lower())
        if algorithm is None:
            raise SigningError(f"unsupported digest {digest_algorithm}")
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(algorithm))
        return self._key.sign(data, padding.PKCS1v15(), algorithm)


def _cert_store(chain: list[x509.Certificate]) -> SimpleCertificateStore:
    store = SimpleCertificateStore()  # type: ignore[no-untyped-call]
    for cert in chain:
        store.register(to_asn1_cert(cert))
    return store


class LockedPKCS11Signer(signers.Signer):
    """Serialises every call into the token behind PKCS11_LOCK."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        # Its asn1crypto certificate objects are shared by every signature made
        # with this signer, and asn1crypto mutates them while packaging a CMS
        # (1 run in 3 failed with 6 threads): one signature at a time per signer.
        self.in_use = threading.Lock()
        super().__init__(
            signing_cert=inner.signing_cert,
            cert_registry=inner.cert_registry,
            signature_mechanism=inner.signature_mechanism,
        )

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        with PKCS11_LOCK:
            result: bytes = await self._inner.async_sign_raw(data, digest_algorithm, dry_run)
            return result

    def get_signature_mechanism_for_digest(self, digest_algorithm: str | None) -> Any:
        return self._inner.get_signature_mechanism_for_digest(digest_algorithm)


def open_pkcs11_signer(
    module_path: str,
    token_label: str,
    pin: str,
    key_label: str,
    *,
    cert_label: str | None = None,
    chain: list[x509.Certificate] | None = None,
) -> signers.Signer:
    """A pyHanko signer whose key never leaves a PKCS#11 token (HSM, SoftHSM2).

    Shares the process's one logged-in session on that token (hsm.session_for);
    open it after a worker forks, never before. A missing token or a wrong PIN
    is a ConfigurationError."""
    from pyhanko.sign.pkcs11 import PKCS11Signer

    try:
        with PKCS11_LOCK:
            session = hsm.session_for(hsm.TokenConfig(module_path, token_label, pin))
            inner = PKCS11Signer(
                session,
                key_label=key_label,
                cert_label=cert_label or key_label,
                ca_chain=[to_asn1_cert(c) for c in chain or []],
                # SoftHSM2 only offers raw ECDSA; hashing happens in Python.
                use_raw_mechanism=True,
            )
            # Fetch the certificate now, under the lock, not lazily in a thread.
            _ = inner.signing_cert
            return LockedPKCS11Signer(inner)
    except SignflowError:
        raise
    except Exception as exc:
        raise ServiceUnavailable(N_("signing token %(token_label)s is unavailable"),
                                 params={'token_label': repr(token_label)}) from exc


def close_pkcs11_sessions() -> None:
    hsm.close_sessions()
