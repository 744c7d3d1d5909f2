"""Internal PKI: keys folder, certificate profiles, PIN-wrapped keys, CRLs."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from signflow.core.errors import ConfigurationError, CredentialBlocked, InvalidInput, WrongPin
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.core.pki import keystore as pki
from signflow.db import Base
from signflow.models import SigningCredential, User

PASSPHRASE = b"keys passphrase for tests"
BASE_URL = "https://signflow.example.org"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PIN = "482916"


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki") / "keys"
    assert pki.init_keys(path, passphrase=PASSPHRASE, now=NOW, base_url=BASE_URL) is True
    return path


@pytest.fixture(scope="module")
def keys(keys_dir: Path) -> pki.KeyMaterial:
    return pki.load_keys(keys_dir, passphrase=PASSPHRASE)


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s


def make_user(session: Session, name: str = "Hélène Lefèvre", rpps: str = "10001234567") -> User:
    user = User(
        username=name.split()[0].lower(),
        display_name=name,
        role="physician",
        password_hash="unused",
        professional_id=rpps,
        email=f"{name.split()[0].lower()}@example.org",
        created_at=NOW,
    )
    session.add(user)
    session.flush()
    return user


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(kind)


# ---------------------------------------------------------------- keys folder


def test_init_keys_is_idempotent_and_files_are_private(keys_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in keys_dir.iterdir()}
    assert pki.init_keys(keys_dir, passphrase=PASSPHRASE, now=NOW, base_url=BASE_URL) is False
    assert {p.name: p.read_bytes() for p in keys_dir.iterdir()} == before
    assert {"root.crt", "root.key", "issuing.crt", "issuing.key", "tsa.crt", "tsa.key"} <= set(
        before
    )
    for path in keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_private_keys_and_secrets_are_encrypted(keys_dir: Path, keys: pki.KeyMaterial) -> None:
    for name in ("root.key", "issuing.key", "tsa.key", "audit.key"):
        assert (keys_dir / name).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
        with pytest.raises(TypeError):
            serialization.load_pem_private_key((keys_dir / name).read_bytes(), password=None)
    assert len(keys.master_key) == 32 and len(keys.pepper) == 32
    assert keys.master_key != keys.pepper
    assert keys.master_key not in (keys_dir / "storage-master.key").read_bytes()
    assert keys.pepper not in (keys_dir / "pepper.key").read_bytes()
    # Secrets never show in logs through repr().
    assert keys.pepper.hex() not in repr(keys) and str(keys.pepper) not in repr(keys)


def test_wrong_passphrase_or_missing_files_raise_configuration_error(
    keys_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="passphrase"):
        pki.load_keys(keys_dir, passphrase=b"not the passphrase")
    with pytest.raises(ConfigurationError, match="signflow init"):
        pki.load_keys(tmp_path, passphrase=PASSPHRASE)


def test_init_completes_a_partial_folder_without_touching_existing_files(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    pki.init_keys(path, passphrase=PASSPHRASE, now=NOW, base_url=BASE_URL)
    root = (path / "root.crt").read_bytes()
    (path / "tsa.crt").unlink()
    (path / "tsa.key").unlink()
    assert pki.init_keys(path, passphrase=PASSPHRASE, now=NOW, base_url=BASE_URL) is True
    assert (path / "root.crt").read_bytes() == root
    loaded = pki.load_keys(path, passphrase=PASSPHRASE)
    loaded.tsa_cert.verify_directly_issued_by(loaded.issuing_cert)


# ---------------------------------------------------------------- certificate profiles


def test_ca_and_tsa_certificate_profiles(keys: pki.KeyMaterial) -> None:
    root, issuing, tsa = keys.root_cert, keys.issuing_cert, keys.tsa_cert
    issuing.verify_directly_issued_by(root)
    tsa.verify_directly_issued_by(issuing)

    constraints = ext(issuing, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ext(issuing, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    dp = ext(issuing, x509.CRLDistributionPoints).value[0].full_name[0].value
    assert dp == f"{BASE_URL}/pki/root.crl"

    eku = ext(tsa, x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert isinstance(keys.tsa_key, rsa.RSAPrivateKey)
    assert (
        ext(tsa, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(issuing, x509.SubjectKeyIdentifier).value.digest
    )


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_physician_certificate_profile(
    session: Session, keys: pki.KeyMaterial, algorithm: str
) -> None:
    user = make_user(session)
    credential = creds.enrol(session, keys, user, PIN, now=NOW, algorithm=algorithm)
    cert = creds.credential_certificate(credential)
    cert.verify_directly_issued_by(keys.issuing_cert)
    expected_key = ec.EllipticCurvePublicKey if algorithm == "ec" else rsa.RSAPublicKey
    assert isinstance(cert.public_key(), expected_key)
    if algorithm == "rsa":
        assert cert.public_key().key_size == 3072  # type: ignore[union-attr]

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Hélène Lefèvre"
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == (
        "RPPS:10001234567"
    )
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign
    assert set(ext(cert, x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
        x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36"),
        x509.ObjectIdentifier("1.2.840.113583.1.1.5"),
    }
    assert ext(cert, x509.CRLDistributionPoints).value[0].full_name[0].value == (
        f"{BASE_URL}/pki/issuing.crl"
    )
    aia = ext(cert, x509.AuthorityInformationAccess).value[0]
    assert aia.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    assert aia.access_location.value == f"{BASE_URL}/pki/issuing.crt"
    assert ext(cert, x509.SubjectKeyIdentifier)
    assert timedelta(days=3 * 365 - 1) < cert.not_valid_after_utc - NOW <= timedelta(days=3 * 365)
    assert credential.serial == format(cert.serial_number, "x")
    assert credential.kdf_params.startswith("argon2id:")
    assert credential.not_after == cert.not_valid_after_utc


# ---------------------------------------------------------------- PIN policy and sole control


@pytest.mark.parametrize("pin", ["12345", "111111", "123456", "987654", "121212", "password"])
def test_weak_pins_are_refused(pin: str) -> None:
    with pytest.raises(InvalidInput):
        creds.validate_pin_policy(pin)


@pytest.mark.parametrize("pin", ["482916", "730514", "correct horse"])
def test_reasonable_pins_are_accepted(pin: str) -> None:
    creds.validate_pin_policy(pin)


def test_right_pin_unlocks_the_key_of_the_certificate(
    session: Session, keys: pki.KeyMaterial
) -> None:
    credential = creds.enrol(session, keys, make_user(session), PIN, now=NOW)
    key = creds.unlock(session, keys, credential, PIN, now=NOW)
    assert key.public_key() == creds.credential_certificate(credential).public_key()


def test_wrong_pins_are_counted_and_block_at_five(session: Session, keys: pki.KeyMaterial) -> None:
    credential = creds.enrol(session, keys, make_user(session), PIN, now=NOW)
    for attempt in range(1, creds.MAX_PIN_TRIES):
        with pytest.raises(WrongPin, match=f"{creds.MAX_PIN_TRIES - attempt} tr"):
            creds.unlock(session, keys, credential, "000000" + str(attempt), now=NOW)
        assert credential.failed_pins == attempt
    with pytest.raises(CredentialBlocked):
        creds.unlock(session, keys, credential, "999999", now=NOW)
    assert credential.blocked_at == NOW
    # Blocked means blocked: the right PIN no longer helps.
    with pytest.raises(CredentialBlocked):
        creds.unlock(session, keys, credential, PIN, now=NOW)


def test_a_right_pin_resets_the_counter(session: Session, keys: pki.KeyMaterial) -> None:
    credential = creds.enrol(session, keys, make_user(session), PIN, now=NOW)
    with pytest.raises(WrongPin):
        creds.unlock(session, keys, credential, "000000", now=NOW)
    creds.unlock(session, keys, credential, PIN, now=NOW)
    assert credential.failed_pins == 0


def test_database_row_with_pepper_but_without_pin_cannot_unlock(
    session: Session, keys: pki.KeyMaterial
) -> None:
    credential = creds.enrol(session, keys, make_user(session), PIN, now=NOW)
    key = creds.unlock(session, keys, credential, PIN, now=NOW)
    secret = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    # The key is not stored in clear, and the pepper alone does not open it.
    assert secret not in credential.wrapped_key
    for guess in ("", "000000", "pepper"):
        with pytest.raises(WrongPin):
            creds.unlock(session, keys, credential, guess, now=NOW)


def test_pin_without_the_server_pepper_cannot_unlock(
    session: Session, keys: pki.KeyMaterial
) -> None:
    credential = creds.enrol(session, keys, make_user(session), PIN, now=NOW)
    other_server = dataclasses.replace(keys, pepper=os.urandom(32))
    with pytest.raises(WrongPin):
        creds.unlock(session, other_server, credential, PIN, now=NOW)


def test_wrapped_key_moved_to_another_credential_does_not_open(
    session: Session, keys: pki.KeyMaterial
) -> None:
    first = creds.enrol(session, keys, make_user(session, "Łukasz Nowak", "1"), PIN, now=NOW)
    second = creds.enrol(session, keys, make_user(session, "Øyvind Berg", "2"), PIN, now=NOW)
    second.wrapped_key = first.wrapped_key
    with pytest.raises(WrongPin):
        creds.unlock(session, keys, second, PIN, now=NOW)


def test_change_pin(session: Session, keys: pki.KeyMaterial) -> None:
    credential = creds.enrol(session, keys, make_user(session), PIN, now=NOW)
    with pytest.raises(WrongPin):
        creds.change_pin(session, keys, credential, "000000", "730514", now=NOW)
    with pytest.raises(InvalidInput):
        creds.change_pin(session, keys, credential, PIN, "123456", now=NOW)
    creds.change_pin(session, keys, credential, PIN, "730514", now=NOW)
    with pytest.raises(WrongPin):
        creds.unlock(session, keys, credential, PIN, now=NOW)
    key = creds.unlock(session, keys, credential, "730514", now=NOW)
    assert key.public_key() == creds.credential_certificate(credential).public_key()


def test_revoked_or_expired_credentials_cannot_unlock(
    session: Session, keys: pki.KeyMaterial
) -> None:
    credential = creds.enrol(session, keys, make_user(session), PIN, now=NOW)
    with pytest.raises(CredentialBlocked, match="expired") as expired:
        creds.unlock(session, keys, credential, PIN, now=credential.not_after)
    assert expired.value.code == "certificate-expired"
    revocation.revoke(session, credential, reason="key_compromise", now=NOW)
    with pytest.raises(CredentialBlocked, match="revoked") as revoked:
        creds.unlock(session, keys, credential, PIN, now=NOW)
    assert revoked.value.code == "certificate-revoked"


def test_re_enrolment_supersedes_the_previous_credential(
    session: Session, keys: pki.KeyMaterial
) -> None:
    user = make_user(session)
    first = creds.enrol(session, keys, user, PIN, now=NOW)
    later = NOW + timedelta(hours=1)
    second = creds.enrol(session, keys, user, "730514", now=later)
    assert first.revoked_at == later and first.revocation_reason == "superseded"
    assert second.revoked_at is None
    assert creds.active_credential(session, user.id) is second
    revocation.revoke(session, second, reason="cessation_of_operation", now=later)
    assert creds.active_credential(session, user.id) is None


def test_enrol_refuses_unknown_algorithm_and_weak_pin(
    session: Session, keys: pki.KeyMaterial
) -> None:
    user = make_user(session)
    with pytest.raises(InvalidInput):
        creds.enrol(session, keys, user, PIN, now=NOW, algorithm="dsa")
    with pytest.raises(InvalidInput):
        creds.enrol(session, keys, user, "123456", now=NOW)
    assert session.query(SigningCredential).count() == 0


# ---------------------------------------------------------------- CRLs


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def test_issuing_crl_lists_revoked_credentials(session: Session, keys: pki.KeyMaterial) -> None:
    user = make_user(session)
    credential = creds.enrol(session, keys, user, PIN, now=NOW)
    first = x509.load_der_x509_crl(revocation.crl(session, keys, issuer="issuing", now=NOW))
    assert first.is_signature_valid(keys.issuing_cert.public_key())  # type: ignore[arg-type]
    assert first.next_update_utc == NOW + timedelta(days=7)
    assert first.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert len(first) == 0

    # Unchanged revocations, within the refresh period: the very same CRL.
    again = revocation.crl(session, keys, issuer="issuing", now=NOW + timedelta(minutes=5))
    assert again == first.public_bytes(serialization.Encoding.DER)

    revoked_at = NOW + timedelta(minutes=10)
    revocation.revoke(session, credential, reason="key_compromise", now=revoked_at)
    second = x509.load_der_x509_crl(revocation.crl(session, keys, issuer="issuing", now=revoked_at))
    entry = second.get_revoked_certificate_by_serial_number(int(credential.serial, 16))
    assert entry is not None and entry.revocation_date_utc == revoked_at
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    assert _crl_number(second) == _crl_number(first) + 1

    # Past the refresh period a new CRL is issued, numbers keep increasing.
    third = x509.load_der_x509_crl(
        revocation.crl(session, keys, issuer="issuing", now=revoked_at + timedelta(hours=2))
    )
    assert _crl_number(third) == _crl_number(second) + 1


def test_root_crl_is_signed_by_the_root(session: Session, keys: pki.KeyMaterial) -> None:
    root_crl = x509.load_der_x509_crl(revocation.crl(session, keys, issuer="root", now=NOW))
    assert root_crl.issuer == keys.root_cert.subject
    assert root_crl.is_signature_valid(keys.root_cert.public_key())  # type: ignore[arg-type]
    assert len(root_crl) == 0
