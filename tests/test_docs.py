"""What the README promises is what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from signflow.models import AuditAction

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_the_readme_lists_exactly_the_audit_actions():
    listed = re.findall(r"`([a-z_]+(?:\.[a-z_]+)?)`", _section("Audit actions"))
    assert listed == [a.value for a in AuditAction]
