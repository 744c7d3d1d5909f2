"""Decompression bounds that hold: every stream reachable from the trailer is
decoded stage by stage, streaming, through its whole filter chain (Flate,
LZW, RunLength, ASCII85, ASCIIHex in any order), and no stage may produce more
than MAX_STREAM_DECODED; the last stage's sizes add up to MAX_TOTAL_DECODED.
Nothing is kept: each stage feeds the next in chunks of at most CHUNK bytes.

Images are bounded by what decoding them really costs: width x height x bits
per component x colour components (a 1-bit A0 fax scan is ~17 MB, a 16-bit
RGB poster of the same size 2.5 GB).

pikepdf is imported inside the functions (the child sets its limits first).
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from signflow.core.pdf.sandbox_child.objects import name_of
from signflow.core.pdf.sandbox_child.wire import (
    MAX_IMAGE_BYTES,
    MAX_STREAM_DECODED,
    MAX_TOTAL_DECODED,
    N_,
    MiB,
    Refuse,
    out_of_memory,
)

CHUNK = 1 << 16
FLATE, LZW, RUNLENGTH, ASCII85, ASCIIHEX = "flate", "lzw", "runlength", "ascii85", "asciihex"
STAGES = {
    "/FlateDecode": FLATE, "/Fl": FLATE, "/LZWDecode": LZW, "/LZW": LZW,
    "/RunLengthDecode": RUNLENGTH, "/RL": RUNLENGTH, "/ASCII85Decode": ASCII85, "/A85": ASCII85,
    "/ASCIIHexDecode": ASCIIHEX, "/AHx": ASCIIHEX,
}
# Filters that end a chain: their output is an image, bounded by its dimensions.
IMAGE_FILTERS = {"/DCTDecode", "/DCT", "/JPXDecode", "/CCITTFaxDecode", "/CCF", "/JBIG2Decode"}
COLOUR_COMPONENTS = {
    "/DeviceGray": 1, "/G": 1, "/CalGray": 1, "/Indexed": 1, "/I": 1, "/Separation": 1,
    "/DeviceRGB": 3, "/RGB": 3, "/CalRGB": 3, "/Lab": 3, "/DeviceCMYK": 4, "/CMYK": 4,
}


class Exceeded(Exception):
    """A stage produced more than its budget."""


def _flate(chunks: Iterable[bytes]) -> Iterator[bytes]:
    inflater = zlib.decompressobj()
    try:
        for chunk in chunks:
            data = chunk
            while data and not inflater.eof:
                out = inflater.decompress(data, CHUNK)
                if out:
                    yield out
                data = inflater.unconsumed_tail
            if inflater.eof:
                return
        yield inflater.flush()
    except zlib.error:
        # Damaged data: a reader decodes what it can, which is what was yielded.
        return


def _runlength(chunks: Iterable[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        data = pending + chunk
        out = bytearray()
        i = 0
        while i < len(data):
            n = data[i]
            if n == 128:
                if out:
                    yield bytes(out)
                return
            if n < 128:
                if i + 1 + n + 1 > len(data):
                    break
                out += data[i + 1 : i + 2 + n]
                i += n + 2
            else:
                if i + 1 >= len(data):
                    break
                out += data[i + 1 : i + 2] * (257 - n)
                i += 2
            if len(out) >= CHUNK:
                yield bytes(out)
                out.clear()
        pending = data[i:]
        if out:
            yield bytes(out)


def _lzw(chunks: Iterable[bytes], early_change: int = 1) -> Iterator[bytes]:
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
    width, previous = 9, b""
    bits = nbits = 0
    out = bytearray()
    for chunk in chunks:
        for byte in chunk:
            bits, nbits = (bits << 8) | byte, nbits + 8
            while nbits >= width:
                nbits -= width
                code = (bits >> nbits) & ((1 << width) - 1)
                bits &= (1 << nbits) - 1
                if code == 256:
                    del table[258:]
                    width, previous = 9, b""
                    continue
                if code == 257:
                    if out:
                        yield bytes(out)
                    return
                if code < len(table):
                    entry = table[code]
                elif code == len(table) and previous:
                    entry = previous + previous[:1]
                else:
                    if out:
                        yield bytes(out)
                    return  # corrupt: a reader stops here too
                out += entry
                if previous:
                    table.append(previous + entry[:1])
                previous = entry
                if len(table) + early_change >= (1 << width) and width < 12:
                    width += 1
                if len(out) >= CHUNK:
                    yield bytes(out)
                    out.clear()
    if out:
        yield bytes(out)


def _grouped_text(
    chunks: Iterable[bytes],
    *,
    end_marker: bytes,
    group: int,
    prepare: Callable[[bytes, bool], bytes],
    decode: Callable[[bytes], bytes],
) -> Iterator[bytes]:
    """A text encoding read in whole groups of `group` characters (5 for ASCII85, 2 for
    hex): whitespace dropped, stop at `end_marker`; a partial group waits for the next
    chunk, except the last one. `prepare(data, ended)` expands shorthands and pads.
    Corrupt text ends the stream where a reader would stop too."""
    pending = b""
    step = CHUNK - CHUNK % group
    for chunk in chunks:
        data = pending + chunk.translate(None, b" \t\r\n\f\x00")
        end = data.find(end_marker)
        if end >= 0:
            data = data[:end]
        data = prepare(data, end >= 0)
        usable = len(data) - len(data) % group if end < 0 else len(data)
        try:
            for start in range(0, usable, step):
                yield decode(data[start : min(start + step, usable)])
        except ValueError:  # UnicodeDecodeError included
            return
        if end >= 0:
            return
        pending = data[usable:]


def _ascii85(chunks: Iterable[bytes]) -> Iterator[bytes]:
    return _grouped_text(chunks, end_marker=b"~", group=5, decode=base64.a85decode,
                         prepare=lambda data, _ended: data.replace(b"z", b"!!!!!"))


def _asciihex(chunks: Iterable[bytes]) -> Iterator[bytes]:
    # An odd final digit stands for its high nibble: "7>" is 0x70.
    return _grouped_text(chunks, end_marker=b">", group=2,
                         decode=lambda text: bytes.fromhex(text.decode("ascii")),
                         prepare=lambda data, ended: data + b"0" if ended and len(data) % 2 else data)


DECODERS: dict[str, Callable[[Iterable[bytes]], Iterator[bytes]]] = {
    FLATE: _flate, RUNLENGTH: _runlength, ASCII85: _ascii85, ASCIIHEX: _asciihex,
}


def _bounded(chunks: Iterator[bytes], cap: int) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise Exceeded
        yield chunk


def decoded_size(raw: bytes, stages: list[tuple[str, int]], cap: int = MAX_STREAM_DECODED) -> int:
    """Bytes out of the last stage of `stages` ((kind, LZW EarlyChange) in order),
    streaming; raises Exceeded as soon as any stage passes `cap`."""
    flow: Iterator[bytes] = iter(raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK))
    for kind, early_change in stages:
        decoded = _lzw(flow, early_change) if kind == LZW else DECODERS[kind](flow)
        flow = _bounded(decoded, cap)
    return sum(len(chunk) for chunk in flow)


def filters_of(stream: Any) -> tuple[list[str], list[Any]]:
    """The stream's filter names and their parameters (None where there are none)."""
    import pikepdf

    raw, parms = stream.get("/Filter"), stream.get("/DecodeParms", stream.get("/DP"))
    if isinstance(raw, pikepdf.Name):
        names = [str(raw)]
    elif isinstance(raw, pikepdf.Array):
        names = [str(item) for item in raw if isinstance(item, pikepdf.Name)]
    else:
        names = []
    if isinstance(parms, pikepdf.Array):
        params = [p if isinstance(p, pikepdf.Dictionary) else None for p in parms]
    else:
        params = [parms if isinstance(parms, pikepdf.Dictionary) else None]
    return names, (params + [None] * len(names))[: len(names)]


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _components(space: Any) -> int:
    import pikepdf

    if isinstance(space, pikepdf.Array) and len(space) > 0:
        family = name_of(space[0])
        if family in ("/ICCBased",) and len(space) > 1 and isinstance(space[1], pikepdf.Stream):
            return max(1, _int(space[1].get("/N"), 3))
        if family == "/DeviceN" and len(space) > 1 and isinstance(space[1], pikepdf.Array):
            return max(1, len(space[1]))
        return COLOUR_COMPONENTS.get(family or "", 3)
    return COLOUR_COMPONENTS.get(name_of(space) or "", 3)


