"""Timestamps: the timestamper used when signing, the /tsa responder, how long a
document's timestamp chain verifies, and PAdES B-LTA archive timestamps."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.timestamps import HTTPTimeStamper, TimeStamper
from pyhanko_certvalidator import ValidationContext

from signflow.core.errors import ConfigurationError, InvalidDocument, SignflowError
from signflow.core.i18n import N_
from signflow.core.pades.sign import run_sync, translate_signing_error
from signflow.core.pki.keystore import KeyMaterial
from signflow.core.pki.tsa import ServiceTimeStamper, parse_request, to_asn1_cert


def make_timestamper(
    keys: KeyMaterial,
    tsa_url: str | None,
    *,
    clock: Callable[[], datetime] | None = None,
    token: str | None = None,
) -> TimeStamper:
    """The service's own TSA (in-process) when `tsa_url` is None, else an RFC 3161
    HTTP client (sending `token` as a bearer token: another signflow's /tsa wants
    one). One instance is meant to be shared (it caches the TSA's chain)."""
    if tsa_url is None:
        return ServiceTimeStamper(
            keys.tsa_cert,
            keys.tsa_key,
            [keys.issuing_cert],
            **({"clock": clock} if clock else {}),
        )
    if not tsa_url.startswith(("http://", "https://")):
        raise ConfigurationError(N_("the TSA URL must start with http:// or https://"))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return HTTPTimeStamper(tsa_url, headers=headers, timeout=10)


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
        raise InvalidDocument(N_("unreadable PDF")) from exc
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
        raise InvalidDocument(N_("unreadable PDF")) from exc


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
        raise InvalidDocument(N_("not a PDF"))
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        has_stamps = bool(list(reader.embedded_timestamp_signatures))
    except Exception as exc:
        raise InvalidDocument(N_("unreadable PDF")) from exc
    if reader.encrypted:
        raise InvalidDocument(N_("encrypted PDFs are not supported"))
    if not has_stamps:
        raise InvalidDocument(
            N_("this document has no document timestamp (not PAdES B-LTA): nothing to renew")
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
        run_sync(
            signers.PdfTimeStamper(timestamper).async_update_archival_timestamp_chain(
                reader, validation_context, in_place=False, output=out
            )
        )
    except SignflowError:
        raise
    except Exception as exc:
        raise translate_signing_error(exc) from exc
    return out.getvalue()
