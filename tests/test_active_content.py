"""Issue 9, item 4: dangerous active content is told from harmless navigation.

`strip` removes and reports only the dangerous; `refuse` refuses only the
dangerous; the initial view and go-to-page actions that fpdf2 and LibreOffice
write into every file, named page moves and ordinary web links are kept. The
technician reads what was found in plain words. Real files: fpdf2, LibreOffice
(headless), pikepdf."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import pikepdf
import pytest

from signflow.core.errors import InvalidDocument
from signflow.core.pdf.normalise import NormalisedPdf, normalise_upload
from signflow.core.pdf.sandbox_child.active_content import uri_scheme
from tests.conftest import make_settings
from tests.helpers import assert_signed_file_valid, upload_and_sign_through_the_app
from tests.pdfs import fpdf2_form, make_pdf
from tests.tools import require_tool

Edit = Callable[[pikepdf.Pdf], None]


def _normalise(data: bytes, mode: str = "strip") -> NormalisedPdf:
    return normalise_upload(data, max_bytes=10**7, max_pages=50, active_content=mode)


def edited(*edits: Edit, pages: int = 2) -> bytes:
    pdf = pikepdf.open(io.BytesIO(make_pdf(pages=pages, text="Cross-match report")))
    for edit in edits:
        edit(pdf)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def link(pdf: pikepdf.Pdf, action: pikepdf.Dictionary, page: int = 0) -> None:
    annot = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Link, Rect=[72, 600, 300, 620],
        Border=[0, 0, 0], A=action))
    target = pdf.pages[page].obj
    target.Annots = pikepdf.Array([*target.get("/Annots", pikepdf.Array()), annot])


def uri(target: str) -> pikepdf.Dictionary:
    return pikepdf.Dictionary(S=pikepdf.Name.URI, URI=pikepdf.String(target))


def js(code: str) -> pikepdf.Dictionary:
    return pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String(code))


def goto_open(pdf: pikepdf.Pdf) -> None:
    pdf.Root.OpenAction = pikepdf.Dictionary(
        S=pikepdf.Name.GoTo, D=[pdf.pages[0].obj, pikepdf.Name.Fit])


def harmless(pdf: pikepdf.Pdf) -> None:
    """What office suites and web portals write: navigation and web links."""
    goto_open(pdf)
    link(pdf, pikepdf.Dictionary(S=pikepdf.Name.GoTo, D=[pdf.pages[1].obj, pikepdf.Name.Fit]))
    link(pdf, pikepdf.Dictionary(S=pikepdf.Name.Named, N=pikepdf.Name.NextPage))
    link(pdf, uri("https://lab.hospital.example/results?id=42"))
    link(pdf, uri("HTTP://intranet.example/"))
    link(pdf, uri("mailto:transplant@hospital.example"))


def actions_in(data: bytes) -> list[str]:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        found = []
        for page in pdf.pages:
            for annot in page.obj.get("/Annots", []):
                action = annot.get("/A")
                if action is not None:
                    found.append(f"{action.S}:{action.get('/URI', action.get('/N', ''))}")
        return found


def opening_of(data: bytes) -> object:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        opening = pdf.Root.get("/OpenAction")
        if opening is None:
            return None
        return "array" if isinstance(opening, pikepdf.Array) else str(opening.get("/S"))


def test_an_fpdf2_file_keeps_its_initial_view_and_is_accepted_under_refuse() -> None:
    data = fpdf2_form()
    assert b"/OpenAction [3 0 R /FitH null]" in data  # what fpdf2 writes in every file
    result = _normalise(data, "refuse")
    assert result.removed == ()
    assert opening_of(result.data) == "array"


def test_a_libreoffice_file_keeps_its_open_action_and_is_accepted_under_refuse(tmp_path: Path,
                                                                                ) -> None:
    soffice = require_tool("soffice")
    source = tmp_path / "letter.html"
    source.write_text("<html><body><h1>Transplant consent</h1><p>Page one.</p>"
                      "<p><a href='https://hospital.example/'>hospital</a></p></body></html>")
    done = subprocess.run(
        [soffice, f"-env:UserInstallation=file://{tmp_path}/profile", "--headless",
         "--convert-to", "pdf:writer_pdf_Export", "--outdir", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=180)
    data = (tmp_path / "letter.pdf").read_bytes() if (tmp_path / "letter.pdf").exists() else b""
    assert data, done.stdout + done.stderr
    with pikepdf.open(io.BytesIO(data)) as pdf:
        assert "/OpenAction" in pdf.Root  # LibreOffice writes the initial view
    result = _normalise(data, "refuse")
    assert result.removed == ()
    assert opening_of(result.data) is not None
    assert any("https://hospital.example/" in item for item in actions_in(result.data))


@pytest.mark.parametrize("mode", ["strip", "refuse"])
def test_navigation_and_web_links_are_kept_in_both_modes(mode: str) -> None:
    result = _normalise(edited(harmless), mode)
    assert result.removed == ()
    assert opening_of(result.data) == "/GoTo"
    assert actions_in(result.data) == [
        "/GoTo:", "/Named:/NextPage", "/URI:https://lab.hospital.example/results?id=42",
        "/URI:HTTP://intranet.example/", "/URI:mailto:transplant@hospital.example"]


def attach(pdf: pikepdf.Pdf) -> None:
    pdf.attachments["payload.exe"] = pikepdf.AttachedFileSpec(pdf, b"MZ ATTACHED-MARKER")


def open_script(pdf: pikepdf.Pdf) -> None:
    pdf.Root.OpenAction = js("app.alert('OPEN-SCRIPT-MARKER')")


def document_script(pdf: pikepdf.Pdf) -> None:
    pdf.Root.Names = pikepdf.Dictionary(JavaScript=pikepdf.Dictionary(
        Names=[pikepdf.String("init"), pdf.make_indirect(js("DOC-SCRIPT-MARKER"))]))


def page_script(pdf: pikepdf.Pdf) -> None:
    pdf.pages[0].obj.AA = pikepdf.Dictionary(O=js("PAGE-SCRIPT-MARKER"))


def goto_then_script(pdf: pikepdf.Pdf) -> None:
    goto_open(pdf)
    pdf.Root.OpenAction.Next = js("CHAINED-SCRIPT-MARKER")


DANGEROUS: dict[str, tuple[Edit, str, bytes]] = {
    "script on open": (open_script, "a script that runs when the file opens",
                       b"OPEN-SCRIPT-MARKER"),
    "document script": (document_script, "a script that runs when the file opens",
                        b"DOC-SCRIPT-MARKER"),
    "page script": (page_script, "a script that runs by itself when a page", b"PAGE-SCRIPT-MARKER"),
    "go-to then script": (goto_then_script, "a script that runs when the file opens",
                          b"CHAINED-SCRIPT-MARKER"),
    "script link": (lambda pdf: link(pdf, js("LINK-SCRIPT-MARKER")),
                    "a script behind a link, button or bookmark", b"LINK-SCRIPT-MARKER"),
    "javascript: uri": (lambda pdf: link(pdf, uri("javascript:JSURI-MARKER()")),
                        "a link to an address that is not a web page", b"JSURI-MARKER"),
    "file uri": (lambda pdf: link(pdf, uri("file:///C:/Windows/FILEURI-MARKER.exe")),
                 "a link to an address that is not a web page", b"FILEURI-MARKER"),
    "launch": (lambda pdf: link(pdf, pikepdf.Dictionary(S=pikepdf.Name.Launch,
                                                        F=pikepdf.String("LAUNCH-MARKER.exe"))),
               "a link that starts a program", b"LAUNCH-MARKER"),
    "remote go-to": (lambda pdf: link(pdf, pikepdf.Dictionary(
        S=pikepdf.Name.GoToR, F=pikepdf.String("REMOTE-MARKER.pdf"), D=[0, pikepdf.Name.Fit])),
                     "a link that opens another file", b"REMOTE-MARKER"),
    "submit form": (lambda pdf: link(pdf, pikepdf.Dictionary(
        S=pikepdf.Name.SubmitForm, F=pikepdf.String("https://SUBMIT-MARKER.example/"))),
                    "a button that sends what was typed in the form over the network", b"SUBMIT-MARKER"),
    "import data": (lambda pdf: link(pdf, pikepdf.Dictionary(
        S=pikepdf.Name.ImportData, F=pikepdf.String("IMPORT-MARKER.fdf"))),
                    "a button that loads data from another file", b"IMPORT-MARKER"),
    "attached file": (attach, "an attached file", b"ATTACHED-MARKER"),
}


def _decoded(data: bytes) -> bytes:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        return data + b"".join(o.read_bytes() for o in pdf.objects if isinstance(o, pikepdf.Stream))


@pytest.mark.parametrize("name", sorted(DANGEROUS))
def test_strip_removes_only_the_dangerous_and_says_what_in_plain_words(name: str) -> None:
    edit, label, marker = DANGEROUS[name]
    data = edited(harmless, edit) if name != "go-to then script" else edited(edit)
    assert marker in _decoded(data)
    result = _normalise(data, "strip")
    assert marker not in _decoded(result.data)
    assert any(item.startswith(label) for item in result.removed), result.removed
    assert not any("/" in item for item in result.removed)  # no PDF vocabulary
    if name != "go-to then script":
        # The navigation next to it survives.
        assert "/URI:https://lab.hospital.example/results?id=42" in actions_in(result.data)
        assert "/Named:/NextPage" in actions_in(result.data)


@pytest.mark.parametrize("name", sorted(DANGEROUS))
def test_refuse_refuses_the_dangerous_naming_it(name: str) -> None:
    edit, label, _marker = DANGEROUS[name]
    with pytest.raises(InvalidDocument) as caught:
        _normalise(edited(edit), "refuse")
    message = caught.value.message
    assert message.startswith(f"the PDF contains {label}"), message
    assert "Ask the sender for a copy without it" in message


def test_a_go_to_that_chains_a_script_is_removed_as_a_whole() -> None:
    result = _normalise(edited(goto_then_script))
    assert opening_of(result.data) is None


@pytest.mark.parametrize(("value", "scheme"), [
    ("https://a.example/", "https"), ("HTTPS://A.EXAMPLE", "https"), ("mailto:x@y", "mailto"),
    ("javascript:alert(1)", "javascript"), (" file:///etc/passwd", "file"),
    ("\\\\server\\share\\x.exe", None), ("relative/page.html", None), ("", None),
    ("c:\\windows\\calc.exe", "c"),
])
def test_uri_scheme(value: str, scheme: str | None) -> None:
    assert uri_scheme(value) == scheme


@pytest.fixture
def settings(tmp_path, keys_dir, sqlite_url):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path / "instance", keys_dir, sqlite_url, active_content="refuse")


def test_under_refuse_an_fpdf2_file_uploads_signs_and_validates(app, svc, world, tmp_path,
                                                                 keys_dir) -> None:
    assert svc.settings.active_content == "refuse"
    _rid, before, signed = upload_and_sign_through_the_app(app, svc, world, fpdf2_form())
    assert opening_of(before) == "array"
    assert_signed_file_valid(svc, signed, tmp_path, keys_dir)


def test_under_refuse_a_script_is_refused_in_words_and_nothing_is_created(app, svc, world) -> None:
    from tests.conftest import login
    from tests.helpers import upload

    tech = app.test_client()
    login(tech, "tech")
    resp = upload(tech, world, data=edited(harmless, open_script))
    assert resp.status_code == 422  # InvalidDocument, as for every refused upload
    page = resp.get_data(as_text=True)
    assert "a script that runs when the file opens" in page
    from signflow.models import SignatureRequest
    from tests.factories import count

    assert count(svc, SignatureRequest) == 0


def test_usage_rights_are_removed_and_reported_but_never_refused() -> None:
    def usage_rights(pdf: pikepdf.Pdf) -> None:
        pdf.Root.Perms = pikepdf.Dictionary(UR3=pikepdf.Dictionary(
            Type=pikepdf.Name.Sig, Filter=pikepdf.Name("/Adobe.PPKLite")))

    result = _normalise(edited(harmless, usage_rights), "refuse")
    assert result.removed == ("Adobe Reader usage rights (a changed file loses them anyway)",)
    with pikepdf.open(io.BytesIO(result.data)) as pdf:
        assert "/Perms" not in pdf.Root
