"""Issue 9, the corpus: every kind of PDF a hospital produces, made here by the real
generators (tests/corpus.py), goes through upload -> preview -> sign -> delivery over
HTTP; the recipient's download then validates in signflow's validator, in pyHanko
directly, in poppler's pdfsig and in `qpdf --check`, and the signed page, rendered,
shows the stamp whole inside the visible area, where it belongs, reading upright.

The suite prints one line per generated file with its outcome (tests/corpus_summary.py).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from flask import Flask
from flask.testing import FlaskClient

from signflow.app import create_app
from signflow.core.notify.channels import LogNotifier
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.requests import access
from signflow.models import RequestState, SignatureRequest
from signflow.services import Services, build_services
from tests.conftest import Clock, World, csrf_token, fresh_sqlite, login, make_settings, make_world
from tests.corpus import BY_NAME, GENERATORS, VISIBLE_FIELD
from tests.corpus_checks import (
    assert_preview,
    assert_renders_alike,
    assert_stamp_whole,
    assert_upright,
    assert_valid_everywhere,
    page_count,
    stamp_words,
)
from tests.corpus_summary import CORPUS_PROPERTY, STEP_PROPERTY
from tests.factories import count
from tests.helpers import new_request, sign, upload

pytestmark = pytest.mark.slow

class Files:
    """Each generated file made once per session (LibreOffice and Chromium are slow)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: dict[str, bytes] = {}

    def get(self, name: str) -> bytes:
        if name not in self.made:
            work = self.root / name
            work.mkdir()
            self.made[name] = BY_NAME[name].make(work)
        return self.made[name]


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("corpus-files"))


@dataclass
class Loop:
    svc: Services
    app: Flask
    world: World
    tech: FlaskClient
    doc: FlaskClient
    recipient: FlaskClient
    keys_dir: Path
    files: Files


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path, key_material: Any,
         migrated_sqlite: Path, password_hash: str, corpus_files: Files) -> Iterator[Loop]:
    """One hospital for the whole corpus (SQLite: the database is not what is tested
    here), with the technician, the physician and the recipient logged in once."""
    folder = tmp_path_factory.mktemp("corpus-site")
    settings = make_settings(folder / "instance", keys_dir, fresh_sqlite(migrated_sqlite, folder))
    svc = build_services(settings, clock=Clock(), notifier=LogNotifier(), keys=key_material)
    try:
        world = make_world(svc, svc.clock(), password_hash)
        app = create_app(settings, services=svc)
        clients = {name: app.test_client() for name in ("tech", "doc", "recipient")}
        for name, client in clients.items():
            login(client, name)
        yield Loop(svc=svc, app=app, world=world, keys_dir=keys_dir, files=corpus_files, **clients)
    finally:
        svc.engine.dispose()


# --- the loop ------------------------------------------------------------------------------------

def deliver(loop: Loop, name: str, *, tap: tuple[int, float, float] | None = None,
            reached: Callable[[str], None] = lambda step: None) -> tuple[bytes, bytes]:
    """Upload (technician), optionally tap where the stamp goes, preview and sign (physician),
    see it valid and download it (recipient), all over HTTP: (normalised, signed)."""
    generator = BY_NAME[name]
    data = loop.files.get(name)
    reached("generated")
    rid = new_request(loop.tech, loop.world, data=data, filename=f"{name}.pdf")
    detail = loop.tech.get(f"/requests/{rid}").get_data(as_text=True)
    with loop.svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        removed = access.removed_content(req)
        normalised = loop.svc.deps.blobs.get(s, req.document_sha256)
    if generator.told:
        assert any(generator.told in item for item in removed), removed
        assert generator.told in detail, "the technician is not told what was changed"
    assert_renders_alike(data, normalised)
    if tap is not None:
        token = csrf_token(loop.tech, f"/requests/{rid}")
        resp = loop.tech.post(f"/requests/{rid}/stamp", data={
            "csrf_token": token, "page": str(tap[0]), "fx": str(tap[1]), "fy": str(tap[2])})
        assert resp.status_code == 302, resp.get_data(as_text=True)[-800:]
    reached("uploaded")

    assert_preview(loop.doc, rid, normalised)
    reached("previewed")
    resp = sign(loop.doc, rid)
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1500:]
    reached("signed")

    page = loop.recipient.get(f"/received/{rid}").get_data(as_text=True)
    assert "Signature valid" in page, page[-1500:]
    download = loop.recipient.get(f"/documents/{rid}/download")
    assert download.status_code == 200 and download.mimetype == "application/pdf"
    with loop.svc.sessions() as s:
        assert s.get(SignatureRequest, rid).state == RequestState.DELIVERED
    reached("delivered")
    return normalised, download.data