def image_bytes(stream: Any) -> int:
    """What decoding the image costs: ceil(width x bpc x components / 8) x height.
    JPX images may leave out their depth and colour space: assumed 8-bit RGB."""
    width, height = _int(stream.get("/Width"), 0), _int(stream.get("/Height"), 0)
    if stream.get("/ImageMask") is True:
        bpc, components = 1, 1
    else:
        bpc = min(max(_int(stream.get("/BitsPerComponent"), 8), 1), 16)
        components = _components(stream.get("/ColorSpace"))
    return math.ceil(max(width, 0) * bpc * components / 8) * max(height, 0)


def _stages(names: list[str], params: list[Any]) -> list[tuple[str, int]] | None:
    """The generic stages to decode, or None when a predictor sits before another
    stage (its output is what the next stage reads: qpdf decodes those)."""
    stages = []
    for position, (name, parms) in enumerate(zip(names, params, strict=True)):
        if name in IMAGE_FILTERS or name not in STAGES:
            break
        predictor = _int(parms.get("/Predictor"), 1) if parms is not None else 1
        if predictor > 1 and position + 1 < len(names):
            return None
        early = _int(parms.get("/EarlyChange"), 1) if parms is not None else 1
        stages.append((STAGES[name], 1 if early else 0))
    return stages


