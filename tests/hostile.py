"""A corpus of hostile and broken PDFs, built byte by byte (no files on disk).

Each case says what normalise_upload must do with it: refuse with a specific
message, or produce a clean document in which some marker bytes no longer
appear anywhere (decoded streams included). `python -m tests.hostile OUT`
writes the corpus to a folder for manual inspection with other readers.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pikepdf

HEADER = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
GiB = 1024 * 1024 * 1024


def stream(data: bytes, extra: bytes = b"", *, length: int | None = None) -> bytes:
    size = len(data) if length is None else length
    return b"<< " + extra + b" /Length %d >>\nstream\n" % size + data + b"\nendstream"


def text_content(text: str, y: int = 700) -> bytes:
    return b"BT /F1 18 Tf 72 %d Td (%s) Tj ET" % (y, text.encode("latin-1"))


def build(
    objects: dict[int, bytes],
    *,
    root: int | None = 1,
    header: bytes = HEADER,
    trailer_extra: bytes = b"",
    xref: bool = True,
    bad_offsets: bool = False,
) -> bytes:
    """A classic-xref PDF from numbered object bodies (the text between `obj` and `endobj`)."""
    out = bytearray(header)
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    size = max(objects) + 1 if objects else 1
    if not xref:
        return bytes(out) + b"%%EOF\n"
    start = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        if number in offsets:
            offset = offsets[number] + (37 if bad_offsets else 0)
            out += b"%010d 00000 n \n" % offset
        else:
            out += b"0000000000 65535 f \n"
    root_ref = b"/Root %d 0 R " % root if root is not None else b""
    out += b"trailer\n<< /Size %d " % size + root_ref + trailer_extra + b">>\n"
    out += b"startxref\n%d\n%%%%EOF\n" % start
    return bytes(out)


def simple_objects(
    *,
    catalog_extra: bytes = b"",
    page_extra: bytes = b"",
    text: str = "signflow hostile corpus",
    mediabox: bytes = b"[0 0 595 842]",
) -> dict[int, bytes]:
    return {
        1: b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b">>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox "
        + mediabox
        + b" /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R "
        + page_extra
        + b">>",
        4: stream(text_content(text)),
        5: FONT,
    }


def simple(
    *,
    catalog_extra: bytes = b"",
    page_extra: bytes = b"",
    text: str = "signflow hostile corpus",
    mediabox: bytes = b"[0 0 595 842]",
    objects: dict[int, bytes] | None = None,
) -> bytes:
    """One A4 page showing `text` (uncompressed), plus or replacing `objects`."""
    numbered = simple_objects(
        catalog_extra=catalog_extra, page_extra=page_extra, text=text, mediabox=mediabox
    )
    numbered.update(objects or {})
    return build(numbered)


@cache
def zeros_bomb(size: int) -> bytes:
    """A zlib stream inflating to `size` zero bytes, built without compressing them:
    after a full flush, every 1 MiB chunk of zeros compresses to the same bytes."""
    chunk = 1 << 20
    assert size % chunk == 0
    compressor = zlib.compressobj(9)
    first = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)
    # Replace the trailing Adler-32 (computed for 2 MiB) by the one for `size`.
    adler = ((size % 65521) << 16) | 1
    body = first + repeat * (size // chunk - 1) + tail[:-4]
    return body + struct.pack(">I", adler)


def _pikepdf_save(data: bytes, **save: object) -> bytes:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        out = io.BytesIO()
        pdf.save(out, **save)
        return out.getvalue()


def hybrid_reference() -> bytes:
    """Classic table for old readers; an /XRefStm (PDF 1.5 hybrid) adds object 6,
    a JavaScript page action stored in an object stream that old readers never see."""
    objects = simple_objects(page_extra=b"/AA << /O 6 0 R >>")
    out = bytearray(HEADER)
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    hidden = b"<< /S /JavaScript /JS (app.alert('HYBRID-HIDDEN-JS')) >>"
    header_part = b"6 0 "
    objstm_data = header_part + hidden
    offsets[7] = len(out)
    out += (
        b"7 0 obj\n"
        + stream(objstm_data, b"/Type /ObjStm /N 1 /First %d" % len(header_part))
        + b"\nendobj\n"
    )
    offsets[8] = len(out)
    rows = b"".join(
        [
            struct.pack(">BIH", 2, 7, 0),  # object 6: in object stream 7, index 0
            struct.pack(">BIH", 1, offsets[7], 0),
            struct.pack(">BIH", 1, offsets[8], 0),
        ]
    )
    out += (
        b"8 0 obj\n" + stream(rows, b"/Type /XRef /Size 9 /Index [6 3] /W [1 4 2]") + b"\nendobj\n"
    )
    start = len(out)
    out += b"xref\n0 9\n0000000000 65535 f \n"
    for number in range(1, 9):
        if number in (1, 2, 3, 4, 5):
            out += b"%010d 00000 n \n" % offsets[number]
        else:
            out += b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size 9 /Root 1 0 R /XRefStm %d >>\n" % offsets[8]
    out += b"startxref\n%d\n%%%%EOF\n" % start
    return bytes(out)


def incremental_shadow() -> bytes:
    """Revision 1 shows one text; an appended update swaps the page content."""
    first = build(simple_objects(text="ORIGINAL-REVISION-TEXT"))
    start_old = int(first.rsplit(b"startxref\n", 1)[1].split(b"\n", 1)[0])
    update = bytearray()
    offset = len(first)
    body = b"4 0 obj\n" + stream(text_content("UPDATED-REVISION-TEXT")) + b"\nendobj\n"
    update += body
    xref_at = offset + len(update)
    update += b"xref\n4 1\n%010d 00000 n \n" % offset
    update += b"trailer\n<< /Size 6 /Root 1 0 R /Prev %d >>\n" % start_old
    update += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return first + bytes(update)


def runlength_expansion(size: int) -> bytes:
    """A form XObject whose RunLength data (128:1) decodes to `size` zero bytes."""
    data = b"\x81\x00" * (size // 128) + b"\x80"
    return build(
        {
            **simple_objects(),
            3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> >>",
            6: stream(
                data, b"/Type /XObject /Subtype /Form /BBox [0 0 1 1] /Filter /RunLengthDecode"
            ),
        }
    )


def lzw_zeros(size: int) -> bytes:
    """LZW data (EarlyChange 1, as PDF writes it) decoding to `size` zero bytes, made
    code by code without encoding them: after a clear, code 0 then codes 258, 259...
    each one zero longer than the last, and a clear when the table is full."""
    codes, width, table, produced = [256], 9, 258, 0
    previous = 0
    while produced < size:
        run = min(previous + 1, size - produced)
        if previous == 0:
            code = 0
        elif run == previous + 1:
            code, table = table, table + 1
        else:
            code = -run  # the remainder: that many code-0 singles
        if code < 0:
            codes += [0] * run
            produced += run
            break
        codes.append(code)
        produced += run
        previous = run
        if table + 1 >= (1 << width) and width < 12:
            width += 1
        if table >= 4094:
            codes.append(256)
            width, table, previous = 9, 258, 0
    codes.append(257)
    return _pack_lzw(codes)


def _pack_lzw(codes: list[int]) -> bytes:
    """Pack codes MSB first, the width growing as a PDF LZW decoder expects."""
    out, bits, nbits, width, table, previous = bytearray(), 0, 0, 9, 258, False
    for code in codes:
        bits, nbits = (bits << width) | code, nbits + width
        while nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xFF)
        bits &= (1 << nbits) - 1
        if code == 256:
            width, table, previous = 9, 258, False
            continue
        if previous:
            table += 1
        previous = True
        if table + 1 >= (1 << width) and width < 12:
            width += 1
    if nbits:
        out.append((bits << (8 - nbits)) & 0xFF)
    return bytes(out)


def filter_chain_bomb(filters: list[str], size: int) -> bytes:
    """`size` zero bytes encoded through `filters` (applied last first, as a reader
    decodes them first to last), in a form XObject drawn on the page."""
    data = b""
    for index, name in enumerate(reversed(filters)):
        if index == 0:
            data = {"FlateDecode": lambda: zeros_bomb(size), "LZWDecode": lambda: lzw_zeros(size),
                    "RunLengthDecode": lambda: b"\x81\x00" * (size // 128) + b"\x80"}[name]()
        elif name == "FlateDecode":
            data = zlib.compress(data, 9)
        elif name == "ASCII85Decode":
            data = __import__("base64").a85encode(data) + b"~>"
        elif name == "ASCIIHexDecode":
            data = data.hex().encode() + b">"
        elif name == "RunLengthDecode":
            data = b"".join(bytes([len(data[i:i + 128]) - 1]) + data[i:i + 128]
                            for i in range(0, len(data), 128)) + b"\x80"
        else:
            raise ValueError(name)
    chain = b"[" + b" ".join(b"/" + f.encode() for f in filters) + b"]"
    return build({
        **simple_objects(page_extra=b""),
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> >>",
        4: stream(text_content("signflow hostile corpus") + b" q /X1 Do Q"),
        6: stream(data, b"/Type /XObject /Subtype /Form /BBox [0 0 1 1] /Filter " + chain),
    })


def one_bit_scan(width: int = 9933, height: int = 14043, dpi: int = 300) -> bytes:
    """A 1-bit Flate scan (an A0 sheet at 300 dpi by default: 139 Mpx, 17 MB decoded)
    with black rules across it, the page sized to the sheet."""
    row_white = b"\xff" * ((width + 7) // 8)
    row_black = b"\xff" * 4 + b"\x00" * ((width + 7) // 8 - 8) + b"\xff" * 4
    rows = b"".join(row_black if (y // 40) % 8 == 0 else row_white for y in range(height))
    w_pt, h_pt = width * 72 / dpi, height * 72 / dpi
    return build({
        **simple_objects(),
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] /Contents 4 0 R "
        b"/Resources << /XObject << /Im1 6 0 R >> >> >>" % (w_pt, h_pt),
        4: stream(b"q %.2f 0 0 %.2f 0 0 cm /Im1 Do Q" % (w_pt, h_pt)),
        6: stream(zlib.compress(rows, 9),
                  b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                  b"/BitsPerComponent 1 /Filter /FlateDecode" % (width, height)),
    })


def deep_image(width: int, height: int, bits: int, space: bytes) -> bytes:
    """An image declared `width` x `height` at `bits` per component in `space`,
    its data a small zlib stream (the dimensions are what a reader allocates)."""
    return simple(
        page_extra=b"/Resources << /XObject << /Im1 6 0 R >> >>",
        objects={
            4: stream(b"q 500 0 0 700 50 50 cm /Im1 Do Q"),
            6: stream(zeros_bomb(1 << 20),
                      b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s "
                      b"/BitsPerComponent %d /Filter /FlateDecode" % (width, height, space, bits)),
        },
    )


def many_pages(count: int) -> bytes:
    kids = b" ".join(b"%d 0 R" % (10 + i) for i in range(count))
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % count,
        4: stream(text_content("one of many pages")),
        5: FONT,
    }
    for i in range(count):
        objects[10 + i] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>"
        )
    return build(objects)


def deep_page_tree(depth: int) -> bytes:
    objects = {1: b"<< /Type /Catalog /Pages 10 0 R >>", 4: stream(text_content("deep")), 5: FONT}
    for level in range(depth):
        number, child = 10 + level, 11 + level
        parent = b"/Parent %d 0 R " % (number - 1) if level else b""
        objects[number] = b"<< /Type /Pages " + parent + b"/Kids [%d 0 R] /Count 1 >>" % child
    objects[10 + depth] = (
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] " % (9 + depth)
        + b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>"
    )
    return build(objects)


def encrypted(user: str, owner: str) -> bytes:
    return _pikepdf_save(simple(), encryption=pikepdf.Encryption(user=user, owner=owner, R=6))


@cache
def throwaway_signer() -> object:
    """A pyHanko SimpleSigner over a fresh self-signed P-256 certificate."""
    from datetime import UTC, datetime, timedelta

    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Dr Throwaway")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    der_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    der_key = asn1_keys.PrivateKeyInfo.load(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return signers.SimpleSigner(
        signing_cert=der_cert,
        signing_key=der_key,
        cert_registry=SimpleCertificateStore.from_certs([der_cert]),
    )


def sign(data: bytes, field_name: str = "Signature1") -> bytes:
    """PAdES B-B signature over `data` in a new field (incremental update)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=True)
    meta = signers.PdfSignatureMetadata(
        field_name=field_name, subfilter=fields.SigSeedSubFilter.PADES
    )
    out = signers.PdfSigner(meta, signer=throwaway_signer()).sign_pdf(writer)
    return out.getvalue()  # type: ignore[no-any-return,union-attr]


