"""The dependency rule, written once: which part of signflow may import which.

Every module of the package is parsed (imports inside functions count too); the
test fails on an import the table does not allow and on any import cycle
between modules. Data flows one way: web, cli, jobs -> services -> core -> models.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "signflow"

# Shared ground floor of the domain: the error hierarchy, the clock, blob storage.
# core.i18n: the message-id marker and the catalogue outside a request, for every part of core.
CORE_BASE = {"core.errors", "core.clock", "core.storage", "core.i18n"}
CORE_PACKAGES = {"core.audit", "core.pki", "core.pdf", "core.pades", "core.accounts",
                 "core.notify", "core.requests", "core.evidence", "core.ops", "core.stats",
                 "core.integration"}
ALL_CORE = CORE_BASE | CORE_PACKAGES | {"core"}

# part -> the other parts it may import (a part may always import itself).
ALLOWED: dict[str, set[str]] = {
    "auditverify": set(),  # the offline verifier: stdlib + cryptography only
    "logs": set(),
    "db": set(),
    "migrate": set(),
    "migrations": {"models", "db"},
    "models": {"db"},
    "config": {"core.errors", "core.i18n"},
    "core.errors": set(),
    "core.i18n": set(),  # Babel and the catalogue only
    "i18n_tools": set(),  # the developers' catalogue commands: Babel only
    "core.clock": set(),
    "core.storage": {"core.errors", "core.i18n", "models"},
    "core.audit": CORE_BASE | {"models", "auditverify"},
    "core.pki": CORE_BASE | {"models"},
    "core.pdf": CORE_BASE | {"core.pdf.sandbox_child"},
    # The sandbox's child program: loads nothing of signflow but itself (no app, no config).
    "core.pdf.sandbox_child": set(),
    "core.notify": CORE_BASE,
    "core.pades": CORE_BASE | {"core.pki", "core.pdf", "models"},
    # core.notify: a user's Web Push devices are verified by a push (accounts/push_devices.py).
    "core.accounts": CORE_BASE | {"core.audit", "core.pki", "core.notify", "models"},
    "core.requests": CORE_BASE | {"core.audit", "core.pki", "core.pdf", "core.pades",
                                  "core.accounts", "core.notify", "models"},
    "core.evidence": CORE_BASE | {"core.audit", "core.pki", "core.pades", "core.accounts", "auditverify",
                                  "core.requests", "models"},
    "core.ops": CORE_BASE | {"core.audit", "core.pki", "core.pdf", "core.pades",
                             "core.accounts", "core.requests", "models", "db", "migrate"},
    # The turnaround statistics read the tables in SQL and nothing else: no request is
    # loaded, so no access rule of core.requests is needed (aggregates only).
    "core.stats": CORE_BASE | {"models"},
    # Hospital systems (API submissions, webhooks, FHIR) build on the request workflow.
    "core.integration": CORE_BASE | {"core.audit", "core.pki", "core.pdf", "core.pades",
                                     "core.accounts", "core.notify", "core.requests", "models"},
    "services": ALL_CORE | {"config", "db", "models"},
    "jobs": ALL_CORE | {"services", "config", "models"},
    "web": ALL_CORE | {"services", "config", "models", "auditverify", "logs"},
    "cli": ALL_CORE | {"services", "config", "models", "db", "migrate", "logs", "auditverify",
                       "jobs", "app"},
    "app": {"web", "services", "config", "logs", "core.errors"},
    "package": {"app"},  # signflow/__init__.py: the lazy create_app
    "core": set(),  # signflow/core/__init__.py: a docstring
}


def part_of(module: str) -> str:
    """`signflow.core.pki.crl` -> `core.pki`; `signflow.web.admin` -> `web`;
    `signflow.core.pdf.sandbox_child.wire` -> `core.pdf.sandbox_child`."""
    parts = module.split(".")[1:]
    if not parts:
        return "package"
    if parts[:3] == ["core", "pdf", "sandbox_child"]:
        return "core.pdf.sandbox_child"
    if parts[0] == "core" and len(parts) > 1:
        return f"core.{parts[1]}"
    return parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """signflow modules that `path` imports, resolved to the module actually loaded
    (`from signflow.core.pki import crl` names the module `signflow.core.pki.crl`)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "signflow":
                    yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "signflow":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in known else node.module


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {m for m in imported(path, known) if m != name} for name, path in found.items()}


def test_the_table_names_every_part_of_the_package():
    parts = {part_of(m) for m in modules()}
    assert len(parts) > 15  # the scan really read the package
    assert parts <= set(ALLOWED), f"parts missing from the table: {sorted(parts - set(ALLOWED))}"


def test_every_import_is_allowed_by_the_table():
    forbidden = sorted(
        f"{importer} imports {target}"
        for importer, targets in graph().items()
        for target in targets
        if part_of(target) != part_of(importer)
        and part_of(target) not in ALLOWED.get(part_of(importer), set())
    )
    assert forbidden == []


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_anywhere_in_the_package():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_a_forbidden_import_is_reported():
    assert "core.pki" not in ALLOWED["core.pdf"]
    assert part_of("signflow.core.pki.keystore") == "core.pki"
    assert part_of("signflow.web.admin") == "web"
    assert part_of("signflow.core.pdf.sandbox_child.tasks") == "core.pdf.sandbox_child"
    assert part_of("signflow.core.pdf.sandbox") == "core.pdf"
    assert ALLOWED["core.pdf.sandbox_child"] == set()
    assert "web" not in ALLOWED["core.requests"] and "flask" not in str(ALLOWED)
