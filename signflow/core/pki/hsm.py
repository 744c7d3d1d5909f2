"""Service keys held in a PKCS#11 token (an HSM in production, SoftHSM2 in tests).

What may live on the token: the issuing CA key, the TSA key (both usable
through `cryptography`'s key interfaces, so certificates, CRLs and timestamp
tokens are built by the usual code and only the signature is computed by the
token) and the PIN pepper: a non-extractable HMAC key, so that unwrapping a
physician's key needs the token itself, not a copy of some file.

PKCS#11 modules are not reliably thread-safe (SoftHSM2 crashed the process
under 8 threads) and a token accepts one login per process: every call goes
through PKCS11_LOCK, on one logged-in session per (module, token) per process.
Open it after a worker forks, never before.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.utils import Buffer
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11_errors
from pkcs11.util.ec import decode_ec_private_key, encode_ecdsa_signature
from pkcs11.util.rsa import decode_rsa_private_key

from signflow.core.errors import ConfigurationError, ServiceUnavailable, SignflowError
from signflow.core.i18n import N_

PKCS11_LOCK = threading.RLock()
_sessions: dict[tuple[str, str], Any] = {}
_libraries: dict[str, Any] = {}

# Labels of the service objects on the token.
ISSUING_KEY_LABEL = "signflow-issuing-ca"
TSA_KEY_LABEL = "signflow-tsa"
PEPPER_KEY_LABEL = "signflow-pin-pepper"

_PSS_UNSUPPORTED = "token keys sign with PKCS#1 v1.5 only"
_DIGESTS: dict[str, Mechanism] = {
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}


@dataclass(frozen=True)
class TokenConfig:
    """Where the service keys are: module path, token label, user PIN."""

    module: str
    token_label: str
    pin: str = field(repr=False)


def config_from(
    module: str | None, token_label: str | None, pin: str | None, pin_file: str | None
) -> TokenConfig | None:
    """The token configuration from SIGNFLOW_PKCS11_* settings; None when no module is set.

    The PIN comes from the setting itself or from the file it names (a
    container secret), never from both."""
    if not module:
        if token_label or pin or pin_file:
            raise ConfigurationError(
                N_("SIGNFLOW_PKCS11_TOKEN/PIN are set but SIGNFLOW_PKCS11_MODULE is not")
            )
        return None
    if not token_label:
        raise ConfigurationError(N_("SIGNFLOW_PKCS11_MODULE is set: set SIGNFLOW_PKCS11_TOKEN too"))
    if pin and pin_file:
        raise ConfigurationError(N_("set SIGNFLOW_PKCS11_PIN or SIGNFLOW_PKCS11_PIN_FILE, not both"))
    if pin_file:
        try:
            pin = Path(pin_file).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(N_("cannot read the PKCS#11 PIN file %(pin_file)s"),
                                     params={'pin_file': pin_file}) from exc
    if not pin:
        raise ConfigurationError(
            N_("the PKCS#11 token needs a PIN: set SIGNFLOW_PKCS11_PIN or SIGNFLOW_PKCS11_PIN_FILE")
        )
    if not Path(module).is_file():
        raise ConfigurationError(N_("PKCS#11 module %(module)s does not exist"), params={'module': module})
    return TokenConfig(module=module, token_label=token_label, pin=pin)


class TokenSettings(Protocol):
    """The part of signflow.config.Settings this module reads."""

    @property
    def pkcs11_module(self) -> str | None: ...
    @property
    def pkcs11_token(self) -> str | None: ...
    @property
    def pkcs11_pin(self) -> str | None: ...
    @property
    def pkcs11_pin_file(self) -> str | None: ...


def from_settings(settings: TokenSettings) -> Token | None:
    """The configured token (SIGNFLOW_PKCS11_*), or None when the keys are files."""
    config = config_from(
        settings.pkcs11_module, settings.pkcs11_token, settings.pkcs11_pin,
        settings.pkcs11_pin_file,
    )
    return Token(config) if config is not None else None


def _library(module: str) -> Any:
    lib = _libraries.get(module)
    if lib is None:
        try:
            lib = pkcs11.lib(module)
        except (OSError, RuntimeError, p11_errors.PKCS11Error) as exc:
            raise ConfigurationError(N_("cannot load the PKCS#11 module %(module)s"),
                                     params={'module': module}) from exc
        _libraries[module] = lib
    return lib


# Refusals that only the operator can fix (a configuration error); any other
# refusal from the module is an outage (the token may come back).
_OPERATOR_ERRORS: tuple[tuple[tuple[type[Exception], ...], str], ...] = (
    ((p11_errors.NoSuchToken,), "PKCS#11 token {label!r} is not present in {module}"),
    ((p11_errors.MultipleTokensReturned,), "several PKCS#11 tokens are labelled {label!r}"),
    ((p11_errors.PinIncorrect, p11_errors.PinInvalid, p11_errors.PinLenRange),
     "wrong PIN for PKCS#11 token {label!r}"),
    ((p11_errors.PinLocked,), "PKCS#11 token {label!r} is locked (too many wrong PINs)"),
)


def _session_error(exc: Exception, config: TokenConfig) -> SignflowError:
    for kinds, message in _OPERATOR_ERRORS:
        if isinstance(exc, kinds):
            return ConfigurationError(message.format(label=config.token_label, module=config.module))
    return ServiceUnavailable(N_("PKCS#11 token %(token_label)s refused the session"),
                              params={'token_label': repr(config.token_label)})


def session_for(config: TokenConfig) -> Any:
    """The process's one logged-in read-write session on the token (opened on first use)."""
    key = (config.module, config.token_label)
    with PKCS11_LOCK:
        session = _sessions.get(key)
        if session is not None:
            return session
        lib = _library(config.module)
        try:
            token = lib.get_token(token_label=config.token_label)
            session = token.open(user_pin=config.pin, rw=True)
        except p11_errors.PKCS11Error as exc:
            raise _session_error(exc, config) from exc
        _sessions[key] = session
        return session


