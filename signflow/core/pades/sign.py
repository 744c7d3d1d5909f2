"""PAdES signing with a visible stamp, and the translation of what pyHanko raises.

Everything pyHanko raises is turned into a SignflowError by this package (see
`translate_signing_error`); callers never see a pyHanko exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import BoxConstraints
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.timestamps import TimeStamper, TimestampRequestError
from pyhanko.stamp import TextStamp, TextStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError, ValidationError

from signflow.core.errors import (
    ConfigurationError,
    InvalidDocument,
    InvalidInput,
    ServiceUnavailable,
    SignflowError,
)
from signflow.core.i18n import N_, Translator
from signflow.core.pades import doc_fields
from signflow.core.pades.signers import KeySigner, LockedPKCS11Signer, SigningKey
from signflow.core.pdf.geometry import PageGeometry, page_geometry, stamp_box
from signflow.core.pki.keystore import KeyMaterial
from signflow.core.pki.tsa import to_asn1_cert

FONT_PATH = Path(__file__).resolve().parents[2] / "fonts" / "NotoSans-Regular.ttf"
LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")
STAMP_SIZE = (250.0, 78.0)
STAMP_MARGIN = 36.0

# pyHanko logs every validation failure with a traceback at WARNING/ERROR: the
# report carries the verdict, so keep those out of the service's logs.
for _noisy in ("pyhanko", "pyhanko_certvalidator"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stamp:
    """What the visible stamp says and where it goes.

    `page` is 1-based; `box` is (x1, y1, x2, y2) in PDF points from the page's
    bottom-left corner. The document's own visible empty signature field, if
    it has one, is signed (moved to `box` when given, on the first signature:
    signflow.core.pades.doc_fields); otherwise a new field at `box`, else at the
    bottom right of the last page."""

    signer_name: str
    professional_id: str | None
    reason: str
    when: datetime
    timezone: str
    page: int | None = None
    box: tuple[float, float, float, float] | None = None
    # The language the stamp is written in (the site's): "Signé par …, le … à …".
    language: str = "en"


_font_lock = threading.Lock()
_font_factory: GlyphAccumulatorFactory | None = None


def _font() -> GlyphAccumulatorFactory:
    global _font_factory
    with _font_lock:
        if _font_factory is None:
            if not FONT_PATH.is_file():
                raise ConfigurationError(N_("the stamp font is missing from the installation"))
            _font_factory = GlyphAccumulatorFactory(str(FONT_PATH), font_size=10)
        return _font_factory


# The appearance is laid out upright, then turned against the page's /Rotate so
# that the reader's turn of the page brings it back upright: a form XObject's
# /Matrix maps its BBox before it is fitted to the widget's /Rect (ISO 32000-1,
# 12.5.5). pyHanko draws every stamp as if the page were never rotated.
_COUNTER_ROTATION = {90: (0, 1, -1, 0), 180: (-1, 0, 0, -1), 270: (0, -1, 1, 0)}


class _UprightTextStamp(TextStamp):
    def __init__(self, rotate: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rotate = rotate

    def as_form_xobject(self) -> generic.StreamObject:
        xobject = super().as_form_xobject()
        if self.rotate in _COUNTER_ROTATION:
            xobject["/Matrix"] = generic.ArrayObject(
                [generic.NumberObject(v) for v in (*_COUNTER_ROTATION[self.rotate], 0, 0)]  # type: ignore[no-untyped-call]
            )
        return xobject


@dataclass(frozen=True)
class _UprightTextStampStyle(TextStampStyle):
    page_rotation: int = 0

    def create_stamp(
        self, writer: Any, box: BoxConstraints, text_params: dict[str, Any]
    ) -> TextStamp:
        if self.page_rotation in (90, 270):
            # The widget's /Rect is the stamp as it lies on the unrotated page.
            box = BoxConstraints(width=box.height, height=box.width)
        return _UprightTextStamp(
            self.page_rotation, writer=writer, style=self, box=box, text_params=text_params
        )


def _stamp_style(page_rotation: int = 0) -> TextStampStyle:
    return _UprightTextStampStyle(
        stamp_text="%(signer)s\n%(professional_id)s%(when)s\n%(reason)s",
        text_box_style=TextBoxStyle(font=_font(), font_size=10, leading=13),
        border_width=1,
        page_rotation=page_rotation,
    )


def _stamp_params(stamp: Stamp) -> dict[str, str]:
    try:
        zone = ZoneInfo(stamp.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(N_("unknown time zone %(timezone)s"),
                                 params={'timezone': repr(stamp.timezone)}) from exc
    if stamp.when.tzinfo is None:
        raise InvalidInput(N_("the signing time must be timezone-aware"))
    local = stamp.when.astimezone(zone)
    t = Translator(stamp.language, stamp.timezone)
    return {
        "signer": t(N_("Signed by %(name)s"), name=stamp.signer_name),
        "professional_id": t(N_("RPPS %(rpps)s"), rpps=stamp.professional_id) + "\n"
        if stamp.professional_id else "",
        "when": t(N_("%(date)s %(time)s (%(zone)s, UTC%(offset)s)"),
                  date=t.format_date(local, "long") if t.language != "en" else f"{local:%Y-%m-%d}",
                  time=f"{local:%H:%M}", zone=stamp.timezone, offset=f"{local:%z}"),
        "reason": t.context("stamp", "%(reason)s", reason=t(stamp.reason)),
    }


def _open_writer(pdf: bytes) -> IncrementalPdfFileWriter:
    if not pdf.lstrip()[:5] == b"%PDF-":
        raise InvalidDocument(N_("not a PDF"))
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    except Exception as exc:
        raise InvalidDocument(N_("unreadable PDF")) from exc
    if writer.prev.encrypted:
        raise InvalidDocument(N_("encrypted PDFs cannot be signed"))
    return writer


def _field_placement(
    pdf: bytes, writer: IncrementalPdfFileWriter, stamp: Stamp, field_name: str | None
) -> tuple[str, fields.SigFieldSpec | None, int]:
    """Field to sign: (name, spec of a new field, page rotation), the spec None for
    one of the document's own empty fields (signflow.core.pades.doc_fields)."""
    existing = list(fields.enumerate_sig_fields(writer.prev, filled_status=None))
    taken = {name for name, _, _ in existing}
    signed_before = any(value is not None for _, value, _ in existing)
    usable = [f for f in doc_fields.empty_fields(writer) if f.usable]
    if field_name is not None:
        usable = [f for f in usable if f.name == field_name]
    tapped = stamp.box is not None or stamp.page is not None
    if usable and usable[0].page_index is not None and (not tapped or signed_before):
        # The document's own box, where the document put it (later signatures of a
        # route fill the next boxes; the tap was for the first).
        geometry = page_geometry(pdf, usable[0].page_index + 1)
        return usable[0].name, None, geometry.rotate
    name = field_name or next(
        f"Signature{n}" for n in range(1, 1000) if f"Signature{n}" not in taken
    )
    if name in taken and not usable:
        raise InvalidInput(N_('signature field %(name)s already exists'), params={'name': repr(name)})
    page_count = int(writer.root["/Pages"]["/Count"])
    if stamp.page is not None and not 1 <= stamp.page <= page_count:
        raise InvalidInput(N_("page %(page)s does not exist (the document has %(page_count)s)"),
                           params={'page': stamp.page, 'page_count': page_count})
    page_index = (stamp.page - 1) if stamp.page is not None else page_count - 1
    # Read in the sandbox as a reader resolves it: inherited, indirect, cropped, rotated.
    geometry = page_geometry(pdf, page_index + 1)
    if stamp.box is not None:
        x1, y1, x2, y2 = stamp.box
        box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        shown_w, shown_h = geometry.shown_size_of(box)
        if shown_w < 40 or shown_h < 20:
            raise InvalidInput(N_("the stamp area is too small"))
        if not geometry.contains(box):
            raise InvalidInput(N_("the stamp area lies outside the visible part of the page"))
    else:
        box = stamp_box(geometry, STAMP_SIZE, margin_pt=STAMP_MARGIN, page=page_index + 1)
    if usable:
        # The technician tapped: the document's own box moves there, and is signed.
        doc_fields.move_field(writer, usable[0].name, page_index, _inside(box, geometry))
        return usable[0].name, None, geometry.rotate
    spec = fields.SigFieldSpec(sig_field_name=name, on_page=page_index, box=_inside(box, geometry))
    return name, spec, geometry.rotate


