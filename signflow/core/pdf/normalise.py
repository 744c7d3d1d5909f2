"""Inspection and normalisation of uploaded PDFs.

An upload is never previewed or signed as received. It is parsed in the
sandbox (signflow.core.pdf.sandbox: separate process, memory and time limits),
refused if it needs a password, is empty, too long, already signed or too
expensive to decode, cleaned of dangerous active content (JavaScript, launch,
remote, submit and import actions, non-web links, embedded files, XFA, rich
media: sandbox_child.active_content; harmless navigation such as the initial
view, go-to-page and https links is kept), its XMP metadata repaired or
dropped when pyHanko could not sign over it, and a PDF/A claim kept only when
nothing it covers changed (sandbox_child.metadata); then rewritten in full:
a new file holding only the objects reachable from the catalogue, so nothing
hidden in an earlier revision or an unreferenced object survives (shadow
attacks). The result must read identically in qpdf,
PDFium and pyHanko (strict), the three engines that will see it. Those bytes
are what is previewed and what is signed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

from signflow.core.errors import DocumentTooLarge, InvalidDocument, SignflowError
from signflow.core.i18n import N_, Msg, messages_of
from signflow.core.pdf.sandbox import DEFAULT_LIMITS, SandboxLimits, SandboxRefusal, run_checked

ACTIVE_CONTENT_MODES = ("strip", "refuse")
# Many readers accept a header after some junk (mail gateways prepend it);
# the rewrite then starts the file at %PDF- again.
HEADER_WINDOW = 1024
UNSAFE = N_("the PDF could not be processed safely (it takes more time or memory to open than "
          "this site allows): save or print it to PDF again, or scan it at 300 dpi or less, "
          "and upload that copy")
NOT_A_PDF = N_("not a PDF: upload the PDF itself (in the program that shows the document, "
             "use Save as PDF or Print to PDF)")

log = logging.getLogger("signflow.upload")


@dataclass(frozen=True)
class NormalisedPdf:
    data: bytes  # the normalised bytes: previewed AND signed
    sha256: str  # of data
    original_sha256: str  # of the upload
    page_count: int
    removed: tuple[str, ...]  # what was stripped, human-readable
    # What the technician should know besides (what became of a PDF/A claim...).
    notices: tuple[Msg, ...] = ()


def normalise_upload(
    data: bytes,
    *,
    max_bytes: int,
    max_pages: int,
    active_content: str = "strip",
    allow_signed: bool = False,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> NormalisedPdf:
    """Check and rewrite an upload; raises DocumentTooLarge or InvalidDocument
    (message safe to show, ending with a reference that support finds in the log
    next to the parser's own error), ServiceUnavailable when every sandbox stays busy."""
    if active_content not in ACTIVE_CONTENT_MODES:
        raise ValueError("active_content must be 'strip' or 'refuse'")
    original_sha256 = hashlib.sha256(data).hexdigest()
    reference = upload_reference(original_sha256)
    if len(data) > max_bytes:
        log.info("upload %s refused: %d bytes, over the %d byte limit", reference, len(data),
                 max_bytes)
        raise DocumentTooLarge(
            N_("the PDF is larger than %(human_size)s, the limit of this site: ask for a "
               "lighter copy (scanned at 300 dpi or less, in black and white for text) or "
               "split it into parts of at most %(human_size)s and send each one"),
                   params={'human_size': _human_size(max_bytes)})
    if b"%PDF-" not in data[: HEADER_WINDOW + 5]:
        log.info("upload %s refused: no %%PDF- header in the first %d bytes", reference,
                 HEADER_WINDOW)
        raise _referenced(NOT_A_PDF, reference)
    params = {
        "max_pages": max_pages,
        "active_content": active_content,
        "allow_signed": allow_signed,
    }
    def refused(refusal: SandboxRefusal) -> SignflowError:
        log.warning("upload %s refused: %s; parser: %s", reference, refusal.message,
                    refusal.detail or "-")
        return _referenced(refusal.as_msg(), reference)

    result = run_checked("normalise", params, data, limits, refused=refused,
                         label=f"upload {reference}", failure=_referenced(UNSAFE, reference),
                         busy=N_("the server is busy checking other documents; try again in a minute"))
    page_count = result.meta.get("page_count")
    removed = result.meta.get("removed")
    notices = result.meta.get("notices", [])
    if (not isinstance(page_count, int) or not isinstance(removed, list)
            or not isinstance(notices, list) or not result.payload):
        log.warning("upload %s refused: malformed sandbox answer", reference)
        raise _referenced(UNSAFE, reference)
    warnings = result.meta.get("warnings")
    if warnings:
        log.info("upload %s repaired by the parser: %s", reference, "; ".join(map(str, warnings)))
    return NormalisedPdf(
        data=result.payload,
        sha256=hashlib.sha256(result.payload).hexdigest(),
        original_sha256=original_sha256,
        page_count=page_count,
        removed=tuple(str(item) for item in removed),
        notices=messages_of(notices),
    )


def upload_reference(original_sha256: str) -> str:
    """What the technician quotes to support: the start of the upload's SHA-256
    (also in the request's audit entry), logged with every refusal."""
    return original_sha256[:12]


def _referenced(message: str | Msg, reference: str) -> InvalidDocument:
    """The refusal of an upload, with the reference support looks up in the log."""
    problem = message if isinstance(message, Msg) else Msg(message)
    return InvalidDocument(N_("%(problem)s (reference for support: %(reference)s)"),
                           params={"problem": problem, "reference": reference})


def _human_size(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KB"
    return f"{size} bytes"


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._ ()+-]+")
MAX_FILENAME = 100


def sanitize_filename(name: str) -> str:
    """A safe ASCII basename ending in .pdf: no path, no control or shell-special
    characters, no leading dot, at most MAX_FILENAME characters, never empty."""
    # Both separators: a Windows browser may send C:\\Users\\...\\scan.pdf.
    base = PureWindowsPath(PurePosixPath(name or "").name).name
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"_+", "_", _UNSAFE_CHARS.sub("_", ascii_name))
    stem = cleaned[:-4] if cleaned.lower().endswith(".pdf") else cleaned
    # No leading dot (hidden file) or dash (option-like), no trailing dot or space (Windows).
    stem = stem.strip(" ._-")
    if not stem.strip("_ "):
        stem = "document"
    stem = stem[: MAX_FILENAME - len(".pdf")].rstrip(" ._-") or "document"
    return stem + ".pdf"
