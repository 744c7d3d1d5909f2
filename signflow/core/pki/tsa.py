"""The service's own RFC 3161 time-stamping authority, and the issue and renewal of its
certificate.

Used in-process by the signer (no HTTP round trip) and behind the /tsa HTTP
endpoint for outside clients. Tokens are signed by the TSA certificate of the
keys folder (RSA, EKU timeStamping critical, issued by the issuing CA).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyhanko.sign.general import as_signing_certificate_v2
from pyhanko.sign.timestamps import DummyTimeStamper, TimeStamper

from signflow.core.clock import utcnow
from signflow.core.errors import ConfigurationError, InvalidInput
from signflow.core.i18n import N_
from signflow.core.pki import certificates as certs
from signflow.core.pki.keyfiles import TSA_CERT, write_private
from signflow.core.pki.keystore import KeyMaterial

# signflow's TSA policy: a UUID-derived OID (ITU-T X.667), no registration needed.
TSA_POLICY_OID = "2.25.38313387558098281978437526548220561560"
ACCEPTED_DIGESTS: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def to_asn1_cert(cert: Any) -> asn1_x509.Certificate:
    """asn1crypto view of a `cryptography` certificate (what pyHanko speaks)."""
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


class _StatusOnlyResp(core.Sequence):  # type: ignore[misc]
    """TimeStampResp without token: asn1crypto's class wrongly requires one."""

    _fields = [("status", tsp.PKIStatusInfo)]


def _attribute(name: str, value: Any) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": cms.CMSAttributeType(name), "values": (value,)})


class ServiceTimeStamper(DummyTimeStamper):
    """A real TSA signing with the service's TSA key.

    pyHanko's DummyTimeStamper builds correct tokens but re-parses its key for
    every token, carries a third party's policy OID and the SHA-1 based
    signing-certificate attribute; this keeps its CMS assembly and replaces those.
    `tsa_key` may be a PKCS#11 token key (signflow.core.pki.hsm.TokenRSAKey).
    `clock` is the TSA's clock (the time written into tokens)."""

    def __init__(
        self,
        tsa_cert: Any,
        tsa_key: rsa.RSAPrivateKey,
        chain: list[Any],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        # DummyTimeStamper.__init__ wants the key as PKCS#8, which a token key
        # cannot give; only _sign_tst_info (overridden here) ever used it.
        TimeStamper.__init__(self, include_nonce=True)  # type: ignore[no-untyped-call]
        self.tsa_cert = to_asn1_cert(tsa_cert)
        self.certs_to_embed = [to_asn1_cert(c) for c in chain]
        self.fixed_dt = None
        self.override_md = None
        self._key = tsa_key
        self._clock = clock
        self._building = threading.Lock()

    def _build_tst_info(
        self, message_imprint: tsp.MessageImprint, dt: datetime, req: tsp.TimeStampReq
    ) -> tsp.TSTInfo:
        info: dict[str, Any] = {
            "version": "v1",
            "policy": tsp.ObjectIdentifier(TSA_POLICY_OID),
            "message_imprint": message_imprint,
            "serial_number": secrets.randbits(127),
            "gen_time": dt,
            "accuracy": {"seconds": 1},
            "tsa": asn1_x509.GeneralName(name="directory_name", value=self.tsa_cert.subject),
        }
        if req["nonce"].native is not None:
            info["nonce"] = req["nonce"]
        return tsp.TSTInfo(info)

    def _sign_tst_info(
        self, tst_info_data: bytes, md_algorithm: str, dt: datetime
    ) -> tuple[bytes, cms.CMSAttributes]:
        digest = hashes.Hash(_HASHES[md_algorithm])
        digest.update(tst_info_data)
        signed_attrs = cms.CMSAttributes(
            [
                _attribute("content_type", "tst_info"),
                _attribute("signing_time", cms.Time({"utc_time": core.UTCTime(dt)})),
                _attribute("signing_certificate_v2", as_signing_certificate_v2(self.tsa_cert)),
                _attribute("message_digest", digest.finalize()),
            ]
        )
        signature = self._key.sign(signed_attrs.dump(), padding.PKCS1v15(), _HASHES[md_algorithm])
        return signature, signed_attrs

    def respond_der(self, req: tsp.TimeStampReq, now: datetime) -> bytes:
        """DER response to `req` at time `now`, or an RFC 3161 rejection: unsupported
        digest (badAlg), a policy other than ours (unacceptedPolicy), any critical
        extension, since this TSA knows none (unacceptedExtension)."""
        refused = rejection_of(req)
        if refused is not None:
            text, failure = refused
            rejection = _StatusOnlyResp(
                {"status": {"status": "rejection", "status_string": [text],
                            "fail_info": tsp.PKIFailureInfo({failure})}}
            )
            dumped: bytes = rejection.dump()
            return dumped
        granted: bytes = self.respond(req, now).dump()
        return granted

    def respond(self, req: tsp.TimeStampReq, now: datetime) -> tsp.TimeStampResp:
        # One stamper serves every request thread, and asn1crypto mutates the shared
        # certificate objects while building: build one token at a time, and hand
        # out an independent copy (re-parsed from DER) that shares nothing.
        with self._building:
            algorithm = req["message_imprint"]["hash_algorithm"]["algorithm"].native
            tst_info = self._build_tst_info(req["message_imprint"], now, req)
            tst_info_data = tst_info.dump()
            signature, signed_attrs = self._sign_tst_info(tst_info_data, algorithm, now)
            signed_data = self._build_signed_data(tst_info_data, algorithm, signature, signed_attrs)
            token = cms.ContentInfo(
                {"content_type": "signed_data", "content": cms.SignedData(signed_data)}
            )
            granted = tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token})
            independent: tsp.TimeStampResp = tsp.TimeStampResp.load(granted.dump())
        return independent

    def request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        return self.respond(req, self._clock())

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        return self.respond(req, self._clock())


