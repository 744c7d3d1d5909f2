"""Generate the release 0.1 upgrade fixture WITH THE PREVIOUS RELEASE'S OWN CODE.

Run from the repository root, with the previous release (commit d0dc770)
checked out somewhere and first on the path:

    PYTHONPATH=/path/to/checkout-of-d0dc770 python tests/vectors/release_0_1/make.py

It rewrites, beside this file:

- `signflow.db`: a SQLite database at the previous schema (Alembic revision
  0001), with users, groups, rota, requests in every state, their real PAdES
  B-LTA signatures, audit entries and checkpoints, and the documents
  themselves (database blob backend: the blobs are rows of that file);
- `keys/`: the keys folder it used, its private keys encrypted with
  PASSPHRASE below (test keys, worthless outside these tests);
- `expected.json`: what the old code wrote, for tests/test_migrations.py.

Certificate lifetimes. The previous release issues physician and seal
certificates for 3 years and TSA certificates for 5 (root CA 20, issuing CA
10). pyHanko checks the signing certificates against the wall clock when a
document is signed, so the fixture cannot be made "in the future", and with
those lifetimes the pending requests could no longer be signed after 3 years
nor the documents' timestamps verified after 5. This script therefore sets
the old code's CERT_VALIDITY and TSA_VALIDITY to 10 years before it issues
anything; every certificate is capped by the issuing CA's own end, so they
all end with it, about 10 years after generation (expected.json keeps the
exact `valid_until`). Nothing else of the old code is changed. CRLs are not
part of the horizon: the current code re-issues them from the database when
it validates.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import signflow

HERE = Path(__file__).resolve().parent
BASELINE_MARKER = Path(signflow.__file__).resolve().parent / "core" / "workflow.py"
if not BASELINE_MARKER.is_file():
    sys.exit("run this with the previous release first on PYTHONPATH (signflow/core/workflow.py "
             f"not found under {Path(signflow.__file__).resolve().parent})")

from signflow import jobs  # noqa: E402
from signflow.config import Settings  # noqa: E402
from signflow.core import accounts, audit, credentials, pdfcheck, pki, rota, seal, workflow  # noqa: E402
from signflow.core.audit import Actor  # noqa: E402
from signflow.core.notify import LogNotifier  # noqa: E402
from signflow.migrate import upgrade  # noqa: E402
from signflow.models import SignatureRequest, User  # noqa: E402
from signflow.services import PASSPHRASE_FILE, build_services  # noqa: E402
from tests.pdfs import make_pdf  # noqa: E402  (the previous release's own test helper)

PASSPHRASE = "release-0.1-fixture-passphrase-0123456789"
SECRET_KEY = "release-0.1-fixture-secret-key-0123456789abcdef"
PASSWORD = "correct horse battery staple"
PIN = "428613"
BASE_URL = "http://127.0.0.1:5000"
AUDIT_ORIGIN = "signflow.local/audit"
LIFETIME = timedelta(days=10 * 365)
OPERATOR = Actor(id=None, name="fixture", role="operator")


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def main() -> None:
    db_path, keys_path = HERE / "signflow.db", HERE / "keys"
    for stale in (db_path, HERE / "signflow.db-wal", HERE / "signflow.db-shm", HERE / "expected.json"):
        stale.unlink(missing_ok=True)
    shutil.rmtree(keys_path, ignore_errors=True)

    # See the module docstring: certificates that outlive the committed fixture.
    pki.CERT_VALIDITY = LIFETIME
    pki.TSA_VALIDITY = LIFETIME

    t0 = datetime.now(UTC).replace(microsecond=0)
    clock = Clock(t0)
    passphrase = PASSPHRASE.encode()
    pki.init_keys(keys_path, passphrase=passphrase, now=t0 - timedelta(days=1), base_url=BASE_URL)
    keys = pki.load_keys(keys_path, passphrase=passphrase)
    seal.ensure_seal(keys_path, keys, passphrase=passphrase, now=t0 - timedelta(days=1))

    instance = Path(tempfile.mkdtemp(prefix="signflow-fixture-"))
    (instance / PASSPHRASE_FILE).write_text(PASSPHRASE)
    url = f"sqlite:///{db_path}"
    upgrade(url)  # `signflow init`'s own path: the schema of revision 0001
    settings = Settings(
        env="testing", instance_path=instance, keys_path=keys_path, database_url=url,
        secret_key=SECRET_KEY, base_url=BASE_URL, timezone="Europe/Paris", pades_level="B-LTA",
        blob_backend="database", audit_origin=AUDIT_ORIGIN, mfa_roles="",
    )
    svc = build_services(settings, clock=clock, notifier=LogNotifier(), keys=keys)
    deps = svc.deps

    # -- people, groups, rota -------------------------------------------------
    with svc.sessions() as s, s.begin():
        now = clock()
        transplant = rota.create_destination(s, actor=OPERATOR, name="Transplant service",
                                             email="transplant@hospital.example", now=now)
        cardiology = rota.create_destination(s, actor=OPERATOR, name="Cardiology", email=None,
                                             now=now)

        def user(name: str, role: str, **kw: object) -> int:
            return accounts.create_user(
                s, actor=OPERATOR, now=now, username=name, display_name=kw.pop("display", name),
                role=role, password=PASSWORD, email=f"{name}@hospital.example", **kw,  # type: ignore[arg-type]
            ).id

        ids = dict(
            tech=user("tech", "technician"),
            tech2=user("tech2", "technician"),
            doc=user("doc", "physician", display="Dr Hélène Lefèvre", professional_id="10001234567"),
            backup=user("backup", "physician", display="Dr Łukasz Nowak", professional_id="10007654321"),
            head=user("head", "physician", display="Pr Øyvind Berg", professional_id="10009999999"),
            cardio_doc=user("cardio-doc", "physician", display="Dr Ana Ruiz", professional_id="10005555555"),
            recipient=user("recipient", "recipient", destination_id=transplant.id),
            cardio=user("cardio", "recipient", destination_id=cardiology.id),
            auditor=user("auditor", "auditor"),
            admin=user("admin", "admin"),
        )
        anaesthesia = rota.create_group(s, actor=OPERATOR, name="Anaesthesia on call",
                                        head_user_id=ids["head"], now=now)
        cardio_group = rota.create_group(s, actor=OPERATOR, name="Cardiology on call",
                                         head_user_id=None, now=now)
        shift = dict(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=2), now=now)
        rota.add_shift(s, actor=OPERATOR, group_id=anaesthesia.id, user_id=ids["doc"], level=0, **shift)
        rota.add_shift(s, actor=OPERATOR, group_id=anaesthesia.id, user_id=ids["backup"], level=1, **shift)
        rota.add_shift(s, actor=OPERATOR, group_id=cardio_group.id, user_id=ids["cardio_doc"], level=0,
                       **shift)
        for name in ("doc", "backup", "head", "cardio_doc"):
            credentials.set_signing_pin(s, keys, s.get(User, ids[name]), current_pin=None,
                                        new_pin=PIN, now=now, ip=None)
        group, other_group = anaesthesia.id, cardio_group.id
        dest, other_dest = transplant.id, cardiology.id

    def create(label: str, *, urgency: str = "urgent", then: tuple[int, ...] = (),
               destination: int | None = None, pages: int = 1) -> int:
        upload = pdfcheck.normalise_upload(make_pdf(pages, label), max_bytes=10**7, max_pages=50)
        with svc.sessions() as s, s.begin():
            return workflow.create_request(
                s, deps, user=s.get(User, ids["tech"]), ip="10.0.0.1", now=clock(), upload=upload,
                filename=f"{label.lower().replace(' ', '-')}.pdf", title=label, group_id=group,
                destination_id=destination or dest, urgency=urgency, then_group_ids=list(then),
                note=f"note for {label}",
            ).id

    def sign(rid: int, who: str) -> None:
        with svc.sessions() as s, s.begin():
            signer = s.get(User, ids[who])
            form = workflow.prepare_signing(s, deps, user=signer, request_id=rid, now=clock())
            workflow.sign_request(s, deps, user=signer, request_id=rid, pin=PIN,
                                  activation_token=form.activation_token,
                                  shown_sha256=form.document_sha256, now=clock(), ip=None)

    # -- requests: every signature first, near the wall clock (pyHanko checks it) --
    labels: dict[int, str] = {}
    delivered = create("Delivered consent")
    sign(delivered, "doc")
    received = create("Received consent", destination=other_dest)
    sign(received, "backup")
    with svc.sessions() as s, s.begin():
        workflow.acknowledge_receipt(s, deps, user=s.get(User, ids["cardio"]), request_id=received,
                                     now=clock(), ip=None)
    two_groups = create("Two groups graft", then=(other_group,), pages=2)
    sign(two_groups, "doc")
    sign(two_groups, "cardio_doc")
    mid_route = create("Mid route graft", then=(other_group,), urgency="routine")
    sign(mid_route, "head")
    declined = create("Declined consent")
    with svc.sessions() as s, s.begin():
        workflow.decline_request(s, deps, user=s.get(User, ids["doc"]), request_id=declined,
                                 reason="Wrong patient", now=clock(), ip=None)
    cancelled = create("Cancelled consent")
    with svc.sessions() as s, s.begin():
        workflow.cancel_request(s, deps, user=s.get(User, ids["tech"]), request_id=cancelled,
                                now=clock(), ip=None)
    escalated = create("Escalated consent", urgency="urgent")
    expired = create("Expired consent", urgency="emergency")
    jobs.run_once(svc)  # notifications, first checkpoint, CRLs

    # -- escalation ladder: emergency 5 min a level, urgent 10 -------------------
    for _ in range(3):
        clock.advance(minutes=6)
        jobs.run_once(svc)
    pending = create("Pending consent", urgency="routine")
    clock.advance(minutes=6)
    jobs.run_once(svc)  # notifies the last request, second checkpoint
    with svc.sessions() as s, s.begin():
        audit.write_checkpoint(s, signing_key=keys.audit_key, origin=AUDIT_ORIGIN, now=clock())

    labels = {delivered: "delivered", received: "received", two_groups: "two_groups",
              mid_route: "mid_route", declined: "declined", cancelled: "cancelled",
              escalated: "escalated", expired: "expired", pending: "pending"}
    expected = _expected(svc, labels, ids, keys, t0)
    svc.engine.dispose()
    shutil.rmtree(instance)

    # One self-contained file: no WAL beside it, no free pages.
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    db = sqlite3.connect(db_path)
    db.execute("VACUUM")
    db.close()
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(expected["counts"]), f"{db_path.stat().st_size} bytes")


def _expected(svc, labels, ids, keys, t0) -> dict:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from signflow.models import (
        AuditEntry,
        Blob,
        Checkpoint,
        Signature,
        SigningCredential,
    )

    with svc.sessions() as s:
        requests = {}
        for rid, label in labels.items():
            req = s.get(SignatureRequest, rid)
            requests[label] = dict(
                id=req.id, state=req.state, escalation_level=req.escalation_level, step=req.step,
                route=workflow.route_of(req), group_id=req.group_id,
                destination_id=req.destination_id, title=req.title, urgency=req.urgency,
                document_sha256=req.document_sha256, signed_sha256=req.signed_sha256,
                signers=[s.get(User, sig.user_id).display_name
                         for sig in workflow.signatures_of(s, rid)],
            )
        for label in ("delivered", "received", "two_groups", "mid_route", "declined", "cancelled",
                      "escalated", "expired", "pending"):
            assert label in requests
        states = {r["state"] for r in requests.values()}
        assert {"pending", "delivered", "received", "declined", "cancelled", "expired"} <= states
        assert requests["escalated"]["state"] == "pending" and requests["escalated"]["escalation_level"] >= 1
        assert requests["mid_route"]["state"] == "pending" and requests["mid_route"]["step"] == 1
        assert requests["two_groups"]["state"] == "delivered" and len(requests["two_groups"]["signers"]) == 2

        def count(model) -> int:  # type: ignore[no-untyped-def]
            return s.scalar(select(func.count()).select_from(model))

        counts = dict(requests=count(SignatureRequest), users=count(User), signatures=count(Signature),
                      audit_entries=count(AuditEntry), checkpoints=count(Checkpoint),
                      blobs=count(Blob), credentials=count(SigningCredential))
        assert counts["checkpoints"] >= 2
        verified = audit.verify_log(s, public_key=keys.audit_key.public_key(), origin=AUDIT_ORIGIN)
        assert verified.ok, verified.line()
        ends = [keys.root_cert, keys.issuing_cert, keys.tsa_cert, svc.seal.certificate] + [
            pki.credential_certificate(c) for c in s.scalars(select(SigningCredential))]
    return dict(
        made_by="signflow release 0.1 (d0dc770), tests/vectors/release_0_1/make.py",
        made_at=t0.isoformat(),
        valid_until=min(c.not_valid_after_utc for c in ends).isoformat(),
        keys_passphrase=PASSPHRASE, secret_key=SECRET_KEY, password=PASSWORD, pin=PIN,
        audit_origin=AUDIT_ORIGIN, users=ids, counts=counts, requests=requests,
    )


if __name__ == "__main__":
    main()