def close_sessions() -> None:
    """Log out everywhere (tests, or a worker about to fork)."""
    with PKCS11_LOCK:
        for session in _sessions.values():
            with contextlib.suppress(Exception):
                session.close()
        _sessions.clear()


@dataclass(frozen=True)
class Token:
    """A configured token; every operation takes the process-wide lock."""

    config: TokenConfig

    @property
    def label(self) -> str:
        return self.config.token_label

    def _private_key(self, label: str) -> Any:
        session = session_for(self.config)
        try:
            return session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        except p11_errors.NoSuchKey as exc:
            raise ConfigurationError(
                N_("no private key %(label)s on PKCS#11 token %(label2)s: run `signflow pki "
                   "hsm-init`"), params={'label': repr(label), 'label2': repr(self.label)}
            ) from exc

    def has_object(self, label: str) -> bool:
        with PKCS11_LOCK:
            session = session_for(self.config)
            return any(True for _ in session.get_objects({Attribute.LABEL: label}))

    def sign_ecdsa(self, label: str, digest: bytes) -> bytes:
        """DER ECDSA signature of a precomputed digest (SoftHSM2 offers raw ECDSA only)."""
        with PKCS11_LOCK:
            try:
                raw = self._private_key(label).sign(digest, mechanism=Mechanism.ECDSA)
            except p11_errors.PKCS11Error as exc:
                raise ServiceUnavailable(N_("token key %(label)s could not sign"),
                                         params={'label': repr(label)}) from exc
        der: bytes = encode_ecdsa_signature(raw)
        return der

    def sign_rsa_pkcs1(self, label: str, data: bytes, digest: str) -> bytes:
        mechanism = _DIGESTS.get(digest)
        if mechanism is None:
            raise ConfigurationError(N_("token RSA keys do not sign with %(digest)s"),
                                     params={'digest': digest})
        with PKCS11_LOCK:
            try:
                signature: bytes = self._private_key(label).sign(data, mechanism=mechanism)
            except p11_errors.PKCS11Error as exc:
                raise ServiceUnavailable(N_("token key %(label)s could not sign"),
                                         params={'label': repr(label)}) from exc
        return signature

    def hmac_sha256(self, label: str, data: bytes) -> bytes:
        """HMAC-SHA256 computed inside the token with its non-extractable secret key."""
        with PKCS11_LOCK:
            session = session_for(self.config)
            try:
                key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
            except p11_errors.NoSuchKey as exc:
                raise ConfigurationError(
                    N_("no secret key %(label)s on PKCS#11 token %(label2)s: run `signflow "
                       "pki hsm-init`"), params={'label': repr(label), 'label2': repr(self.label)}
                ) from exc
            try:
                mac: bytes = key.sign(data, mechanism=Mechanism.SHA256_HMAC)
            except p11_errors.PKCS11Error as exc:
                raise ServiceUnavailable(N_("token key %(label)s could not compute an HMAC"),
                                         params={'label': repr(label)}) from exc
        return mac

    def generate_hmac_key(self, label: str) -> None:
        """A 256-bit secret that never leaves the token (sensitive, not extractable)."""
        with PKCS11_LOCK:
            session_for(self.config).generate_key(
                KeyType.GENERIC_SECRET,
                256,
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                },
            )

    def import_private_key(self, label: str, key: PrivateKeyTypes) -> None:
        """Copy a key into the token as sensitive and non-extractable: from then on
        the token signs with it and no one can read it back."""
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        if isinstance(key, ec.EllipticCurvePrivateKey):
            attributes = dict(decode_ec_private_key(der))
        elif isinstance(key, rsa.RSAPrivateKey):
            attributes = dict(decode_rsa_private_key(der))
        else:
            raise ConfigurationError(N_("only EC and RSA keys can be moved to the token"))
        attributes.update(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.LABEL: label,
                Attribute.ID: label.encode(),
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
            }
        )
        for unused in (Attribute.DECRYPT, Attribute.UNWRAP, Attribute.DERIVE):
            attributes.pop(unused, None)
        with PKCS11_LOCK:
            session_for(self.config).create_object(attributes)

    def ec_key(self, label: str, public_key: ec.EllipticCurvePublicKey) -> TokenECKey:
        return TokenECKey(self, label, public_key)

    def rsa_key(self, label: str, public_key: rsa.RSAPublicKey) -> TokenRSAKey:
        return TokenRSAKey(self, label, public_key)


