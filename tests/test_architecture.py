"""House rules that code review alone would let slip."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from signflow.app import create_app
from signflow.config import Settings, load_settings
from signflow.core.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "signflow" / "core"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_flask():
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path)
                                            if n.split(".")[0] in {"flask", "flask_login", "flask_wtf",
                                                                   "werkzeug", "wtforms"}
                                            or n.startswith("signflow.web"))
        for path in CORE.rglob("*.py")
    }
    assert len(offenders) >= 10  # the scan really read the core modules
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_reads_no_wall_clock():
    """Core takes `now` as an argument; only core/clock.py may read the time."""
    for path in CORE.rglob("*.py"):
        if path.name == "clock.py":
            continue
        source = path.read_text()
        for banned in ("datetime.now(", "datetime.utcnow(", "time.time()"):
            assert banned not in source, f"{path.name} reads the wall clock ({banned})"


def test_offline_audit_verifier_needs_only_stdlib_and_cryptography():
    verifier = ROOT / "signflow" / "auditverify.py"
    allowed_roots = {"cryptography", "__future__"}
    import sys

    for name in _imports(verifier):
        root = name.split(".")[0]
        assert root in allowed_roots or root in sys.stdlib_module_names, name


def test_production_refuses_to_start_without_secret_key(tmp_path):
    settings = Settings(env="production", instance_path=tmp_path, keys_path=tmp_path / "keys",
                        database_url=f"sqlite:///{tmp_path / 'x.db'}", secret_key=None)
    with pytest.raises(ConfigurationError, match="secret key"):
        create_app(settings)


def test_short_secret_key_refused(tmp_path):
    settings = Settings(env="production", instance_path=tmp_path, keys_path=tmp_path / "keys",
                        database_url=f"sqlite:///{tmp_path / 'x.db'}", secret_key="short")
    with pytest.raises(ConfigurationError):
        create_app(settings)


def test_settings_from_env_and_instance_file(tmp_path):
    (tmp_path / "signflow.toml").write_text('timezone = "Europe/Oslo"\nmax_pages = 7\n')
    (tmp_path / "secret_key").write_text("k" * 40)
    env = {"SIGNFLOW_INSTANCE": str(tmp_path), "SIGNFLOW_MAX_PAGES": "9",
           "SIGNFLOW_ENV": "development", "SIGNFLOW_KEYS": str(tmp_path / "k")}
    settings = load_settings(env)
    assert settings.timezone == "Europe/Oslo"  # from the instance file
    assert settings.max_pages == 9  # env wins over the file
    assert settings.secret_key == "k" * 40
    assert settings.keys_path == (tmp_path / "k").resolve()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'signflow.db'}"


@pytest.mark.parametrize("name,value", [("SIGNFLOW_ENV", "prod"), ("SIGNFLOW_MAX_PAGES", "many"),
                                        ("SIGNFLOW_PADES_LEVEL", "B-B")])
def test_bad_settings_refused(tmp_path, name, value):
    with pytest.raises(ConfigurationError):
        load_settings({"SIGNFLOW_INSTANCE": str(tmp_path), name: value})


def test_production_requires_a_notification_channel(tmp_path):
    from signflow.core.notify.channels import LogNotifier, SmtpNotifier
    from signflow.services import make_notifier, require_notification_channel

    production = Settings(env="production", instance_path=tmp_path, secret_key="s" * 40)
    with pytest.raises(ConfigurationError, match="notification"):
        require_notification_channel(production)
    with pytest.raises(ConfigurationError, match="notification"):
        create_app(production)  # refused before anything is built
    require_notification_channel(production.with_overrides(smtp_host="smtp.hospital.example"))
    assert isinstance(make_notifier(production.with_overrides(smtp_host="smtp.example")), SmtpNotifier)
    assert isinstance(make_notifier(production), LogNotifier)  # one-off commands still run


def test_log_lines_cannot_be_forged():
    import logging

    from signflow.logs import OneLineUTCFormatter

    record = logging.LogRecord("signflow.web", logging.INFO, __file__, 1,
                               "refused %s", ("/x\n2026-01-01 INFO forged: admin logged in",), None)
    line = OneLineUTCFormatter("%(asctime)sZ %(message)s").format(record)
    assert "\n" not in line and "\\n2026-01-01 INFO forged" in line


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:5000", "http://localhost:8000/"])
def test_production_refuses_the_default_base_url(tmp_path, base_url):
    production = Settings(env="production", instance_path=tmp_path, secret_key="s" * 40,
                          smtp_host="smtp.hospital.example", base_url=base_url)
    with pytest.raises(ConfigurationError, match="SIGNFLOW_BASE_URL"):
        create_app(production)  # refused before anything is built
    from signflow.config import require_public_base_url

    require_public_base_url(production.with_overrides(base_url="https://signflow.hospital.example"))
    require_public_base_url(production.with_overrides(env="development"))
