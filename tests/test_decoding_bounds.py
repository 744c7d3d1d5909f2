"""Decompression bounds that hold (issue 9, item 8) and refusals support can
diagnose (item 10): real bombs made here, real scans, the real sandbox."""

from __future__ import annotations

import base64
import logging
import random
import subprocess
import time
import zlib
from pathlib import Path

import pikepdf
import pytest
from PIL import Image, ImageDraw

from signflow.core.errors import DocumentTooLarge, InvalidDocument
from signflow.core.pdf.normalise import normalise_upload, upload_reference
from signflow.core.pdf.preview import PNG_MAGIC, render_page_info
from signflow.core.pdf.sandbox_child import budget
from signflow.core.storage import sha256_hex
from tests.hostile import deep_image, filter_chain_bomb, lzw_zeros, many_pages, one_bit_scan, simple
from tests.tools import require_tool

MAX_BYTES = 25 * 1024 * 1024
GiB = 1 << 30


def _normalise(data: bytes, **kw: object):
    return normalise_upload(data, max_bytes=MAX_BYTES, max_pages=500, **kw)  # type: ignore[arg-type]


def _encode(name: str, data: bytes) -> bytes:
    if name == "FlateDecode":
        return zlib.compress(data)
    if name == "ASCII85Decode":
        return base64.a85encode(data, wrapcol=75) + b"~>"
    if name == "ASCIIHexDecode":
        return data.hex().encode() + b">"
    assert name == "RunLengthDecode"
    return b"".join(bytes([len(data[i:i + 128]) - 1]) + data[i:i + 128]
                    for i in range(0, len(data), 128)) + b"\x80"


def test_the_budget_decodes_every_chain_as_qpdf_does() -> None:
    """Counting is only a bound if it decodes what a reader decodes: random chains of
    the generic filters, and LZW (code by code, across table resets), against qpdf."""
    rnd = random.Random(9)
    payload = rnd.randbytes(200_000) + bytes(150_000) + b"dose 5 mg " * 20_000
    pdf = pikepdf.new()
    names = ["FlateDecode", "ASCII85Decode", "ASCIIHexDecode", "RunLengthDecode"]
    for _ in range(12):
        chain = [rnd.choice(names) for _ in range(rnd.randint(1, 3))]
        data = payload
        for name in reversed(chain):
            data = _encode(name, data)
        stream = pikepdf.Stream(pdf, data)
        stream.Filter = pikepdf.Array([pikepdf.Name("/" + n) for n in chain])
        names_, params = budget.filters_of(stream)
        stages = budget._stages(names_, params)
        assert stages is not None
        expected = len(stream.read_bytes(pikepdf.StreamDecodeLevel.specialized))
        assert budget.decoded_size(stream.read_raw_bytes(), stages) == expected == len(payload), chain
    for size in (1, 3, 5000, 9_000_000):
        stream = pikepdf.Stream(pdf, lzw_zeros(size))
        stream.Filter = pikepdf.Name.LZWDecode
        assert budget.decoded_size(lzw_zeros(size), [(budget.LZW, 1)]) == len(stream.read_bytes())


def _spread(text: bytes, every: int) -> bytes:
    """`text` with a line break every `every` characters: groups straddle the budget's
    64 KiB chunks at every offset."""
    return b"\r\n".join(text[i:i + every] for i in range(0, len(text), every))


@pytest.mark.parametrize(("name", "raw"), [
    # An odd last hex digit stands for its high nibble ("7>" is 0x70); spaces anywhere.
    ("ASCIIHexDecode", _spread(random.Random(3).randbytes(70_001).hex().encode(), 77) + b"7 >"),
    ("ASCIIHexDecode", b"61 62\t63\n6>trailing junk after the end"),
    # "z" is four zero bytes; the last group may be short.
    ("ASCII85Decode", _spread(base64.a85encode(bytes(90_000) + b"dose 5 mg" * 9_000 + b"ab"), 73)
     + b"~>"),
    ("ASCII85Decode", b"zz@:B~>ignored"),
])
def test_the_text_filters_decode_as_qpdf_does_across_chunks(name: str, raw: bytes) -> None:
    pdf = pikepdf.new()
    stream = pikepdf.Stream(pdf, raw)
    stream.Filter = pikepdf.Name("/" + name)
    stages = budget._stages(*budget.filters_of(stream))
    assert stages is not None
    expected = stream.read_bytes(pikepdf.StreamDecodeLevel.specialized)
    assert budget.decoded_size(raw, stages) == len(expected) > 0


