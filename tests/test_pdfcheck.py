"""Upload inspection against the hostile corpus (tests/hostile.py).

Every case ends in a specific refusal or in a clean document that (a) has no
active content left (checked here with pikepdf, independently of the
production walker), (b) renders its first page, and (c) parses strictly in
pyHanko and takes a real PAdES signature that validates as intact.
"""

from __future__ import annotations

import io
import string
import time

import pikepdf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from signflow.core.errors import DocumentTooLarge, InvalidDocument, ServiceUnavailable
from signflow.core.pdf import sandbox
from signflow.core.pdf.geometry import page_geometry
from signflow.core.pdf.normalise import NormalisedPdf, normalise_upload, sanitize_filename
from signflow.core.pdf.preview import PNG_MAGIC, render_page, render_page_info
from signflow.core.pdf.sandbox import DEFAULT_LIMITS, SandboxLimits
from signflow.core.storage import sha256_hex
from tests.hostile import CASES, Case, runlength_expansion, sign, simple, throwaway_signer
from tests.pdfs import make_pdf

MAX_BYTES = 25 * 1024 * 1024
MAX_PAGES = 500
# Time to spare over the sandbox timeout for process start-up and teardown.
MARGIN_S = 5.0

# Independent of signflow.core.pdf.sandbox on purpose: a gap in its list must not
# be mirrored by a gap here.
FORBIDDEN_ACTIONS = {
    "/JavaScript",
    "/Launch",
    "/GoToR",
    "/GoToE",
    "/ImportData",
    "/SubmitForm",
    "/ResetForm",
    "/Rendition",
    "/Movie",
    "/Sound",
    "/RichMediaExecute",
}
FORBIDDEN_ANNOTATIONS = {"/FileAttachment", "/RichMedia", "/3D", "/Movie", "/Sound", "/Screen"}
FORBIDDEN_KEYS = {"/AA", "/JS", "/EF", "/AF", "/XFA", "/RichMediaContent", "/EmbeddedFiles"}

REFUSALS = [case for case in CASES.values() if case.refuse]
CLEANED = [case for case in CASES.values() if not case.refuse]


def _normalise(data: bytes, **kwargs: object) -> NormalisedPdf:
    options: dict[str, object] = {"max_bytes": MAX_BYTES, "max_pages": MAX_PAGES}
    options.update(kwargs)
    return normalise_upload(data, **options)  # type: ignore[arg-type]


def _all_dicts(pdf: pikepdf.Pdf) -> list[pikepdf.Object]:
    found: list[pikepdf.Object] = []
    todo: list[pikepdf.Object] = [pdf.trailer, *pdf.objects]
    containers = pikepdf.Array | pikepdf.Dictionary | pikepdf.Stream
    while todo:
        obj = todo.pop()
        if isinstance(obj, pikepdf.Array):
            children = list(obj)
        elif isinstance(obj, pikepdf.Dictionary | pikepdf.Stream):
            found.append(obj)
            children = list(obj.values())
        else:
            continue
        # Indirect children are in pdf.objects already.
        todo.extend(c for c in children if isinstance(c, containers) and not c.is_indirect)
    return found


def _web_or_mail(uri: object) -> bool:
    return str(uri).lower().startswith(("https://", "http://", "mailto:"))


def assert_no_active_content(data: bytes) -> None:
    """Nothing dangerous left; the initial view, go-to links and web links may stay."""
    with pikepdf.open(io.BytesIO(data)) as pdf:
        opening = pdf.Root.get("/OpenAction")
        assert opening is None or isinstance(opening, pikepdf.Array) or (
            opening.get("/S") == "/GoTo" and "/Next" not in opening
        )
        assert "/Collection" not in pdf.Root
        assert "/NeedsRendering" not in pdf.Root
        names = pdf.Root.get("/Names")
        if names is not None:
            assert "/JavaScript" not in names
        for obj in _all_dicts(pdf):
            assert not FORBIDDEN_KEYS & set(obj.keys()), repr(obj)[:200]
            assert str(obj.get("/S", "")) not in FORBIDDEN_ACTIONS, repr(obj)[:200]
            if obj.get("/S") == "/URI":
                assert _web_or_mail(obj.get("/URI")), repr(obj)[:200]
            if obj.get("/Type") == "/Annot":
                assert str(obj.get("/Subtype")) not in FORBIDDEN_ANNOTATIONS


def _decoded_corpus(data: bytes) -> bytes:
    """The file plus every stream decoded: a marker cannot hide behind Flate."""
    parts = [data]
    with pikepdf.open(io.BytesIO(data)) as pdf:
        for obj in pdf.objects:
            if isinstance(obj, pikepdf.Stream):
                parts.append(obj.read_bytes())
    return b"\n".join(parts)


