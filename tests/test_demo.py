"""`signflow demo` and `signflow init` as an operator runs them: real processes, real HTTP."""

from __future__ import annotations

import hashlib
import http.cookiejar
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select

from signflow.config import load_settings
from signflow.core.pki import credentials as creds
from signflow.models import User
from signflow.services import build_services
from tests.pdfs import make_pdf
from tests.tools import free_port

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 90.0
TABLE_HEADER = re.compile(r"^login\s+password\s+role\s+PIN\s+TOTP secret\s*$")
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
HOMES = {"technician": ("/requests/", "My requests"), "physician": ("/inbox/", "To sign"),
         "manager": ("/stats/", "Turnaround statistics")}


@dataclass(frozen=True)
class Credential:
    login: str
    password: str
    role: str
    pin: str | None
    totp: str | None = None


def signflow_env(tmp_path: Path) -> dict[str, str]:
    # Only our SIGNFLOW_* settings: nothing from the developer's shell leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(SIGNFLOW_INSTANCE=str(tmp_path / "instance"), SIGNFLOW_KEYS=str(tmp_path / "keys"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1",
               # The demo test reads the English pages (the French ones: tests/test_i18n.py).
               SIGNFLOW_LANGUAGE="en")
    return env


class Demo:
    """A running `signflow demo`, its output drained in the background so it never blocks."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "signflow.cli", "demo", "--host", "127.0.0.1", "--port",
             str(port)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # its own process group: gunicorn's workers stop with it
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _next_line(self, deadline: float) -> str:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no credentials table within {STARTUP_TIMEOUT}s:\n{''.join(self.output)}")
        if line is None:
            pytest.fail(f"demo exited ({self.process.wait()}):\n{''.join(self.output)}")
        return line.rstrip("\n")

    def credentials(self) -> tuple[str, dict[str, Credential]]:
        """The announced URL and the printed table, as soon as it is printed."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        url = ""
        while not TABLE_HEADER.match(line := self._next_line(deadline)):
            if match := re.search(r"signflow demo running at (\S+)", line):
                url = match.group(1)
        table: dict[str, Credential] = {}
        while (line := self._next_line(deadline)).strip():
            login, password, role, pin, totp = line.split()
            table[login] = Credential(login, password, role, None if pin == "-" else pin,
                                      None if totp == "-" else totp)
        return url, table

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def wait_until_serving(base: str, demo: Demo) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"{base}/login", timeout=5) as resp:
                assert resp.status == 200
                return
        except (urllib.error.URLError, ConnectionError):
            if demo.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"demo not answering on {base}:\n{''.join(demo.output)}")
            time.sleep(0.2)


def log_in(base: str, username: str, password: str, totp: str | None = None, *,
           opener: urllib.request.OpenerDirector | None = None) -> tuple[int, str, str]:
    """A fresh browser-like session (or `opener`'s): GET the form, POST it with its CSRF
    token, follow; then the second factor from the printed TOTP secret when there is one."""
    opener = opener or urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{base}/login", timeout=10) as resp:
        form = resp.read().decode()
    match = CSRF.search(form)
    assert match, form[:1000]
    body = urllib.parse.urlencode({"csrf_token": match.group(1), "username": username,
                                   "password": password}).encode()
    try:
        with opener.open(f"{base}/login", data=body, timeout=30) as resp:
            status, path, page = resp.status, urllib.parse.urlsplit(resp.url).path, resp.read().decode()
        if path == "/login/code" and totp:
            token = CSRF.search(page)
            assert token, page[:1000]
            body = urllib.parse.urlencode({"csrf_token": token.group(1),
                                           "code": pyotp.TOTP(totp).now()}).encode()
            with opener.open(f"{base}/login/code", data=body, timeout=30) as resp:
                status, path, page = (resp.status, urllib.parse.urlsplit(resp.url).path,
                                      resp.read().decode())
        return status, path, page
    except urllib.error.HTTPError as err:
        return err.code, urllib.parse.urlsplit(err.url).path, err.read().decode()


