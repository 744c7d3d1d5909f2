"""The house rules a linter can check: ruff everywhere, mypy strict on the whole package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.fail(f"{name} is part of the test extra: pip install -e '.[test]'")
    return path


def test_ruff_is_clean():
    result = subprocess.run([_tool("ruff"), "check", "signflow", "tests", "bench", "wsgi.py"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]


def test_mypy_strict_on_the_package():
    result = subprocess.run([sys.executable, "-m", "mypy", "signflow"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Success" in result.stdout
