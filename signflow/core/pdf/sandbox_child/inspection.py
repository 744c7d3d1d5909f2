"""Hostile-structure checks on an opened document: existing signatures,
decompression and image bombs (active content: sandbox_child.active_content)."""

from __future__ import annotations

import zlib
from typing import Any

from signflow.core.pdf.sandbox_child.objects import (
    is_dictlike,
    kids,
    name_of,
    unique_dicts,
)
from signflow.core.pdf.sandbox_child.wire import (
    MAX_IMAGE_PIXELS,
    MAX_STREAM_DECODED,
    MAX_TOTAL_DECODED,
    MiB,
    Refuse,
    out_of_memory,
)

FLATE = {"/FlateDecode", "/Fl"}
GENERIC_FILTERS = FLATE | {
    "/ASCIIHexDecode",
    "/AHx",
    "/ASCII85Decode",
    "/A85",
    "/LZWDecode",
    "/LZW",
    "/RunLengthDecode",
    "/RL",
}


def has_signature(pdf: Any) -> bool:
    import pikepdf

    perms = pdf.Root.get("/Perms")
    if is_dictlike(perms) and "/DocMDP" in perms:
        return True
    candidates: list[Any] = []
    acroform = pdf.Root.get("/AcroForm")
    if is_dictlike(acroform) and isinstance(acroform.get("/Fields"), pikepdf.Array):
        candidates.extend(acroform["/Fields"])
    for page in pdf.pages:
        annots = page.obj.get("/Annots")
        if isinstance(annots, pikepdf.Array):
            candidates.extend(annots)
    for node in unique_dicts(candidates, kids, limit=200_000):
        value = node.get("/V")
        if name_of(node.get("/FT")) == "/Sig" and is_dictlike(value):
            return True
        if is_dictlike(value) and "/ByteRange" in value:
            return True
    return False


def filters_of(stream: Any) -> list[str]:
    import pikepdf

    raw = stream.get("/Filter")
    if isinstance(raw, pikepdf.Name):
        return [str(raw)]
    if isinstance(raw, pikepdf.Array):
        return [str(item) for item in raw if isinstance(item, pikepdf.Name)]
    return []


def inflated_size(raw: bytes, cap: int) -> int:
    """Decoded size of a zlib stream, counted without keeping the output."""
    inflater = zlib.decompressobj()
    total = 0
    view = memoryview(raw)
    chunk = 1 << 16
    try:
        for start in range(0, len(view), chunk):
            data: bytes | memoryview = view[start : start + chunk]
            while data:
                out = inflater.decompress(data, 1 << 20)
                total += len(out)
                if total > cap:
                    return total
                data = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error:
        # Damaged data: the renderer decodes what it can, no more than this.
        pass
    return total


def check_sizes(streams: list[Any]) -> None:
    import pikepdf

    total = 0
    for stream in streams:
        if name_of(stream.get("/Subtype")) == "/Image":
            width, height = stream.get("/Width", 0), stream.get("/Height", 0)
            if (
                isinstance(width, int)
                and isinstance(height, int)
                and width * height > MAX_IMAGE_PIXELS
            ):
                raise Refuse("the PDF contains an image too large to display")
        filters = filters_of(stream)
        if not filters:
            continue
        if filters[0] in FLATE:
            size = inflated_size(stream.read_raw_bytes(), MAX_STREAM_DECODED)
        elif all(item in GENERIC_FILTERS for item in filters):
            try:
                size = len(stream.read_bytes(pikepdf.StreamDecodeLevel.specialized))
            except pikepdf.PdfError as exc:
                if out_of_memory(exc):
                    raise MemoryError from None
                # Undecodable: PDFium will fail on it too, inside its own limits.
                continue
        else:
            continue
        if size > MAX_STREAM_DECODED:
            raise Refuse(
                f"the PDF contains a stream that expands beyond {MAX_STREAM_DECODED // MiB} MiB"
            )
        total += size
        if total > MAX_TOTAL_DECODED:
            raise Refuse(
                f"the PDF expands beyond {MAX_TOTAL_DECODED // MiB} MiB when decompressed"
            )
