"""Signing with a key that lives in a PKCS#11 token (SoftHSM2), as an HSM would hold it."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from signflow.core import pki, signing
from signflow.core.errors import ConfigurationError
from signflow.db import Base
from signflow.models import User
from tests.pdfs import make_pdf
from tests.test_hsm_service import TOKENS, softhsm  # noqa: F401 - shared fixture
from tests.tools import require_tool

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "signflow-test"
USER_PIN = TOKENS["signflow-test"]
LABEL = "physician"


def _require_module() -> str:
    if not Path(MODULE).exists():
        message = f"{MODULE} is not installed (package softhsm2)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return MODULE


@pytest.fixture(scope="module")
def token(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    request.getfixturevalue("softhsm")
    softhsm_util = require_tool("softhsm2-util")
    pkcs11_tool = require_tool("pkcs11-tool")
    module = _require_module()
    # The token itself was created by the session-wide `softhsm` fixture.
    folder = tmp_path_factory.mktemp("pkcs11-material")

    now = datetime.now(UTC)
    keys_dir = folder / "keys"
    pki.init_keys(keys_dir, passphrase=b"keys passphrase", now=now, base_url="http://127.0.0.1:9")
    keys = pki.load_keys(keys_dir, passphrase=b"keys passphrase")
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    session = Session(engine)
    user = User(
        username="hsm",
        display_name="Hélène Lefèvre",
        role="physician",
        password_hash="unused",
        professional_id="10001234567",
        created_at=now,
    )
    session.add(user)
    session.flush()
    credential = pki.enrol(session, keys, user, USER_PIN, now=now, algorithm="ec")
    key = pki.unlock(session, keys, credential, USER_PIN, now=now)
    certificate = pki.credential_certificate(credential)
    crls = [pki.crl(session, keys, issuer=i, now=now) for i in ("root", "issuing")]

    key_pem = folder / "key.pem"
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_der = folder / "cert.der"
    cert_der.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    run = {"check": True, "capture_output": True}
    subprocess.run(
        [
            softhsm_util,
            "--import",
            str(key_pem),
            "--token",
            TOKEN,
            "--label",
            LABEL,
            "--id",
            "01",
            "--pin",
            USER_PIN,
        ],
        **run,  # type: ignore[call-overload]
    )
    subprocess.run(
        [
            pkcs11_tool,
            "--module",
            module,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            USER_PIN,
            "--write-object",
            str(cert_der),
            "--type",
            "cert",
            "--label",
            LABEL,
            "--id",
            "01",
        ],
        **run,  # type: ignore[call-overload]
    )
    key_pem.unlink()  # from now on the key exists only inside the token
    return {"keys": keys, "certificate": certificate, "crls": crls}


def _sign(token: dict[str, object], signer: object, text: str) -> bytes:
    keys = token["keys"]
    assert isinstance(keys, pki.KeyMaterial)
    certificate = token["certificate"]
    assert isinstance(certificate, x509.Certificate)
    return signing.sign_pdf(
        make_pdf(text=text),
        key=signer,  # type: ignore[arg-type]
        certificate=certificate,
        keys=keys,
        stamp=signing.Stamp(
            signer_name="Hélène Lefèvre",
            professional_id="10001234567",
            reason="Approved",
            when=datetime.now(UTC),
            timezone="Europe/Paris",
        ),
        timestamper=signing.make_timestamper(keys, None),
        level="B-LTA",
        crls=token["crls"],  # type: ignore[arg-type]
    )


def test_sign_with_a_token_key_and_validate(token: dict[str, object]) -> None:
    keys = token["keys"]
    assert isinstance(keys, pki.KeyMaterial)
    signer = signing.open_pkcs11_signer(
        MODULE, TOKEN, USER_PIN, LABEL, chain=[keys.issuing_cert, keys.root_cert]
    )
    # One login per process: asking again returns a signer on the same session.
    again = signing.open_pkcs11_signer(MODULE, TOKEN, USER_PIN, LABEL, chain=[keys.issuing_cert])
    signed = _sign(token, signer, "signed inside the token")
    report = signing.validate_pdf(signed, trust_roots=[keys.root_cert])
    assert report.ok, report.as_json()
    first = report.signatures[0]
    assert first.signer == "Hélène Lefèvre" and first.pades_level == "B-LTA"
    certificate = token["certificate"]
    assert isinstance(certificate, x509.Certificate)
    assert first.certificate_serial == format(certificate.serial_number, "x")
    assert signing.validate_pdf(_sign(token, again, "second"), trust_roots=[keys.root_cert]).ok


def test_concurrent_token_signatures_are_serialised(token: dict[str, object]) -> None:
    keys = token["keys"]
    assert isinstance(keys, pki.KeyMaterial)
    signer = signing.open_pkcs11_signer(MODULE, TOKEN, USER_PIN, LABEL, chain=[keys.issuing_cert])
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda n: _sign(token, signer, f"document {n}"), range(12)))
    assert all(signing.validate_pdf(r, trust_roots=[keys.root_cert]).ok for r in results)


def test_unknown_token_is_a_configuration_error(token: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="no-such-token"):
        signing.open_pkcs11_signer(MODULE, "no-such-token", USER_PIN, LABEL)