@pytest.mark.parametrize("name", [g.name for g in GENERATORS])
def test_generated_file_goes_round_the_loop_and_validates(name, loop, tmp_path, record_property):
    record_property(CORPUS_PROPERTY, name)

    def reached(step: str) -> None:
        record_property(STEP_PROPERTY, step)

    normalised, signed = deliver(loop, name, reached=reached)
    field = assert_valid_everywhere(signed, loop.svc, loop.keys_dir, tmp_path)
    reached("valid in signflow, pyHanko, pdfsig, qpdf")

    index, image, box, rect = assert_stamp_whole(normalised, signed, field)
    if BY_NAME[name].stamp == "field":
        assert field == "PhysicianSignature" and rect == pytest.approx(VISIBLE_FIELD, abs=1)
    else:
        assert index == page_count(normalised) - 1, "the stamp is not on the last page"
        # Bottom right as the reader holds the page (margin: 36 pt, less on a narrow page).
        assert image.width - box[2] <= 40 and image.height - box[3] <= 40, \
            f"the stamp {box} is not at the bottom right of the page as shown ({image.size})"
    reached("stamp whole inside the visible page")

    assert_upright(stamp_words(signed, index, tmp_path), box)
    reached("stamp upright")


@pytest.mark.parametrize(("name", "page"), [("reportlab-rotate90", 1), ("img2pdf-jpeg-exif-rotated", 1),
                                            ("pikepdf-nested-page-tree-rotate90", 1),
                                            ("pikepdf-rotate270-inherited-indirect-crop-offset", 1)])
def test_the_tap_on_a_turned_page_lands_where_the_technician_tapped(name, page, loop, tmp_path):
    normalised, signed = deliver(loop, name, tap=(page, 0.3, 0.2))
    field = assert_valid_everywhere(signed, loop.svc, loop.keys_dir, tmp_path)
    index, image, box, _ = assert_stamp_whole(normalised, signed, field)
    assert index == page - 1
    centre = ((box[0] + box[2]) / 2 / image.width, (box[1] + box[3]) / 2 / image.height)
    assert centre == pytest.approx((0.3, 0.2), abs=0.03)
    assert_upright(stamp_words(signed, index, tmp_path), box)


def test_a_file_that_needs_a_password_is_refused_with_what_to_do(loop):
    before = count(loop.svc, SignatureRequest)
    resp = upload(loop.tech, loop.world, data=loop.files.get("encrypted-user-password"))
    assert resp.status_code in (400, 422), resp.status_code
    text = resp.get_data(as_text=True)
    assert "password" in text and re.search(r"without (a )?password|remove|ask", text), text[-1500:]
    assert count(loop.svc, SignatureRequest) == before


# What these producers write (an initial view, a go-to-page, an https link) is navigation,
# not active content: `strip` reports nothing removed, `refuse` accepts the file.
HARMLESS = [g for g in GENERATORS if g.told is None and not g.name.startswith("pikepdf-")]


@pytest.mark.parametrize("name", [
    pytest.param(g.name, id=g.name) for g in HARMLESS])
def test_what_hospital_software_writes_is_not_taken_for_active_content(name, corpus_files):
    data = corpus_files.get(name)
    stripped = pdfcheck.normalise_upload(data, max_bytes=10**8, max_pages=50, active_content="strip")
    assert stripped.removed == ()
    accepted = pdfcheck.normalise_upload(data, max_bytes=10**8, max_pages=50, active_content="refuse")
    assert accepted.removed == () and accepted.page_count == page_count(data)


def test_a_signed_pdfa_file_keeps_what_its_claim_needs(loop, tmp_path):
    # What can be checked without a PDF/A validator: a file still claiming PDF/A after
    # normalisation and signing keeps its output intent, and every font is embedded
    # (the stamp's included).
    _, signed = deliver(loop, "ghostscript-pdfa2")
    with pikepdf.open(io.BytesIO(signed)) as pdf:
        # Ghostscript's PDF/A-2b needs no change PDF/A covers, so its claim is kept.
        assert pdf.open_metadata().get("pdfaid:part") == "2"
        assert "/OutputIntents" in pdf.Root
        for page in pdf.pages:
            for annot in page.obj.get("/Annots", []):
                appearance = annot.get("/AP", {}).get("/N")
                fonts = appearance.get("/Resources", {}).get("/Font", {}) if appearance is not None else {}
                for font in fonts.values():
                    for descendant in font.get("/DescendantFonts", [font]):
                        descriptor = descendant.get("/FontDescriptor", {})
                        assert any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3"))


def test_the_technician_is_told_what_became_of_a_pdfa_claim(loop):
    rid = new_request(loop.tech, loop.world, data=loop.files.get("ghostscript-pdfa2"))
    assert "PDF/A" in loop.tech.get(f"/requests/{rid}").get_data(as_text=True)
