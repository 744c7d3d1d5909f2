"""Shared test plumbing: what a test needs from the machine (tools, files, ports,
the `signflow` command), with the one rule for what is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from socketserver import BaseServer
from typing import NoReturn

import pytest


def missing(what: str) -> NoReturn:
    """Something a test needs is absent. CI (CI=true) installs everything, so there it
    is a failure; on a developer's machine the test is skipped with the reason."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: everything the tests need must be installed)")
    pytest.skip(what)


def require_tool(name: str) -> str:
    """Path of the executable `name`: on PATH, or next to this interpreter, where the
    test extra's commands (pyhanko...) live when the venv is used without activating it."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        missing(f"{name} is not installed")
    return path


def require_file(path: Path | str, why: str) -> str:
    """`path` (a shared library, a browser...) must exist; `why` names its package."""
    if not Path(path).exists():
        missing(f"{path} is not installed ({why})")
    return str(path)


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1, for servers that cannot be given port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(args: list[str], env: dict[str, str], *, stdin: str | None = None,
            timeout: int = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`signflow ARGS` as a real subprocess of this interpreter."""
    return subprocess.run([sys.executable, "-m", "signflow.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


@contextmanager
def serving(server: BaseServer) -> Iterator[int]:
    """Serve `server` (bound to port 0: the kernel picks a free port) in a thread;
    yields its port, shuts it down after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])  # type: ignore[index]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """End a server the tests started: asked first, killed if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
