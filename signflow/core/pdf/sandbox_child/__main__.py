"""The sandbox's child program: run as `python -I <this directory> MEMORY CPU` by
signflow.core.pdf.sandbox, it caps its own resources, then parses one PDF.

It caps its address space, CPU time, file writes and process creation *before*
importing any parser or reading a byte of input. It imports nothing from the
signflow package but its own modules (the app and its configuration stay out
of the sandbox); the parent imports the wire format and the limits from
`wire`, never the other way round.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Under -I, Python puts this directory first on sys.path, where its modules
    # would shadow the standard library's; the directory holding the signflow
    # package goes there instead, so the modules import each other by full name.
    # signflow/__init__.py, core/__init__.py and pdf/__init__.py load nothing.
    sys.path[0] = str(Path(__file__).resolve().parents[4])

from signflow.core.pdf.sandbox_child.limits import set_limits  # noqa: E402
from signflow.core.pdf.sandbox_child.wire import (  # noqa: E402
    UNREADABLE,
    Refuse,
    frame,
    out_of_memory,
    parser_error,
    unframe,
)


def _child_main(argv: list[str]) -> int:
    set_limits(int(argv[1]), int(argv[2]))
    # Only now the modules that use the parsers.
    from signflow.core.pdf.sandbox_child.tasks import TASKS

    out = sys.stdout.buffer
    try:
        header, payload = unframe(sys.stdin.buffer.read())
        meta, body = TASKS[str(header["task"])](dict(header["params"]), payload)
        answer = frame({"ok": True, "meta": meta}, body)
        code = 0
    except Refuse as refusal:
        answer = frame({"ok": False, "kind": refusal.kind, "message": refusal.message,
                        "msgid": refusal.msgid, "params": refusal.params,
                        "detail": refusal.detail}, b"")
        code = 0
    except MemoryError:
        answer = frame({"ok": False, "kind": "resources", "detail": "memory"}, b"")
        code = 3
    except RecursionError:
        answer = frame({"ok": False, "kind": "resources", "detail": "recursion"}, b"")
        code = 3
    except Exception as exc:  # hostile input reaches every corner of three parsers
        if out_of_memory(exc):
            answer = frame({"ok": False, "kind": "resources", "detail": "memory"}, b"")
            code = 3
        else:
            answer = frame(
                {
                    "ok": False,
                    "kind": "invalid",
                    "message": UNREADABLE,
                    "detail": parser_error(exc),
                },
                b"",
            )
            code = 0
    out.write(answer)
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv))
