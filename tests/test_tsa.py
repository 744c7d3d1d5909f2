"""/tsa: RFC 3161 for integration tokens with the timestamp scope only, rejecting
what this TSA does not support with the RFC 3161 failure bits, rate limited per token.
(Signing through it over real HTTP: test_pki_web.py; in-process: test_signing.py.)"""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import core, tsp

from signflow.app import create_app
from signflow.core.pki.tsa import TSA_POLICY_OID
from signflow.models import AuditEntry, RateLimit
from signflow.services import build_services
from tests.factories import count, integration_token


class StatusOnly(core.Sequence):
    """A rejection carries no token, which asn1crypto's TimeStampResp requires."""

    _fields = [("status", tsp.PKIStatusInfo)]


def query(*, policy: str | None = None, extensions: list[dict[str, object]] | None = None) -> bytes:
    fields: dict[str, object] = {
        "version": 1,
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": hashlib.sha256(b"signflow").digest()},
        "nonce": 12345,
        "cert_req": True,
    }
    if policy is not None:
        fields["req_policy"] = policy
    if extensions is not None:
        fields["extensions"] = extensions
    return tsp.TimeStampReq(fields).dump()


def post(client, body: bytes, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/tsa", data=body, content_type="application/timestamp-query", headers=headers)


def status_of(resp) -> tuple[str, set[str]]:
    """A rejection's status and failure bits."""
    assert resp.status_code == 200 and resp.mimetype == "application/timestamp-reply"
    status = StatusOnly.load(resp.data)["status"]
    return status["status"].native, set(status["fail_info"].native or ())


def granted(resp) -> bool:
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    return tsp.TimeStampResp.load(resp.data)["status"]["status"].native == "granted"


@pytest.fixture
def stamper_token(svc) -> str:
    return integration_token(svc, name="outside-signer", scopes=("timestamp",)).token


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_anonymous_and_unscoped_callers_get_no_timestamp(client, svc, world):
    audit_before = count(svc, AuditEntry)
    anonymous = post(client, query(), None)
    assert anonymous.status_code == 401 and anonymous.mimetype == "application/problem+json"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert post(client, query(), "sfat_made-up").status_code == 401
    assert count(svc, AuditEntry) == audit_before  # nothing written for unknown callers
    # A token without the timestamp scope: 403, and the refused call is audited.
    reader = integration_token(svc, name="his", destination_id=world.destination, scopes=("read",))
    refused = post(client, query(), reader.token)
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    assert "'timestamp' scope" in refused.json["detail"]
    with svc.sessions() as s:
        entry = s.query(AuditEntry).order_by(AuditEntry.seq.desc()).first()
        assert entry.action == "api_token.used"
        assert '"refused:insufficient-scope"' in entry.line and '"POST /tsa"' in entry.line


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scoped_token_gets_a_token_for_our_policy(client, svc, stamper_token):
    used_before = count(svc, AuditEntry, AuditEntry.action == "api_token.used")
    for policy in (None, TSA_POLICY_OID):
        resp = post(client, query(policy=policy), stamper_token)
        reply = tsp.TimeStampResp.load(resp.data)
        assert reply["status"]["status"].native == "granted"
        info = reply["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
        assert info["policy"].dotted == TSA_POLICY_OID and info["nonce"].native == 12345
    assert count(svc, AuditEntry, AuditEntry.action == "api_token.used") == used_before + 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unsupported_policy_is_rejected_as_rfc_3161_says(client, stamper_token):
    assert status_of(post(client, query(policy="1.2.3.4.5"), stamper_token)) == (
        "rejection", {"unaccepted_policy"})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unknown_critical_extension_is_rejected_and_a_non_critical_one_ignored(client, stamper_token):
    critical = [{"extn_id": "1.3.6.1.4.1.99999.1", "critical": True, "extn_value": b"\x05\x00"}]
    assert status_of(post(client, query(extensions=critical), stamper_token)) == (
        "rejection", {"unaccepted_extensions"})
    optional = [{"extn_id": "1.3.6.1.4.1.99999.1", "critical": False, "extn_value": b"\x05\x00"}]
    assert granted(post(client, query(extensions=optional), stamper_token))


def test_rate_limit_per_token_kicks_in_and_the_window_passes(settings, clock, svc, world):
    limited = settings.with_overrides(tsa_rate_per_minute=3)
    services = build_services(limited, clock=clock)
    try:
        client = create_app(limited, services=services).test_client()
        first = integration_token(services, name="signer-a", scopes=("timestamp",)).token
        second = integration_token(services, name="signer-b", scopes=("timestamp",)).token
        for _ in range(3):
            assert granted(post(client, query(), first))
        throttled = post(client, query(), first)
        assert throttled.status_code == 429 and throttled.mimetype == "application/problem+json"
        assert 1 <= int(throttled.headers["Retry-After"]) <= 60
        # Another token has its own allowance; the first one's comes back with the next window.
        assert granted(post(client, query(), second))
        clock.advance(seconds=61)
        assert granted(post(client, query(), first))
        with services.sessions() as s:
            assert s.query(RateLimit).count() == 2
    finally:
        services.engine.dispose()
