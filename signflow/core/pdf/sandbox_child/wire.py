"""What parent and child agree on: the frame format, the limits, the refusal.

Standard library only: the parent imports this module, and the child imports it
before its resource limits are set.

Wire format, both directions: 4-byte big-endian header length, a JSON header,
then the raw payload (PDF bytes in, normalised PDF or PNG out).
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

MiB = 1024 * 1024
# A decoded stream pyHanko would refuse anyway (its 0.38 per-stream default).
MAX_STREAM_DECODED = 256 * MiB
MAX_TOTAL_DECODED = 1024 * MiB
# An image as decoded (width x height x bits per component x components / 8): an
# A3 colour scan at 600 dpi is 210 MB, a 1-bit A0 fax scan at 300 dpi 17 MB; a
# declared 60000x60000 RGB image is 10 GB.
MAX_IMAGE_BYTES = 256 * MiB
# Rendered previews: a 1000 px wide A4 page is 1.4 Mpx; this bounds odd shapes.
MAX_RENDER_PIXELS = 8_000_000
MAX_RENDER_SIDE = 16_384



def frame(header: dict[str, Any], payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw + payload


def unframe(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < 4:
        raise ValueError("short frame")
    (size,) = struct.unpack(">I", data[:4])
    if size > len(data) - 4:
        raise ValueError("bad frame length")
    header = json.loads(data[4 : 4 + size])
    if not isinstance(header, dict):
        raise ValueError("bad frame header")
    return header, data[4 + size :]


def N_(message: str) -> str:  # noqa: N802 - core.i18n's marker; the child imports nothing of core
    """Marks a message id for the catalogue (the parent translates it)."""
    return message


def notice(msgid: str, **params: object) -> dict[str, object]:
    """An upload notice as the parent reads it (core.i18n.messages_of): a message id
    and its parameters, translated for whoever reads the request."""
    return {"msgid": msgid, "params": params}


class Refuse(Exception):
    """`message` is for the user (a message id with `params`, translated by the
    parent's reader); `detail` (the parser's own error) only for the log."""

    def __init__(self, message: str, kind: str = "invalid", detail: str | None = None,
                 params: dict[str, str | int] | None = None) -> None:
        self.msgid = message
        self.params = dict(params or {})
        if self.params:
            message = message % self.params
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail


UNREADABLE = N_(
    "the PDF could not be read: it is damaged or incomplete. Open it in a PDF reader, "
    "save it (or print it to PDF) again, and upload that copy"
)
_QUOTED = re.compile(r"`[^`]*`|'[^']*'|\"[^\"]*\"|\([^()]*\)|<<.*?>>|\[[^\]]*\]")


def parser_error(exc: BaseException | str, limit: int = 300) -> str:
    """A parser's message for the support log, without document content: quoted or
    bracketed text (tokens, strings, dictionaries the parser echoes) is elided and
    the rest kept to printable ASCII, cut at `limit` characters."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    text = _QUOTED.sub("…", re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", "input", text))
    text = "".join(c if " " <= c <= "~" or c == "…" else " " for c in text)
    return " ".join(text.split())[:limit]


def out_of_memory(exc: BaseException) -> bool:
    # qpdf reports a failed allocation as a decoding error carrying std::bad_alloc.
    return isinstance(exc, MemoryError) or "bad_alloc" in str(exc)
