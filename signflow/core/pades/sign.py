"""pyHanko adapter: PAdES signing with a visible stamp, timestamps, validation.

Everything pyHanko raises is turned into a SignflowError here; callers never
see a pyHanko exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.sign import fields, signers
from pyhanko.sign.ades.report import AdESPassed
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.general import SigningError
from pyhanko.sign.timestamps import HTTPTimeStamper, TimeStamper, TimestampRequestError
from pyhanko.sign.validation import async_validate_pdf_signature, async_validate_pdf_timestamp
from pyhanko.sign.validation.ades import ades_lta_validation
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.policy_decl import (
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError, ValidationError
from pyhanko_certvalidator.policy_decl import REQUIRE_REVINFO, CertRevTrustPolicy
from pyhanko_certvalidator.registry import SimpleCertificateStore, SimpleTrustManager

from signflow.core.errors import (
    ConfigurationError,
    InvalidDocument,
    InvalidInput,
    ServiceUnavailable,
    SignflowError,
)
from signflow.core.pki import hsm as hsm
from signflow.core.pki.keystore import KeyMaterial
from signflow.core.pki.tsa import ServiceTimeStamper, parse_request, to_asn1_cert

FONT_PATH = Path(__file__).resolve().parents[2] / "fonts" / "NotoSans-Regular.ttf"
LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")
STAMP_SIZE = (250.0, 78.0)
STAMP_MARGIN = 36.0

# pyHanko logs every validation failure with a traceback at WARNING/ERROR: the
# report carries the verdict, so keep those out of the service's logs.
for _noisy in ("pyhanko", "pyhanko_certvalidator"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- signers


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
            raise ConfigurationError("the signing key does not match its certificate")
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


class _LockedPKCS11Signer(signers.Signer):
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
            return _LockedPKCS11Signer(inner)
    except SignflowError:
        raise
    except Exception as exc:
        raise ServiceUnavailable(f"signing token {token_label!r} is unavailable") from exc


def close_pkcs11_sessions() -> None:
    hsm.close_sessions()


# ---------------------------------------------------------------- timestamps


def make_timestamper(
    keys: KeyMaterial,
    tsa_url: str | None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> TimeStamper:
    """The service's own TSA (in-process) when `tsa_url` is None, else an RFC 3161
    HTTP client. One instance is meant to be shared (it caches the TSA's chain)."""
    if tsa_url is None:
        return ServiceTimeStamper(
            keys.tsa_cert,
            keys.tsa_key,
            [keys.issuing_cert],
            **({"clock": clock} if clock else {}),
        )
    if not tsa_url.startswith(("http://", "https://")):
        raise ConfigurationError("the TSA URL must start with http:// or https://")
    return HTTPTimeStamper(tsa_url, timeout=10)


def tsa_respond(keys: KeyMaterial, request_der: bytes, *, now: datetime) -> bytes:
    """DER TimeStampResp for a DER TimeStampReq (the /tsa endpoint:
    application/timestamp-query in, application/timestamp-reply out)."""
    req = parse_request(request_der)
    stamper = _service_stamper(keys)
    return stamper.respond_der(req, now)


_stamper_cache: dict[int, ServiceTimeStamper] = {}
_stamper_lock = threading.Lock()


def _service_stamper(keys: KeyMaterial) -> ServiceTimeStamper:
    # Keyed by the KeyMaterial object: one parse of the chain per loaded key set.
    with _stamper_lock:
        stamper = _stamper_cache.get(id(keys))
        if stamper is None or stamper.tsa_cert.dump() != to_asn1_cert(keys.tsa_cert).dump():
            stamper = ServiceTimeStamper(keys.tsa_cert, keys.tsa_key, [keys.issuing_cert])
            _stamper_cache[id(keys)] = stamper
        return stamper


# ---------------------------------------------------------------- signing


@dataclass(frozen=True)
class Stamp:
    """What the visible stamp says and where it goes.

    `page` is 1-based; `box` is (x1, y1, x2, y2) in PDF points from the page's
    bottom-left corner. Without them: the document's empty signature field if
    it has one, else the bottom right of the last page."""

    signer_name: str
    professional_id: str | None
    reason: str
    when: datetime
    timezone: str
    page: int | None = None
    box: tuple[float, float, float, float] | None = None


_font_lock = threading.Lock()
_font_factory: GlyphAccumulatorFactory | None = None


def _font() -> GlyphAccumulatorFactory:
    global _font_factory
    with _font_lock:
        if _font_factory is None:
            if not FONT_PATH.is_file():
                raise ConfigurationError("the stamp font is missing from the installation")
            _font_factory = GlyphAccumulatorFactory(str(FONT_PATH), font_size=10)
        return _font_factory


def _stamp_style() -> TextStampStyle:
    return TextStampStyle(
        stamp_text="%(signer)s\n%(professional_id)s%(when)s\n%(reason)s",
        text_box_style=TextBoxStyle(font=_font(), font_size=10, leading=13),
        border_width=1,
    )


def _stamp_params(stamp: Stamp) -> dict[str, str]:
    try:
        zone = ZoneInfo(stamp.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {stamp.timezone!r}") from exc
    if stamp.when.tzinfo is None:
        raise InvalidInput("the signing time must be timezone-aware")
    local = stamp.when.astimezone(zone)
    return {
        "signer": f"Signed by {stamp.signer_name}",
        "professional_id": f"RPPS {stamp.professional_id}\n" if stamp.professional_id else "",
        "when": f"{local:%Y-%m-%d %H:%M} ({stamp.timezone}, UTC{local:%z})",
        "reason": stamp.reason,
    }


def _open_writer(pdf: bytes) -> IncrementalPdfFileWriter:
    if not pdf.lstrip()[:5] == b"%PDF-":
        raise InvalidDocument("not a PDF")
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    except Exception as exc:
        raise InvalidDocument("unreadable PDF") from exc
    if writer.prev.encrypted:
        raise InvalidDocument("encrypted PDFs cannot be signed")
    return writer


def _field_placement(
    writer: IncrementalPdfFileWriter, stamp: Stamp, field_name: str | None
) -> tuple[str, fields.SigFieldSpec | None]:
    """Field to sign: (name, spec of a new field) or (existing empty field, None)."""
    existing = list(fields.enumerate_sig_fields(writer.prev, filled_status=None))
    taken = {name for name, _, _ in existing}
    empty = [name for name, value, _ in existing if value is None]
    if stamp.box is None and stamp.page is None:
        if field_name is not None and field_name in empty:
            return field_name, None
        if field_name is None and empty:
            return empty[0], None
    name = field_name or next(
        f"Signature{n}" for n in range(1, 1000) if f"Signature{n}" not in taken
    )
    if name in taken:
        raise InvalidInput(f"signature field {name!r} already exists")
    page_count = int(writer.root["/Pages"]["/Count"])
    if stamp.page is not None and not 1 <= stamp.page <= page_count:
        raise InvalidInput(f"page {stamp.page} does not exist (the document has {page_count})")
    page_index = (stamp.page - 1) if stamp.page is not None else page_count - 1
    if stamp.box is not None:
        x1, y1, x2, y2 = stamp.box
        if x2 - x1 < 40 or y2 - y1 < 20:
            raise InvalidInput("the stamp area is too small")
        box = (int(x1), int(y1), int(x2), int(y2))
    else:
        page = writer.find_page_for_modification(page_index)[0]  # type: ignore[no-untyped-call]
        media = page.get_object().get("/MediaBox") or (0, 0, 595, 842)
        right = float(media[2])
        width, height = STAMP_SIZE
        left = max(float(media[0]) + STAMP_MARGIN, right - STAMP_MARGIN - width)
        bottom = float(media[1]) + STAMP_MARGIN
        box = (int(left), int(bottom), int(left + width), int(bottom + height))
    return name, fields.SigFieldSpec(sig_field_name=name, on_page=page_index, box=box)


def sign_pdf(
    pdf: bytes,
    *,
    key: SigningKey,
    certificate: x509.Certificate,
    keys: KeyMaterial,
    stamp: Stamp,
    timestamper: TimeStamper | None,
    level: str = "B-LTA",
    crls: list[bytes],
    field_name: str | None = None,
) -> bytes:
    """Sign `pdf` (PAdES, incremental update, visible stamp) at `level`.

    Already signed files get an approval signature that keeps earlier ones
    valid. A failing TSA raises ServiceUnavailable: there is no silent
    downgrade to an untimestamped signature."""
    if level not in LEVELS:
        raise ConfigurationError(f"unknown PAdES level {level!r} (use one of {', '.join(LEVELS)})")
    if level != "B-B" and timestamper is None:
        raise ConfigurationError(f"PAdES {level} needs a timestamp authority")
    writer = _open_writer(pdf)
    name, new_field = _field_placement(writer, stamp, field_name)
    chain = [keys.issuing_cert, keys.root_cert]
    signer = key if isinstance(key, signers.Signer) else KeySigner(key, certificate, chain)
    long_term = level in ("B-LT", "B-LTA")
    validation_context = (
        ValidationContext(
            trust_roots=[to_asn1_cert(keys.root_cert)],
            other_certs=[to_asn1_cert(keys.issuing_cert)],
            crls=crls,
            allow_fetching=False,
            # soft-fail would happily write a "B-LT" file with no CRL in it.
            revocation_mode="hard-fail",
        )
        if long_term
        else None
    )
    meta = signers.PdfSignatureMetadata(
        field_name=name,
        reason=stamp.reason,
        name=stamp.signer_name,
        md_algorithm="sha256",
        subfilter=SigSeedSubFilter.PADES,
        embed_validation_info=long_term,
        use_pades_lta=level == "B-LTA",
        validation_context=validation_context,
        signer_key_usage={"non_repudiation"},
    )
    pdf_signer = signers.PdfSigner(
        meta,
        signer=signer,
        timestamper=timestamper if level != "B-B" else None,
        stamp_style=_stamp_style(),
        new_field_spec=new_field,
    )
    out = io.BytesIO()
    exclusive = key.in_use if isinstance(key, _LockedPKCS11Signer) else contextlib.nullcontext()
    try:
        with exclusive:
            _run_sync(
                pdf_signer.async_sign_pdf(
                    writer,
                    existing_fields_only=new_field is None,
                    appearance_text_params=_stamp_params(stamp),
                    output=out,
                )
            )
    except SignflowError:
        raise
    except Exception as exc:
        raise _translate_signing_error(exc) from exc
    return out.getvalue()


def _run_sync(coro: Any) -> Any:
    """asyncio.run, also from a thread whose loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _translate_signing_error(exc: Exception) -> SignflowError:
    if _caused_by(exc, (TimestampRequestError, OSError, asyncio.TimeoutError)):
        return ServiceUnavailable("timestamp authority unreachable: the document was not signed")
    if _caused_by(exc, (ValidationError, PathBuildingError, PathValidationError)):
        return ConfigurationError(
            "cannot embed validation data (certificate chain or CRL missing or not valid)"
        )
    if _caused_by(exc, (PdfError,)):
        return InvalidDocument("this PDF cannot be signed (damaged or unsupported structure)")
    log.error("signing failed: %s", type(exc).__name__)
    return SignflowError("signing failed", code="signing-failed")


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class SignatureReport:
    field_name: str
    signer: str
    professional_id: str | None
    certificate_serial: str
    issuer: str
    signing_time: datetime | None
    timestamp_time: datetime | None
    intact: bool
    valid: bool
    trusted: bool
    revoked: bool
    coverage: str
    modification_level: str
    pades_level: str | None
    is_timestamp: bool
    ok: bool
    problems: tuple[str, ...]
    # pyHanko's AdES long-term validation (ETSI EN 319 102-1 5.6.3), offline, with
    # only the file's own validation data: "PASSED", or the indication/subindication.
    ades: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "field_name": self.field_name,
            "signer": self.signer,
            "professional_id": self.professional_id,
            "certificate_serial": self.certificate_serial,
            "issuer": self.issuer,
            "signing_time": _iso(self.signing_time),
            "timestamp_time": _iso(self.timestamp_time),
            "intact": self.intact,
            "valid": self.valid,
            "trusted": self.trusted,
            "revoked": self.revoked,
            "coverage": self.coverage,
            "modification_level": self.modification_level,
            "pades_level": self.pades_level,
            "ades": self.ades,
            "is_timestamp": self.is_timestamp,
            "ok": self.ok,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class ValidationReport:
    signatures: tuple[SignatureReport, ...]
    ok: bool

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "signatures": [s.as_json() for s in self.signatures]}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _name_attr(name: asn1_x509.Name, attr: str) -> str | None:
    value = name.native.get(attr)
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value is not None else None


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value or "")) or "UNKNOWN"


def validate_pdf(
    pdf: bytes,
    *,
    trust_roots: list[x509.Certificate],
    crls: list[bytes] | None = None,
    now: datetime | None = None,
) -> ValidationReport:
    """Check every signature of `pdf` against `trust_roots` only.

    Revocation data: the `crls` given plus the document's own (DSS). `ok` means
    at least one signature, every one ok, and the last covering the entire file."""
    if not pdf.lstrip()[:5] == b"%PDF-":
        raise InvalidDocument("not a PDF")
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        embedded = list(reader.embedded_signatures)
    except Exception as exc:
        raise InvalidDocument("unreadable PDF") from exc
    if reader.encrypted:
        raise InvalidDocument("encrypted PDFs are not supported")
    if not trust_roots:
        raise ConfigurationError("validation needs at least one trusted root")

    dss: DocumentSecurityStore | None
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except Exception:
        # No DSS (or an unreadable one): only the CRLs given count.
        dss = None
    context_args: dict[str, Any] = {
        "trust_roots": [to_asn1_cert(c) for c in trust_roots],
        "crls": list(crls or []),
        "allow_fetching": False,
        "revocation_mode": "soft-fail",
    }

    def context(moment: datetime | None = None) -> ValidationContext:
        # One per validation: a ValidationContext accumulates state.
        args = dict(context_args, moment=moment or now)
        if moment is not None:
            # Judging the signer at its timestamp's time: revocation data issued
            # later (a superseded certificate's CRL) still tells the status then.
            args["retroactive_revinfo"] = True
        if dss is None:
            return ValidationContext(**args)
        made: ValidationContext = dss.as_validation_context(args)
        return made

    has_dss = dss is not None
    reports: list[SignatureReport] = []
    doc_timestamps_after: list[bool] = [
        any(later.sig_object_type == "/DocTimeStamp" for later in embedded[i + 1 :])
        for i in range(len(embedded))
    ]
    for index, sig in enumerate(embedded):
        report = _validate_one(sig, context, has_dss=has_dss, doc_ts_after=doc_timestamps_after[index])
        if not report.is_timestamp and report.intact and report.valid:
            report = _with_ades_level(report, sig, trust_roots)
        reports.append(report)
    ok = bool(reports) and all(r.ok for r in reports) and _covers_file(reports[-1], pdf)
    return ValidationReport(signatures=tuple(reports), ok=ok)


def _covers_file(last: SignatureReport, pdf: bytes) -> bool:
    """The last signature covers the whole file, save for validation data
    (DSS, document timestamps) that pyHanko itself appends after B-LT/B-LTA, and
    nothing trails the last %%EOF (junk there does not show in any revision)."""
    if last.coverage == "ENTIRE_FILE":
        return True
    tail = pdf[pdf.rfind(b"%%EOF") + len(b"%%EOF") :]
    return (
        last.coverage == "ENTIRE_REVISION"
        and last.modification_level == "LTA_UPDATES"
        and not tail.strip(b"\r\n\t \x00")
    )


def _validate_one(
    sig: Any,
    context: Callable[[datetime | None], ValidationContext],
    *,
    has_dss: bool,
    doc_ts_after: bool,
) -> SignatureReport:
    problems: list[str] = []
    is_timestamp = sig.sig_object_type == "/DocTimeStamp"
    try:
        cert = sig.signer_cert
        signer = _name_attr(cert.subject, "common_name") or cert.subject.human_friendly
        serial_attr = _name_attr(cert.subject, "serial_number")
        professional_id = (
            serial_attr.removeprefix("RPPS:")
            if serial_attr and serial_attr.startswith("RPPS:")
            else None
        )
        certificate_serial = format(cert.serial_number, "x")
        issuer = _name_attr(cert.issuer, "common_name") or cert.issuer.human_friendly
    except Exception:
        signer, professional_id, certificate_serial, issuer = "unknown", None, "", "unknown"
        problems.append("the signer's certificate cannot be read")

    try:
        if is_timestamp:
            status: Any = _run_sync(
                async_validate_pdf_timestamp(sig, validation_context=context(None))
            )
        else:
            status = _validate_signature(sig, context(None), context(None))
            ts = status.timestamp_validity
            if ts is not None and ts.intact and ts.valid and ts.trusted:
                # A trusted timestamp proves the signature existed then: the
                # certificate's status is what it was at that time.
                status = _validate_signature(sig, context(ts.timestamp), context(None))
    except Exception as exc:
        log.info("signature %s could not be validated: %s", sig.field_name, type(exc).__name__)
        return SignatureReport(
            field_name=str(sig.field_name),
            signer=signer,
            professional_id=professional_id,
            certificate_serial=certificate_serial,
            issuer=issuer,
            signing_time=None,
            timestamp_time=None,
            intact=False,
            valid=False,
            trusted=False,
            revoked=False,
            coverage="UNKNOWN",
            modification_level="UNKNOWN",
            pades_level=None,
            is_timestamp=is_timestamp,
            ok=False,
            problems=(*problems, "the signature cannot be processed"),
        )

    intact, valid, trusted = bool(status.intact), bool(status.valid), bool(status.trusted)
    revoked = bool(getattr(status, "revoked", False))
    coverage = _enum_name(status.coverage)
    modification_level = _enum_name(getattr(status, "modification_level", None))
    if is_timestamp:
        timestamp_time = status.timestamp
        signing_time = None
    else:
        signing_time = status.signer_reported_dt
        ts_status = status.timestamp_validity
        timestamp_time = ts_status.timestamp if ts_status is not None else None
        if ts_status is not None and not (
            ts_status.intact and ts_status.valid and ts_status.trusted
        ):
            problems.append("the signature's timestamp is not valid or not trusted")
    if not intact:
        problems.append("the signed content was altered")
    elif not valid:
        problems.append("the cryptographic signature is invalid")
    if not trusted:
        problems.append("the signer's certificate is not trusted")
    if revoked:
        problems.append("the signer's certificate is revoked")
    docmdp_ok = getattr(status, "docmdp_ok", True)
    if docmdp_ok is False or modification_level == "OTHER":
        problems.append("the document was modified after this signature")
    bottom_line = bool(getattr(status, "bottom_line", intact and valid and trusted))
    if not bottom_line and not problems:
        problems.append("the signature does not validate")

    if is_timestamp:
        pades_level = None
    elif timestamp_time is None:
        pades_level = "B-B"
    elif has_dss and doc_ts_after:
        pades_level = "B-LTA"
    elif has_dss:
        pades_level = "B-LT"
    else:
        pades_level = "B-T"
    return SignatureReport(
        field_name=str(sig.field_name),
        signer=signer,
        professional_id=professional_id,
        certificate_serial=certificate_serial,
        issuer=issuer,
        signing_time=signing_time,
        timestamp_time=timestamp_time,
        intact=intact,
        valid=valid,
        trusted=trusted,
        revoked=revoked,
        coverage=coverage,
        modification_level=modification_level,
        pades_level=pades_level,
        is_timestamp=is_timestamp,
        ok=bottom_line and not problems,
        problems=tuple(problems),
    )


def _validate_signature(
    sig: Any, signer_context: ValidationContext, ts_context: ValidationContext
) -> Any:
    # pyHanko's sync wrappers call asyncio.run(), which fails inside a running
    # loop (async servers, Playwright's sync API): go through _run_sync.
    return _run_sync(
        async_validate_pdf_signature(
            sig,
            signer_validation_context=signer_context,
            ts_validation_context=ts_context,
            key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}),
        )
    )


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------- archive timestamps


def _asn1_not_after(cert: asn1_x509.Certificate) -> datetime:
    value: datetime = cert["tbs_certificate"]["validity"]["not_after"].native
    return value


def timestamp_horizon(pdf: bytes) -> datetime | None:
    """Until when the document's newest document timestamp can be checked: the
    earliest expiry among its TSA certificate and the chain embedded with it.
    None when the document has no document timestamp (B-B, B-T or B-LT files).

    An archive timestamp protects everything before it only while its own
    certificates are valid: this is the date by which a fresh one is needed."""
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        stamps = list(reader.embedded_timestamp_signatures)
    except Exception as exc:
        raise InvalidDocument("unreadable PDF") from exc
    if not stamps:
        return None
    newest = stamps[-1]
    chain = [newest.signer_cert, *newest.other_embedded_certs]
    return min(_asn1_not_after(cert) for cert in chain)


def timestamper_horizon(timestamper: TimeStamper) -> datetime | None:
    """Expiry of the service TSA's certificate chain; None for an outside TSA,
    whose certificate is only known from its tokens."""
    if isinstance(timestamper, ServiceTimeStamper):
        return min(
            _asn1_not_after(cert) for cert in [timestamper.tsa_cert, *timestamper.certs_to_embed]
        )
    return None


def document_timestamp_count(pdf: bytes) -> int:
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        return len(list(reader.embedded_timestamp_signatures))
    except Exception as exc:
        raise InvalidDocument("unreadable PDF") from exc


def add_archive_timestamp(
    pdf: bytes,
    *,
    keys: KeyMaterial,
    timestamper: TimeStamper,
    crls: list[bytes],
) -> bytes:
    """`pdf` plus a fresh document timestamp (PAdES B-LTA archive timestamp).

    The newest timestamp is validated first (hard-fail revocation, against the
    hospital root, with `crls`) and its validation data (TSA chain, CRLs) is
    stored in the DSS before the new timestamp covers it: the chain keeps
    verifying offline after the old TSA certificate expires. Incremental: the
    earlier signatures and timestamps stay valid."""
    if not pdf.lstrip()[:5] == b"%PDF-":
        raise InvalidDocument("not a PDF")
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        has_stamps = bool(list(reader.embedded_timestamp_signatures))
    except Exception as exc:
        raise InvalidDocument("unreadable PDF") from exc
    if reader.encrypted:
        raise InvalidDocument("encrypted PDFs are not supported")
    if not has_stamps:
        raise InvalidDocument(
            "this document has no document timestamp (not PAdES B-LTA): nothing to renew"
        )
    validation_context = ValidationContext(
        trust_roots=[to_asn1_cert(keys.root_cert)],
        other_certs=[to_asn1_cert(keys.issuing_cert)],
        crls=crls,
        allow_fetching=False,
        revocation_mode="hard-fail",
    )
    out = io.BytesIO()
    try:
        _run_sync(
            signers.PdfTimeStamper(timestamper).async_update_archival_timestamp_chain(
                reader, validation_context, in_place=False, output=out
            )
        )
    except SignflowError:
        raise
    except Exception as exc:
        raise _translate_signing_error(exc) from exc
    return out.getvalue()


def _ades_spec(trust_roots: list[x509.Certificate]) -> PdfSignatureValidationSpec:
    return PdfSignatureValidationSpec(SignatureValidationSpec(
        cert_validation_policy=CertValidationPolicySpec(
            trust_manager=SimpleTrustManager.build(trust_roots=[to_asn1_cert(c) for c in trust_roots]),
            revinfo_policy=CertRevTrustPolicy(REQUIRE_REVINFO),
        ),
        # Offline: only what the file carries counts, as for a court in ten years.
        revinfo_gathering_policy=RevocationInfoGatheringSpec(
            online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY),
        key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}),
    ))


def _with_ades_level(report: SignatureReport, sig: Any,
                     trust_roots: list[x509.Certificate]) -> SignatureReport:
    """The PAdES level reached, per pyHanko's AdES engine: B-LTA only if the
    long-term validation passes from the file alone (B-T and B-LT files come out
    INDETERMINATE there, having no proof of existence for their validation data)."""
    try:
        result = _run_sync(ades_lta_validation(sig, _ades_spec(trust_roots)))
        indication = result.ades_subindic
    except Exception as exc:
        log.info("AdES validation of %s failed: %s", sig.field_name, type(exc).__name__)
        return dataclasses.replace(report, ades="ERROR")
    passed = isinstance(indication, AdESPassed)
    kind = type(indication).__name__.removeprefix("AdES").upper()
    verdict = "PASSED" if passed else f"{kind}/{indication.name}"
    level = report.pades_level
    if level == "B-LTA" and not passed:
        level = "B-LT"  # the structure is there, the long-term proof is not
    return dataclasses.replace(report, ades=verdict, pades_level=level)
