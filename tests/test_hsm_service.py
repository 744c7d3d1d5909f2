"""Service keys (issuing CA, TSA, PIN pepper) on a real SoftHSM2 token."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, ObjectClass

from signflow.core.accounts import signing_pin as credentials
from signflow.core.errors import ConfigurationError, WrongPin
from signflow.core.pades import sign as signing
from signflow.core.pades import timestamps
from signflow.core.pades import validate as validation
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.core.pki import hsm as hsm
from signflow.core.pki import keyfiles, tsa
from signflow.core.pki import keystore as pki
from signflow.core.requests.deps import Deps
from signflow.models import SignatureRequest, SigningCredential, User
from signflow.services import Services
from tests.conftest import PIN, TEST_ACTOR, World, enrol_physician
from tests.factories import create_request, sign_request
from tests.pdfs import make_pdf
from tests.pdfsig import pdfsig_report
from tests.softhsm import MODULE, TOKENS

PASSPHRASE = b"hsm keys passphrase"
BASE_URL = "http://127.0.0.1:5000"


def _token(label: str, pin: str | None = None) -> hsm.Token:
    return hsm.Token(hsm.TokenConfig(MODULE, label, pin or TOKENS[label]))


@pytest.fixture(scope="module")
def token_folder(softhsm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keys folder made with files, then moved into the token by migrate_to_token."""
    folder = tmp_path_factory.mktemp("hsm-keys")
    pki.init_keys(folder, passphrase=PASSPHRASE, now=datetime.now(UTC) - timedelta(days=1),
                  base_url=BASE_URL)
    moved = pki.migrate_to_token(folder, passphrase=PASSPHRASE, token=_token("svc-main"))
    assert len(moved) == 3
    return folder


@pytest.fixture(scope="module")
def token_keys(token_folder: Path) -> pki.KeyMaterial:
    return pki.load_keys(token_folder, passphrase=PASSPHRASE, token=_token("svc-main"))


@pytest.fixture
def token_deps(svc: Services, token_keys: pki.KeyMaterial) -> Iterator[Deps]:
    """The app's dependencies with the token's keys; svc.deps points at them meanwhile."""
    real = svc.deps
    svc.deps = dataclasses.replace(
        real, keys=token_keys, timestamper=timestamps.make_timestamper(token_keys, None)
    )
    yield svc.deps
    svc.deps = real


def test_migration_leaves_no_key_on_disk(token_keys: pki.KeyMaterial, token_folder: Path) -> None:
    folder = token_folder
    assert not (folder / keyfiles.ISSUING_KEY).exists() and not (folder / keyfiles.TSA_KEY).exists()
    assert isinstance(token_keys.issuing_key, hsm.TokenECKey)
    assert isinstance(token_keys.tsa_key, hsm.TokenRSAKey)
    session = hsm.session_for(_token("svc-main").config)
    with hsm.PKCS11_LOCK:
        for label, kind in ((hsm.ISSUING_KEY_LABEL, ObjectClass.PRIVATE_KEY),
                            (hsm.TSA_KEY_LABEL, ObjectClass.PRIVATE_KEY),
                            (hsm.PEPPER_KEY_LABEL, ObjectClass.SECRET_KEY)):
            obj = session.get_key(object_class=kind, label=label)
            assert obj[Attribute.SENSITIVE] is True and obj[Attribute.EXTRACTABLE] is False
    with pytest.raises(ConfigurationError, match="token"):
        token_keys.issuing_key.private_bytes(None, None, None)  # type: ignore[arg-type]
    # Without the token the folder is incomplete; migrating again changes nothing.
    with pytest.raises(ConfigurationError, match="incomplete"):
        pki.load_keys(folder, passphrase=PASSPHRASE)
    assert pki.migrate_to_token(folder, passphrase=PASSPHRASE, token=_token("svc-main")) == []
    assert pki.init_keys(folder, passphrase=PASSPHRASE, now=datetime.now(UTC), base_url=BASE_URL,
                         token=_token("svc-main")) is False


def test_fresh_init_creates_the_keys_in_the_token(softhsm: Path, tmp_path: Path) -> None:
    token = _token("svc-fresh")
    assert pki.init_keys(tmp_path, passphrase=PASSPHRASE, now=datetime.now(UTC),
                         base_url=BASE_URL, token=token) is True
    names = {p.name for p in tmp_path.iterdir()}
    assert {keyfiles.ROOT_CERT, keyfiles.ISSUING_CERT, keyfiles.TSA_CERT, keyfiles.MASTER_KEY} <= names
    assert not names & {keyfiles.ISSUING_KEY, keyfiles.TSA_KEY, keyfiles.PEPPER}
    keys = pki.load_keys(tmp_path, passphrase=PASSPHRASE, token=token)
    assert keys.kdf_params == pki.KDF_PARAMS_TOKEN and keys.pepper == b""
    # A key file next to the token is refused: the copy would defeat the token.
    (tmp_path / keyfiles.TSA_KEY).write_bytes(b"stale copy")
    with pytest.raises(ConfigurationError, match="hsm-init"):
        pki.load_keys(tmp_path, passphrase=PASSPHRASE, token=token)