def rejection_of(req: tsp.TimeStampReq) -> tuple[str, str] | None:
    """Why this TSA must reject `req` (status text, PKIFailureInfo bit), or None."""
    algorithm = req["message_imprint"]["hash_algorithm"]["algorithm"].native
    hashed = req["message_imprint"]["hashed_message"].native
    if ACCEPTED_DIGESTS.get(algorithm) != len(hashed):
        return "unsupported or inconsistent hash algorithm", "bad_alg"
    policy = req["req_policy"].dotted if req["req_policy"].native is not None else None
    if policy is not None and policy != TSA_POLICY_OID:
        return f"unsupported policy {policy}; this TSA issues under {TSA_POLICY_OID}", "unaccepted_policy"
    for extension in req["extensions"] or []:
        if extension["critical"].native:
            return (f"unsupported critical extension {extension['extn_id'].dotted}",
                    "unaccepted_extensions")
    return None


def parse_request(request_der: bytes) -> tsp.TimeStampReq:
    """Parse a DER TimeStampReq; InvalidInput when it is not one."""
    try:
        req = tsp.TimeStampReq.load(request_der, strict=True)
        # asn1crypto parses lazily: touch every field so garbage fails here.
        req.native  # noqa: B018
        algos.DigestAlgorithm(req["message_imprint"]["hash_algorithm"].native)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidInput(N_("not an RFC 3161 time-stamp request")) from exc
    if req["version"].native != "v1":
        raise InvalidInput(N_("unsupported time-stamp request version"))
    return req


def issue_tsa_certificate(
    keys: KeyMaterial,
    public_key: rsa.RSAPublicKey,
    *,
    now: datetime,
    validity: timedelta = certs.TSA_VALIDITY,
) -> x509.Certificate:
    """A TSA certificate (EKU timeStamping, critical, as RFC 3161 requires) for
    `public_key`, issued by the issuing CA (whose key may be on the token)."""
    if not keys.base_url:
        raise ConfigurationError(N_("the PKI base URL is not configured"))
    return certs.issue(
        subject=certs.subject_name("signflow Time Stamping Authority"),
        public_key=public_key,
        issuer_cert=keys.issuing_cert,
        issuer_key=keys.issuing_key,
        not_before=now,
        not_after=now + validity,
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (certs.key_usage(signing=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
            *((ext, False) for ext in certs.ca_links(keys.base_url, "issuing")),
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
            N_("a new TSA certificate would not outlive the current one: "
            "the issuing CA expires first and must be renewed")
        )
    archived = keys_path / f"tsa-{old.serial_number:x}.crt"
    if not archived.exists():
        write_private(archived, certs.cert_pem(old))
    staged = keys_path / (TSA_CERT + ".new")
    staged.unlink(missing_ok=True)
    write_private(staged, certs.cert_pem(certificate))
    # Atomic: a crash leaves either the old certificate or the new one.
    staged.replace(keys_path / TSA_CERT)
    return certificate
