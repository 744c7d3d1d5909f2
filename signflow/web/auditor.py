"""The auditor's workspace: browse, per-request timelines, verify, export; and
the evidence report download (technician, recipient, auditor)."""

from __future__ import annotations

import json
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, Response, render_template, request, send_file, url_for

from signflow.auditverify import verifier_key
from signflow.core.audit import checkpoints
from signflow.core.audit import export as audit_export
from signflow.core.errors import InvalidInput
from signflow.core.evidence import report as evidence
from signflow.core.i18n import N_
from signflow.models import ADMINISTRATIVE_ACTIONS, AuditAction, Role
from signflow.web.context import current
from signflow.web.documents import attachment
from signflow.web.guards import roles
from signflow.web.ids import id_arg

bp = Blueprint("auditor", __name__, url_prefix="/audit")
PAGE = 50
FILTERS = ("request", "actor", "action", "scope", "since", "until")


def _date(name: str) -> datetime | None:
    raw = request.args.get(name, "")
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC) if raw else None
    except ValueError:
        return None


def _action() -> AuditAction | None:
    raw = (request.args.get("action") or "").strip()
    if not raw:
        return None
    try:
        return AuditAction(raw)
    except ValueError:
        raise InvalidInput(N_("Choose an action from the list.")) from None


def _scope() -> frozenset[AuditAction] | None:
    """`scope=admin`: every administrative action (accounts, approvals, keys, rota)."""
    raw = (request.args.get("scope") or "").strip()
    if not raw:
        return None
    if raw != "admin":
        raise InvalidInput(N_("Choose a kind of action from the list."))
    return ADMINISTRATIVE_ACTIONS


@bp.get("/")
@roles(Role.AUDITOR)
def index() -> str:
    rc = current()
    session = rc.session
    entries = audit_export.search(
        session,
        request_id=id_arg("request"),
        actor_id=id_arg("actor"),
        action=_action(),
        since=_date("since"),
        until=_date("until"),
        after_seq=id_arg("before"),
        limit=PAGE,
        actions=_scope(),
    )
    rows = [(e, json.loads(e.line)) for e in entries]
    older_url = None
    if len(entries) == PAGE:
        kept: dict[str, Any] = {k: v for k, v in request.args.items() if k in FILTERS and v}
        older_url = url_for("auditor.index", **kept, before=entries[-1].seq)
    return render_template(
        "auditor/index.html",
        rows=rows,
        args=request.args,
        older_url=older_url,
        # The filters' choices, as (value, text) pairs.
        actions=[(a.value, a.value) for a in AuditAction],
        users=[(u.id, f"{u.username} ({u.role})") for u in evidence.user_choices(session)],
    )


@bp.get("/requests/<int:request_id>")
@roles(Role.AUDITOR)
def timeline(request_id: int) -> str:
    rc = current()
    found = evidence.request_timeline(rc.session, user=rc.user, request_id=request_id, now=rc.now)
    return render_template("auditor/timeline.html", timeline=found, req=found.request)


@bp.get("/requests/<int:request_id>/evidence.pdf")
@roles(Role.TECHNICIAN, Role.RECIPIENT, Role.AUDITOR)
def evidence_pdf(request_id: int) -> Response:
    rc = current()
    data = evidence.evidence_report(
        rc.session,
        rc.deps,
        rc.services.seal,
        actor=rc.actor,
        request_id=request_id,
        now=rc.now,
        origin=rc.services.settings.audit_origin,)
    return attachment(data, f"evidence-request-{request_id}.pdf")


@bp.get("/verify")
@roles(Role.AUDITOR)
def verify() -> str:
    rc = current()
    keys = rc.services.keys
    origin = rc.services.settings.audit_origin
    session = rc.session
    result = checkpoints.verify_log(session, public_key=keys.audit_key.public_key(), origin=origin)
    return render_template(
        "auditor/verify.html",
        result=result,
        checked_at=rc.now,
        checkpoint=checkpoints.latest_checkpoint(session),
        vkey=verifier_key(origin, keys.audit_key.public_key()),
    )


def _zip_folder(folder: Path, into: IO[bytes]) -> None:
    with zipfile.ZipFile(into, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")


@bp.post("/export.zip")
@roles(Role.AUDITOR)
def export() -> Response:
    rc = current()
    when = rc.now
    name = f"signflow-audit-{when.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    # The archive can be large (a million entries): built on disk, streamed,
    # and deleted when the response closes it.
    archive = tempfile.TemporaryFile()  # noqa: SIM115 - send_file closes it
    try:
        with tempfile.TemporaryDirectory(prefix="signflow-export-") as work:
            audit_export.export_bundle(
                rc.session,
                Path(work) / name,
                signing_key=rc.services.keys.audit_key,
                origin=rc.services.settings.audit_origin,
                now=when,
                actor=rc.actor,
            )
            _zip_folder(Path(work) / name, archive)
    except BaseException:
        archive.close()
        raise
    archive.seek(0)
    response = send_file(
        archive, mimetype="application/zip", as_attachment=True, download_name=f"{name}.zip"
    )
    response.headers["Cache-Control"] = "no-store"
    return response