def _token_only(what: str) -> ConfigurationError:
    return ConfigurationError(N_("%(what)s is not possible: the key never leaves the PKCS#11 "
                                 "token"), params={'what': what})


PublicT = TypeVar("PublicT", ec.EllipticCurvePublicKey, rsa.RSAPublicKey)


class _OnToken(Generic[PublicT]):
    """What every token-held key refuses or shares: it cannot be exported, and a
    copy is the same handle."""

    def __init__(self, token: Token, label: str, public_key: PublicT) -> None:
        self._token: Token = token
        self._label: str = label
        self._public: PublicT = public_key

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise _token_only("exporting the private key")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._token.label}/{self._label})"


class TokenECKey(_OnToken[ec.EllipticCurvePublicKey], ec.EllipticCurvePrivateKey):
    """An EC private key whose signatures are computed by the token.

    cryptography (>= 42) accepts such objects in CertificateBuilder.sign and
    CertificateRevocationListBuilder.sign: it only calls sign() and public_key()."""

    def sign(
        self,
        data: Buffer,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, utils.Prehashed):
            digest = bytes(data)
        else:
            hasher = hashes.Hash(algorithm)
            hasher.update(bytes(data))
            digest = hasher.finalize()
        return self._token.sign_ecdsa(self._label, digest)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(
        self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey
    ) -> bytes:
        raise _token_only("key agreement")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise _token_only("reading the private key")



class TokenRSAKey(_OnToken[rsa.RSAPublicKey], rsa.RSAPrivateKey):
    """An RSA private key (PKCS#1 v1.5 signatures only) held by the token."""

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        if not isinstance(padding, _PKCS1v15) or not isinstance(algorithm, hashes.HashAlgorithm):
            raise ConfigurationError(_PSS_UNSUPPORTED)
        return self._token.sign_rsa_pkcs1(self._label, bytes(data), algorithm.name)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise _token_only("decryption")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise _token_only("reading the private key")



_PKCS1v15 = padding.PKCS1v15
