"""Page rendering in the sandbox and the encrypted preview cache."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from signflow.core.errors import InvalidDocument, InvalidInput, NotFound, StorageCorrupted
from signflow.core.pdf.normalise import normalise_upload
from signflow.core.pdf.preview import PNG_MAGIC, PreviewCache, page_count, render_page_info
from signflow.core.pdf.sandbox import DEFAULT_LIMITS
from signflow.core.pdf.sandbox_child.wire import MAX_RENDER_PIXELS, MAX_RENDER_SIDE
from tests.hostile import simple
from tests.pdfs import make_pdf

MASTER = bytes(range(32))


@pytest.fixture(scope="module")
def three_pages() -> bytes:
    return make_pdf(pages=3, text="preview test")


def _image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_render_page(three_pages: bytes) -> None:
    page = render_page_info(three_pages, 1, width_px=600)
    assert page.png.startswith(PNG_MAGIC)
    assert page.page_count == 3
    image = _image(page.png)
    assert (image.width, image.height) == (page.width_px, page.height_px)
    assert abs(image.width - 600) <= 1
    # A4 proportions, and real content: not a blank page.
    assert abs(image.height / image.width - 842 / 595) < 0.01
    assert image.convert("L").getextrema()[0] < 128
    assert page_count(three_pages) == 3


def test_pages_differ(three_pages: bytes) -> None:
    first = render_page_info(three_pages, 0, width_px=400).png
    last = render_page_info(three_pages, 2, width_px=400).png
    assert first != last


def test_out_of_range_and_bad_width(three_pages: bytes) -> None:
    with pytest.raises(NotFound):
        render_page_info(three_pages, 3)
    with pytest.raises(NotFound):
        render_page_info(three_pages, -1)
    with pytest.raises(InvalidInput):
        render_page_info(three_pages, 0, width_px=50_000)


def test_unreadable_bytes() -> None:
    with pytest.raises(InvalidDocument):
        render_page_info(b"%PDF-1.7\n" + bytes(5000), 0)


@pytest.mark.parametrize(
    "mediabox", [b"[0 0 60000 60000]", b"[0 0 10 14000]", b"[0 0 14000 10]"], ids=str
)
def test_huge_or_odd_pages_are_clamped(mediabox: bytes) -> None:
    data = normalise_upload(simple(mediabox=mediabox), max_bytes=10**6, max_pages=1).data
    started = time.monotonic()
    page = render_page_info(data, 0, width_px=3000)
    assert time.monotonic() - started < DEFAULT_LIMITS.timeout_s
    image = _image(page.png)
    assert image.width * image.height <= MAX_RENDER_PIXELS * 1.01
    assert max(image.width, image.height) <= MAX_RENDER_SIDE + 1


def test_rotated_page_keeps_requested_width() -> None:
    data = simple(page_extra=b"/Rotate 90")
    image = _image(render_page_info(data, 0, width_px=500).png)
    assert abs(image.width - 500) <= 1 and image.height < image.width


def test_cache_hit_does_not_render_again(three_pages: bytes, tmp_path: Path) -> None:
    sha = hashlib.sha256(three_pages).hexdigest()
    loads: list[int] = []

    def loader() -> bytes:
        loads.append(1)
        return three_pages

    cache = PreviewCache(tmp_path / "previews", MASTER)
    first = cache.get_or_render(loader, sha, 0, 480)
    second = cache.get_or_render(loader, sha, 0, 480)
    assert first == second and first.startswith(PNG_MAGIC)
    assert cache.renders == 1 and len(loads) == 1
    # Another worker of the same instance shares the cache.
    other_worker = PreviewCache(tmp_path / "previews", MASTER)
    assert other_worker.get_or_render(loader, sha, 0, 480) == first
    assert other_worker.renders == 0
    # Page and width are part of the key.
    cache.get_or_render(loader, sha, 1, 480)
    cache.get_or_render(loader, sha, 0, 800)
    assert cache.renders == 3


def test_cache_files_are_encrypted_and_opaque(three_pages: bytes, tmp_path: Path) -> None:
    sha = hashlib.sha256(three_pages).hexdigest()
    cache = PreviewCache(tmp_path / "previews", MASTER)
    png = cache.get_or_render(lambda: three_pages, sha, 0, 480)
    files = [p for p in (tmp_path / "previews").rglob("*") if p.is_file()]
    assert len(files) == 1
    raw = files[0].read_bytes()
    assert PNG_MAGIC not in raw and b"IHDR" not in raw and b"IDAT" not in raw
    assert png[64:128] not in raw
    # The name does not reveal which document is cached.
    assert sha not in str(files[0]) and sha[:16] not in str(files[0])


def test_cache_survives_tampering_and_key_change(three_pages: bytes, tmp_path: Path) -> None:
    sha = hashlib.sha256(three_pages).hexdigest()
    cache = PreviewCache(tmp_path / "previews", MASTER)
    good = cache.get_or_render(lambda: three_pages, sha, 0, 480)
    (path,) = [p for p in (tmp_path / "previews").rglob("*") if p.is_file()]
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert cache.get_or_render(lambda: three_pages, sha, 0, 480) == good
    assert cache.renders == 2
    rotated = PreviewCache(tmp_path / "previews", bytes(32))
    assert rotated.get_or_render(lambda: three_pages, sha, 0, 480).startswith(PNG_MAGIC)
    assert rotated.renders == 1


def test_cache_refuses_bytes_that_do_not_match_the_hash(tmp_path: Path) -> None:
    cache = PreviewCache(tmp_path / "previews", MASTER)
    shown = make_pdf(text="what the physician approves")
    other = make_pdf(text="something else")
    with pytest.raises(StorageCorrupted):
        cache.get_or_render(lambda: other, hashlib.sha256(shown).hexdigest(), 0, 480)
    assert cache.renders == 0


def test_purge(three_pages: bytes, tmp_path: Path) -> None:
    sha = hashlib.sha256(three_pages).hexdigest()
    cache = PreviewCache(tmp_path / "previews", MASTER)
    for page in range(3):
        cache.get_or_render(lambda: three_pages, sha, page, 480)
    cache.purge(sha)
    assert not [p for p in (tmp_path / "previews").rglob("*") if p.is_file()]