def assert_home(base: str, credential: Credential) -> None:
    status, path, page = log_in(base, credential.login, credential.password, credential.totp)
    home, heading = HOMES[credential.role]
    assert (status, path) == (200, home), page[:1000]
    assert heading in page


def assert_refused(base: str, credential: Credential) -> None:
    _, path, _ = log_in(base, credential.login, credential.password)
    assert path == "/login"


def assert_pin_unlocks(tmp_path: Path, credential: Credential) -> None:
    """The printed PIN opens that physician's own signing key (checked after the server stops)."""
    assert credential.pin is not None and re.fullmatch(r"\d{6}", credential.pin)
    env = signflow_env(tmp_path)
    settings = load_settings(environ=env, env="development")
    svc = build_services(settings)
    try:
        with svc.sessions() as session:
            user = session.scalar(select(User).where(User.username == credential.login))
            assert user is not None
            credential_row = creds.active_credential(session, user.id)
            assert credential_row is not None
            key = creds.unlock(session, svc.keys, credential_row, credential.pin, now=svc.clock())
            cert = creds.credential_certificate(credential_row)
            assert key.public_key() == cert.public_key()
            session.rollback()
    finally:
        svc.engine.dispose()


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_demo(tmp_path: Path, *, stale: dict[str, Credential] | None = None
             ) -> dict[str, Credential]:
    """One `signflow demo` run: its printed logins work, `stale` ones (an earlier run's) do not."""
    port = free_port()
    demo = Demo(signflow_env(tmp_path), port)
    try:
        url, table = demo.credentials()
        base = f"http://127.0.0.1:{port}"
        assert url == base  # --host and --port are what it announces...
        wait_until_serving(base, demo)  # ...and where it answers
        assert {"tech", "dr.lefevre"} <= table.keys(), table
        assert table["tech"].role == "technician" and table["dr.lefevre"].role == "physician"
        assert table["tech"].totp is None and table["dr.lefevre"].totp  # MFA for physicians
        assert_home(base, table["tech"])
        assert_home(base, table["dr.lefevre"])
        # The manager's statistics (no second factor: aggregates only).
        assert table["manager"].role == "manager" and table["manager"].totp is None
        assert_home(base, table["manager"])
        assert_refused(base, Credential("tech", table["tech"].password + "x", "technician", None))
        for old in (stale or {}).values():
            assert old.password != table[old.login].password
            assert_refused(base, old)
        return table
    finally:
        demo.stop()
        # Stopped by SIGTERM, cleanly: not killed after the wait (a forked worker once
        # hung on the parent's demo servers until gunicorn's graceful timeout).
        assert demo.process.returncode == 0, "".join(demo.output[-20:])


def test_demo_twice_on_one_instance(tmp_path):
    first = run_demo(tmp_path)
    assert_pin_unlocks(tmp_path, first["dr.lefevre"])

    second = run_demo(tmp_path, stale={u: first[u] for u in ("tech", "dr.lefevre")})
    assert second.keys() == first.keys()
    assert_pin_unlocks(tmp_path, second["dr.lefevre"])


def run_init(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "signflow.cli", "init"], cwd=REPO,
                          env=signflow_env(tmp_path), capture_output=True, text=True, timeout=60)


