"""A plain `pip install .` ships templates, static files, fonts and migrations."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("signflow-*.whl")
    return built


def test_wheel_contains_what_the_app_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.relative_to(REPO / "templates").as_posix()
                 for p in (REPO / "templates").rglob("*.html")}
    assert templates and {f"signflow/templates/{t}" for t in templates} <= names
    for required in ("signflow/static/app.css", "signflow/static/app.js",
                     "signflow/static/favicon.svg", "signflow/fonts/NotoSans-Regular.ttf",
                     "signflow/migrations/env.py", "signflow/migrations/script.py.mako",
                     "signflow/migrations/versions/0001_initial_schema.py",
                     "signflow/auditverify.py"):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "signflow = signflow.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    # The dependencies come from this interpreter; the package itself only from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "SIGNFLOW_INSTANCE": str(tmp_path / "inst"),
           "SIGNFLOW_KEYS": str(tmp_path / "keys"), "SIGNFLOW_ENV": "development"}
    init = subprocess.run([str(venv / "bin" / "signflow"), "init"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    probe = (
        "import signflow, signflow.app as a; from signflow import create_app;"
        "app = create_app(); c = app.test_client(); r = c.get('/login');"
        "print(signflow.__file__); print(a._template_folder()); print(r.status_code)"
    )
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    module, templates, status = out.stdout.split()
    assert str(venv) in module and str(REPO) not in module
    assert templates.startswith(str(venv))
    assert status == "200"
