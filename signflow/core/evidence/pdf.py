"""The layout of the evidence report PDF (fpdf2): request facts, audit events, the
checkpoint, the inclusion proofs and how to verify them, and where the seal goes."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos

from signflow.core.audit import log as audit
from signflow.core.audit.checkpoints import SignedHead
from signflow.core.i18n import N_, ROLE_LABELS, Translator
from signflow.core.i18n import label as label_of
from signflow.core.pades import sign as signing
from signflow.core.pki.seal import SEAL_NAME
from signflow.models import AuditEntry, User

ATTACHMENT_NAME = "evidence.json"

SANS = "NotoSans"
MONO = "Courier"  # the hashes are ASCII: a core font keeps them on one line, fixed width
MARGIN = 42.0
LABEL_WIDTH = 118.0
STAMP_WIDTH, STAMP_HEIGHT = signing.STAMP_SIZE
GREY = (90, 98, 110)
BLACK = (20, 24, 28)
HOW_TO_VERIFY = N_(
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


# The internals _draw relies on (fpdf2 2.8); without them, plain FPDF.text().
_FAST_TEXT = all(hasattr(FPDF, name) for name in ("_out", "_set_font_for_page",
                                                   "current_font_is_set_on_page"))


@dataclass(frozen=True)
class ProvenEntry:
    entry: AuditEntry
    data: dict[str, Any]
    proof: tuple[bytes, ...]


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _local(when: datetime, tz: str) -> str:
    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def both_times(when: datetime | None, tz: str, t: Translator | None = None) -> str:
    """UTC, then the hospital's wall clock as the report's language writes it."""
    if not when:
        return "—"
    local = t.when(when) if t is not None and t.language != "en" else _local(when, tz)
    return f"{_utc(when)}  ·  {local} ({tz})"


def _detail_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _is_hex_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) in (40, 64, 128) and all(
        c in "0123456789abcdef" for c in value
    )


class ReportPdf(FPDF):
    """A4 report with a running header and "Page n of N" footers."""

    def __init__(self, tz: str, request_id: int, now: datetime, t: Translator | None = None) -> None:
        super().__init__(orientation="portrait", unit="pt", format="A4")
        self.tz = tz
        # The reader's words (the site language); the hashes, JSON and note stay verbatim.
        self.t = t or Translator("en", tz)
        self.request_id = request_id
        self.generated = now
        self._widths: dict[tuple[str, float], float] = {}
        self.add_font(SANS, "", str(signing.FONT_PATH))
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(True, margin=MARGIN + 12)
        self.alias_nb_pages()
        # fpdf2 would otherwise stamp the wall clock into the file.
        self.set_creation_date(now)
        self.set_title(self.t(N_("Evidence report, request #%(id)s"), id=request_id))
        self.set_author("signflow")
        self.set_creator("signflow")
        self.set_producer("signflow")

    # fpdf2 hooks ---------------------------------------------------------

    def set_text_color(self, r: Any, g: Any = -1, b: Any = -1) -> None:
        # Nothing here is filled; with the fill colour equal to the text colour,
        # fpdf2 writes the colour once instead of around each of ~30,000 lines.
        key = (r, g, b)
        colours = self.__dict__.setdefault("_colours", {})  # also called by FPDF.__init__
        known = colours.get(key)
        if known is None or not _FAST_TEXT:
            super().set_text_color(r, g, b)
            super().set_fill_color(r, g, b)
            if self.text_color is not None:
                colours[key] = (self.text_color, self.text_color.serialize().lower())
            return
        self.text_color = self.fill_color = known[0]
        if self.page > 0:
            self._out(known[1])

    def header(self) -> None:
        self.set_font(SANS, size=7.5)
        self.set_text_color(*GREY)
        self.cell(
            0, 10, self.t(N_("signflow evidence report · request #%(id)s · %(time)s"),
                          id=self.request_id, time=_utc(self.generated)),
            new_x=XPos.LMARGIN, new_y=YPos.NEXT,
        )
        self.ln(6)
        self.set_text_color(*BLACK)

    def footer(self) -> None:
        self.set_y(-MARGIN + 6)
        self.set_font(SANS, size=7.5)
        self.set_text_color(*GREY)
        self.cell(0, 10, self.t(N_("Page %(n)s of %(count)s"), n=self.page_no(), count="{nb}"),
                  align="C")
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
        self._fixed_width(body, size * 1.3)

    def _line(self, width: float, height: float, body: str, *, newline: bool = True) -> None:
        """One line from the current x, placed as cell(width, height, body) places it
        (left aligned, centred in its height), drawn with text(): cell costs ten times
        as much, and a report of 1,000 entries has some 30,000 lines."""
        if self.will_page_break(height):
            x = self.get_x()
            self.add_page()
            self.set_x(x)
        x = self.get_x()
        self._draw(x + self.c_margin, self.y + 0.5 * height + 0.3 * self.font_size, body)
        if newline:
            self.set_xy(self.l_margin, self.y + height)
        else:
            self.set_x(x + width)

    def _digit_width(self) -> float:
        # get_string_width runs fpdf2's whole text pipeline; in a fixed-width font
        # one width per size is all there is to know.
        key = (self.font_family, self.font_size)
        if key not in self._widths:
            self._widths[key] = self.get_string_width("0")
        return self._widths[key]

    def _draw(self, x: float, y: float, body: str) -> None:
        """FPDF.text() for our plain lines (no underline, fill text mode, the colour
        already set, see set_text_color), without its per-call checks: half its cost."""
        font = self.current_font
        if not _FAST_TEXT or font is None or (font.type == "core" and not body.isascii()):
            self.text(x, y, body)
            return
        if not self.current_font_is_set_on_page:
            self._out(self._set_font_for_page(font, self.font_size_pt))
        self._out(f"BT {x * self.k:.2f} {(self.h - y) * self.k:.2f} Td {font.encode_text(body)} ET")

    def _fixed_width(self, body: str, height: float) -> None:
        """ASCII in the current (fixed-width) font from the current x, cut every so many
        characters as multi_cell's character wrap would, one _line each."""
        if not body.isascii() or "\n" in body:
            self.multi_cell(0, height, body, align="L", wrapmode=WrapMode.CHAR,
                            new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            return
        x = self.get_x()
        width = self.w - self.r_margin - x
        per_line = max(1, int((width - 2 * self.c_margin) // self._digit_width()))
        for start in range(0, max(len(body), 1), per_line):
            self.set_x(x)
            self._line(width, height, body[start:start + per_line])

    def _short(self, body: str, height: float) -> None:
        """One _line when it fits, else multi_cell's word wrap."""
        width = self.w - self.r_margin - self.get_x()
        room = width - 2 * self.c_margin
        # No glyph of the fonts used is wider than 1 em: a short line needs no measuring.
        if "\n" not in body and (len(body) * self.font_size <= room
                                 or self.get_string_width(body) <= room):
            self._line(width, height, body)
        else:
            self.multi_cell(0, height, body, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def pair(self, label: str, value: str, is_hash: bool = False, indent: float = 0) -> None:
        if self.will_page_break(11):
            self.add_page()
        self.set_x(self.l_margin + indent)
        self.set_font(SANS, size=8.5)
        self.set_text_color(*GREY)
        self._line(LABEL_WIDTH - indent, 11, label, newline=False)
        self.set_text_color(*BLACK)
        if is_hash and value.isascii():
            self.set_font(MONO, size=7.5)
            self._fixed_width(value, 11)
        else:
            self._short(value, 11)

    # the document --------------------------------------------------------

    def build(
        self,
        *,
        facts: Sequence[tuple[str, str, bool]],
        signatures: Sequence[Sequence[tuple[str, str, bool]]],
        proven: Sequence[ProvenEntry],
        display_names: dict[int, str],
        checkpoint: SignedHead,
        origin: str,
        vkey: str,
        reader: User,
    ) -> tuple[int, tuple[float, float, float, float]]:
        """Lay the report out; return where the seal's visible stamp goes."""
        self.add_page()
        self.set_font(SANS, size=18)
        t = self.t
        self.multi_cell(0, 24, t(N_("Evidence report — request #%(id)s"), id=self.request_id),
                        new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.paragraph(t(N_(
            "Generated %(time)s for %(name)s (%(username)s, %(role)s). Every audit entry of "
            "this request is listed below with its inclusion proof against checkpoint %(size)s "
            "of the signflow audit log, and the report is sealed by \"%(seal)s\"."),
            time=both_times(self.generated, self.tz, self.t), name=reader.display_name,
            username=reader.username, role=t(label_of(ROLE_LABELS, reader.role)),
            size=checkpoint.size, seal=SEAL_NAME))

        self.heading(t(N_("1. Request")))
        for label, value, is_hash in facts:
            self.pair(label, value, is_hash)
        for number, rows in enumerate(signatures, start=1):
            self.heading(t(N_("Signature %(number)s"), number=number), size=10.5)
            for label, value, is_hash in rows:
                self.pair(label, value, is_hash)

        self.heading(t(N_("2. Audit events (%(count)s)"), count=len(proven)))
        if not proven:
            self.paragraph(t(N_("The audit log holds no entry for this request.")))
        for item in proven:
            self._event(item, display_names)

        self.heading(t(N_("3. Checkpoint")))
        root = checkpoint.root
        self.pair(t(N_("Origin")), origin)
        self.pair(t(N_("Tree size")), str(checkpoint.size))
        self.pair(t(N_("Root hash (hex)")), root.hex(), True)
        self.pair(t(N_("Root hash (base64)")), base64.b64encode(root).decode(), True)
        self.pair(t(N_("Signed")), both_times(self.generated, self.tz, self.t))
        self.pair(t(N_("Verifier key")), vkey, True)
        self.ln(4)
        self.paragraph(t(N_("Signed note (C2SP tlog-checkpoint as C2SP signed-note), verbatim:")),
                       size=8.5)
        self._note(checkpoint.note)

        self.heading(t(N_("4. Inclusion proofs")))
        self.paragraph(t(N_(
            "Against checkpoint size %(size)s, root %(root)s…; "
            "hashes from the leaf's sibling up to the root (RFC 9162 section 2.1.3)."),
            size=checkpoint.size, root=root.hex()[:16]), size=8.5)
        for item in proven:
            if self.will_page_break(11 * (len(item.proof) + 2)):
                self.add_page()
            self.set_font(SANS, size=8.5)
            self._short(t(N_("Entry #%(seq)s (%(action)s)"), seq=item.entry.seq,
                          action=item.entry.action), 11)
            self.mono(f"leaf  {bytes(item.entry.leaf_hash).hex()}", indent=12)
            for step, node in enumerate(item.proof, start=1):
                self.mono(f"p{step:<4}{node.hex()}", indent=12)
            self.ln(3)

        self.heading(t(N_("5. How to verify")))
        self.paragraph(t(HOW_TO_VERIFY).format(seal=SEAL_NAME, attachment=ATTACHMENT_NAME),
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
        self._short(f"#{item.entry.seq}  {data.get('action', item.entry.action)}", 13)
        t = self.t
        self.pair(t(N_("Time (UTC)")), str(data.get("time", "")), indent=12)
        self.pair(t(N_("Time (%(zone)s)"), zone=self.tz), _local(item.entry.time, self.tz), indent=12)
        who = str(actor.get("name", ""))
        actor_id = actor.get("id")
        if isinstance(actor_id, int) and actor_id in display_names:
            who += f" ({display_names[actor_id]})"
        details = [str(actor.get("role", ""))]
        if actor_id is not None:
            details.append(t(N_("user id %(id)s"), id=actor_id))
        if actor.get("ip"):
            details.append(f"IP {actor['ip']}")
        self.pair(t(N_("Actor")), f"{who}, {', '.join(details)}", indent=12)
        for key, value in data.items():
            if key in audit.RESERVED_FIELDS:
                continue
            self.pair(key, _detail_text(value), _is_hex_digest(value), indent=12)
        self.pair(t(N_("Leaf hash")), bytes(item.entry.leaf_hash).hex(), True, indent=12)

    def _stamp_area(self) -> tuple[int, tuple[float, float, float, float]]:
        gap = 10.0
        if self.will_page_break(STAMP_HEIGHT + 2 * gap + 12):
            self.add_page()
        self.ln(gap)
        self.set_font(SANS, size=8.5)
        self.set_text_color(*GREY)
        self.cell(0, 12, self.t(N_("Service seal:")), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
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
            desc=self.t(N_("Entries, leaf hashes, proofs and checkpoint of this report")),
        )

    def output_bytes(self) -> bytes:
        return bytes(self.output())
