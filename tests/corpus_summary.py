"""The PDF corpus's one line per generated file (tests/test_corpus.py records what each
file reached; tests/conftest.py's hooks feed this and print it at the end)."""

from __future__ import annotations

CORPUS_PROPERTY = "corpus"  # user property: the generated file's name
STEP_PROPERTY = "corpus_step"  # user property: each step reached, in order


class Summary:
    """Collects the corpus tests' reports (on the xdist controller too: user properties
    travel with the reports) and writes one line per generated file at the end."""

    def __init__(self) -> None:
        self.lines: dict[str, str] = {}

    def collect(self, report: object) -> None:
        properties = dict(getattr(report, "user_properties", ()) or ())
        name = properties.get(CORPUS_PROPERTY)
        when = getattr(report, "when", None)
        if name is None or (when != "call" and not getattr(report, "failed", False)
                            and not getattr(report, "skipped", False)):
            return
        steps = [value for key, value in getattr(report, "user_properties", ()) if key == STEP_PROPERTY]
        reached = steps[-1] if steps else "start"
        if hasattr(report, "wasxfail"):
            line = f"known failure after {reached} ({report.wasxfail})"
        elif getattr(report, "passed", False):
            line = "ok: " + ", ".join(steps)
        elif getattr(report, "skipped", False):
            longrepr = getattr(report, "longrepr", None)
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            line = f"skipped ({reason})"
        else:
            line = f"FAILED after {reached}"
        self.lines[str(name)] = line

    def write(self, terminal: object) -> None:
        if not self.lines:
            return
        write_line = terminal.write_line  # type: ignore[attr-defined]
        terminal.write_sep("-", "PDF corpus (issue 9): one line per generated file")  # type: ignore[attr-defined]
        width = max(len(name) for name in self.lines)
        for name in sorted(self.lines):
            write_line(f"{name:<{width}}  {self.lines[name]}")


SUMMARY = Summary()