def _inside(box: tuple[float, float, float, float],
            geometry: PageGeometry) -> tuple[int, int, int, int]:
    """Rounded inwards, then clipped: the widget never reaches outside the visible area."""
    vx1, vy1, vx2, vy2 = geometry.visible
    x1, y1 = max(math.ceil(box[0]), math.ceil(vx1)), max(math.ceil(box[1]), math.ceil(vy1))
    x2, y2 = min(math.floor(box[2]), math.floor(vx2)), min(math.floor(box[3]), math.floor(vy2))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def sign_pdf(
    pdf: bytes,
    *,
    key: SigningKey,
    certificate: x509.Certificate,
    keys: KeyMaterial,
    stamp: Stamp,
    timestamper: TimeStamper | None,
    level: str = "B-LTA",
    crls: list[bytes],
    field_name: str | None = None,
) -> bytes:
    """Sign `pdf` (PAdES, incremental update, visible stamp) at `level`.

    Already signed files get an approval signature that keeps earlier ones
    valid. A failing TSA raises ServiceUnavailable: there is no silent
    downgrade to an untimestamped signature."""
    if level not in LEVELS:
        raise ConfigurationError(N_("unknown PAdES level %(level)s (use one of %(value)s)"),
                                 params={'level': repr(level), 'value': ', '.join(LEVELS)})
    if level != "B-B" and timestamper is None:
        raise ConfigurationError(N_("PAdES %(level)s needs a timestamp authority"), params={'level': level})
    writer = _open_writer(pdf)
    name, new_field, rotation = _field_placement(pdf, writer, stamp, field_name)
    chain = [keys.issuing_cert, keys.root_cert]
    signer = key if isinstance(key, signers.Signer) else KeySigner(key, certificate, chain)
    long_term = level in ("B-LT", "B-LTA")
    validation_context = (
        ValidationContext(
            trust_roots=[to_asn1_cert(keys.root_cert)],
            other_certs=[to_asn1_cert(keys.issuing_cert)],
            crls=crls,
            allow_fetching=False,
            # soft-fail would happily write a "B-LT" file with no CRL in it.
            revocation_mode="hard-fail",
        )
        if long_term
        else None
    )
    meta = signers.PdfSignatureMetadata(
        field_name=name,
        reason=stamp.reason,
        name=stamp.signer_name,
        md_algorithm="sha256",
        subfilter=SigSeedSubFilter.PADES,
        embed_validation_info=long_term,
        use_pades_lta=level == "B-LTA",
        validation_context=validation_context,
        signer_key_usage={"non_repudiation"},
    )
    pdf_signer = signers.PdfSigner(
        meta,
        signer=signer,
        timestamper=timestamper if level != "B-B" else None,
        stamp_style=_stamp_style(rotation),
        new_field_spec=new_field,
    )
    out = io.BytesIO()
    exclusive = key.in_use if isinstance(key, LockedPKCS11Signer) else contextlib.nullcontext()
    try:
        with exclusive:
            run_sync(
                pdf_signer.async_sign_pdf(
                    writer,
                    existing_fields_only=new_field is None,
                    appearance_text_params=_stamp_params(stamp),
                    output=out,
                )
            )
    except SignflowError:
        raise
    except Exception as exc:
        raise translate_signing_error(exc) from exc
    return out.getvalue()


def run_sync(coro: Any) -> Any:
    """asyncio.run, also from a thread whose loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def translate_signing_error(exc: Exception) -> SignflowError:
    if _caused_by(exc, (TimestampRequestError, OSError, asyncio.TimeoutError)):
        return ServiceUnavailable(N_("timestamp authority unreachable: the document was not signed"))
    if _caused_by(exc, (ValidationError, PathBuildingError, PathValidationError)):
        return ConfigurationError(
            N_("cannot embed validation data (certificate chain or CRL missing or not valid)")
        )
    if _caused_by(exc, (PdfError,)):
        return InvalidDocument(N_("this PDF cannot be signed (damaged or unsupported structure)"))
    log.error("signing failed: %s", type(exc).__name__)
    return SignflowError(N_("signing failed"), code="signing-failed")


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)