def _qpdf_size(stream: Any) -> int:
    import pikepdf

    try:
        return len(stream.read_bytes(pikepdf.StreamDecodeLevel.generalized))
    except pikepdf.PdfError as exc:
        if out_of_memory(exc):
            raise Exceeded from None
        return 0  # undecodable: PDFium fails on it too, inside its own limits
    except MemoryError:
        raise Exceeded from None


def check_sizes(streams: list[Any]) -> None:
    """Refuse (with the limit, and what to do) a document whose streams or images
    decode beyond the limits; decodes nothing beyond them."""
    total = 0
    for stream in streams:
        if name_of(stream.get("/Subtype")) == "/Image" and image_bytes(stream) > MAX_IMAGE_BYTES:
            raise Refuse(N_("the PDF contains an image too large to display (more than %(mb)s MB once "
                            "decoded); ask the sender for the document saved or printed to PDF "
                            "again (a scan at 300 dpi or less), then upload that copy"),
                         params={"mb": MAX_IMAGE_BYTES // MiB})
        names, params = filters_of(stream)
        if not names:
            continue
        stages = _stages(names, params)
        try:
            if stages is None:
                size = _qpdf_size(stream)
            elif not stages:
                continue
            else:
                size = decoded_size(stream.read_raw_bytes(), stages)
        except Exceeded:
            raise Refuse(N_("the PDF contains a stream that expands beyond %(mb)s MB when "
                            "decompressed; ask the sender for the document saved or printed to PDF "
                            "again (a scan at 300 dpi or less), then upload that copy"),
                         params={"mb": MAX_STREAM_DECODED // MiB}) from None
        total += size
        if total > MAX_TOTAL_DECODED:
            raise Refuse(N_("the PDF expands beyond %(mb)s MB when decompressed; ask the sender "
                            "for the document saved or printed to PDF again (a scan at 300 dpi or "
                            "less), then upload that copy"), params={"mb": MAX_TOTAL_DECODED // MiB})
