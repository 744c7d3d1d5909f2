"""The French interface: French by default, English on request (Accept-Language on
the login page and the API, a user's own choice kept on the account and in a
cookie), and every layer in the reader's language: pages, flashes, form errors,
domain errors, API problems, dates, the worker's messages."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from signflow.config import Settings
from signflow.models import User
from tests.conftest import csrf_token, login, make_settings
from tests.factories import integration_token
from tests.helpers import new_request, run_jobs

NBSP = "\u00a0"


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path, database_url: str) -> Settings:
    # The site language of a French hospital (the other test modules read English).
    return make_settings(tmp_path / "instance", keys_dir, database_url, language="fr")


def page(client, path: str, **headers: str) -> str:
    resp = client.get(path, headers=headers)
    assert resp.status_code == 200, (path, resp.status_code)
    return text_of(resp)


def text_of(resp) -> str:
    """The page as a reader sees it (Jinja escapes the apostrophes of French)."""
    return html.unescape(resp.get_data(as_text=True))


def test_login_page_is_french_by_default_and_english_for_an_english_browser(client):
    french = page(client, "/login")
    assert '<html lang="fr">' in french
    assert "Se connecter" in french and "Nom d'utilisateur" in french and "Log in" not in french

    english = page(client, "/login", **{"Accept-Language": "en-GB,en;q=0.8"})
    assert '<html lang="en">' in english and "Log in" in english and "Se connecter" not in english
    # A browser that prefers French among others still reads French.
    assert "Se connecter" in page(client, "/login", **{"Accept-Language": "fr-FR,en;q=0.5"})


@pytest.mark.parametrize("header", ["de-DE,it;q=0.9", "!!,;q=zz,,", "en;q=abc", "x" * 300, ""])
def test_unknown_or_malformed_accept_language_falls_back_to_the_site_language(client, header):
    assert "Se connecter" in page(client, "/login", **{"Accept-Language": header})


def test_pages_flashes_and_dates_of_a_signed_in_user_are_french(app, world, clock):
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    detail = text_of(tech.get(f"/requests/{rid}", follow_redirects=True))
    assert "Envoyée pour signature" in detail  # the flash
    assert "Mes demandes" in detail and "Demande n°" in detail
    assert "urgence vitale" in detail  # the urgency's word, not its value
    # The moment in the hospital's time zone, as French writes it: "3 décembre 2026 à 14:05".
    assert re.search(r"\d{1,2} (janvier|février|mars|avril|mai|juin|juillet|août|septembre|"
                     r"octobre|novembre|décembre) \d{4} à \d\d:\d\d", detail), detail
    listing = page(tech, "/requests/")
    assert "en attente" in listing and ">pending<" not in listing


def test_form_validation_and_domain_errors_are_french(app, world):
    client = app.test_client()
    token = csrf_token(client, "/login")
    empty = client.post("/login", data={"csrf_token": token, "username": "", "password": ""})
    assert "Ce champ est requis." in text_of(empty)  # WTForms' own catalogue

    bad = client.post("/login", data={"csrf_token": token, "username": "tech", "password": "wrong"})
    text = text_of(bad)
    assert bad.status_code == 401
    assert "Échec de la connexion" in text and "Nom d'utilisateur ou mot de passe incorrect." in text

    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    doc = app.test_client()
    login(doc, "doc")
    token = csrf_token(doc, f"/inbox/{rid}")
    refused = doc.post(f"/inbox/{rid}/decline", data={"csrf_token": token, "reason": ""})
    assert refused.status_code == 400
    assert "Indiquez le motif du refus, pour le technicien." in text_of(refused)


def test_a_core_message_with_parameters_is_translated_at_the_edge(app, world):
    tech = app.test_client()
    login(tech, "tech")
    missing = tech.get("/requests/999999")
    assert missing.status_code == 404
    assert "Demande introuvable, ou vous n'avez pas à la voir." in text_of(missing)
    # A parameter survives the translation (core: "'%(name)s' must be an id ...").
    bad_id = tech.get("/requests/99999999999999999999")
    assert bad_id.status_code in (400, 404)


def test_the_users_choice_is_kept_on_the_account_and_survives_logout(app, svc, world):
    client = app.test_client()
    login(client, "tech")
    assert "Langue de l'interface" in page(client, "/account/language/")
    token = csrf_token(client, "/account/language/")
    chosen = client.post("/account/language/", data={"csrf_token": token, "language": "en"})
    assert chosen.status_code == 302
    assert "signflow_language=en" in chosen.headers["Set-Cookie"]
    with svc.sessions() as s:
        assert s.get(User, world.tech).language == "en"
    after = page(client, "/account/language/")
    assert "Language saved." in after and "Interface language" in after
    assert "My requests" in page(client, "/requests/")

    token = csrf_token(client, "/requests/")
    client.post("/logout", data={"csrf_token": token})
    # Logged out, with no Accept-Language: the cookie keeps the login page in English.
    assert "Log in" in page(client, "/login")

    # Another browser: the account's choice applies once signed in, and is remembered there.
    other = app.test_client()
    assert "Se connecter" in page(other, "/login")
    token = csrf_token(other, "/login")
    signed_in = other.post("/login", data={"csrf_token": token, "username": "tech",
                                           "password": "correct horse battery staple"})
    assert "signflow_language=en" in " ".join(signed_in.headers.getlist("Set-Cookie"))
    assert "My requests" in page(other, "/requests/")


def test_going_back_to_the_site_language_clears_the_choice(app, svc, world):
    client = app.test_client()
    login(client, "tech")
    token = csrf_token(client, "/account/language/")
    client.post("/account/language/", data={"csrf_token": token, "language": "en"})
    token = csrf_token(client, "/account/language/")
    back = client.post("/account/language/", data={"csrf_token": token, "language": ""})
    assert back.status_code == 302
    with svc.sessions() as s:
        assert s.get(User, world.tech).language is None
    assert "Langue enregistrée." in page(client, "/account/language/")


def test_an_unknown_language_is_refused_and_a_bad_cookie_ignored(app, svc, world):
    client = app.test_client()
    login(client, "tech")
    token = csrf_token(client, "/account/language/")
    refused = client.post("/account/language/", data={"csrf_token": token, "language": "xx"})
    assert refused.status_code == 400
    with svc.sessions() as s:
        assert s.scalar(select(User.language).where(User.id == world.tech)) is None
    anonymous = app.test_client()
    anonymous.set_cookie("signflow_language", "klingon")
    assert "Se connecter" in page(anonymous, "/login")


def test_api_problems_follow_accept_language(client):
    french = client.get("/api/v1/requests")
    assert french.status_code == 401 and french.mimetype == "application/problem+json"
    assert french.json["title"] == "Échec de la connexion"
    english = client.get("/api/v1/requests", headers={"Accept-Language": "en"})
    assert english.json["title"] == "Login failed"
    assert english.json["detail"] != french.json["detail"]
    assert client.get("/api/v1/requests", headers={"Accept-Language": ";;;"}).json["title"] == \
        "Échec de la connexion"


def test_the_workers_pages_are_written_in_the_site_language(app, svc, world):
    tech = app.test_client()
    login(tech, "tech")
    rid = new_request(tech, world)
    run_jobs(svc)
    subjects = [m.subject for m in svc.notifier.sent]
    assert f"Signature demandée (urgence vitale){NBSP}: demande n° {rid}" in subjects, subjects
    body = next(m.body for m in svc.notifier.sent if str(rid) in m.subject)
    assert "Ouvrez signflow pour y donner suite." in body


def test_core_errors_of_the_stats_and_the_api_reach_a_french_reader_in_french(app, svc, world):
    # The manager's page: a period too long (a parameter filled after translation).
    manager = app.test_client()
    login(manager, "manager")
    too_long = manager.get("/stats/?from=2024-01-01&to=2026-02-02")
    assert too_long.status_code == 400
    assert "Choisissez une période de 366 jours au plus." in text_of(too_long)
    assert "Groupe d'astreinte introuvable" in text_of(manager.get("/stats/?group=abc"))
    # A hospital system: its problem details follow Accept-Language.
    token = integration_token(svc, name="reports", scopes=("stats",)).token
    headers = {"Authorization": f"Bearer {token}"}
    swapped = "/api/v1/stats?from=2026-02-15&to=2026-02-02"
    french = app.test_client().get(swapped, headers={**headers, "Accept-Language": "fr-FR"})
    assert french.status_code == 400 and french.mimetype == "application/problem+json"
    assert french.json["detail"] == (f"La période se termine avant de commencer{NBSP}: "
                                     "inversez les deux jours.")
    english = app.test_client().get(swapped, headers={**headers, "Accept-Language": "en"})
    assert english.json["detail"] == "The period ends before it starts: swap the two days."
    lab = integration_token(svc, name="lab", group_id=world.group, scopes=("read",)).token
    bad_limit = app.test_client().get("/api/v1/requests?limit=0",
                                      headers={"Authorization": f"Bearer {lab}", "Accept-Language": "fr"})
    assert bad_limit.status_code == 400
    assert re.fullmatch(r"«\xa0limit\xa0» est compris entre 1 et \d+\.", bad_limit.json["detail"])