def test_init_twice_keeps_the_keys(tmp_path):
    first = run_init(tmp_path)
    assert first.returncode == 0, first.stderr
    keys, instance = tree_digest(tmp_path / "keys"), tree_digest(tmp_path / "instance")
    assert keys, "init wrote no key material"

    second = run_init(tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    assert tree_digest(tmp_path / "keys") == keys
    # The instance secrets (session key, keys passphrase) must survive too, or the keys are lost.
    secrets_now = tree_digest(tmp_path / "instance")
    assert {k: v for k, v in secrets_now.items() if not k.endswith(".db")} == {
        k: v for k, v in instance.items() if not k.endswith(".db")}


def send_for_signature(base: str, opener: urllib.request.OpenerDirector, *, title: str) -> int:
    """The technician's upload form, posted as a browser does (multipart, CSRF token)."""
    with opener.open(f"{base}/requests/new", timeout=10) as resp:
        form = resp.read().decode()
    token = CSRF.search(form)
    assert token, form[:1000]

    def first_option(name: str) -> str:
        select = re.search(rf'<select[^>]*name="{name}"[^>]*>(.*?)</select>', form, re.S)
        assert select, form[:2000]
        return re.findall(r'<option[^>]*value="(\d+)"', select.group(1))[0]

    fields = {"csrf_token": token.group(1), "title": title, "group": first_option("group"),
              "then_group": "0", "destination": first_option("destination"), "urgency": "emergency",
              "note": "", "stamp_position": ""}
    boundary = "signflow-demo-test"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="document"; '
                 f'filename="consent.pdf"\r\nContent-Type: application/pdf\r\n\r\n'.encode()
                 + make_pdf(1, "Donor consent") + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/requests/new", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with opener.open(request, timeout=60) as resp:
        path = urllib.parse.urlsplit(resp.url).path
    match = re.fullmatch(r"/requests/(\d+)", path)
    assert match, path
    return int(match.group(1))


def test_demo_shows_every_message_and_sends_sms_to_a_configured_gateway(tmp_path):
    """The demo's mail catcher feeds /demo/messages; with SIGNFLOW_WEBHOOK_URL set, the
    SMS/pager messages go to that gateway instead of the demo's own."""
    from signflow.cli.demo_gateways import new_webhook_secret, sms_gateway
    from signflow.cli.setup import DEMO_PHONES
    from signflow.core.ops.demo_outbox import DemoOutbox

    gateway_outbox = DemoOutbox(tmp_path / "gateway.jsonl")
    secret = new_webhook_secret()
    with sms_gateway(gateway_outbox, secret, lambda: datetime.now(UTC)) as gateway_url:
        env = dict(signflow_env(tmp_path), SIGNFLOW_WEBHOOK_URL=gateway_url,
                   SIGNFLOW_WEBHOOK_SECRET=secret)
        port = free_port()
        demo = Demo(env, port)
        try:
            _url, table = demo.credentials()
            base = f"http://127.0.0.1:{port}"
            wait_until_serving(base, demo)
            assert any(f"SMS/pager webhook to {gateway_url}" in line for line in demo.output)
            admin = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            status, path, _page = log_in(base, "admin", table["admin"].password, table["admin"].totp,
                                         opener=admin)
            assert status == 200 and path != "/login"
            # The demo physicians' enrolment codes went out by e-mail when the demo seeded
            # them; the worker sends them at its first tick.
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                with admin.open(f"{base}/demo/messages", timeout=10) as resp:
                    page = resp.read().decode()
                if page.count("dr.") >= 3 and "enrolment code" in page:
                    break
                assert time.monotonic() < deadline, page[:2000]
                time.sleep(0.5)
            assert "email · received" in page and "dr.lefevre@hospital.example" in page
            # A request: Dr Lefèvre, on call, is paged on her verified phone first, through
            # the configured gateway (which verified the signature), and no patient data goes.
            tech = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            log_in(base, "tech", table["tech"].password, opener=tech)
            rid = send_for_signature(base, tech, title="Donor consent (Mme Durand)")
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not (pages := [m for m in gateway_outbox.read() if m.to == DEMO_PHONES["dr.lefevre"]]):
                assert time.monotonic() < deadline, gateway_outbox.read()
                time.sleep(0.5)
            [sms] = pages
            assert (sms.channel, sms.status) == ("sms", "verified")
            assert f"request #{rid}" in sms.text and f"/inbox/{rid}" in sms.text
            assert "Durand" not in sms.text and "Donor consent" not in sms.text
            assert all(m.status == "verified" for m in gateway_outbox.read())
            with pytest.raises(urllib.error.HTTPError) as refused:
                tech.open(f"{base}/demo/messages", timeout=10)
            assert refused.value.code == 403
        finally:
            demo.stop()
