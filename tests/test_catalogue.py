"""The French catalogue is complete and ships: `pybabel extract` (babel.cfg, the
keywords _ _l N_ ngettext...) finds no message without a French translation nor a
fuzzy one; no user text is left outside the catalogue in a template or a flash();
the compiled .mo matches the .po; placeholders and French typography hold."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from signflow import i18n_tools
from signflow.core.i18n import N_, Msg, Translator, from_stored, stored

PO = i18n_tools.po_path("fr")
MO = PO.with_suffix(".mo")
PLACEHOLDER = re.compile(r"%\([a-z_0-9]+\)[sd]|\{[a-z_]+\}")
NBSP = "\u00a0"


def catalogue():
    with PO.open("rb") as handle:
        return [m for m in read_po(handle) if m.id]


def strings(message) -> list[str]:
    return list(message.string) if isinstance(message.string, (list, tuple)) else [message.string]


def test_pybabel_extract_finds_every_message_translated_and_none_fuzzy(tmp_path: Path):
    pot = tmp_path / "messages.pot"
    i18n_tools.extract(pot)
    with pot.open("rb") as handle:
        extracted = [m for m in read_po(handle) if m.id]
    # The extraction really read the three layers (templates, web, core's N_ ids).
    ids = {m.id for m in extracted}
    assert {"Log in", "Sign", "Decline", "Please check the form", "Signed by %(name)s",
            "the signer's certificate is not trusted", "Unknown language %(code)s."} <= ids
    assert len(extracted) > 500
    assert i18n_tools.gaps(pot) == []
    assert not [m.id for m in catalogue() if m.fuzzy]


def test_the_gap_finder_reports_a_message_the_catalogue_lacks(tmp_path: Path):
    pot = tmp_path / "messages.pot"
    pot.write_text('msgid "A sentence nobody translated"\nmsgstr ""\n\nmsgid "Log in"\nmsgstr ""\n')
    assert [(g.msgid, g.why) for g in i18n_tools.gaps(pot)] == [
        ("A sentence nobody translated", "not in the catalogue")]


def test_no_user_text_outside_the_catalogue_in_templates_or_flashes():
    assert i18n_tools.text_outside_catalogue() == []


def test_the_text_checker_finds_words_outside_translation_calls():
    found = i18n_tools.template_text(
        '<h1>Hello {{ user.name }}</h1><img alt="A scan" src="{{ url }}">'
        "<p>{{ _('Translated') }}</p>{% if a > b %}<b>{% trans %}Fine{% endtrans %}</b>{% endif %}"
        "<script>const s = 'code';</script>"
        "{{ field(form.pin, hint='At least 6 digits.') }}{{ 'Save' if a else _('Send') }}"
        "{{ url_for('auth.login') }}")
    assert found == ["Hello", "At least 6 digits.", "Save", "A scan"]
    assert i18n_tools.untranslated_flashes(
        'flash("Saved.")\nflash(_("Saved."))\nflash(message)\nflash(_(d) if s else d(r))\n') == [1, 3]


def test_the_compiled_catalogue_matches_the_po_file():
    with MO.open("rb") as handle:
        compiled = {(m.context, m.id): m.string for m in read_mo(handle) if m.id}
    for message in catalogue():
        assert compiled.get((message.context, message.id)) == message.string, message.id


def test_translations_keep_their_placeholders():
    for message in catalogue():
        source = message.id if isinstance(message.id, str) else message.id[0]
        for text in strings(message):
            assert sorted(set(PLACEHOLDER.findall(text))) == sorted(set(PLACEHOLDER.findall(source))), \
                (source, text)


def test_french_typography_is_consistent():
    """A non-breaking space before : ; ? ! and inside « », never a plain one; no
    English double quotes around words."""
    for message in catalogue():
        for text in strings(message):
            assert not re.search(r" [:;?!](\s|$)", text), text
            assert not re.search(r"(«[^\u00a0])|([^\u00a0]»)", text), text
            assert not re.search(r'"\w[^"]*\w"', text) or '"' in str(message.id), text


def test_a_catalogue_translation_works_outside_a_request():
    french = Translator("fr", "Europe/Paris")
    assert french("Signed by %(name)s", name="Dr Hélène Lefèvre") == "Signé par Dr Hélène Lefèvre"
    assert french("Sign") == "Signer" and french("Decline") == "Refuser"
    assert Translator("en")("Sign") == "Sign"
    # An unknown language falls back to the message ids' English.
    assert Translator("xx")("Sign") == "Sign"


def test_the_hospital_vocabulary():
    french = {m.id: m.string for m in catalogue() if isinstance(m.id, str)}
    for english, expected in {
        "Send a document for signature": "Envoyer un document à signer",
        "Sign": "Signer", "Decline": "Refuser", "Reason": "Motif", "Log in": "Se connecter",
        "Signing PIN": "Code PIN de signature", "Technician": "Technicien", "Auditor": "Auditeur",
        "Destination service": "Service destinataire", "Acknowledge receipt": "Accuser réception",
        "On-call rota": "Planning d'astreinte",
    }.items():
        assert french[english] == expected, english


def test_a_stored_message_reads_in_each_readers_language():
    """A failure reason is stored as its message id and parameters (core.i18n.stored),
    the validator's problems among them, and read back translated; a reason stored as
    plain English text before that still reads as itself."""
    reason = Msg(N_("The signature made at %(when)s did not validate (%(problems)s), so nothing "
                    "was delivered. The physician can sign again, or decline."),
                 {"when": "2026-12-04 03:12 CET", "problems": ["the signer's certificate cannot be read"]})
    kept = from_stored(stored(reason))
    assert kept is not None and str(kept) == str(reason)
    assert "the signer's certificate cannot be read" in str(kept)
    french = kept.in_language("fr")
    assert french.startswith("La signature apposée le 2026-12-04 03:12 CET")
    assert "le certificat du signataire est illisible" in french
    legacy = from_stored("Nobody signed before the last escalation deadline.")
    assert legacy is not None
    assert legacy.in_language("fr") == "Personne n'a signé avant la dernière échéance d'escalade."
    assert from_stored(None) is None and from_stored("") is None