def _sign_and_validate(data: bytes) -> None:
    signed = sign(data)
    reader = PdfFileReader(io.BytesIO(signed), strict=True)
    (signature,) = reader.embedded_signatures
    signer = throwaway_signer()
    context = ValidationContext(trust_roots=[signer.signing_cert])  # type: ignore[attr-defined]
    status = validate_pdf_signature(signature, context)
    assert status.intact and status.valid and status.trusted


@pytest.mark.parametrize("case", REFUSALS, ids=lambda case: case.name)
def test_hostile_refused(case: Case) -> None:
    data = case.make()
    started = time.monotonic()
    with pytest.raises(InvalidDocument) as caught:
        _normalise(data)
    elapsed = time.monotonic() - started
    assert case.refuse is not None and case.refuse in caught.value.message
    assert elapsed < DEFAULT_LIMITS.timeout_s + MARGIN_S


@pytest.mark.parametrize("case", CLEANED, ids=lambda case: case.name)
def test_hostile_normalised(case: Case) -> None:
    data = case.make()
    started = time.monotonic()
    result = _normalise(data)
    assert time.monotonic() - started < DEFAULT_LIMITS.timeout_s + MARGIN_S
    assert result.data.startswith(b"%PDF-")
    assert result.sha256 == sha256_hex(result.data)
    assert result.original_sha256 == sha256_hex(data)
    assert result.page_count >= 1
    for label in case.removed:
        assert any(label in item for item in result.removed), result.removed
    assert_no_active_content(result.data)
    decoded = _decoded_corpus(result.data)
    for marker in case.absent:
        assert marker not in decoded
    for marker in case.present:
        assert marker in decoded
    assert render_page(result.data, 0, width_px=300).startswith(PNG_MAGIC)
    _sign_and_validate(result.data)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len(CLEANED) >= 15 and len(REFUSALS) >= 15


def test_markers_are_present_before_normalisation() -> None:
    """The corpus really carries what the other tests check has gone."""
    for case in CLEANED:
        raw = case.make()
        with pikepdf.open(io.BytesIO(raw)) as pdf:
            decoded = raw + b"".join(
                obj.read_raw_bytes() for obj in pdf.objects if isinstance(obj, pikepdf.Stream)
            )
        for marker in case.absent:
            if marker != b"HYBRID-HIDDEN-JS":  # lives inside a compressed object stream
                assert marker in decoded, (case.name, marker)


def test_clean_document_is_kept_and_deterministic() -> None:
    data = make_pdf(pages=3, text="clean form")
    first, second = _normalise(data), _normalise(data)
    assert first.page_count == 3 and first.removed == ()
    assert first.data == second.data
    with pikepdf.open(io.BytesIO(first.data)) as pdf:
        assert "/ID" in pdf.trailer
        assert b"clean form - page 2" in pdf.pages[1].Contents.read_bytes()


def test_too_large() -> None:
    data = make_pdf()
    with pytest.raises(DocumentTooLarge):
        normalise_upload(data, max_bytes=len(data) - 1, max_pages=10)
    assert normalise_upload(data, max_bytes=len(data), max_pages=10).page_count == 1


def test_page_limit_is_the_setting() -> None:
    data = make_pdf(pages=4)
    with pytest.raises(InvalidDocument, match="more than 3 pages"):
        normalise_upload(data, max_bytes=MAX_BYTES, max_pages=3)
    assert normalise_upload(data, max_bytes=MAX_BYTES, max_pages=4).page_count == 4


def test_refuse_mode() -> None:
    with pytest.raises(InvalidDocument) as caught:
        _normalise(CASES["javascript-openaction"].make(), active_content="refuse")
    assert caught.value.message.startswith(
        "the PDF contains a script that runs when the file opens, which this service does not "
        "accept. Ask the sender for a copy without it")
    with pytest.raises(InvalidDocument, match="a link to an address that is not a web page"):
        _normalise(CASES["uri-link"].make(), active_content="refuse")
    with pytest.raises(InvalidDocument, match="an attached file"):
        _normalise(CASES["embedded-executable"].make(), active_content="refuse")
    assert _normalise(simple(), active_content="refuse").removed == ()
    # Harmless content is no reason to refuse.
    assert _normalise(CASES["benign-goto-link-kept"].make(), active_content="refuse").removed == ()
    with pytest.raises(ValueError):
        _normalise(simple(), active_content="ignore")


