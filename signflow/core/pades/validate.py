"""Validation of a PDF's signatures and document timestamps against the hospital
roots only, with the PAdES level each one reaches (pyHanko's AdES engine)."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESPassed
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
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.policy_decl import REQUIRE_REVINFO, CertRevTrustPolicy
from pyhanko_certvalidator.registry import SimpleTrustManager

from signflow.core.errors import ConfigurationError, InvalidDocument
from signflow.core.i18n import N_
from signflow.core.pades.countersignatures import issued_under, verdict
from signflow.core.pades.reports import (
    NOT_TRUSTED,
    TIMESTAMP_NOT_TRUSTED,
    SignatureReport,
    ValidationReport,
    acceptable_outside,
)
from signflow.core.pades.sign import run_sync
from signflow.core.pki.tsa import to_asn1_cert

log = logging.getLogger(__name__)

__all__ = [
    "NOT_TRUSTED",
    "TIMESTAMP_NOT_TRUSTED",
    "SignatureReport",
    "ValidationReport",
    "acceptable_outside",
    "validate_pdf",
]


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
        raise InvalidDocument(N_("not a PDF"))
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        embedded = list(reader.embedded_signatures)
    except Exception as exc:
        raise InvalidDocument(N_("unreadable PDF")) from exc
    if reader.encrypted:
        raise InvalidDocument(N_("encrypted PDFs are not supported"))
    if not trust_roots:
        raise ConfigurationError(N_("validation needs at least one trusted root"))

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
    roots = [to_asn1_cert(c).subject for c in trust_roots]
    for index, sig in enumerate(embedded):
        report = _validate_one(sig, context, has_dss=has_dss, doc_ts_after=doc_timestamps_after[index])
        if not report.is_timestamp and report.intact and report.valid:
            report = _with_ades_level(report, sig, trust_roots)
        if not report.trusted and not report.revoked and not issued_under(sig, roots):
            report = dataclasses.replace(report, outside=True)
        reports.append(report)
    ok, notes = verdict(reports, pdf)
    return ValidationReport(signatures=tuple(reports), ok=ok, notes=notes)


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
        problems.append(N_("the signer's certificate cannot be read"))
    # Who signed, common to every outcome below.
    who: dict[str, Any] = {
        "field_name": str(sig.field_name), "signer": signer, "professional_id": professional_id,
        "certificate_serial": certificate_serial, "issuer": issuer, "is_timestamp": is_timestamp,
    }

    try:
        if is_timestamp:
            status: Any = run_sync(
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
        # Nothing could be judged: every verdict field fails closed.
        return SignatureReport(
            **who, signing_time=None, timestamp_time=None, intact=False, valid=False,
            trusted=False, revoked=False, coverage="UNKNOWN", modification_level="UNKNOWN",
            pades_level=None, ok=False, problems=(*problems, N_("the signature cannot be processed")))

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
            problems.append(TIMESTAMP_NOT_TRUSTED)
    if not intact:
        problems.append(N_("the signed content was altered"))
    elif not valid:
        problems.append(N_("the cryptographic signature is invalid"))
    if not trusted:
        problems.append(NOT_TRUSTED)
    if revoked:
        problems.append(N_("the signer's certificate is revoked"))
    docmdp_ok = getattr(status, "docmdp_ok", True)
    if docmdp_ok is False or modification_level == "OTHER":
        problems.append(N_("the document was modified after this signature"))
    bottom_line = bool(getattr(status, "bottom_line", intact and valid and trusted))
    if not bottom_line and not problems:
        problems.append(N_("the signature does not validate"))

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
        **who,
        signing_time=signing_time,
        timestamp_time=timestamp_time,
        intact=intact,
        valid=valid,
        trusted=trusted,
        revoked=revoked,
        coverage=coverage,
        modification_level=modification_level,
        pades_level=pades_level,
        ok=bottom_line and not problems,
        problems=tuple(problems),
    )


def _validate_signature(
    sig: Any, signer_context: ValidationContext, ts_context: ValidationContext
) -> Any:
    # pyHanko's sync wrappers call asyncio.run(), which fails inside a running
    # loop (async servers, Playwright's sync API): go through run_sync.
    return run_sync(
        async_validate_pdf_signature(
            sig,
            signer_validation_context=signer_context,
            ts_validation_context=ts_context,
            key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}),
        )
    )


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
        result = run_sync(ades_lta_validation(sig, _ades_spec(trust_roots)))
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
