"""Issue 9, items 5 and 2 (PDF/A): XMP metadata pyHanko cannot parse is repaired
or dropped by the normaliser and reported, so signing never fails on metadata;
a PDF/A claim survives normalisation only when nothing it covers changed, else
it is removed, and the technician is told which. Real files: pikepdf, Ghostscript
(-dPDFA), pyHanko, pdfsig, qpdf."""

from __future__ import annotations

import html
import io
import subprocess
from pathlib import Path

import pikepdf
import pytest
from pyhanko.pdf_utils.metadata.xmp_xml import XmpXmlProcessingError

from signflow.core.pdf.normalise import NormalisedPdf, normalise_upload
from signflow.core.pdf.sandbox_child.metadata import pyhanko_accepts
from tests.conftest import csrf_token, login
from tests.helpers import assert_signed_file_valid, upload_and_sign_through_the_app
from tests.hostile import sign
from tests.pdfs import make_pdf
from tests.tools import require_tool

GOOD = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
    b'syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
    b'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Consent TITLE-KEPT</rdf:li></rdf:Alt>'
    b"</dc:title></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end=\"w\"?>"
)
REPAIRABLE = {
    "unclosed element": GOOD.replace(b"</dc:title>", b""),
    "xml declaration inside the packet": b'<?xml version="1.0" encoding="UTF-8"?>\n' + GOOD,
    "utf-16 without a packet header": GOOD.decode().encode("utf-16-le"),
    "wrong packet header": GOOD.replace(b"W5M0MpCehiHzreSzNTczkc9d", b"NOT-THE-ID")
    .replace(b"\xef\xbb\xbf", b"\xff\xfe"),
    "junk before the packet": b"JUNK BYTES " + GOOD,
}
SIGNING_FAILURES = (XmpXmlProcessingError, UnicodeDecodeError)
UNREADABLE = {
    "not xml at all": b"\x00\x01 garbage, no markup",
    "xml entities": b'<!DOCTYPE x [<!ENTITY e "T">]>' + GOOD.replace(b"Consent", b"&e;"),
}


def with_xmp(packet: bytes, data: bytes | None = None) -> bytes:
    pdf = pikepdf.open(io.BytesIO(data or make_pdf(1, "Consent with metadata")))
    pdf.Root.Metadata = pdf.make_stream(packet, Type=pikepdf.Name.Metadata,
                                        Subtype=pikepdf.Name.XML)
    out = io.BytesIO()
    # pikepdf would otherwise rewrite (and quietly replace) the damaged packet itself.
    pdf.save(out, fix_metadata_version=False)
    return out.getvalue()


def xmp_of(data: bytes) -> bytes | None:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        stream = pdf.Root.get("/Metadata")
        return None if stream is None else bytes(stream.read_bytes())


def _normalise(data: bytes) -> NormalisedPdf:
    return normalise_upload(data, max_bytes=10**7, max_pages=50)


def test_good_xmp_is_kept_byte_for_byte() -> None:
    result = _normalise(with_xmp(GOOD))
    assert result.removed == () and result.notices == ()
    assert xmp_of(result.data) == GOOD


@pytest.mark.parametrize("name", sorted(REPAIRABLE))
def test_damaged_xmp_is_repaired_and_reported(name: str) -> None:
    data = with_xmp(REPAIRABLE[name])
    with pytest.raises(SIGNING_FAILURES):  # what the upload would have hit when signed
        sign(data)
    result = _normalise(data)
    assert result.removed == ("a damaged document description (XMP metadata), repaired",)
    packet = xmp_of(result.data)
    assert packet is not None and b"TITLE-KEPT" in packet and pyhanko_accepts(packet)
    sign(result.data)


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_xmp_is_dropped_and_reported(name: str) -> None:
    data = with_xmp(UNREADABLE[name])
    with pytest.raises(SIGNING_FAILURES):
        sign(data)
    result = _normalise(data)
    assert result.removed == ("an unreadable document description (XMP metadata)",)
    assert xmp_of(result.data) is None
    sign(result.data)


def test_a_pdf_with_broken_xmp_uploads_signs_and_validates(app, svc, world, tmp_path,
                                                           keys_dir) -> None:
    rid, before, signed = upload_and_sign_through_the_app(
        app, svc, world, with_xmp(REPAIRABLE["unclosed element"]))
    assert pyhanko_accepts(xmp_of(before) or b"")
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    tech = app.test_client()
    login(tech, "tech")
    page = tech.get(f"/requests/{rid}").get_data(as_text=True)
    assert "XMP metadata), repaired" in page


