"""The developers' catalogue commands: `python -m signflow.i18n_tools update|compile|check`.

    update   extract every message (pybabel extract, babel.cfg) and merge it into
             signflow/translations/<lang>/LC_MESSAGES/messages.po
    compile  write the .mo files that ship in the wheel
    check    exit 1 listing every message without a translation, or fuzzy, and
             user text left outside the catalogue (templates, flash())

Run from a source checkout (babel.cfg and templates/ sit at the repository root).
"""

from __future__ import annotations

import ast
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
TRANSLATIONS = PACKAGE / "translations"
DOMAIN = "messages"
# Everything user-facing goes through one of these (core marks its message ids N_;
# `context` is core/i18n.Translator.context, a pgettext).
KEYWORDS = ("_", "_l", "N_", "gettext", "lazy_gettext", "ngettext:1,2", "context:1c,2")
TARGETS = ("fr",)


def po_path(language: str) -> Path:
    return TRANSLATIONS / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def _pybabel(*args: str) -> None:
    CommandLineInterface().run(["pybabel", "-q", *args])  # type: ignore[no-untyped-call]


def extract(pot: Path) -> None:
    """`pybabel extract` of the sources into `pot`."""
    keywords = [arg for k in KEYWORDS for arg in ("-k", k)]
    _pybabel("extract", "-F", str(ROOT / "babel.cfg"), "--no-default-keywords", *keywords,
             # No locations: the catalogue does not change each time a line moves.
             "--no-location", "--sort-output", "--project", "signflow", "--no-wrap",
             "--omit-header", "-o", str(pot), str(ROOT))


def update() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pot = Path(tmp) / f"{DOMAIN}.pot"
        extract(pot)
        for language in TARGETS:
            po = po_path(language)
            if po.exists():
                _pybabel("update", "-i", str(pot), "-d", str(TRANSLATIONS), "-l", language,
                         "--no-wrap", "--ignore-obsolete", "--no-fuzzy-matching")
            else:
                _pybabel("init", "-i", str(pot), "-d", str(TRANSLATIONS), "-l", language, "--no-wrap")


def compile_all() -> None:
    _pybabel("compile", "-d", str(TRANSLATIONS), "--statistics")


@dataclass(frozen=True)
class Gap:
    language: str
    msgid: str
    why: str  # "untranslated", "fuzzy", "not in the catalogue"


def gaps(pot: Path | None = None) -> list[Gap]:
    """Messages of the sources (freshly extracted unless `pot` is given) that a
    catalogue lacks, leaves empty or marks fuzzy."""
    with tempfile.TemporaryDirectory() as tmp:
        if pot is None:
            pot = Path(tmp) / f"{DOMAIN}.pot"
            extract(pot)
        with pot.open("rb") as handle:
            template = read_po(handle)
        found: list[Gap] = []
        for language in TARGETS:
            with po_path(language).open("rb") as handle:
                catalog = read_po(handle)
            for message in template:
                if not message.id:
                    continue
                known = catalog.get(message.id, message.context)
                strings = known.string if known else None
                texts = strings if isinstance(strings, (list, tuple)) else [strings]
                if known is None:
                    found.append(Gap(language, _text(message.id), "not in the catalogue"))
                elif not all(texts):
                    found.append(Gap(language, _text(message.id), "untranslated"))
                elif known.fuzzy:
                    found.append(Gap(language, _text(message.id), "fuzzy"))
        return found


# Heuristic: a template's text is what lies outside tags, {{ }}, {% %} and {# #};
# any letter left there is a word a reader sees that no catalogue translates.
_TEMPLATE_TOKEN = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|<script\b.*?</script>|<style\b.*?</style>"
                             r"|<(?:[^>{]|\{\{.*?\}\}|\{%.*?%\})*>", re.S)
_LETTER = re.compile(r"[^\W\d_]")
# A capitalised word or sentence as a string literal inside {{ }} or {% %} (a macro's
# hint, a table heading, `'Save' if ... else ...`), unless it is the argument of a call.
_EXPRESSION = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_SHOWN_LITERAL = re.compile(r"""(?<![_\w]\()(['"])([A-Z][a-z]+(?:[ ,.;:!?][^'"]*)?)\1""")
# Attributes a reader sees (or hears, for aria-label).
_SHOWN_ATTRIBUTE = re.compile(r"\b(alt|title|placeholder|aria-label)=\"([^\"]*)\"")


def template_text(source: str) -> list[str]:
    """Words of a Jinja template outside `{{ _() }}`/`{% trans %}`: text nodes and shown
    attributes that contain letters, with the `{% trans %}` blocks left out."""
    source = re.sub(r"\{%-?\s*trans\b.*?\{%-?\s*endtrans\s*-?%\}", "", source, flags=re.S)
    found = [piece.strip() for piece in _TEMPLATE_TOKEN.split(source) if _LETTER.search(piece)]
    found += [m.group(2) for e in _EXPRESSION.findall(source) for m in _SHOWN_LITERAL.finditer(e)]
    for tag in re.findall(r"<[a-zA-Z](?:[^>{]|\{\{.*?\}\}|\{%.*?%\})*>", source, re.S):
        for _name, value in _SHOWN_ATTRIBUTE.findall(tag):
            if _LETTER.search(_TEMPLATE_TOKEN.sub("", re.sub(r"\{\{.*?\}\}", "", value))):
                found.append(value)
    return found


def _is_gettext_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "gettext")


def untranslated_flashes(source: str) -> list[int]:
    """Lines of `flash(...)` calls whose message is not a `_()` call (a conditional
    whose branches are calls is accepted: each callee translates its own text)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "flash"):
            continue
        message = node.args[0] if node.args else None
        ok = message is not None and (_is_gettext_call(message) or (
            isinstance(message, ast.IfExp) and _is_gettext_call(message.body)
            and isinstance(message.orelse, ast.Call)))
        if not ok:
            lines.append(node.lineno)
    return lines


def text_outside_catalogue() -> list[str]:
    """Every template text and flash() left outside the catalogue, as "where: what"."""
    found = [f"{path.relative_to(ROOT)}: {text!r}"
             for path in sorted((ROOT / "templates").rglob("*.html"))
             for text in template_text(path.read_text())]
    found += [f"{path.relative_to(ROOT)}:{line}: flash() without _()"
              for path in sorted((PACKAGE / "web").glob("*.py"))
              for line in untranslated_flashes(path.read_text())]
    return found


def _text(msgid: object) -> str:
    return msgid[0] if isinstance(msgid, (list, tuple)) else str(msgid)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command == "update":
        update()
    elif command == "compile":
        compile_all()
    elif command == "check":
        problems = gaps()
        for gap in problems:
            print(f"{gap.language}: {gap.why}: {gap.msgid!r}")
        outside = text_outside_catalogue()
        for where in outside:
            print(f"not translatable: {where}")
        return 1 if problems or outside else 0
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
