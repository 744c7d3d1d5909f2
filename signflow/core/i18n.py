"""Translations outside a request: the worker's e-mails, SMS and pushes, the stamp,
the evidence report, the verdicts core writes. No Flask here (web/i18n.py is the
request side); both read the one catalogue shipped in signflow/translations.

Core marks its user-facing texts with `N_()` (a no-op that `pybabel extract`
finds) and keeps them as message ids; whoever shows one translates it, in the
language of its reader (web/errors.py, the request's; jobs, the site's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError, dates, numbers, support

TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"
LANGUAGES = ("fr", "en")
# What message ids are written in: English needs no catalogue.
SOURCE_LANGUAGE = "en"


def N_(message: str) -> str:  # noqa: N802 - the gettext convention pybabel extracts
    """Marks `message` for the catalogue; translated later, by whoever shows it."""
    return message


def language_or(language: str | None, fallback: str) -> str:
    """`language` when signflow ships it, else `fallback` (unknown codes, "fr-FR"...)."""
    if language:
        base = language.strip().replace("_", "-").split("-")[0].lower()
        if base in LANGUAGES:
            return base
    return fallback if fallback in LANGUAGES else SOURCE_LANGUAGE


@lru_cache(maxsize=8)
def translations(language: str) -> support.NullTranslations:
    """The compiled catalogue of `language` (English: the message ids themselves)."""
    if language == SOURCE_LANGUAGE:
        return support.NullTranslations()
    return support.Translations.load(str(TRANSLATIONS_DIR), [language])


def translate(language: str, msgid: str, params: Mapping[str, object] | None = None) -> str:
    """`msgid` in `language`, its %(name)s placeholders filled from `params`."""
    text = translations(language).gettext(msgid)
    return fill(text, {k: _param_in(language, v) for k, v in (params or {}).items()})


def _param_in(language: str, value: object) -> object:
    """A parameter as the reader reads it: a message in their language; a list of
    message ids (a validator's problems) each translated, joined by "; "."""
    if isinstance(value, Msg):
        return value.in_language(language)
    if isinstance(value, list | tuple):
        return "; ".join(str(_param_in(language, item)) if isinstance(item, Msg)
                         else translate(language, str(item)) for item in value)
    return value


def translate_plural(language: str, singular: str, plural: str, n: int,
                     params: Mapping[str, object] | None = None) -> str:
    text = translations(language).ngettext(singular, plural, n)
    return fill(text, {"num": n, **(params or {})})


@dataclass(frozen=True)
class Msg:
    """A message id with its parameters, given as a parameter of another message
    ("%(problem)s (reference for support: %(reference)s)"): its English text where
    a string is wanted, and translated with the message that holds it."""

    msgid: str
    params: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return translate(SOURCE_LANGUAGE, self.msgid, self.params)

    def in_language(self, language: str) -> str:
        return translate(language, self.msgid, self.params)


def stored(message: Msg) -> str:
    """`message` as a text column keeps it (a request's failure reason, an upload
    notice): JSON of the id and its parameters, translated when someone reads it."""
    return json.dumps({"msgid": message.msgid, "params": _plain(message.params)}, ensure_ascii=False)


def _plain(params: Mapping[str, object]) -> dict[str, object]:
    def one(value: object) -> object:
        if isinstance(value, Msg):
            return {"msgid": value.msgid, "params": _plain(value.params)}
        if isinstance(value, list | tuple):
            return [one(item) for item in value]
        return value if isinstance(value, int | float | str) else str(value)
    return {key: one(value) for key, value in params.items()}


def from_stored(text: str | None) -> Msg | None:
    """The message `stored()` wrote; a text written before messages were stored so
    (plain English) comes back as a message id of its own."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return Msg(text)
    return _message(value) if isinstance(value, dict) else Msg(text)


def _message(value: Mapping[str, object]) -> Msg:
    params = value.get("params")

    def one(item: object) -> object:
        if isinstance(item, dict) and isinstance(item.get("msgid"), str):
            return _message(item)
        if isinstance(item, list):
            return [one(x) for x in item]
        return item
    return Msg(str(value.get("msgid", "")),
               {str(k): one(v) for k, v in params.items()} if isinstance(params, dict) else {})


def messages_of(items: Sequence[object]) -> tuple[Msg, ...]:
    """Upload notices as the sandbox sends them ({"msgid", "params"}) or as older
    requests stored them (English text)."""
    return tuple(_message(item) if isinstance(item, dict) else Msg(str(item)) for item in items)


def fill(text: str, params: Mapping[str, object] | None) -> str:
    if not params:
        return text
    try:
        return text % dict(params)
    except (KeyError, ValueError, TypeError):
        # A translation that lost a placeholder must not hide the message itself.
        return text


class Translator:
    """One reader's language and time zone: texts, dates and numbers as they read them."""

    def __init__(self, language: str, timezone: str = "UTC") -> None:
        self.language = language_or(language, SOURCE_LANGUAGE)
        self.timezone = timezone
        try:
            self.locale = Locale.parse(self.language)
        except (UnknownLocaleError, ValueError):
            self.locale = Locale.parse(SOURCE_LANGUAGE)

    def __call__(self, msgid: str, **params: object) -> str:
        return translate(self.language, msgid, params)

    def context(self, context: str, msgid: str, **params: object) -> str:
        """`msgid` as meant in `context` (pgettext): the same English, another translation."""
        return fill(str(translations(self.language).pgettext(context, msgid)), params)

    def plural(self, singular: str, plural: str, n: int, **params: object) -> str:
        return translate_plural(self.language, singular, plural, n, params)

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def when(self, moment: datetime) -> str:
        """A moment as the pages show it, in the hospital's time zone: "3 décembre 2026 à
        14:05", "2026-12-03 14:05 CET"."""
        pattern = WHEN_PATTERNS.get(self.language, WHEN_PATTERNS[SOURCE_LANGUAGE])
        text = dates.format_datetime(moment, pattern, tzinfo=self._zone(), locale=self.locale)
        # CLDR has no short name for most zones ("+0100"): the zone database's (CET, CEST).
        return text.replace("{zone}", moment.astimezone(self._zone()).strftime("%Z"))

    def format_date(self, day: date | datetime, width: str = "medium") -> str:
        if isinstance(day, datetime):
            day = day.astimezone(self._zone()).date()
        return dates.format_date(day, width, locale=self.locale)

    def format_time(self, moment: datetime, width: str = "short") -> str:
        return dates.format_time(moment, width, tzinfo=self._zone(), locale=self.locale)

    def format_number(self, value: float) -> str:
        return numbers.format_decimal(value, locale=self.locale)


# How a moment reads on a page, per language (CLDR patterns; the English one keeps
# the ISO-like form the pages always had).
WHEN_PATTERNS = {"fr": "d MMMM y 'à' HH:mm", "en": "yyyy-MM-dd HH:mm '{zone}'"}


# The words for the values of the enums people read (models.enums: RequestState,
# Urgency, Role), by value: models may not import this module.
STATE_LABELS = {
    "pending": N_("pending"), "signed": N_("signed"), "delivered": N_("delivered"),
    "received": N_("received"), "declined": N_("declined"), "cancelled": N_("cancelled"),
    "expired": N_("expired"), "failed": N_("failed"),
}
URGENCY_LABELS = {"emergency": N_("emergency"), "urgent": N_("urgent"), "routine": N_("routine")}
ROLE_LABELS = {
    "technician": N_("technician"), "physician": N_("physician"), "recipient": N_("recipient"),
    "auditor": N_("auditor"), "admin": N_("admin"), "integration": N_("integration"),
    "manager": N_("manager"),
}


def label(labels: Mapping[str, str], value: object) -> str:
    """The message id naming `value` (an enum's value), the value itself if unknown."""
    return labels.get(str(value), str(value))
