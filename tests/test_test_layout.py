"""The test suite's own layout: shared helpers live in shared modules
(tests/factories.py, helpers.py, tools.py...), never in another test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_test_modules(path: Path) -> set[str]:
    """The tests.test_* modules `path` imports, in any spelling of the import."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from tests import test_x` names the module in the imported names.
            modules = [node.module]
            if node.module == "tests":
                modules += [f"tests.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # Relative: `from .test_x import y` or `from . import test_x`.
            modules = [f"tests.{node.module}"] if node.module else [
                f"tests.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(m for m in modules if m.startswith("tests.test_"))
    return found


def test_no_test_module_imports_another():
    modules = sorted(TESTS.glob("*.py"))
    assert len([m for m in modules if m.name.startswith("test_")]) >= 30  # the scan read the suite
    offenders = {path.name: sorted(found) for path in modules
                 if (found := _imported_test_modules(path))}
    assert offenders == {}, "move shared helpers to tests/factories.py, helpers.py or tools.py"


def test_the_scan_sees_every_spelling(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("import tests.test_a\nfrom tests.test_b import x\nfrom tests import test_c, tools\n"
                     "from .test_d import y\nfrom . import test_e\nfrom tests.helpers import upload\n")
    assert _imported_test_modules(probe) == {
        "tests.test_a", "tests.test_b", "tests.test_c", "tests.test_d", "tests.test_e"}


def _reads_ci(path: Path) -> bool:
    """Whether `path` looks at the CI variable (os.environ["CI"], getenv("CI")...)."""
    return any(isinstance(node, ast.Constant) and node.value == "CI"
               for node in ast.walk(ast.parse(path.read_text(), filename=str(path))))


def test_the_missing_tool_rule_is_written_once():
    # Fail under CI=true, skip elsewhere: tests/tools.py `missing`, which every test calls;
    # a second copy of the rule would drift from it.
    # (This module names "CI" to look for it.)
    readers = sorted(path.name for path in TESTS.glob("*.py")
                     if path.name != Path(__file__).name and _reads_ci(path))
    assert readers == ["tools.py"], "call tests.tools.missing instead of reading CI yourself"


def test_the_ci_scan_sees_a_reader(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('import os\nif os.environ.get("CI") == "true":\n    pass\n')
    assert _reads_ci(probe)
    probe.write_text('from tests.tools import missing\nmissing("qpdf is not installed")\n')
    assert not _reads_ci(probe)