def test_certificates_and_crls_are_signed_by_the_token(
    svc: Services, world: World, token_keys: pki.KeyMaterial
) -> None:
    now = svc.clock()
    cred_id = _enrol_on_token(svc, world, token_keys)
    with svc.sessions() as s, s.begin():
        cert = creds.credential_certificate(s.get(SigningCredential, cred_id))
        der = revocation.crl(s, token_keys, issuer="issuing", now=now)
    cert.verify_directly_issued_by(token_keys.issuing_cert)
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(token_keys.issuing_cert.public_key())
    assert isinstance(token_keys.issuing_cert.public_key(), ec.EllipticCurvePublicKey)
    renewed = tsa.issue_tsa_certificate(token_keys, token_keys.tsa_key.public_key(), now=now)
    renewed.verify_directly_issued_by(token_keys.issuing_cert)


def _re_enrol(svc: Services, world: World, keys: pki.KeyMaterial, kdf_params: str) -> int:
    """Dr Lefèvre's credential, revoked and enrolled anew under `keys`."""
    now = svc.clock()
    with svc.sessions() as s, s.begin():
        user = s.get(User, world.doc)
        credentials.revoke_credential(s, actor=TEST_ACTOR, user_id=user.id,
                                      reason="superseded", now=now)
        cred = enrol_physician(s, keys, user, PIN, now=now)
        assert cred.kdf_params == kdf_params
        return cred.id


def _enrol_on_token(svc: Services, world: World, keys: pki.KeyMaterial) -> int:
    return _re_enrol(svc, world, keys, pki.KDF_PARAMS_TOKEN)


def test_sign_request_end_to_end_with_token_keys(
    svc: Services, world: World, token_deps: Deps, token_folder: Path, tmp_path: Path
) -> None:
    keys = token_deps.keys
    _enrol_on_token(svc, world, keys)
    rid = create_request(svc, world)
    sign_request(svc, rid, world.doc)
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req.signed_sha256 is not None
        signed = svc.blobs.get(s, req.signed_sha256)
        crls = [revocation.crl(s, keys, issuer=i, now=svc.clock()) for i in ("root", "issuing")]
    report = validation.validate_pdf(signed, trust_roots=[keys.root_cert], crls=crls,
                                  now=svc.clock())
    assert report.ok, report.as_json()
    first = report.signatures[0]
    assert first.pades_level == "B-LTA" and first.timestamp_time is not None
    assert first.issuer == "signflow Issuing CA"
    # The timestamp tokens (signature and document timestamps) come from the token's TSA key.
    assert report.signatures[-1].is_timestamp and report.signatures[-1].ok
    assert report.signatures[-1].signer == "signflow Time Stamping Authority"

    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    out = pdfsig_report(path, token_folder, tmp_path)
    assert "Signature is Valid" in out and "Certificate is Trusted" in out, out


def test_pepper_needs_the_token(svc: Services, world: World, token_keys: pki.KeyMaterial) -> None:
    cred_id = _enrol_on_token(svc, world, token_keys)
    now = svc.clock()
    with svc.sessions() as s, s.begin():
        cred = s.get(SigningCredential, cred_id)
        assert creds.unlock(s, token_keys, cred, PIN, now=now) is not None
        # The keys folder, the database row and the PIN, but no token: nothing.
        no_token = dataclasses.replace(token_keys, token=None, pepper=os.urandom(32))
        with pytest.raises(ConfigurationError, match="token"):
            creds.unlock(s, no_token, cred, PIN, now=now)
        # Another token (same labels, its own secret) does not open it either.
        other = _token("svc-other")
        if not other.has_object(hsm.PEPPER_KEY_LABEL):
            other.generate_hmac_key(hsm.PEPPER_KEY_LABEL)
        with pytest.raises(WrongPin):
            creds.unlock(s, dataclasses.replace(token_keys, token=other), cred, PIN, now=now)
        assert creds.unlock(s, token_keys, cred, PIN, now=now) is not None


