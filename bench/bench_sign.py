"""Signing cost, by hand: `python bench/bench_sign.py [ROUNDS]`.

Figures are ratios against a baseline measured in the same run: a bare PAdES B-B
signature by pyHanko (no timestamp, no validation data, no database)."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.instance import bench_instance  # noqa: E402
from signflow.core.accounts import enrolment
from signflow.core.accounts import signing_pin as credentials
from signflow.core.accounts import users as accounts
from signflow.core.audit.log import Actor  # noqa: E402
from signflow.core.pades import sign as signing
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.pki import credentials as creds
from signflow.core.pki import seal as seal
from signflow.core.requests import signing as request_signing  # noqa: E402
from signflow.core.requests import workflow as workflow  # noqa: E402
from signflow.models import Destination, OnCallGroup, RotaShift, User  # noqa: E402
from tests.pdfs import make_pdf  # noqa: E402

PIN = "428613"


def samples_ms(fn, rounds: int) -> list[float]:
    fn()  # warm up (first signature after import is slower)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def median_ms(fn, rounds: int) -> float:
    return statistics.median(samples_ms(fn, rounds))


def main(rounds: int = 15) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="signflow-bench-"))
    now = datetime.now(UTC)
    svc, _ = bench_instance(tmp, now=now)
    actor = Actor(None, "bench", "operator")
    with svc.sessions() as s, s.begin():
        dest = Destination(name="Transplant")
        group = OnCallGroup(name="On call")
        s.add_all([dest, group])
        s.flush()
        tech = accounts.create_user(s, actor=actor, now=now, username="tech", display_name="Tech",
                                    role="technician", password="bench password 1")
        doc = accounts.create_user(s, actor=actor, now=now, username="doc", display_name="Dr Doc",
                                   role="physician", password="bench password 2",
                                   professional_id="10001234565", email="doc@hospital.example")
        s.add(RotaShift(group_id=group.id, user_id=doc.id, level=0, starts_at=now,
                        ends_at=now.replace(year=now.year + 1)))
        code = enrolment.send_code(s, svc.keys.master_key, actor=Actor.of(doc), now=now)
        credentials.set_signing_pin(s, svc.keys, actor=Actor.of(doc), current_pin=None, new_pin=PIN, now=now,
                                    enrolment_code=code)
        ids = (tech.id, doc.id, group.id, dest.id)
    pdf = make_pdf(3, "Benchmark consent")
    upload = pdfcheck.normalise_upload(pdf, max_bytes=10**7, max_pages=100)
    from cryptography import x509

    with svc.sessions() as s:
        cred = creds.active_credential(s, ids[1])
        key = creds.unlock(s, svc.keys, cred, PIN, now=now)
        cert = x509.load_pem_x509_certificate(cred.certificate_pem.encode())
        s.rollback()
    stamp = signing.Stamp(signer_name="Dr Doc", professional_id="10001234565", reason="bench",
                          when=now, timezone="Europe/Paris")

    def bare() -> None:
        signing.sign_pdf(upload.data, key=key, certificate=cert, keys=svc.keys, stamp=stamp,
                         timestamper=None, level="B-B", crls=[])

    with svc.sessions() as s:
        crls = request_signing.current_crls(s, svc.deps, now=now)

    def lta() -> None:
        signing.sign_pdf(upload.data, key=key, certificate=cert, keys=svc.keys, stamp=stamp,
                         timestamper=svc.deps.timestamper, level="B-LTA", crls=crls)

    def full_request() -> None:
        with svc.sessions() as s, s.begin():
            user = s.get(User, ids[0])
            req = workflow.create_request(s, svc.deps, actor=Actor.of(user), now=now, upload=upload,
                                          filename="b.pdf", title="b", group_id=ids[2],
                                          destination_id=ids[3], urgency="urgent")
            rid = req.id
        with svc.sessions() as s, s.begin():
            user = s.get(User, ids[1])
            form = request_signing.prepare_signing(s, svc.deps, user=user, request_id=rid, now=now)
            request_signing.sign_request(s, svc.deps, actor=Actor.of(user), request_id=rid, pin=PIN,
                                  activation_token=form.activation_token,
                                  shown_sha256=form.document_sha256, now=now)

    def normalise() -> None:
        pdfcheck.normalise_upload(pdf, max_bytes=10**7, max_pages=100)

    base = median_ms(bare, rounds)
    # The slowest signature, not only the median: about one in fifty used to stall on
    # a CMS length ending in byte 0x80 (signflow/core/pki/der.py); try `ROUNDS` 200.
    lta_ms = samples_ms(lta, rounds)
    rows = [("PAdES B-B, bare pyHanko (baseline)", base),
            ("PAdES B-LTA (TSA, CRLs, document timestamp)", statistics.median(lta_ms)),
            ("PAdES B-LTA, the slowest of those", max(lta_ms)),
            ("upload normalisation in the sandbox", median_ms(normalise, rounds)),
            ("create + sign_request B-LTA (PIN KDF, DB, audit)", median_ms(full_request, rounds))]
    print(f"{'operation':<52} {'median ms':>10} {'x baseline':>11}")
    for name, ms in rows:
        print(f"{name:<52} {ms:>10.1f} {ms / base:>11.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
