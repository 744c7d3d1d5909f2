"""Everything that touches uploaded PDF bytes runs in a child interpreter; this is
the parent side: `run_task`, its limits, results and errors.

Parsers (qpdf through pikepdf, PDFium through pypdfium2, pyHanko) are large C
and Python code bases fed with hostile input. A memory bomb, a parser loop or
an exploited bug must cost one short-lived process, never a web worker. So the
parent (`run_task`) starts `python -I sandbox_child/` with an empty environment
(no SIGNFLOW_* secrets), the child (signflow.core.pdf.sandbox_child) caps its own
address space, CPU time, file writes and process creation *before* importing
any parser or reading a byte of input, and the parent kills it at the
wall-clock timeout. `run_checked` maps the child's answers to domain errors, one
mapping for every caller (geometry, normalisation, preview).
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signflow.core.errors import InvalidDocument, ServiceUnavailable, SignflowError
from signflow.core.i18n import Msg
from signflow.core.pdf import sandbox_child
from signflow.core.pdf.sandbox_child.wire import MiB, frame, unframe

log = logging.getLogger("signflow.sandbox")

# Started by path (a directory with __main__.py): the child must not load the app.
CHILD_PROGRAM = Path(sandbox_child.__file__).resolve().parent


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 20.0
    memory_bytes: int = 1024 * MiB
    # Children running at once in this process; more wait (up to timeout_s).
    max_parallel: int = 0  # 0: number of CPUs

    @property
    def cpu_seconds(self) -> int:
        return math.ceil(self.timeout_s) + 1


DEFAULT_LIMITS = SandboxLimits()


class SandboxFailure(Exception):
    """The child died, overran a limit or answered nonsense: treat the input as hostile."""


class SandboxBusy(Exception):
    """Every sandbox slot stayed taken for the whole timeout."""


class SandboxRefusal(Exception):
    """The child parsed the input and refused it; `kind` is 'invalid' or 'not-found'."""

    def __init__(self, kind: str, message: str, detail: str | None = None, *,
                 msgid: str | None = None, params: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.detail = detail  # the parser's own error, for the log only
        # The message id and its parameters, for the reader's language (web/errors.py).
        self.msgid = msgid or message
        self.params = dict(params or {})

    def as_msg(self) -> Msg:
        return Msg(self.msgid, self.params)


@dataclass(frozen=True)
class SandboxResult:
    meta: dict[str, Any]
    payload: bytes
    elapsed_s: float = field(compare=False)


_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


def _slot(limits: SandboxLimits) -> threading.BoundedSemaphore:
    size = limits.max_parallel or os.cpu_count() or 2
    with _slots_lock:
        if size not in _slots:
            _slots[size] = threading.BoundedSemaphore(size)
        return _slots[size]


def run_task(
    task: str, params: dict[str, Any], payload: bytes, limits: SandboxLimits = DEFAULT_LIMITS
) -> SandboxResult:
    """Run one task in a fresh limited child. Raises SandboxRefusal, SandboxFailure
    or SandboxBusy; returns only a well-formed successful answer."""
    slot = _slot(limits)
    if not slot.acquire(timeout=limits.timeout_s):
        raise SandboxBusy("no sandbox slot free")
    try:
        started = time.monotonic()
        command = [
            sys.executable,
            "-I",
            str(CHILD_PROGRAM),
            str(limits.memory_bytes),
            str(limits.cpu_seconds),
        ]
        try:
            done = subprocess.run(
                command,
                input=frame({"task": task, "params": params}, payload),
                capture_output=True,
                timeout=limits.timeout_s,
                env={"LC_ALL": "C.UTF-8"},
                cwd="/",
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.warning("sandbox %s killed after %.1f s", task, limits.timeout_s)
            raise SandboxFailure("timeout") from None
        elapsed = time.monotonic() - started
    finally:
        slot.release()
    try:
        header, body = unframe(done.stdout)
    except ValueError:
        log.warning(
            "sandbox %s died (exit %s): %s",
            task,
            done.returncode,
            done.stderr[-500:].decode(errors="replace"),
        )
        raise SandboxFailure(f"exit {done.returncode}") from None
    if header.get("ok") is True and done.returncode == 0:
        meta = header.get("meta")
        return SandboxResult(meta if isinstance(meta, dict) else {}, body, elapsed)
    kind = str(header.get("kind", "failure"))
    if kind in ("invalid", "not-found"):
        detail = header.get("detail")
        msgid, values = header.get("msgid"), header.get("params")
        raise SandboxRefusal(kind, str(header.get("message", "the PDF could not be read")),
                             str(detail) if detail else None,
                             msgid=str(msgid) if isinstance(msgid, str) else None,
                             params=values if isinstance(values, dict) else None)
    log.warning("sandbox %s failed: %s", task, header.get("detail", kind))
    raise SandboxFailure(kind)


def _invalid(refusal: SandboxRefusal) -> SignflowError:
    return InvalidDocument(refusal.msgid, params=refusal.params)


def run_checked(
    task: str,
    params: dict[str, Any],
    payload: bytes,
    limits: SandboxLimits,
    *,
    failure: str | SignflowError,
    busy: str,
    refused: Callable[[SandboxRefusal], SignflowError] = _invalid,
    label: str | None = None,
) -> SandboxResult:
    """`run_task` with its three ways of saying no as the errors a user sees: the
    child's refusal (worded by `refused`), a stopped child (InvalidDocument `failure`),
    every slot busy (ServiceUnavailable `busy`). `label` names the input in the log."""
    try:
        return run_task(task, params, payload, limits)
    except SandboxRefusal as refusal:
        raise refused(refusal) from None
    except SandboxFailure as stopped:
        log.warning("%s refused: the sandbox stopped (%s)", label or task, stopped)
        raise (failure if isinstance(failure, SignflowError) else InvalidDocument(failure)) from None
    except SandboxBusy:
        log.warning("%s not checked: every sandbox busy", label or task)
        raise ServiceUnavailable(busy) from None
