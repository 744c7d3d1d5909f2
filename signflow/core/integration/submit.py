"""A submitting system sends a PDF (POST /api/v1/requests): the same checks, limits and
messages as the technician's upload page (core.pdf.normalise, workflow.create_request),
made idempotent by the caller's `Idempotency-Key`.

The key's row is inserted first (ON CONFLICT DO NOTHING) and then locked: a concurrent
retry of the same key waits on the first one's transaction, then finds its answer;
a first attempt that fails rolls its row back with everything else, so the retry
starts afresh."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from signflow.core.audit.log import Actor
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.pdf.sandbox import SandboxLimits
from signflow.core.requests import workflow
from signflow.core.requests.deps import Deps
from signflow.models import IdempotencyKey, RequestReference, SignatureRequest

MAX_KEY = 200
MAX_REFERENCE = 200
# page,x,y,width,height: what the upload page's stamp picker sends (web.forms.UploadForm).
STAMP_POSITION = re.compile(r"\d{1,4}(,\d{1,5}(\.\d+)?){4}")
_KEY = re.compile(r"[\x21-\x7e]{1,200}")
_REFERENCE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


class KeyReused(InvalidInput):
    """The same Idempotency-Key came with a different body (422)."""

    code = "idempotency-key-reused"


@dataclass(frozen=True)
class UploadRules:
    """The site's upload limits (the same for the web page and the API)."""

    max_bytes: int
    max_pages: int
    active_content: str
    allow_signed: bool
    sandbox: SandboxLimits


@dataclass(frozen=True)
class Submission:
    """What the caller sent, as the form fields and the file's bytes."""

    data: bytes
    filename: str
    fields: Mapping[str, str]

    def fingerprint(self) -> str:
        """The body's hash: the file and every field, in a canonical order."""
        digest = hashlib.sha256(hashlib.sha256(self.data).digest())
        digest.update(self.filename.encode())
        for name in sorted(self.fields):
            digest.update(b"\0" + name.encode() + b"=" + self.fields[name].encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class Submitted:
    request: SignatureRequest
    replayed: bool  # the answer to an earlier call with the same key


MAX_ID = 2**31 - 1  # the tables' INTEGER ids (PostgreSQL's int4 refuses larger numbers)


def _is_id(raw: str) -> bool:
    return raw.isascii() and raw.isdigit() and len(raw) <= 10 and int(raw) <= MAX_ID


def _id(fields: Mapping[str, str], name: str) -> int:
    raw = fields.get(name, "")
    if not _is_id(raw):
        raise InvalidInput(N_("'%(name)s' must be an id (a positive integer)."), params={"name": name})
    return int(raw)


def _route(fields: Mapping[str, str]) -> list[int]:
    """`route` (comma-separated group ids, in signing order) or a single `group`."""
    if "route" in fields and "group" in fields:
        raise InvalidInput(N_("Send either 'group' or 'route', not both."))
    if "route" not in fields:
        return [_id(fields, "group")]
    parts = fields["route"].split(",")
    if not all(_is_id(p.strip()) for p in parts):
        raise InvalidInput(N_("'route' must be group ids separated by commas."))
    return [int(p) for p in parts]


def idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not _KEY.fullmatch(raw):
        raise InvalidInput(N_("The Idempotency-Key header is 1 to %(max)s visible ASCII characters."),
                           params={"max": MAX_KEY})
    return raw


def _claim(session: Session, token_id: int, key: str, body: str, now: datetime) -> IdempotencyKey:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(IdempotencyKey).values(
        token_id=token_id, key=key, body_sha256=body, request_id=None, created_at=now,
    ).on_conflict_do_nothing(index_elements=["token_id", "key"]))
    row = session.get(IdempotencyKey, (token_id, key), with_for_update=True, populate_existing=True)
    if row is None:
        raise RuntimeError("idempotency row vanished")
    return row


def submit(session: Session, deps: Deps, *, actor: Actor, now: datetime, token_id: int,
           key: str | None, submission: Submission, rules: UploadRules) -> Submitted:
    row = None
    if key is not None:
        row = _claim(session, token_id, key, submission.fingerprint(), now)
        if row.body_sha256 != submission.fingerprint():
            raise KeyReused(N_("This Idempotency-Key was used with a different request body: "
                               "use a new key for a new request."))
        if row.request_id is not None:
            req = session.get(SignatureRequest, row.request_id)
            if req is not None:
                return Submitted(req, replayed=True)
    req = _create(session, deps, actor=actor, now=now, submission=submission, rules=rules)
    if row is not None:
        row.request_id = req.id
        session.flush()
    return Submitted(req, replayed=False)


def _create(session: Session, deps: Deps, *, actor: Actor, now: datetime, submission: Submission,
            rules: UploadRules) -> SignatureRequest:
    fields = submission.fields
    # Every field is checked before the file is parsed: a bad field costs no sandbox.
    route = _route(fields)
    destination = _id(fields, "destination")
    stamp = fields.get("stamp_position") or None
    if stamp is not None and not STAMP_POSITION.fullmatch(stamp):
        raise InvalidInput(N_("'stamp_position' is page,x,y,width,height (numbers)."))
    reference = fields.get("external_reference") or None
    if reference is not None and not _REFERENCE.fullmatch(reference):
        raise InvalidInput(N_("'external_reference' is 1 to %(max)s printable characters."),
                           params={"max": MAX_REFERENCE})
    if not submission.data:
        raise InvalidInput(N_("Send the PDF as the multipart field 'document'."))
    normalised = pdfcheck.normalise_upload(
        submission.data, max_bytes=rules.max_bytes, max_pages=rules.max_pages,
        active_content=rules.active_content, allow_signed=rules.allow_signed, limits=rules.sandbox)
    req = workflow.create_request(
        session, deps, actor=actor, now=now, upload=normalised,
        filename=pdfcheck.sanitize_filename(submission.filename or "document.pdf"),
        title=fields.get("title", ""), group_id=route[0], destination_id=destination,
        urgency=fields.get("urgency", ""), note=fields.get("note", ""), stamp_position=stamp,
        then_group_ids=route[1:])
    if reference is not None:
        session.add(RequestReference(request_id=req.id, value=reference))
        session.flush()
    return req


def reference_of(session: Session, request_id: int) -> str | None:
    row = session.get(RequestReference, request_id)
    return row.value if row is not None else None

