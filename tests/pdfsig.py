"""Run poppler's pdfsig with the hospital root trusted through an NSS database."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.tools import require_tool


def nss_db(keys_dir: Path, workdir: Path) -> Path:
    certutil = require_tool("certutil")
    db = workdir / "nssdb"
    if not (db / "cert9.db").exists():
        db.mkdir(exist_ok=True)
        subprocess.run([certutil, "-N", "-d", f"sql:{db}", "--empty-password"], check=True,
                       capture_output=True)
        subprocess.run([certutil, "-A", "-d", f"sql:{db}", "-n", "signflow-root", "-t", "CT,C,C",
                        "-i", str(keys_dir / "root.crt")], check=True, capture_output=True)
    return db


def pdfsig_report(pdf: Path, keys_dir: Path, workdir: Path) -> str:
    pdfsig = require_tool("pdfsig")
    db = nss_db(keys_dir, workdir)
    result = subprocess.run([pdfsig, "-nssdir", f"sql:{db}", str(pdf)], capture_output=True,
                            text=True, timeout=60)
    return result.stdout + result.stderr
