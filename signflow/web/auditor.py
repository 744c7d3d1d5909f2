"""Auditors: browse and verify the audit trail (read-only)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import Blueprint, render_template, request, url_for

from signflow.core import audit
from signflow.models import Role
from signflow.web import db, now, services
from signflow.web.guards import roles

bp = Blueprint("auditor", __name__, url_prefix="/audit")
PAGE = 50


def _date(name: str) -> datetime | None:
    raw = request.args.get(name, "")
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC) if raw else None
    except ValueError:
        return None


@bp.get("/")
@roles(Role.AUDITOR)
def index() -> str:
    entries = audit.search(
        db(),
        request_id=request.args.get("request", type=int),
        actor_id=request.args.get("actor", type=int),
        action=(request.args.get("action") or "").strip()[:60] or None,
        since=_date("since"),
        until=_date("until"),
        after_seq=request.args.get("before", type=int),
        limit=PAGE,
    )
    rows = [(e, json.loads(e.line)) for e in entries]
    older_url = None
    if len(entries) == PAGE:
        older_url = url_for("auditor.index", **{**request.args.to_dict(), "before": entries[-1].seq})
    return render_template("auditor/index.html", rows=rows, args=request.args, older_url=older_url)


@bp.get("/verify")
@roles(Role.AUDITOR)
def verify() -> str:
    keys = services().keys
    result = audit.verify_log(db(), public_key=keys.audit_key.public_key(),
                              origin=services().settings.audit_origin)
    return render_template("auditor/verify.html", result=result, checked_at=now())