def test_countersigning_keeps_the_signed_bytes() -> None:
    signed = CASES["already-signed"].make()
    result = _normalise(signed, allow_signed=True)
    assert result.data == signed and result.sha256 == result.original_sha256
    twice = sign(result.data, field_name="Signature2")
    reader = PdfFileReader(io.BytesIO(twice), strict=True)
    assert len(reader.embedded_signatures) == 2
    # Active content cannot be stripped from a signed file without voiding it.
    with_js = sign(simple(catalog_extra=b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >>"))
    with pytest.raises(InvalidDocument,
                       match="a script that runs when the file opens and already carries a signature"):
        _normalise(with_js, allow_signed=True)


def test_wall_clock_timeout_kills_the_child() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidDocument, match="could not be processed safely"):
        _normalise(make_pdf(), limits=SandboxLimits(timeout_s=0.01))
    assert time.monotonic() - started < 2.0
    # The parent is unharmed and the next upload goes through.
    assert _normalise(make_pdf()).page_count == 1


@pytest.mark.parametrize(("task", "stopped"), [
    (lambda pdf, limits: _normalise(pdf, limits=limits), "could not be processed safely"),
    (lambda pdf, limits: page_geometry(pdf, 1, limits), "could not be processed safely"),
    (lambda pdf, limits: render_page_info(pdf, 0, limits=limits), "could not be rendered safely"),
], ids=["normalise", "geometry", "preview"])
def test_every_sandboxed_task_refuses_a_stopped_child_and_says_when_busy(task, stopped) -> None:
    """One mapping (sandbox.run_checked) for every caller: a child stopped at a limit is
    InvalidDocument, every slot taken is ServiceUnavailable, nothing else leaks out."""
    pdf = make_pdf()
    with pytest.raises(InvalidDocument, match=stopped):
        task(pdf, SandboxLimits(timeout_s=0.01))
    limits = SandboxLimits(timeout_s=0.01, max_parallel=1)
    slot = sandbox._slot(limits)  # the one slot of these limits, held as another upload would
    assert slot.acquire(blocking=False)
    try:
        with pytest.raises(ServiceUnavailable, match="the server is busy"):
            task(pdf, limits)
    finally:
        slot.release()


def test_decoding_is_counted_streaming_and_the_memory_limit_still_holds() -> None:
    """240 MiB of RunLength output is counted chunk by chunk (the budget keeps
    nothing), so it passes under a 200 MiB address-space limit; a limit too small
    for the parsers themselves still stops the child, with the same clear refusal."""
    data = runlength_expansion(240 * 1024 * 1024)
    assert _normalise(data, limits=SandboxLimits(memory_bytes=200 * 1024 * 1024)).page_count == 1
    started = time.monotonic()
    with pytest.raises(InvalidDocument, match="could not be (processed safely|read)"):
        _normalise(data, limits=SandboxLimits(memory_bytes=40 * 1024 * 1024))
    assert time.monotonic() - started < DEFAULT_LIMITS.timeout_s + MARGIN_S


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("scan.pdf", "scan.pdf"),
        ("../../etc/passwd", "passwd.pdf"),
        ("C:\\Users\\tech\\Consent form.PDF", "Consent form.pdf"),
        ("résumé médical.pdf", "resume medical.pdf"),
        ("", "document.pdf"),
        ("....pdf", "document.pdf"),
        (".htaccess", "htaccess.pdf"),
        ("a\x00b\r\nc.pdf", "a_b_c.pdf"),
        ('rm -rf $(x); "q".pdf', "rm -rf _(x)_ _q.pdf"),
    ],
)
def test_sanitize_filename_examples(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


SAFE = set(string.ascii_letters + string.digits + "._ ()+-")


@given(st.text(max_size=400))
def test_sanitize_filename_properties(name: str) -> None:
    clean = sanitize_filename(name)
    assert clean.endswith(".pdf") and len(clean) <= 100
    assert set(clean) <= SAFE
    assert not clean.startswith((".", " ", "-"))
    assert clean[:-4].strip("_ ")
    assert sanitize_filename(clean) == clean


def test_a_permissions_only_file_comes_out_unencrypted_and_a_password_file_says_what_to_do() -> None:
    from tests.hostile import encrypted

    result = _normalise(encrypted("", "owner"))
    with pikepdf.open(io.BytesIO(result.data)) as pdf:
        assert not pdf.is_encrypted and "/Encrypt" not in pdf.trailer
    assert any("restrictions" in item for item in result.removed)
    with pytest.raises(InvalidDocument) as caught:
        _normalise(encrypted("user", "owner"))
    assert "password" in caught.value.message and "upload that copy" in caught.value.message
