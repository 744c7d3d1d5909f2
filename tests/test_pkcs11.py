"""Signing with a key that lives in a PKCS#11 token (SoftHSM2), as an HSM would hold it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, CertificateType, ObjectClass
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from signflow.core.errors import ConfigurationError
from signflow.core.pades import sign as signing
from signflow.core.pades import signers as pdf_signers
from signflow.core.pades import timestamps
from signflow.core.pades import validate as validation
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.core.pki import hsm as hsm
from signflow.core.pki import keystore as pki
from signflow.db import Base
from signflow.models import User
from tests.pdfs import make_pdf
from tests.softhsm import MODULE, TOKENS, require_module

TOKEN = "signflow-test"
USER_PIN = TOKENS["signflow-test"]
LABEL = "physician"


@pytest.fixture(scope="module")
def token(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    request.getfixturevalue("softhsm")
    module = require_module()
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
    credential = creds.enrol(session, keys, user, USER_PIN, now=now, algorithm="ec")
    key = creds.unlock(session, keys, credential, USER_PIN, now=now)
    certificate = creds.credential_certificate(credential)
    crls = [revocation.crl(session, keys, issuer=i, now=now) for i in ("root", "issuing")]

    # Written in-process: SoftHSM2 does not reliably show this process objects
    # that another process adds to a token after the module was loaded here.
    token = hsm.Token(hsm.TokenConfig(module, TOKEN, USER_PIN))
    token.import_private_key(LABEL, key)  # sensitive, non-extractable from now on
    with hsm.PKCS11_LOCK:
        hsm.session_for(token.config).create_object(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.LABEL: LABEL,
                Attribute.ID: LABEL.encode(),
                Attribute.SUBJECT: certificate.subject.public_bytes(),
                Attribute.VALUE: certificate.public_bytes(serialization.Encoding.DER),
            }
        )
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
        timestamper=timestamps.make_timestamper(keys, None),
        level="B-LTA",
        crls=token["crls"],  # type: ignore[arg-type]
    )


def test_sign_with_a_token_key_and_validate(token: dict[str, object]) -> None:
    keys = token["keys"]
    assert isinstance(keys, pki.KeyMaterial)
    signer = pdf_signers.open_pkcs11_signer(
        MODULE, TOKEN, USER_PIN, LABEL, chain=[keys.issuing_cert, keys.root_cert]
    )
    # One login per process: asking again returns a signer on the same session.
    again = pdf_signers.open_pkcs11_signer(MODULE, TOKEN, USER_PIN, LABEL, chain=[keys.issuing_cert])
    signed = _sign(token, signer, "signed inside the token")
    report = validation.validate_pdf(signed, trust_roots=[keys.root_cert])
    assert report.ok, report.as_json()
    first = report.signatures[0]
    assert first.signer == "Hélène Lefèvre" and first.pades_level == "B-LTA"
    certificate = token["certificate"]
    assert isinstance(certificate, x509.Certificate)
    assert first.certificate_serial == format(certificate.serial_number, "x")
    assert validation.validate_pdf(_sign(token, again, "second"), trust_roots=[keys.root_cert]).ok


def test_concurrent_token_signatures_are_serialised(token: dict[str, object]) -> None:
    keys = token["keys"]
    assert isinstance(keys, pki.KeyMaterial)
    signer = pdf_signers.open_pkcs11_signer(MODULE, TOKEN, USER_PIN, LABEL, chain=[keys.issuing_cert])
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda n: _sign(token, signer, f"document {n}"), range(12)))
    assert all(validation.validate_pdf(r, trust_roots=[keys.root_cert]).ok for r in results)


def test_unknown_token_is_a_configuration_error(token: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="no-such-token"):
        pdf_signers.open_pkcs11_signer(MODULE, "no-such-token", USER_PIN, LABEL)