def ghostscript_pdfa(tmp_path: Path, part: int) -> bytes:
    gs = require_tool("gs")
    source = tmp_path / "in.pdf"
    source.write_bytes(make_pdf(2, "Archived consent"))
    out = tmp_path / f"pdfa{part}.pdf"
    subprocess.run([gs, "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite",
                    f"-dPDFA={part}", "-dPDFACompatibilityPolicy=1",
                    "-sColorConversionStrategy=RGB", f"-sOutputFile={out}", str(source)],
                   check=True, capture_output=True, timeout=120)
    return out.read_bytes()


def claims_pdfa(data: bytes) -> bool:
    packet = xmp_of(data)
    return packet is not None and b"http://www.aiim.org/pdfa/ns/id/" in packet and (
        b"pdfaid:part" in packet)


@pytest.mark.parametrize("part", [1, 2])
def test_an_untouched_pdfa_keeps_its_claim_and_the_technician_is_told(tmp_path: Path,
                                                                      part: int) -> None:
    data = ghostscript_pdfa(tmp_path, part)
    assert claims_pdfa(data)
    result = _normalise(data)
    assert result.removed == ()
    assert tuple(map(str, result.notices)) == (
        f"The file is PDF/A-{part}b (the archival format) and stays so: nothing PDF/A covers "
        "was changed, and the signature is added without rewriting the file.",)
    assert claims_pdfa(result.data)
    if part == 1:  # PDF/A-1 forbids object and cross-reference streams
        with pikepdf.open(io.BytesIO(result.data)) as pdf:
            assert not any(o.get("/Type") in ("/ObjStm", "/XRef") for o in pdf.objects
                           if isinstance(o, pikepdf.Stream))
        assert b"/ObjStm" not in result.data and b"\nxref\n" in result.data
    # pyHanko's signature is an incremental update that keeps the claim in its XMP rewrite.
    assert claims_pdfa(sign(result.data))


def test_a_changed_pdfa_loses_its_claim_and_the_technician_is_told(tmp_path: Path) -> None:
    pdf = pikepdf.open(io.BytesIO(ghostscript_pdfa(tmp_path, 2)))
    pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.JavaScript,
                                             JS=pikepdf.String("app.alert(1)"))
    out = io.BytesIO()
    pdf.save(out, fix_metadata_version=False)
    result = _normalise(out.getvalue())
    assert result.removed == ("a script that runs when the file opens",)
    assert not claims_pdfa(result.data)
    assert xmp_of(result.data) is not None  # the rest of the description stays
    (notice,) = map(str, result.notices)
    assert notice.startswith("The file declared itself PDF/A-2b (the archival format), but")
    assert "that claim was taken out" in notice


def test_the_pdfa_notice_is_on_the_request_page_and_the_signed_file_validates(
        app, svc, world, tmp_path, keys_dir) -> None:
    rid, _before, signed = upload_and_sign_through_the_app(app, svc, world,
                                                           ghostscript_pdfa(tmp_path, 2))
    assert claims_pdfa(signed)
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)
    tech = app.test_client()
    login(tech, "tech")
    page = tech.get(f"/requests/{rid}").get_data(as_text=True)
    assert "is PDF/A-2b (the archival format) and stays so" in page
    # The notice is a message id, read in the reader's language.
    tech.post("/account/language/", data={"csrf_token": csrf_token(tech, "/account/language/"),
                                          "language": "fr"})
    page = html.unescape(tech.get(f"/requests/{rid}").get_data(as_text=True))
    assert "est au format PDF/A-2b" in page


def test_a_pdfa_whose_xmp_needed_repair_loses_its_claim(tmp_path: Path) -> None:
    data = ghostscript_pdfa(tmp_path, 2)
    packet = xmp_of(data)
    assert packet is not None
    damaged = with_xmp(b'<?xml version="1.0" encoding="UTF-8"?>\n' + packet, data)
    with pytest.raises(SIGNING_FAILURES):
        sign(damaged)
    result = _normalise(damaged)
    assert result.removed == ("a damaged document description (XMP metadata), repaired",)
    assert not claims_pdfa(result.data)
    assert "that claim was taken out" in str(result.notices[0])
    sign(result.data)
