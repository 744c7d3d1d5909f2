"""A plain `pip install .` ships templates, static files, fonts and migrations, and
the installed wheel brings its own dependencies: nothing from the checkout or from
the interpreter the venv is made from."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What the wheel is built from; copied so that parallel runs (xdist workers, other
# checkouts) never share setuptools' in-tree build/ and *.egg-info folders.
SOURCES = ("pyproject.toml", "README.md", "signflow", "templates")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("signflow-*.whl")
    return built


def test_wheel_contains_what_the_app_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every template (HTML and SVG) and every module of the package: a sub-package
    # missing from pyproject's list fails here, not on a hospital's fresh install.
    templates = {p.relative_to(REPO / "templates").as_posix()
                 for p in (REPO / "templates").rglob("*") if p.is_file()}
    assert templates and {f"signflow/templates/{t}" for t in templates} <= names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "signflow").rglob("*.py")}
    assert modules and modules - names == set()
    for required in ("signflow/static/app.css", "signflow/static/app.js",
                     "signflow/static/favicon.svg", "signflow/fonts/NotoSans-Regular.ttf",
                     "signflow/migrations/env.py", "signflow/migrations/script.py.mako",
                     "signflow/migrations/versions/0001_initial_schema.py",
                     "signflow/auditverify.py", "signflow/core/pdf/sandbox_child/__main__.py",
                     "signflow/core/pdf/sandbox_child/tasks.py",
                     "signflow/translations/fr/LC_MESSAGES/messages.mo"):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "signflow = signflow.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _running_versions(folder: Path) -> Path:
    """A pip constraints file pinning every distribution of the running environment
    (signflow itself aside) to its installed version. pip still resolves and installs
    the wheel's dependencies itself, from PyPI, but picks the versions this suite
    already runs with: tested against the same code, and found in pip's cache when
    there is one (a machine with an empty cache downloads them)."""
    pins = sorted({
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() not in {"signflow", "pip"}
    })
    path = folder / "constraints.txt"
    path.write_text("\n".join(pins) + "\n")
    return path


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    # A plain venv: it sees none of the base interpreter's packages, so everything it
    # imports must come from installing the wheel with its declared dependencies.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import sqlalchemy"], capture_output=True,
                          timeout=60).returncode != 0, "the new venv must start empty"
    install = subprocess.run(
        # --no-compile: byte-compiling every installed module (fhir.resources alone is
        # thousands) is most of the install's time, and nothing this test checks.
        [str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check",
         "-c", str(_running_versions(tmp_path)), str(wheel)],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "SIGNFLOW_INSTANCE": str(tmp_path / "inst"),
           "SIGNFLOW_KEYS": str(tmp_path / "keys"), "SIGNFLOW_ENV": "development"}
    init = subprocess.run([str(venv / "bin" / "signflow"), "init"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    probe = (
        "import signflow, signflow.app as a, sqlalchemy; from signflow import create_app;"
        "app = create_app(); c = app.test_client(); r = c.get('/login');"
        "print(signflow.__file__); print(a._template_folder()); print(sqlalchemy.__file__);"
        "print(r.status_code);"
        # The compiled French catalogue works from the wheel: French, the default.
        "print('Se connecter' in r.get_data(as_text=True))"
    )
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    module, templates, dependency, status, french = out.stdout.split()
    assert str(venv) in module and str(REPO) not in module
    assert templates.startswith(str(venv))
    # The dependencies too live in the new venv, not in the running one.
    assert dependency.startswith(str(venv))
    assert status == "200"
    assert french == "True"
