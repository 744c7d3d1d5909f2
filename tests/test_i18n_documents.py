"""What the French site writes into documents: the visible signature stamp ("Signé
par …, RPPS …, le … à …, Motif : …") in a really signed PDF, its font still
embedded for the accented names; the sealed evidence report; the verdict the
recipient reads."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest

from signflow.config import Settings
from signflow.models import SignatureRequest
from tests.conftest import DOC_RPPS, login, make_settings
from tests.helpers import delivered_request
from tests.tools import require_tool

MONTHS = ("janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|décembre")
NBSP = "\u00a0"


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "instance", keys_dir, database_url, language="fr")


def pdf_text(pdf: bytes, tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(pdf)
    return subprocess.run([require_tool("pdftotext"), str(path), "-"], capture_output=True,
                          check=True, text=True).stdout


def fonts(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "fonts.pdf"
    path.write_bytes(pdf)
    return subprocess.run([require_tool("pdffonts"), str(path)], capture_output=True, check=True,
                          text=True).stdout


def signed_bytes(svc, rid: int) -> bytes:
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        return svc.deps.blobs.get(s, req.signed_sha256)


def test_the_stamp_of_a_french_site_is_french_and_its_font_embedded(app, svc, world, tmp_path):
    rid, _tech, _doc = delivered_request(app, world)
    signed = signed_bytes(svc, rid)
    text = pdf_text(signed, tmp_path, "signed.pdf")
    assert "Signé par Dr Hélène Lefèvre" in text
    assert f"RPPS {DOC_RPPS}" in text
    assert re.search(rf"le \d{{1,2}} ({MONTHS}) \d{{4}} à \d\d:\d\d \(Europe/Paris, UTC[+-]\d{{4}}\)",
                     text), text
    assert f"Motif{NBSP}: Approuvé pour le circuit de greffe" in text or \
        "Motif : Approuvé pour le circuit de greffe" in text, text
    assert "Signed by" not in text
    # The stamp's font is embedded (a subset): the accents print anywhere. (The uploaded
    # test document's own Helvetica is not the stamp's.)
    stamp_fonts = [row for row in fonts(signed, tmp_path).splitlines() if "NotoSans" in row]
    assert stamp_fonts and all(row.split()[-5] == "yes" for row in stamp_fonts), stamp_fonts


def test_the_evidence_report_of_a_french_site_is_french(app, svc, world, tmp_path):
    rid, _tech, _doc = delivered_request(app, world)
    auditor = app.test_client()
    login(auditor, "auditor")
    report = auditor.get(f"/audit/requests/{rid}/evidence.pdf")
    assert report.status_code == 200
    text = pdf_text(report.data, tmp_path, "evidence.pdf")
    for expected in (f"Rapport de preuve — demande n° {rid}", "1. Demande", "Signée par",
                     "2. Événements d'audit", "3. Point de contrôle", "5. Comment vérifier",
                     "Dr Hélène Lefèvre", "urgence vitale"):
        assert expected in text, expected
    assert "Evidence report" not in text and "How to verify" not in text


def test_the_recipient_reads_the_verdict_in_french(app, svc, world):
    rid, _tech, _doc = delivered_request(app, world)
    recipient = app.test_client()
    login(recipient, "recipient")
    page = html.unescape(recipient.get(f"/received/{rid}").get_data(as_text=True))
    assert f"✔ Signature valide{NBSP}: intacte, reconnue par la racine de l'hôpital" in page, page[-3000:]
    assert "Accuser réception" in page
