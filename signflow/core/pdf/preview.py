"""Page previews: PNG images rendered by PDFium in the sandbox, cached encrypted.

PNG rather than JPEG/WebP-lossy: previews are what a physician signs, and
lossy codecs smear thin digits and decimal points in doses. A 1000 px wide A4
page of text is ~100-200 KB.

The cache is on disk (shared by every worker of an instance, survives
restarts) but sealed with AES-GCM under a key derived from the storage master
key: these are medical documents, and a cache folder is exactly what ends up
in an unencrypted backup. File names are HMACs, so they do not reveal which
document (by its hash) is cached either, and the AAD binds each file to its
(document, page, width): a file copied under another name fails to open and
is re-rendered. Files are written to a temp name then renamed, so a reader
never sees half a file.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from signflow.core.errors import (
    InvalidDocument,
    InvalidInput,
    NotFound,
    SignflowError,
    StorageCorrupted,
)
from signflow.core.i18n import N_
from signflow.core.pdf.sandbox import (
    DEFAULT_LIMITS,
    SandboxLimits,
    SandboxRefusal,
    SandboxResult,
    run_checked,
)
from signflow.core.storage import decrypt_secret, derive_key, encrypt_secret, write_atomically

MIN_WIDTH_PX, MAX_WIDTH_PX = 100, 3000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class RenderedPage:
    png: bytes
    page_count: int
    width_px: int
    height_px: int


def _not_found_or_invalid(refusal: SandboxRefusal) -> SignflowError:
    if refusal.kind == "not-found":
        return NotFound(N_("no such page"))
    return InvalidDocument(refusal.msgid, params=refusal.params)


def _run(task: str, params: dict[str, object], pdf: bytes, limits: SandboxLimits) -> SandboxResult:
    return run_checked(task, dict(params), pdf, limits, refused=_not_found_or_invalid,
                       failure=N_("the PDF could not be rendered safely"),
                       busy=N_("the server is busy rendering pages; try again"))


def render_page_info(
    pdf: bytes, page_index: int, *, width_px: int = 1000, limits: SandboxLimits = DEFAULT_LIMITS
) -> RenderedPage:
    """Render one page (0-based) to PNG at about `width_px` wide; odd page shapes
    are scaled down so the bitmap stays within sandbox_child.wire.MAX_RENDER_PIXELS."""
    if not MIN_WIDTH_PX <= width_px <= MAX_WIDTH_PX:
        raise InvalidInput(N_("preview width must be between %(min_width_px)s and "
                              "%(max_width_px)s"),
                                  params={'min_width_px': MIN_WIDTH_PX, 'max_width_px': MAX_WIDTH_PX})
    if page_index < 0:
        raise NotFound(N_("no such page"))
    result = _run("render", {"page_index": page_index, "width_px": width_px}, pdf, limits)
    meta = result.meta
    if not result.payload.startswith(PNG_MAGIC):
        raise InvalidDocument(N_("the PDF could not be rendered safely"))
    return RenderedPage(
        png=result.payload,
        page_count=int(meta.get("page_count", 0)),
        width_px=int(meta.get("width", 0)),
        height_px=int(meta.get("height", 0)),
    )


def render_page(
    pdf: bytes, page_index: int, *, width_px: int = 1000, limits: SandboxLimits = DEFAULT_LIMITS
) -> bytes:
    return render_page_info(pdf, page_index, width_px=width_px, limits=limits).png


def page_count(pdf: bytes, *, limits: SandboxLimits = DEFAULT_LIMITS) -> int:
    return int(_run("count", {}, pdf, limits).meta.get("page_count", 0))


class PreviewCache:
    """Encrypted on-disk cache of rendered pages, keyed by (sha256, page, width)."""

    def __init__(
        self, root: Path, master_key: bytes, *, limits: SandboxLimits = DEFAULT_LIMITS
    ) -> None:
        self.root = Path(root)
        self._master_key = master_key
        self._name_key = derive_key(master_key, "preview-names")
        self._limits = limits
        self._lock = threading.Lock()
        self.renders = 0  # pages actually rendered by this instance (not served from cache)

    def _folder(self, sha256: str) -> Path:
        digest = hmac.new(self._name_key, b"doc:" + sha256.encode(), hashlib.sha256).hexdigest()
        return self.root / digest[:40]

    def _path(self, sha256: str, page_index: int, width_px: int) -> Path:
        label = f"page:{page_index}:{width_px}".encode()
        digest = hmac.new(self._name_key, sha256.encode() + b"|" + label, hashlib.sha256)
        return self._folder(sha256) / digest.hexdigest()[:40]

    @staticmethod
    def _purpose(sha256: str, page_index: int, width_px: int) -> str:
        return f"preview:{sha256}:{page_index}:{width_px}"

    def get_or_render(
        self, pdf_loader: Callable[[], bytes], sha256: str, page_index: int, width_px: int
    ) -> bytes:
        path = self._path(sha256, page_index, width_px)
        purpose = self._purpose(sha256, page_index, width_px)
        try:
            png = decrypt_secret(self._master_key, path.read_bytes(), purpose=purpose)
            if png.startswith(PNG_MAGIC):
                return png
        except FileNotFoundError:
            pass
        except StorageCorrupted:
            path.unlink(missing_ok=True)
        pdf = pdf_loader()
        # What you see is what you sign: never cache an image under a hash it
        # was not rendered from.
        if not hmac.compare_digest(hashlib.sha256(pdf).hexdigest(), sha256):
            raise StorageCorrupted(N_("the document does not match its fingerprint"))
        png = render_page(pdf, page_index, width_px=width_px, limits=self._limits)
        with self._lock:
            self.renders += 1
        # No fsync: a cache entry lost in a crash is simply rendered again.
        write_atomically(path, encrypt_secret(self._master_key, png, purpose=purpose), durable=False)
        return png

    def purge(self, sha256: str) -> None:
        """Forget every cached page of a document (retention purge)."""
        shutil.rmtree(self._folder(sha256), ignore_errors=True)

