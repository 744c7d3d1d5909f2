"""No global stall, by hand: `python bench/bench_stall.py [--entries N] [--pages P]`.

A served app on SQLite (werkzeug, threaded). Figures are ratios against baselines
measured in the same run: 8 users logging in at once on an idle server, and one
upload alone. Then the same logins while an auditor builds the evidence report of
a request with N audit entries, and six uploads at once (with the logins again)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from werkzeug.serving import make_server  # noqa: E402

from bench.instance import bench_instance  # noqa: E402
from signflow.app import create_app  # noqa: E402
from signflow.core.accounts import users as accounts  # noqa: E402
from signflow.core.audit import log as audit  # noqa: E402
from signflow.core.audit.log import Actor  # noqa: E402
from signflow.core.pdf import normalise as pdfcheck  # noqa: E402
from signflow.core.pki import crl as revocation  # noqa: E402
from signflow.core.pki import seal as seal  # noqa: E402
from signflow.core.requests import workflow  # noqa: E402
from signflow.models import AuditAction, Destination, OnCallGroup, User  # noqa: E402
from tests.helpers import SERVED_CSRF, http_login, multipart  # noqa: E402
from tests.pdfs import make_pdf  # noqa: E402

PASSWORD = "bench password 0123"
LOGINS = [f"user{n}" for n in range(8)]


def _setup(tmp: Path, entries: int):  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    svc, settings = bench_instance(tmp, now=now, mfa_roles="")
    actor = Actor(None, "bench", "operator")
    hashed = accounts.hash_password(PASSWORD)
    with svc.sessions() as s, s.begin():
        dest, group = Destination(name="Transplant"), OnCallGroup(name="On call")
        s.add_all([dest, group])
        s.flush()
        made = {}
        for name, role in [("tech", "technician"), ("auditor", "auditor"),
                           *((u, "technician") for u in LOGINS)]:
            made[name] = accounts.create_user(s, actor=actor, now=now, username=name,
                                              display_name=name, role=role, password=PASSWORD)
        upload = pdfcheck.normalise_upload(make_pdf(1, "Consent"), max_bytes=10**7, max_pages=10)
        req = workflow.create_request(s, svc.deps, actor=Actor.of(made["tech"]), now=now,
                                      upload=upload, filename="c.pdf", title="c",
                                      group_id=group.id, destination_id=dest.id, urgency="urgent")
        viewer = Actor.of(made["auditor"])
        for i in range(entries):
            audit.append(s, now=now + timedelta(milliseconds=i), actor=viewer,
                         action=AuditAction.DOCUMENT_VIEWED, request_id=req.id, page=i % 7)
        for user in s.query(User):
            user.password_hash = hashed  # one hash: setting up stays quick
        for issuer in ("root", "issuing"):  # as the worker does at its first tick
            revocation.crl(s, svc.keys, issuer=issuer, now=now)
        return svc, settings, req.id, group.id, dest.id


class Logins:
    """Each of the 8 users logs in again and again until stopped; latencies in ms."""

    def __init__(self, base: str) -> None:
        self.base, self.stop = base, threading.Event()
        self.ms: list[float] = []
        self.errors = 0
        self.threads = [threading.Thread(target=self._run, args=(u,)) for u in LOGINS]

    def _run(self, username: str) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            _, status, path = http_login(self.base, username, PASSWORD, timeout=120)
            self.ms.append((time.perf_counter() - started) * 1000)
            self.errors += status != 200 or path == "/login"

    def __enter__(self) -> Logins:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _upload(base: str, opener, group: int, dest: int, data: bytes) -> tuple[float, bool]:  # type: ignore[no-untyped-def]
    page = opener.open(f"{base}/requests/new", timeout=60).read().decode()
    token = SERVED_CSRF.search(page)
    body, ctype = multipart({"csrf_token": token.group(1) if token else "", "title": "bench",
                             "group": str(group), "destination": str(dest),
                             "urgency": "urgent"}, "bench.pdf", data)
    request = urllib.request.Request(f"{base}/requests/new", data=body,
                                     headers={"Content-Type": ctype})
    started = time.perf_counter()
    try:
        with opener.open(request, timeout=300) as resp:
            ok = resp.status == 200 and "/requests/" in resp.url
    except urllib.error.HTTPError:
        ok = False
    return (time.perf_counter() - started) * 1000, ok


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="baseline seconds of logins")
    parser.add_argument("--pages", type=int, default=20, help="pages of each upload")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="signflow-bench-"))
    svc, settings, rid, group, dest = _setup(tmp, args.entries)
    server = make_server("127.0.0.1", 0, create_app(settings, services=svc), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    rows: list[tuple[str, float, float, str]] = []
    try:
        with Logins(base) as idle:
            time.sleep(args.rounds)
        login_base = statistics.median(idle.ms)
        rows.append(("8 users logging in, idle server: median (baseline)", login_base, 1.0,
                     f"p95 {_p95(idle.ms):.0f}, max {max(idle.ms):.0f}, errors {idle.errors}"))

        auditor, _, _ = http_login(base, "auditor", PASSWORD)
        with Logins(base) as during:
            started = time.perf_counter()
            with auditor.open(f"{base}/audit/requests/{rid}/evidence.pdf", timeout=600) as resp:
                resp.read()
            report_ms = (time.perf_counter() - started) * 1000
        rows.append((f"evidence report, {args.entries} entries, 8 users logging in", report_ms,
                     report_ms / login_base, ""))
        rows.append(("  their logins meanwhile: median", statistics.median(during.ms),
                     statistics.median(during.ms) / login_base,
                     f"p95 {_p95(during.ms):.0f}, max {max(during.ms):.0f}, "
                     f"n {len(during.ms)}, errors {during.errors}"))

        document = make_pdf(args.pages, "Consent form")
        techs = [http_login(base, "tech", PASSWORD)[0] for _ in range(6)]
        alone = statistics.median(_upload(base, techs[0], group, dest, document)[0]
                                  for _ in range(3))
        rows.append((f"one upload ({args.pages} pages) alone (baseline)", alone, 1.0, ""))
        results: list[tuple[float, bool]] = []
        with Logins(base) as uploading:
            threads = [threading.Thread(target=lambda o=o: results.append(
                _upload(base, o, group, dest, document))) for o in techs]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = (time.perf_counter() - started) * 1000
        times = [ms for ms, _ in results]
        rows.append(("six uploads at once: all done", wall, wall / alone,
                     f"slowest {max(times):.0f}, errors {sum(not ok for _, ok in results)}"))
        rows.append(("  logins meanwhile: median", statistics.median(uploading.ms),
                     statistics.median(uploading.ms) / login_base,
                     f"p95 {_p95(uploading.ms):.0f}, max {max(uploading.ms):.0f}, "
                     f"errors {uploading.errors}"))
    finally:
        server.shutdown()
        svc.engine.dispose()
    print(f"{'operation':<56} {'ms':>9} {'x baseline':>11}  notes")
    for name, ms, ratio, note in rows:
        print(f"{name:<56} {ms:>9.0f} {ratio:>11.2f}  {note}")


if __name__ == "__main__":
    main()