def signed() -> bytes:
    """A clean PDF signed (PAdES) with a throwaway self-signed certificate."""
    return sign(simple(text="already signed document"))


EMBEDDED_EXE = b"MZ\x90\x00\x03\x00\x00\x00EMBEDDED-EXECUTABLE-MARKER" + bytes(64)


def _filespec(number: int, data_number: int) -> dict[int, bytes]:
    return {
        number: b"<< /Type /Filespec /F (invoice.exe) /UF (invoice.exe) /EF << /F %d 0 R >> >>"
        % data_number,
        data_number: stream(EMBEDDED_EXE, b"/Type /EmbeddedFile"),
    }


def _annot(subtype: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Type /Annot /Subtype " + subtype + b" /Rect [72 72 300 120] " + extra + b">>"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    # Expected refusal message (substring), or None when a clean document must come out.
    refuse: str | None = None
    # Bytes that must not survive anywhere in the normalised file (decoded streams too).
    absent: tuple[bytes, ...] = ()
    # Bytes that must survive (the visible content).
    present: tuple[bytes, ...] = ()
    # Labels expected in NormalisedPdf.removed (substrings).
    removed: tuple[str, ...] = ()
    too_large: bool = False
    tags: tuple[str, ...] = field(default=())


JS = b"app.alert('HOSTILE-JS-MARKER')"
EXECUTABLE = b"EMBEDDED-EXECUTABLE-MARKER"


def stripped(name: str, *removed: str, absent: tuple[bytes, ...] = (b"HOSTILE-JS-MARKER",),
             present: tuple[bytes, ...] = (), **page: Any) -> Case:
    """An active-content case: the one page `simple(**page)` builds; the labels `removed`
    must be reported removed and the `absent` markers gone from the output."""
    return Case(name, lambda: simple(**page), absent=absent, present=present, removed=removed)


def _cases() -> list[Case]:
    js_action = b"<< /S /JavaScript /JS (" + JS + b") >>"
    valid = simple()
    return [
        # --- not a PDF at all
        Case("empty", lambda: b"", refuse="not a PDF"),
        Case("text-named-pdf", lambda: b"Dear colleague, please sign.\n" * 40, refuse="not a PDF"),
        Case("png-named-pdf", lambda: b"\x89PNG\r\n\x1a\n" + bytes(200), refuse="not a PDF"),
        Case("junk-beyond-header-window", lambda: b"J" * 2000 + valid, refuse="not a PDF"),
        Case("header-only", lambda: b"%PDF-1.7\n", refuse="could not be read"),
        Case(
            "garbage-after-header",
            lambda: b"%PDF-1.4\n" + random.Random(5).randbytes(4096),
            refuse="could not be read",
        ),
        Case("nul-filled", lambda: b"%PDF-1.7\n" + bytes(10000), refuse="could not be read"),
        # --- broken structure: either refused or repaired into a clean file
        Case("truncated", lambda: valid[: len(valid) * 6 // 10], refuse="could not be read"),
        Case(
            "broken-xref-offsets",
            lambda: build(simple_objects(), bad_offsets=True),
            removed=("damaged file structure",),
            present=(b"signflow hostile corpus",),
        ),
        Case(
            "no-xref-no-trailer",
            lambda: build(simple_objects(), xref=False),
            refuse="could not be read",
        ),
        Case(
            "missing-root", lambda: build(simple_objects(), root=None), refuse="could not be read"
        ),
        Case(
            "root-not-a-dictionary",
            lambda: build({**simple_objects(), 1: b"[1 2 3]"}),
            refuse="could not be read",
        ),
        Case(
            "page-tree-loop",
            lambda: build(
                {**simple_objects(), 2: b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>"}
            ),
            refuse="could not be read",
        ),
        Case(
            "page-is-own-parent-pages",
            lambda: build(
                {
                    **simple_objects(),
                    3: b"<< /Type /Pages /Parent 2 0 R /Kids [3 0 R] /Count 1 >>",
                }
            ),
            refuse="could not be read",
        ),
        # qpdf gives up on the page object: what is left has no page to show.
        Case(
            "nested-arrays-100k",
            lambda: simple(page_extra=b"/Junk " + b"[" * 100_000 + b"]" * 100_000),
            refuse="could not be read",
        ),
        Case(
            "nested-arrays-100k-in-unused-object",
            lambda: simple(objects={9: b"[" * 100_000 + b"]" * 100_000}),
            present=(b"signflow hostile corpus",),
        ),
        Case("deep-page-tree-400", lambda: deep_page_tree(400), refuse="could not be read"),
        Case("deep-page-tree-40", lambda: deep_page_tree(40), present=(b"deep",)),
        Case(
            "count-lies",
            lambda: build(
                {**simple_objects(), 2: b"<< /Type /Pages /Kids [3 0 R] /Count 1000000 >>"}
            ),
        ),
        Case(
            "length-lies",
            lambda: build(
                {**simple_objects(), 4: stream(text_content("length lie"), length=99999)}
            ),
            removed=("damaged file structure",),
        ),
        Case(
            "broken-object-stream",
            lambda: build(
                {
                    **simple_objects(page_extra=b"/Annots [6 0 R]"),
                    7: stream(b"6 0 << /Type /Annot", b"/Type /ObjStm /N 3 /First 999"),
                }
            ),
            present=(b"signflow hostile corpus",),
        ),
        Case(
            "hybrid-reference",
            hybrid_reference,
            # qpdf reads the classic table: the hidden action is not even there.
            absent=(b"HYBRID-HIDDEN-JS",),
        ),
        # --- resource exhaustion
        Case(
            "flate-bomb-in-page",
            lambda: simple(
                objects={4: stream(zeros_bomb(2 * GiB), b"/Filter /FlateDecode")},
            ),
            refuse="expands beyond",
            tags=("bomb",),
        ),
        Case(
            "flate-bomb-unreferenced",
            lambda: simple(objects={9: stream(zeros_bomb(2 * GiB), b"/Filter /FlateDecode")}),
            present=(b"signflow hostile corpus",),
            tags=("bomb",),
        ),
        Case(
            "flate-bombs-many-small",
            lambda: simple(
                page_extra=b"/Resources << /Font << /F1 5 0 R >> /XObject << "
                + b" ".join(b"/X%d %d 0 R" % (i, 20 + i) for i in range(6))
                + b" >> >>",
                objects={
                    20 + i: stream(
                        zeros_bomb(200 * 1024 * 1024),
                        b"/Type /XObject /Subtype /Form /BBox [0 0 1 1] /Filter /FlateDecode",
                    )
                    for i in range(6)
                },
            ),
            refuse="expands beyond",
            tags=("bomb",),
        ),
        Case(
            "ascii85-flate-bomb",
            lambda: simple(
                objects={
                    4: stream(
                        __import__("base64").a85encode(zeros_bomb(4 * GiB)) + b"~>",
                        b"/Filter [/ASCII85Decode /FlateDecode]",
                    )
                }
            ),
            refuse="expands beyond 256 MB",
            tags=("bomb", "memory"),
        ),
        Case(
            "image-60000x60000",
            lambda: simple(
                page_extra=b"/Resources << /XObject << /Im1 6 0 R >> >>",
                objects={
                    4: stream(b"q 500 0 0 700 50 50 cm /Im1 Do Q"),
                    6: stream(
                        zeros_bomb(64 * 1024 * 1024),
                        b"/Type /XObject /Subtype /Image /Width 60000 /Height 60000 "
                        b"/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode",
                    ),
                },
            ),
            refuse="image too large",
            tags=("bomb",),
        ),
        # Bounded at every stage of the chain, however the bombs are stacked.
        Case("flate-of-flate-bomb", lambda: filter_chain_bomb(["FlateDecode"] * 2, 2 * GiB),
             refuse="expands beyond 256 MB when decompressed", tags=("bomb",)),
        Case("runlength-bomb", lambda: filter_chain_bomb(["RunLengthDecode"], 300 << 20),
             refuse="expands beyond 256 MB when decompressed", tags=("bomb",)),
        Case("lzw-bomb", lambda: filter_chain_bomb(["LZWDecode"], 512 << 20),
             refuse="expands beyond 256 MB when decompressed", tags=("bomb",)),
        Case("flate-lzw-bomb", lambda: filter_chain_bomb(["FlateDecode", "LZWDecode"], 2 * GiB),
             refuse="expands beyond 256 MB when decompressed", tags=("bomb",)),
        Case("ascii85-runlength-flate-bomb",
             lambda: filter_chain_bomb(["ASCII85Decode", "RunLengthDecode", "FlateDecode"], 2 * GiB),
             refuse="expands beyond 256 MB when decompressed", tags=("bomb",)),
        Case("hex-flate-flate-bomb",
             lambda: filter_chain_bomb(["ASCIIHexDecode", "FlateDecode", "FlateDecode"], 2 * GiB),
             refuse="expands beyond 256 MB when decompressed", tags=("bomb",)),
        # Images: what decoding costs (bits x colours), not the pixel count.
        Case("one-bit-a0-scan", one_bit_scan),
        Case("image-16bit-rgb-giant", lambda: deep_image(20000, 20000, 16, b"/DeviceRGB"),
             refuse="image too large to display (more than 256 MB once decoded)",
             tags=("bomb",)),
        Case(
            "mediabox-60000",
            lambda: simple(mediabox=b"[0 0 60000 60000]"),
            present=(b"signflow hostile corpus",),
        ),
        Case("mediabox-tall-strip", lambda: simple(mediabox=b"[0 0 10 14000]")),
        Case(
            "zero-pages",
            lambda: build({**simple_objects(), 2: b"<< /Type /Pages /Kids [] /Count 0 >>"}),
            refuse="no pages",
        ),
        Case("thousands-of-pages", lambda: many_pages(3000), refuse="more than 500 pages"),
        # --- encryption and signatures
        Case("encrypted-user-password", lambda: encrypted("user", "owner"),
             refuse="protected by a password. Ask the sender for a copy without a password"),
        # Permissions only (opens without a password): accepted, decrypted, signed plain.
        Case("encrypted-owner-only", lambda: encrypted("", "owner"),
             present=(b"signflow",), removed=("copy and print restrictions",)),
        Case("already-signed", signed, refuse="already carries a signature"),
        Case(
            "docmdp-perms",
            lambda: simple(
                catalog_extra=b"/Perms << /DocMDP << /Type /Sig /Filter /Adobe.PPKLite >> >>"
            ),
            refuse="already carries a signature",
        ),
        Case(
            "ur3-usage-rights",
            lambda: simple(
                catalog_extra=b"/Perms << /UR3 << /Type /Sig /Filter /Adobe.PPKLite >> >>"
            ),
            removed=("usage rights",),
        ),
        # --- active content: stripped
        stripped("javascript-names", "a script that runs when the file opens",
                 catalog_extra=b"/Names << /JavaScript << /Names [(init) 6 0 R] >> >>",
                 objects={6: js_action}),
        stripped("javascript-openaction", "a script that runs when the file opens",
                 catalog_extra=b"/OpenAction " + js_action),
        stripped("javascript-stream-openaction", "a script that runs when the file opens",
                 catalog_extra=b"/OpenAction << /S /JavaScript /JS 6 0 R >>", objects={6: stream(JS)}),
        stripped("javascript-annotation-and-page-aa",
                 "a script that runs by itself when a page or a form field is used (2)",
                 page_extra=b"/AA << /O " + js_action + b" >> /Annots [6 0 R]",
                 objects={6: _annot(b"/Link", b"/AA << /E " + js_action + b" >>")}),
        stripped("javascript-form-field",
                 "a script that runs by itself", "a script behind a link, button or bookmark",
                 catalog_extra=b"/AcroForm << /Fields [6 0 R] >>", page_extra=b"/Annots [6 0 R]",
                 objects={6: b"<< /Type /Annot /Subtype /Widget /FT /Tx /T (dose) /Rect [72 72 300 100] "
                          b"/P 3 0 R /AA << /K " + js_action + b" >> /A " + js_action + b" >>"}),
        stripped("javascript-outline", "a script behind a link, button or bookmark",
                 catalog_extra=b"/Outlines 6 0 R",
                 objects={6: b"<< /Type /Outlines /First 7 0 R /Last 7 0 R /Count 1 >>",
                          7: b"<< /Title (Click) /Parent 6 0 R /A " + js_action + b" >>"}),
        stripped("javascript-next-chain-cycle", "a script behind a link, button or bookmark",
                 page_extra=b"/Annots [6 0 R]",
                 objects={6: _annot(b"/Link", b"/A 7 0 R"),
                          7: b"<< /S /GoTo /D [3 0 R /Fit] /Next 8 0 R >>",
                          8: b"<< /S /JavaScript /JS (" + JS + b") /Next 7 0 R >>"}),
        stripped("launch-action", "a link that starts a program",
                 absent=(b"LAUNCH-MARKER", b"calc.exe"), page_extra=b"/Annots [6 0 R]",
                 objects={6: _annot(b"/Link", b"/A << /S /Launch /F (calc.exe) "
                                    b"/Win << /F (cmd.exe) /P (/c LAUNCH-MARKER) >> >>")}),
        stripped("gotor-importdata-submitform", "a link that opens another file",
                 "loads data from another file", "sends what was typed in the form over the network",
                 absent=(b"REMOTE-MARKER", b"IMPORT-MARKER", b"SUBMIT-MARKER"),
                 page_extra=b"/Annots [6 0 R 7 0 R 8 0 R]",
                 objects={
                     6: _annot(b"/Link", b"/A << /S /GoToR /D [0 /Fit] "
                               b"/F (\\\\\\\\attacker\\\\share\\\\REMOTE-MARKER.pdf) >>"),
                     7: _annot(b"/Link", b"/A << /S /ImportData /F (IMPORT-MARKER.fdf) >>"),
                     8: b"<< /Type /Annot /Subtype /Widget /FT /Btn /T (send) /Rect [0 0 10 10] "
                     b"/A << /S /SubmitForm /F << /FS /URL /F (https://SUBMIT-MARKER.example/) >> >> >>",
                 }),
        stripped("uri-link", "a link to an address that is not a web page (2)",
                 absent=(b"URI-MARKER",), present=(b"WEB-LINK-KEPT",),
                 page_extra=b"/Annots [6 0 R 7 0 R 8 0 R]",
                 objects={
                     6: _annot(b"/Link", b"/A << /S /URI /URI (https://WEB-LINK-KEPT.example/) >>"),
                     7: _annot(b"/Link", b"/A << /S /URI /URI (file:///C:/URI-MARKER.exe) >>"),
                     8: _annot(b"/Link", b"/A << /S /URI /URI (\\\\host\\URI-MARKER) >>"),
                 }),
        # An executable attached three ways: named, on an annotation, as associated file.
        stripped("embedded-executable", "an attached file", absent=(EXECUTABLE,),
                 catalog_extra=b"/Names << /EmbeddedFiles << /Names [(invoice.exe) 6 0 R] >> >>",
                 objects=_filespec(6, 7)),
        stripped("file-attachment-annotation", "an attached file", absent=(EXECUTABLE,),
                 page_extra=b"/Annots [8 0 R]",
                 objects={**_filespec(6, 7), 8: _annot(b"/FileAttachment", b"/FS 6 0 R")}),
        stripped("associated-files", "an attached file", absent=(EXECUTABLE,),
                 page_extra=b"/AF [6 0 R]", objects=_filespec(6, 7)),
        stripped("xfa-form", "XFA", absent=(b"XFA-MARKER",),
                 catalog_extra=b"/NeedsRendering true /AcroForm << /Fields [] /XFA 6 0 R >>",
                 objects={6: stream(b"<xdp:xdp xmlns:xdp='http://ns.adobe.com/xdp/'>"
                                    b"<script>XFA-MARKER</script></xdp:xdp>")}),
        stripped("richmedia", "video, sound or 3D", absent=(b"RICHMEDIA-MARKER",),
                 page_extra=b"/Annots [6 0 R]",
                 objects={
                     6: _annot(b"/RichMedia",
                               b"/RichMediaContent << /Assets << /Names [(a.swf) 7 0 R] >> >>"),
                     7: b"<< /Type /Filespec /F (a.swf) /EF << /F 8 0 R >> >>",
                     8: stream(b"FWS RICHMEDIA-MARKER"),
                 }),
        stripped("3d-movie-sound-screen", "embedded video, sound or 3D content (4)",
                 absent=(b"3D-MARKER", b"MOVIE-MARKER", b"SOUND-MARKER", b"HOSTILE-JS-MARKER"),
                 page_extra=b"/Annots [6 0 R 7 0 R 8 0 R 9 0 R]",
                 objects={
                     6: _annot(b"/3D", b"/3DD 10 0 R"),
                     7: _annot(b"/Movie", b"/Movie << /F (MOVIE-MARKER.mov) >>"),
                     8: _annot(b"/Sound", b"/Sound 11 0 R"),
                     9: _annot(b"/Screen", b"/A << /S /Rendition /JS (" + JS + b") >>"),
                     10: stream(b"U3D 3D-MARKER", b"/Type /3D /Subtype /U3D"),
                     11: stream(b"SOUND-MARKER", b"/Type /Sound /R 8000"),
                 }),
        # --- polyglots and smuggling
        Case(
            "html-pdf-polyglot",
            lambda: b"<html><body><script>alert('POLYGLOT-MARKER')</script><!--\n" + valid + b"-->",
            absent=(b"POLYGLOT-MARKER", b"<script"),
        ),
        Case(
            "junk-after-eof",
            lambda: valid + b"\n<html>JUNK-AFTER-EOF-MARKER</html>\n" * 50,
            absent=(b"JUNK-AFTER-EOF-MARKER",),
            present=(b"signflow hostile corpus",),
        ),
        Case(
            "junk-before-header",
            lambda: b"X-Mailer: JUNK-MARKER\r\n" * 30 + valid,
            absent=(b"JUNK-MARKER",),
        ),
        Case(
            "incremental-update-shadow",
            incremental_shadow,
            absent=(b"ORIGINAL-REVISION-TEXT",),
            present=(b"UPDATED-REVISION-TEXT",),
        ),
        Case(
            "unreferenced-shadow-object",
            lambda: simple(objects={9: stream(text_content("UNREFERENCED-SHADOW-TEXT"))}),
            absent=(b"UNREFERENCED-SHADOW-TEXT",),
            present=(b"signflow hostile corpus",),
        ),
        Case(
            "benign-goto-link-kept",
            lambda: simple(
                page_extra=b"/Annots [6 0 R]",
                objects={6: _annot(b"/Link", b"/A << /S /GoTo /D [3 0 R /Fit] >>")},
            ),
            present=(b"/GoTo",),
        ),
    ]


CASES: dict[str, Case] = {case.name: case for case in _cases()}


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES.values():
        (out / f"{case.name}.pdf").write_bytes(case.make())


if __name__ == "__main__":
    main(sys.argv[1])
