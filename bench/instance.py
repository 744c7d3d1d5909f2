"""What every benchmark starts from: a fresh keys folder (CAs, TSA, audit seal) and a
migrated SQLite instance in a temporary folder, and the services built on them.

Shared by the benchmarks (run as scripts: their folder is on `sys.path`) so that
each measures its own operations, never a set-up of its own that could drift."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from signflow.config import Settings
from signflow.core.pki import keystore as pki
from signflow.core.pki import seal as seal
from signflow.migrate import upgrade
from signflow.services import PASSPHRASE_FILE, Services, build_services

PASSPHRASE = "bench-passphrase"


def bench_instance(tmp: Path, *, now: datetime, **settings: Any) -> tuple[Services, Settings]:
    """Keys, instance folder and database under `tmp`; `settings` override the
    testing defaults (e.g. `mfa_roles=""`)."""
    passphrase = PASSPHRASE.encode()
    pki.init_keys(tmp / "keys", passphrase=passphrase, now=now, base_url="http://127.0.0.1")
    seal.ensure_seal(tmp / "keys", pki.load_keys(tmp / "keys", passphrase=passphrase),
                     passphrase=passphrase, now=now)
    (tmp / "instance").mkdir()
    (tmp / "instance" / PASSPHRASE_FILE).write_text(PASSPHRASE)
    url = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(url)
    config = Settings(env="testing", instance_path=tmp / "instance", keys_path=tmp / "keys",
                      database_url=url, secret_key="b" * 48, **settings)
    return build_services(config), config