# The token outlives the test (SoftHSM2 sees only tokens made before it loads): one
# database variant, so the migration always starts from an empty "svc-other".
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_file_peppered_credentials_move_to_the_token_at_pin_change(
    softhsm: Path, svc: Services, world: World, tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    pki.init_keys(folder, passphrase=PASSPHRASE, now=svc.clock() - timedelta(days=1),
                  base_url=BASE_URL)
    file_keys = pki.load_keys(folder, passphrase=PASSPHRASE)
    cred_id = _re_enrol(svc, world, file_keys, pki.KDF_PARAMS)
    now = svc.clock()
    pki.migrate_to_token(folder, passphrase=PASSPHRASE, token=_token("svc-other"))
    moved = pki.load_keys(folder, passphrase=PASSPHRASE, token=_token("svc-other"))
    assert (folder / keyfiles.PEPPER).is_file()
    with svc.sessions() as s, s.begin():
        cred = s.get(SigningCredential, cred_id)
        assert creds.unlock(s, moved, cred, PIN, now=now) is not None  # pepper.key still works
        creds.change_pin(s, moved, cred, PIN, "582047", now=now)
        assert cred.kdf_params == pki.KDF_PARAMS_TOKEN
        assert creds.unlock(s, moved, cred, "582047", now=now) is not None


def test_eight_threads_sign_through_the_token(
    svc: Services, world: World, token_deps: Deps
) -> None:
    keys = token_deps.keys
    cred_id = _enrol_on_token(svc, world, keys)
    with svc.sessions() as s, s.begin():
        crls = [revocation.crl(s, keys, issuer=i, now=svc.clock()) for i in ("root", "issuing")]

    def sign(n: int) -> bytes:
        with svc.sessions() as s:
            cred = s.get(SigningCredential, cred_id)
            key = creds.unlock(s, keys, cred, PIN, now=svc.clock())  # pepper HMAC on the token
            certificate = creds.credential_certificate(cred)
        return signing.sign_pdf(
            make_pdf(text=f"document {n}"), key=key, certificate=certificate, keys=keys,
            stamp=signing.Stamp(signer_name="Dr Hélène Lefèvre", professional_id="10001234567",
                                reason="Approved", when=svc.clock(), timezone="Europe/Paris"),
            timestamper=token_deps.timestamper, level="B-LTA", crls=crls,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(sign, range(16)))
    assert all(validation.validate_pdf(r, trust_roots=[keys.root_cert], crls=crls).ok
               for r in results)


def test_wrong_token_pin_is_a_clear_configuration_error(softhsm: Path) -> None:
    with pytest.raises(ConfigurationError, match="wrong PIN for PKCS#11 token 'svc-pin'"):
        hsm.session_for(hsm.TokenConfig(MODULE, "svc-pin", "000000"))


def test_missing_token_module_or_keys_are_clear_errors(softhsm: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'absent' is not present"):
        hsm.session_for(hsm.TokenConfig(MODULE, "absent", "123456"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        hsm.config_from("/nowhere/libpkcs11.so", "svc-main", "1234", None)
    with pytest.raises(ConfigurationError, match="SIGNFLOW_PKCS11_TOKEN"):
        hsm.config_from(MODULE, None, "1234", None)
    with pytest.raises(ConfigurationError, match="not both"):
        hsm.config_from(MODULE, "svc-main", "1234", str(tmp_path / "pin"))
    (tmp_path / "pin").write_text(TOKENS["svc-main"] + "\n")
    assert hsm.config_from(MODULE, "svc-main", None, str(tmp_path / "pin")) == hsm.TokenConfig(
        MODULE, "svc-main", TOKENS["svc-main"])
    assert hsm.config_from(None, None, None, None) is None
    # The token exists but was never initialised for signflow.
    folder = tmp_path / "keys"
    pki.init_keys(folder, passphrase=PASSPHRASE, now=datetime.now(UTC), base_url=BASE_URL)
    for name in (keyfiles.ISSUING_KEY, keyfiles.TSA_KEY):
        (folder / name).unlink()
    with pytest.raises(ConfigurationError, match="hsm-init"):
        pki.load_keys(folder, passphrase=PASSPHRASE, token=_token("svc-empty"))


def test_cli_hsm_init_moves_the_keys(softhsm: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(SIGNFLOW_INSTANCE=str(tmp_path / "instance"), SIGNFLOW_KEYS=str(tmp_path / "keys"),
               SIGNFLOW_ENV="development", SOFTHSM2_CONF=str(softhsm))

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "signflow.cli", *args],
                              env={**env, **extra}, capture_output=True, text=True, timeout=120)

    assert run("init").returncode == 0
    assert (tmp_path / "keys" / keyfiles.ISSUING_KEY).is_file()
    missing = run("pki", "hsm-init")
    assert missing.returncode == 1 and "no PKCS#11 token configured" in missing.stderr
    token_env = dict(SIGNFLOW_PKCS11_MODULE=MODULE, SIGNFLOW_PKCS11_TOKEN="svc-cli")
    wrong = run("pki", "hsm-init", **token_env, SIGNFLOW_PKCS11_PIN="000000")
    assert wrong.returncode == 1 and "wrong PIN" in wrong.stderr and "Traceback" not in wrong.stderr
    (tmp_path / "pin").write_text(TOKENS["svc-cli"])
    done = run("pki", "hsm-init", **token_env, SIGNFLOW_PKCS11_PIN_FILE=str(tmp_path / "pin"))
    assert done.returncode == 0, done.stderr
    assert "svc-cli" in done.stdout
    assert not (tmp_path / "keys" / keyfiles.ISSUING_KEY).exists()
    assert not (tmp_path / "keys" / keyfiles.TSA_KEY).exists()
    again = run("pki", "hsm-init", **token_env, SIGNFLOW_PKCS11_PIN=TOKENS["svc-cli"])
    assert again.returncode == 0, again.stderr
