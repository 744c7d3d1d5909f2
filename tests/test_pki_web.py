"""Public PKI endpoints, the /tsa service over real HTTP, TSA outages and revocation."""

from __future__ import annotations

import threading

import pytest
from cryptography import x509
from sqlalchemy import select
from werkzeug.serving import make_server

from signflow.app import create_app
from signflow.core.accounts import signing_pin as credentials
from signflow.core.errors import CredentialBlocked
from signflow.core.pades import sign as signing
from signflow.core.pades import timestamps
from signflow.core.pades import validate as validation
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.models import SignatureActivation, SignatureRequest, SigningCredential, User
from signflow.services import build_services
from tests.conftest import TEST_ACTOR, enrol_physician, login
from tests.factories import create_request, integration_token, sign_request
from tests.helpers import request_id_from, sign, upload
from tests.pdfs import make_pdf
from tests.tools import free_port

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_certificates_and_crls_are_published(client, svc):
    root = x509.load_der_x509_certificate(client.get("/pki/root.crt").data)
    issuing = x509.load_der_x509_certificate(client.get("/pki/issuing.crt").data)
    assert root == svc.keys.root_cert and issuing == svc.keys.issuing_cert
    crl = x509.load_der_x509_crl(client.get("/pki/issuing.crl").data)
    assert crl.is_signature_valid(issuing.public_key())
    assert crl.next_update_utc > crl.last_update_utc
    root_crl = x509.load_der_x509_crl(client.get("/pki/root.crl").data)
    assert root_crl.is_signature_valid(root.public_key())
    assert client.get("/pki/other.crl").status_code == 404


def test_revocation_reaches_the_crl_at_once_and_stops_signing(client, svc, world):
    with svc.sessions() as s, s.begin():
        serial = creds.active_credential(s, world.doc).serial
        credentials.revoke_credential(s, actor=TEST_ACTOR, user_id=world.doc,
                                      reason="key_compromise", now=svc.clock())
    crl = x509.load_der_x509_crl(client.get("/pki/issuing.crl").data)
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    rid = create_request(svc, world)
    with pytest.raises(CredentialBlocked):  # no usable credential until re-enrolment
        sign_request(svc, rid, world.doc)
    with svc.sessions() as s, s.begin():  # the physician enrols anew with a new PIN
        enrol_physician(s, svc.keys, s.get(User, world.doc), "731946", now=svc.clock())
    assert sign_request(svc, rid, world.doc, pin="731946").signed_sha256


@pytest.fixture
def live(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_own_tsa_serves_others_over_http(live, svc):
    """Another signer uses signflow's /tsa as its RFC 3161 time-stamping authority,
    with an integration token carrying the timestamp scope."""
    issued = integration_token(svc, name="other-signer", scopes=("timestamp",))
    stamper = timestamps.make_timestamper(svc.keys, f"{live}/tsa", token=issued.token)
    with svc.sessions() as s:
        crls = [revocation.crl(s, svc.keys, issuer=i, now=svc.clock()) for i in ("root", "issuing")]
    key, cert = _outsider_free_signer(svc)
    signed = signing.sign_pdf(
        make_pdf(), key=key, certificate=cert, keys=svc.keys,
        stamp=signing.Stamp(signer_name="TSA client", professional_id=None, reason="t",
                            when=svc.clock(), timezone="UTC"),
        timestamper=stamper, level="B-T", crls=crls)
    report = validation.validate_pdf(signed, trust_roots=[svc.keys.root_cert], crls=crls)
    assert report.ok and report.signatures[0].timestamp_time is not None


def _outsider_free_signer(svc):
    """A physician credential of our own CA, unlocked the normal way."""
    with svc.sessions() as s, s.begin():
        user = User(username="client", display_name="TSA client", role="physician",
                    password_hash="x", active=True, failed_logins=0, session_version=1,
                    created_at=svc.clock())
        s.add(user)
        s.flush()
        cred = creds.enrol(s, svc.keys, user, "582914", now=svc.clock())
        key = creds.unlock(s, svc.keys, cred, "582914", now=svc.clock())
        return key, x509.load_pem_x509_certificate(cred.certificate_pem.encode())


def test_tsa_endpoint_refuses_garbage(client, svc):
    auth = {"Authorization": f"Bearer {integration_token(svc, scopes=('timestamp',)).token}"}
    resp = client.post("/tsa", data=b"not a request", content_type="application/timestamp-query",
                       headers=auth)
    assert resp.status_code == 400
    assert client.post("/tsa", data=b"x", content_type="text/plain", headers=auth).status_code == 400


def test_tsa_down_fails_the_signature_cleanly(settings, clock, world, svc):
    down = settings.with_overrides(tsa_url=f"http://127.0.0.1:{free_port()}/tsa")
    services = build_services(down, clock=clock)
    app = create_app(down, services=services)
    tech, doc = app.test_client(), app.test_client()
    login(tech, "tech")
    rid = request_id_from(upload(tech, world, data=make_pdf()))
    login(doc, "doc")
    resp = sign(doc, rid)
    assert resp.status_code == 503
    assert "timestamp authority unreachable" in resp.get_data(as_text=True)
    with services.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req.state == "pending" and req.signed_sha256 is None
        assert s.scalars(select(SignatureActivation)).all() == []  # the form can be retried
        cred = s.scalar(select(SigningCredential).where(SigningCredential.user_id == world.doc,
                                                        SigningCredential.revoked_at.is_(None)))
        assert cred.failed_pins == 0


def test_crl_past_next_update_refuses_to_sign(svc, world):
    """Validation data must be current: a CRL past its nextUpdate is never embedded."""
    from datetime import timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    from signflow.core.errors import SignflowError

    key, cert = _outsider_free_signer(svc)
    now = svc.clock()
    stale = [
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - timedelta(days=10))
        .next_update(now - timedelta(days=3))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),
                       critical=False)
        .sign(signer, hashes.SHA256())
        .public_bytes(Encoding.DER)
        for issuer, signer in ((svc.keys.root_cert, svc.keys.root_key),
                               (svc.keys.issuing_cert, svc.keys.issuing_key))
    ]
    with pytest.raises(SignflowError) as refused:
        signing.sign_pdf(make_pdf(), key=key, certificate=cert, keys=svc.keys,
                         stamp=signing.Stamp(signer_name="x", professional_id=None, reason="r",
                                             when=now, timezone="UTC"),
                         timestamper=svc.deps.timestamper, level="B-LTA", crls=stale)
    assert "validation data" in refused.value.message


def test_shared_service_timestamper_across_threads(svc, world):
    """Request threads share one in-process TSA: every token must stay intact."""
    from concurrent.futures import ThreadPoolExecutor

    key, cert = _outsider_free_signer(svc)
    with svc.sessions() as s:
        crls = [revocation.crl(s, svc.keys, issuer=i, now=svc.clock()) for i in ("root", "issuing")]

    def one(n: int) -> bytes:
        return signing.sign_pdf(
            make_pdf(text=f"document {n}"), key=key, certificate=cert, keys=svc.keys,
            stamp=signing.Stamp(signer_name="TSA client", professional_id=None, reason="t",
                                when=svc.clock(), timezone="UTC"),
            timestamper=svc.deps.timestamper, level="B-LTA", crls=crls)

    with ThreadPoolExecutor(max_workers=6) as pool:
        signed = list(pool.map(one, range(18)))
    assert all(validation.validate_pdf(pdf, trust_roots=[svc.keys.root_cert]).ok for pdf in signed)
