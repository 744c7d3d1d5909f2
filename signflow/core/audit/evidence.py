"""Evidence reports and the auditor's workspace queries.

An evidence report is a PDF, sealed by the service (PAdES B-LTA, see
core.seal), that lists everything the audit log holds about one request:
every entry with its leaf hash and its RFC 9162 inclusion proof against a
checkpoint written just before, the checkpoint's signed note and the audit
verifier key. A reader can therefore check offline, with
signflow.auditverify and nothing else, that these entries are exactly the
ones the service committed to, and with any PDF validator that the report
itself is what the service issued.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from signflow.auditverify import parse_canonical_line, verifier_key
from signflow.core.accounts.users import actor_of
from signflow.core.audit import log as audit
from signflow.core.errors import AuditIntegrityError, Forbidden
from signflow.core.pades import sign as signing
from signflow.core.pki.seal import SEAL_NAME, Seal
from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests.deps import Deps
from signflow.models import (
    AuditEntry,
    Checkpoint,
    Destination,
    OnCallGroup,
    Role,
    Signature,
    SignatureRequest,
    User,
)

REPORT_READERS = frozenset({Role.TECHNICIAN, Role.RECIPIENT, Role.AUDITOR})
REPORT_ACTION = "evidence.generated"
ATTACHMENT_NAME = "evidence.json"

SANS = "NotoSans"
MONO = "Courier"  # the hashes are ASCII: a core font keeps them on one line, fixed width
MARGIN = 42.0
LABEL_WIDTH = 118.0
STAMP_WIDTH, STAMP_HEIGHT = signing.STAMP_SIZE
GREY = (90, 98, 110)
BLACK = (20, 24, 28)

HOW_TO_VERIFY = (
    "1. The report: open it in a PDF reader, or run `signflow verify REPORT.pdf`; its seal "
    "(\"{seal}\") must be valid and trusted under the hospital root CA and cover the whole "
    "file.\n"
    "2. The entries: each entry's leaf hash is SHA-256(0x00 || line), where line is the "
    "entry's canonical JSON (attached to this PDF as {attachment}). With the entry's seq as "
    "leaf index and the checkpoint size as tree size, the proof hashes (RFC 9162 section "
    "2.1.3) must rebuild the checkpoint root; signflow.auditverify.verify_inclusion does "
    "exactly that, with Python and the cryptography package only.\n"
    "3. The checkpoint: its signed note must verify under the audit verifier key obtained "
    "from the operator (not from this report): "
    "signflow.auditverify.open_checkpoint(note, origin, key).\n"
    "4. The whole log: ask the operator for an export (`signflow audit export OUT`, or "
    "\"Export\" in the auditor's workspace) and run `python -m signflow.auditverify OUT "
    "--trusted-key VKEY`; a later export must still contain this checkpoint's tree "
    "(pass it with --checkpoint)."
)


@dataclass(frozen=True)
class ProvenEntry:
    entry: AuditEntry
    data: dict[str, Any]
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Timeline:
    request: SignatureRequest
    entries: tuple[tuple[AuditEntry, dict[str, Any]], ...]


@dataclass(frozen=True)
class UserChoice:
    id: int
    username: str
    role: str


# ---------------------------------------------------------------- workspace queries


def known_actions(session: Session) -> list[str]:
    """Every distinct action in the log, by a loose index scan on ix_audit_action_seq:
    one index probe per distinct action, so a million entries cost what ten do."""
    rows = session.execute(
        text(
            "WITH RECURSIVE actions(name) AS ("
            " SELECT MIN(action) FROM audit_entries"
            " UNION ALL"
            " SELECT (SELECT MIN(action) FROM audit_entries WHERE action > actions.name)"
            " FROM actions WHERE actions.name IS NOT NULL"
            ") SELECT name FROM actions WHERE name IS NOT NULL"
        )
    )
    return [str(name) for (name,) in rows]


def user_choices(session: Session) -> list[UserChoice]:
    rows = session.execute(select(User.id, User.username, User.role).order_by(User.username))
    return [UserChoice(id=uid, username=name, role=role) for uid, name, role in rows]


def request_timeline(
    session: Session, *, user: User, request_id: int, now: datetime
) -> Timeline:
    """Every entry of one request, oldest first (auditors only)."""
    req = access.get_request(session, user=user, request_id=request_id, now=now)
    if user.role != Role.AUDITOR:
        raise Forbidden("Only auditors see a request's audit timeline.")
    entries = session.scalars(
        select(AuditEntry).where(AuditEntry.request_id == req.id).order_by(AuditEntry.seq)
    )
    return Timeline(
        request=req,
        entries=tuple((e, parse_canonical_line(e.line.encode())) for e in entries),
    )


# ---------------------------------------------------------------- the report


def evidence_report(
    session: Session,
    deps: Deps,
    seal: Seal,
    *,
    user: User,
    request_id: int,
    now: datetime,
    origin: str,
    ip: str | None = None,
) -> bytes:
    """The sealed evidence PDF of one request, for its technician, its recipient
    (once delivered) or an auditor. Writes a checkpoint covering every entry
    first, and appends `evidence.generated` (with the report's SHA-256) after.
    Only flushes."""
    req = access.get_request(session, user=user, request_id=request_id, now=now)
    if user.role not in REPORT_READERS:
        raise Forbidden("Your role does not give access to evidence reports.")
    checkpoint = audit.write_checkpoint(
        session, signing_key=deps.keys.audit_key, origin=origin, now=now
    )
    proven = [
        ProvenEntry(entry=entry, data=parse_canonical_line(entry.line.encode()), proof=tuple(proof))
        for entry, proof in audit.evidence_for_request(session, req.id)
    ]
    # evidence_for_request proves against the latest checkpoint: the head lock
    # taken by write_checkpoint guarantees that is the one just written.
    latest = audit.latest_checkpoint(session)
    if latest is None or latest.id != checkpoint.id:
        raise AuditIntegrityError("the audit checkpoint changed while building the report")
    vkey = verifier_key(origin, deps.keys.audit_key.public_key())
    layout = _ReportPdf(deps.timezone, req.id, now)
    stamp_page, stamp_box = layout.build(
        facts=_facts(session, req, deps.timezone),
        signatures=_signature_lines(session, req, deps.timezone),
        proven=proven,
        display_names=_display_names(session, (p.entry.actor_id for p in proven)),
        checkpoint=checkpoint,
        origin=origin,
        vkey=vkey,
        reader=user,
    )
    layout.attach(
        json.dumps(
            {
                "request": req.id,
                "origin": origin,
                "verifier_key": vkey,
                "checkpoint": {
                    "size": checkpoint.size,
                    "root": bytes(checkpoint.root_hash).hex(),
                    "note": checkpoint.note,
                },
                "entries": [
                    {
                        "seq": p.entry.seq,
                        "line": p.entry.line,
                        "leaf": bytes(p.entry.leaf_hash).hex(),
                        "proof": [h.hex() for h in p.proof],
                    }
                    for p in proven
                ],
            },
            ensure_ascii=False,
            indent=1,
        ).encode(),
        now,
    )
    sealed = signing.sign_pdf(
        layout.output_bytes(),
        key=seal.key,
        certificate=seal.certificate,
        keys=deps.keys,
        stamp=signing.Stamp(
            signer_name=SEAL_NAME,
            professional_id=None,
            reason="Evidence report",
            when=now,
            timezone=deps.timezone,
            page=stamp_page,
            box=stamp_box,
        ),
        timestamper=deps.timestamper,
        level="B-LTA",
        crls=request_signing.current_crls(session, deps, now=now),
    )
    audit.append(
        session,
        now=now,
        actor=actor_of(user, ip),
        action=REPORT_ACTION,
        request_id=req.id,
        sha256=hashlib.sha256(sealed).hexdigest(),
        checkpoint=checkpoint.size,
    )
    return sealed


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _local(when: datetime, tz: str) -> str:
    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _both(when: datetime | None, tz: str) -> str:
    return f"{_utc(when)}  ·  {_local(when, tz)} ({tz})" if when else "—"


def _display_names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(User.id, User.display_name).where(User.id.in_(wanted)))
    return {uid: name for uid, name in rows}


def _user_label(user: User | None) -> str:
    return f"{user.display_name} ({user.username})" if user else "—"


def _facts(session: Session, req: SignatureRequest, tz: str) -> list[tuple[str, str, bool]]:
    """(label, value, is_hash) rows of the request section."""
    group_ids = access.route_of(req)
    names = {
        gid: name
        for gid, name in session.execute(
            select(OnCallGroup.id, OnCallGroup.name).where(OnCallGroup.id.in_(group_ids))
        )
    }
    destination = session.get(Destination, req.destination_id)
    rows: list[tuple[str, str, bool]] = [
        ("Request", f"#{req.id}", False),
        ("Title", req.title, False),
        ("File", req.filename, False),
        ("On-call groups", ", then ".join(names.get(g, f"#{g}") for g in group_ids), False),
        ("Destination", destination.name if destination else f"#{req.destination_id}", False),
        ("Urgency", req.urgency, False),
        ("State", req.state, False),
        ("Technician", _user_label(req.technician), False),
        ("Created", _both(req.created_at, tz), False),
        ("Deadline", _both(req.deadline_at, tz), False),
        ("Pages", str(req.page_count), False),
    ]
    if req.signed_by is not None:
        rows.append(("Signed by", _user_label(req.signed_by), False))
        rows.append(("Signed at", _both(req.signed_at, tz), False))
    if req.declined_by is not None:
        rows.append(("Declined by", _user_label(req.declined_by), False))
        rows.append(("Reason", req.decline_reason or "", False))
    if req.acknowledged_by is not None:
        rows.append(("Received by", _user_label(req.acknowledged_by), False))
        rows.append(("Received at", _both(req.acknowledged_at, tz), False))
    if req.failure_reason:
        rows.append(("Failure", req.failure_reason, False))
    removed = access.removed_content(req)
    if removed:
        rows.append(("Removed at upload", ", ".join(removed), False))
    rows.append(("SHA-256 original", req.original_sha256, True))
    rows.append(("SHA-256 normalised", req.document_sha256, True))
    rows.append(("SHA-256 signed", req.signed_sha256 or "— (not signed)", bool(req.signed_sha256)))
    return rows


def _signature_lines(
    session: Session, req: SignatureRequest, tz: str
) -> list[list[tuple[str, str, bool]]]:
    rows = session.execute(
        select(Signature, User)
        .join(User, User.id == Signature.user_id)
        .where(Signature.request_id == req.id)
        .order_by(Signature.signed_at, Signature.id)
    )
    return [
        [
            ("Signer", _user_label(signer), False),
            ("Certificate", sig.certificate_serial, True),
            ("Signed at", _both(sig.signed_at, tz), False),
            ("SHA-256 before", sig.sha256_before, True),
            ("SHA-256 after", sig.sha256_after, True),
        ]
        for sig, signer in rows
    ]


def _detail_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _is_hex_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) in (40, 64, 128) and all(
        c in "0123456789abcdef" for c in value
    )


class _ReportPdf(FPDF):
    """A4 report with a running header and "Page n of N" footers."""

    def __init__(self, tz: str, request_id: int, now: datetime) -> None:
        super().__init__(orientation="portrait", unit="pt", format="A4")
        self.tz = tz
        self.request_id = request_id
        self.generated = now
        self.add_font(SANS, "", str(signing.FONT_PATH))
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(True, margin=MARGIN + 12)
        self.alias_nb_pages()
        # fpdf2 would otherwise stamp the wall clock into the file.
        self.set_creation_date(now)
        self.set_title(f"Evidence report, request #{request_id}")
        self.set_author("signflow")
        self.set_creator("signflow")
        self.set_producer("signflow")

    # fpdf2 hooks ---------------------------------------------------------

    def header(self) -> None:
        self.set_font(SANS, size=7.5)
        self.set_text_color(*GREY)
        self.cell(
            0, 10, f"signflow evidence report · request #{self.request_id} · "
            f"{_utc(self.generated)}", new_x=XPos.LMARGIN, new_y=YPos.NEXT,
        )
        self.ln(6)
        self.set_text_color(*BLACK)

    def footer(self) -> None:
        self.set_y(-MARGIN + 6)
        self.set_font(SANS, size=7.5)
        self.set_text_color(*GREY)
        self.cell(0, 10, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(*BLACK)

    # building blocks -----------------------------------------------------

    def heading(self, title: str, size: float = 13) -> None:
        if self.will_page_break(size * 3):
            self.add_page()
        self.ln(size * 0.6)
        self.set_font(SANS, size=size)
        self.set_text_color(11, 92, 173)
        self.multi_cell(0, size * 1.3, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(*BLACK)
        self.ln(2)

    def paragraph(self, body: str, size: float = 9) -> None:
        self.set_font(SANS, size=size)
        self.multi_cell(0, size * 1.35, body, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(3)

    def mono(self, body: str, size: float = 7.5, indent: float = 0) -> None:
        self.set_x(self.l_margin + indent)
        self.set_font(MONO, size=size)
        self.multi_cell(0, size * 1.3, body, align="L", wrapmode=WrapMode.CHAR,
                        new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def pair(self, label: str, value: str, is_hash: bool = False, indent: float = 0) -> None:
        if self.will_page_break(11):
            self.add_page()
        self.set_x(self.l_margin + indent)
        self.set_font(SANS, size=8.5)
        self.set_text_color(*GREY)
        self.cell(LABEL_WIDTH - indent, 11, label)
        self.set_text_color(*BLACK)
        if is_hash and value.isascii():
            self.set_font(MONO, size=7.5)
            self.multi_cell(0, 11, value, align="L", wrapmode=WrapMode.CHAR,
                            new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        else:
            self.multi_cell(0, 11, value, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    # the document --------------------------------------------------------

    def build(
        self,
        *,
        facts: Sequence[tuple[str, str, bool]],
        signatures: Sequence[Sequence[tuple[str, str, bool]]],
        proven: Sequence[ProvenEntry],
        display_names: dict[int, str],
        checkpoint: Checkpoint,
        origin: str,
        vkey: str,
        reader: User,
    ) -> tuple[int, tuple[float, float, float, float]]:
        """Lay the report out; return where the seal's visible stamp goes."""
        self.add_page()
        self.set_font(SANS, size=18)
        self.multi_cell(0, 24, f"Evidence report — request #{self.request_id}",
                        new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.paragraph(
            f"Generated {_both(self.generated, self.tz)} for {reader.display_name} "
            f"({reader.username}, {reader.role}). Every audit entry of this request is listed "
            f"below with its inclusion proof against checkpoint {checkpoint.size} of the "
            f"signflow audit log, and the report is sealed by \"{SEAL_NAME}\".",
        )

        self.heading("1. Request")
        for label, value, is_hash in facts:
            self.pair(label, value, is_hash)
        for number, rows in enumerate(signatures, start=1):
            self.heading(f"Signature {number}", size=10.5)
            for label, value, is_hash in rows:
                self.pair(label, value, is_hash)

        self.heading(f"2. Audit events ({len(proven)})")
        if not proven:
            self.paragraph("The audit log holds no entry for this request.")
        for item in proven:
            self._event(item, display_names)

        self.heading("3. Checkpoint")
        root = bytes(checkpoint.root_hash)
        self.pair("Origin", origin)
        self.pair("Tree size", str(checkpoint.size))
        self.pair("Root hash (hex)", root.hex(), True)
        self.pair("Root hash (base64)", base64.b64encode(root).decode(), True)
        self.pair("Written", _both(checkpoint.created_at, self.tz))
        self.pair("Verifier key", vkey, True)
        self.ln(4)
        self.paragraph("Signed note (C2SP tlog-checkpoint as C2SP signed-note), verbatim:",
                       size=8.5)
        self._note(checkpoint.note)

        self.heading("4. Inclusion proofs")
        self.paragraph(
            f"Against checkpoint size {checkpoint.size}, root {root.hex()[:16]}…; "
            "hashes from the leaf's sibling up to the root (RFC 9162 section 2.1.3).",
            size=8.5,
        )
        for item in proven:
            if self.will_page_break(11 * (len(item.proof) + 2)):
                self.add_page()
            self.set_font(SANS, size=8.5)
            self.cell(0, 11, f"Entry #{item.entry.seq} ({item.entry.action})",
                      new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.mono(f"leaf  {bytes(item.entry.leaf_hash).hex()}", indent=12)
            for step, node in enumerate(item.proof, start=1):
                self.mono(f"p{step:<4}{node.hex()}", indent=12)
            self.ln(3)

        self.heading("5. How to verify")
        self.paragraph(HOW_TO_VERIFY.format(seal=SEAL_NAME, attachment=ATTACHMENT_NAME),
                       size=8.5)
        return self._stamp_area()

    def _note(self, note: str) -> None:
        # Fixed width keeps a signature line (~115 characters) on one line, so
        # that it can be copied back intact; only the em dash needs the Unicode font.
        for line in note.rstrip("\n").split("\n"):
            if not line:
                self.ln(9)
            elif line.isascii():
                self.mono(line, size=6.5)
            elif line.startswith("— ") and line[2:].isascii():
                self.set_font(SANS, size=6.5)
                self.cell(self.get_string_width("— "), 8.5, "— ")
                self.set_font(MONO, size=6.5)
                self.multi_cell(0, 8.5, line[2:], align="L", wrapmode=WrapMode.CHAR,
                                new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            else:
                self.set_font(SANS, size=6.5)
                self.multi_cell(0, 8.5, line, align="L", wrapmode=WrapMode.CHAR,
                                new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def _event(self, item: ProvenEntry, display_names: dict[int, str]) -> None:
        data = item.data
        actor = data.get("actor")
        if not isinstance(actor, dict):
            actor = {}
        if self.will_page_break(60):
            self.add_page()
        self.ln(3)
        self.set_font(SANS, size=10)
        self.multi_cell(0, 13, f"#{item.entry.seq}  {data.get('action', item.entry.action)}",
                        new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.pair("Time (UTC)", str(data.get("time", "")), indent=12)
        self.pair(f"Time ({self.tz})", _local(item.entry.time, self.tz), indent=12)
        who = str(actor.get("name", ""))
        actor_id = actor.get("id")
        if isinstance(actor_id, int) and actor_id in display_names:
            who += f" ({display_names[actor_id]})"
        details = [str(actor.get("role", ""))]
        if actor_id is not None:
            details.append(f"user id {actor_id}")
        if actor.get("ip"):
            details.append(f"IP {actor['ip']}")
        self.pair("Actor", f"{who}, {', '.join(details)}", indent=12)
        for key, value in data.items():
            if key in audit.RESERVED_FIELDS:
                continue
            self.pair(key, _detail_text(value), _is_hex_digest(value), indent=12)
        self.pair("Leaf hash", bytes(item.entry.leaf_hash).hex(), True, indent=12)

    def _stamp_area(self) -> tuple[int, tuple[float, float, float, float]]:
        gap = 10.0
        if self.will_page_break(STAMP_HEIGHT + 2 * gap + 12):
            self.add_page()
        self.ln(gap)
        self.set_font(SANS, size=8.5)
        self.set_text_color(*GREY)
        self.cell(0, 12, "Service seal:", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(*BLACK)
        top = self.get_y()
        right = self.w - self.r_margin
        # PDF user space runs bottom-up; fpdf2's y runs top-down.
        box = (right - STAMP_WIDTH, self.h - top - STAMP_HEIGHT, right, self.h - top)
        return self.page_no(), box

    def attach(self, data: bytes, now: datetime) -> None:
        self.embed_file(
            bytes=data,
            basename=ATTACHMENT_NAME,
            creation_date=now,
            modification_date=now,
            mime_type="application/json",
            desc="Entries, leaf hashes, proofs and checkpoint of this report",
        )

    def output_bytes(self) -> bytes:
        return bytes(self.output())