@pytest.mark.parametrize("chain", [
    ["FlateDecode", "FlateDecode"],
    ["RunLengthDecode"],
    ["LZWDecode"],
    ["FlateDecode", "LZWDecode"],
    ["ASCII85Decode", "FlateDecode", "FlateDecode"],
    ["ASCIIHexDecode", "RunLengthDecode", "FlateDecode"],
    ["RunLengthDecode", "FlateDecode", "FlateDecode"],
])
def test_a_bomb_at_any_stage_of_a_chain_is_refused_quickly_with_the_limit(chain: list[str]) -> None:
    size = 300 << 20 if chain[-1] in ("RunLengthDecode",) else 2 * GiB
    data = filter_chain_bomb(chain, size)
    assert len(data) < MAX_BYTES
    started = time.monotonic()
    with pytest.raises(InvalidDocument) as refused:
        _normalise(data)
    assert time.monotonic() - started < 15
    message = refused.value.message
    assert "expands beyond 256 MB when decompressed" in message
    assert "ask the sender" in message and upload_reference(sha256_hex(data)) in message


def test_the_same_chains_below_the_limit_are_accepted() -> None:
    """The bound refuses bombs, not stacked filters: 8 MiB through the same chains passes."""
    for chain in (["ASCII85Decode", "FlateDecode", "FlateDecode"], ["FlateDecode", "LZWDecode"]):
        assert _normalise(filter_chain_bomb(chain, 8 << 20)).page_count == 1


def test_a_one_bit_a0_scan_is_accepted_and_previewed() -> None:
    """139 Mpx, but 1 bit and one colour: 17 MB decoded, far inside the limits."""
    data = one_bit_scan()
    assert 9933 * 14043 > 100_000_000  # more pixels than the old pixel-count limit
    upload = _normalise(data)
    page = render_page_info(upload.data, 0, width_px=800)
    assert page.png.startswith(PNG_MAGIC) and page.width_px == 800
    assert page.height_px == pytest.approx(800 * 14043 / 9933, abs=2)


def test_a_one_bit_a0_ccitt_fax_scan_from_tiff2pdf_is_accepted(tmp_path: Path) -> None:
    tiff2pdf = require_tool("tiff2pdf")
    sheet = Image.new("1", (9933, 14043), 1)
    draw = ImageDraw.Draw(sheet)
    for y in range(300, 14043 - 300, 600):
        draw.rectangle([300, y, 9633, y + 30], fill=0)
    sheet.save(tmp_path / "a0.tif", compression="group4", dpi=(300, 300))
    subprocess.run([tiff2pdf, "-o", str(tmp_path / "a0.pdf"), str(tmp_path / "a0.tif")], check=True)
    data = (tmp_path / "a0.pdf").read_bytes()
    assert b"/CCITTFaxDecode" in data
    upload = _normalise(data)
    assert render_page_info(upload.data, 0, width_px=480).png.startswith(PNG_MAGIC)


def test_image_limits_use_bits_and_colours() -> None:
    # 16-bit RGB, 20000 x 20000: 2.4 GB to decode. Refused, with the limit.
    with pytest.raises(InvalidDocument, match=r"image too large to display \(more than 256 MB"):
        _normalise(deep_image(20000, 20000, 16, b"/DeviceRGB"))
    # The same pixel count in 1 bit gray is 50 MB: accepted.
    assert _normalise(deep_image(20000, 20000, 1, b"/DeviceGray")).page_count == 1
    # 8192 x 8192 CMYK at 8 bits is 256 MB exactly: the limit; one more row is over.
    assert _normalise(deep_image(8192, 8192, 8, b"/DeviceCMYK")).page_count == 1
    with pytest.raises(InvalidDocument, match="image too large"):
        _normalise(deep_image(8192, 8193, 8, b"/DeviceCMYK"))


def test_refusals_are_logged_with_the_reference_and_the_parser_error_without_content(
        caplog: pytest.LogCaptureFixture) -> None:
    marker = "SECRET-PATIENT-DUPONT"
    valid = simple(text=marker)
    truncated = valid[: len(valid) * 6 // 10]
    garbage = b"%PDF-1.4\n" + f"({marker}) [{marker}] <{marker}> ".encode() * 50
    for data in (truncated, garbage):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="signflow.upload"), \
                pytest.raises(InvalidDocument) as refused:
            _normalise(data)
        reference = upload_reference(sha256_hex(data))
        assert refused.value.message.endswith(f"(reference for support: {reference})")
        assert "save it (or print it to PDF) again" in refused.value.message
        records = [r for r in caplog.records if r.name == "signflow.upload"]
        assert records, caplog.text
        logged = " ".join(r.getMessage() for r in records)
        assert reference in logged and "parser: " in logged
        assert "parser: -" not in logged  # qpdf's own words are there
        assert marker not in caplog.text


def test_size_and_page_limits_are_stated_with_what_to_do() -> None:
    with pytest.raises(DocumentTooLarge) as too_large:
        normalise_upload(simple() + b" " * 2048, max_bytes=2048, max_pages=10)
    assert "larger than 2 KB" in too_large.value.message and "split it" in too_large.value.message
    with pytest.raises(InvalidDocument) as too_long:
        normalise_upload(many_pages(12), max_bytes=MAX_BYTES, max_pages=10)
    assert "more than 10 pages (it has 12)" in too_long.value.message
    assert "parts of at most 10 pages" in too_long.value.message
