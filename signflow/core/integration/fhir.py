"""A signed request as FHIR: a Bundle holding a DocumentReference (the signed PDF by
URL, its hashes, size and type, the submitting system's reference as an identifier)
and a Provenance (who signed, when, and the PAdES signature's CMS). Built and checked
with `fhir.resources`; its R4B models are used, the R4 wire format for these two
resources (R4B changed neither).

The same Bundle is served by GET /api/v1/requests/{id}/fhir and posted, as a
transaction, to the FHIR servers of the destinations that ask for it (webhooks.py)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime
from io import BytesIO
from typing import Any

from asn1crypto import cms
from fhir.resources.R4B.bundle import Bundle
from pyhanko.pdf_utils.reader import PdfFileReader
from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.errors import Conflict
from signflow.core.i18n import N_
from signflow.core.requests import access
from signflow.core.requests.deps import Deps
from signflow.models import RequestReference, RequestState, Signature, SignatureRequest, User

REFERENCE_SYSTEM = "urn:signflow:external-reference"
REQUEST_SYSTEM = "urn:signflow:request"
SHA256_EXTENSION = "urn:signflow:fhir:attachment-sha256"
# ASTM E1762 "Author's Signature", as FHIR's signature-type value set lists it.
AUTHOR_SIGNATURE = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1",
                    "display": "Author's Signature"}
SIGNED_STATES = (RequestState.DELIVERED, RequestState.RECEIVED, RequestState.SIGNED)


def _uuid(req: SignatureRequest, what: str) -> str:
    """Stable ids: the same request always gives the same Bundle (a retried POST, a replay)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'signflow/{req.id}/{req.signed_sha256}/{what}')}"


def _signatures(pdf: bytes) -> list[bytes]:
    """The CMS of each signature of the file (document timestamps left out)."""
    reader = PdfFileReader(BytesIO(pdf))
    return [cms.ContentInfo({"content_type": "signed_data", "content": s.signed_data}).dump()
            for s in reader.embedded_regular_signatures]


def build_bundle(session: Session, deps: Deps, req: SignatureRequest, *, base_url: str) -> str:
    """The Bundle as FHIR JSON (a transaction: a FHIR server can take it as it is)."""
    if req.state not in SIGNED_STATES or req.signed_sha256 is None or req.signed_at is None:
        raise Conflict(N_("This request is not signed: there is no signed document to describe yet."))
    if req.purged_at is not None:
        raise Conflict(N_("This document was removed after its retention period."))
    pdf = deps.blobs.get(session, req.signed_sha256)
    doc_id, prov_id = _uuid(req, "document"), _uuid(req, "provenance")
    reference = session.get(RequestReference, req.id)
    identifiers = [{"system": REFERENCE_SYSTEM, "value": reference.value}] if reference else []
    url = f"{base_url.rstrip('/')}/api/v1/requests/{req.id}/document"
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": REQUEST_SYSTEM, "value": f"{req.id}-{req.signed_sha256[:16]}"},
        "identifier": identifiers or None,
        "status": "current", "docStatus": "final",
        "description": req.title,
        "date": req.signed_at.isoformat(),
        "custodian": {"display": req.destination.name},
        "content": [{"attachment": {
            "contentType": "application/pdf", "url": url, "size": len(pdf),
            # FHIR's own hash is SHA-1; the SHA-256 rides in an extension (and the Digest header).
            "hash": base64.b64encode(hashlib.sha1(pdf, usedforsecurity=False).digest()).decode(),
            "title": req.filename,
            "extension": [{"url": SHA256_EXTENSION, "valueString": req.signed_sha256}],
            "creation": req.signed_at.isoformat()}}],
    }
    signers = list(session.scalars(select(Signature).where(Signature.request_id == req.id)
                                   .order_by(Signature.signed_at)))
    people = {u.id: u for u in session.scalars(select(User).where(
        User.id.in_([s.user_id for s in signers])))}
    agents = [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                              "provenance-participant-type", "code": "author"}]},
               "who": {"display": people[s.user_id].display_name,
                       "identifier": {"system": "urn:signflow:certificate-serial",
                                      "value": s.certificate_serial}}}
              for s in signers if s.user_id in people]
    if not agents and req.signed_by is not None:
        agents = [{"who": {"display": req.signed_by.display_name}}]
    last = signers[-1] if signers else None
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": doc_id}],
        "recorded": req.signed_at.isoformat(),
        "agent": agents,
        "signature": [{
            "type": [AUTHOR_SIGNATURE],
            "when": (last.signed_at if last else req.signed_at).isoformat(),
            "who": agents[-1]["who"],
            "targetFormat": "application/pdf",
            "sigFormat": "application/pkcs7-signature",
            "data": base64.b64encode(blob).decode()} for blob in _signatures(pdf)],
    }
    bundle = Bundle.model_validate({
        "resourceType": "Bundle", "type": "transaction",
        "timestamp": req.signed_at.isoformat(),
        "entry": [
            {"fullUrl": doc_id, "resource": _without_none(document),
             "request": {"method": "POST", "url": "DocumentReference"}},
            {"fullUrl": prov_id, "resource": provenance,
             "request": {"method": "POST", "url": "Provenance"}},
        ]})
    return str(bundle.model_dump_json(exclude_none=True))


def _without_none(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if v is not None}


def bundle_for(session: Session, deps: Deps, *, user: User, request_id: int, now: datetime,
               base_url: str) -> str:
    req = access.get_request(session, user=user, request_id=request_id, now=now)
    return build_bundle(session, deps, req, base_url=base_url)
