"""PAdES signing and validation with real keys, real timestamps, real PDFs,
cross-checked with poppler's pdfsig (NSS) and the pyHanko CLI."""

from __future__ import annotations

import io
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from asn1crypto import core, tsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.generic import DictionaryObject, StreamObject, pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from signflow.core.errors import InvalidDocument, InvalidInput, ServiceUnavailable
from signflow.core.pades import sign as signing
from signflow.core.pades import signers as pdf_signers
from signflow.core.pades import timestamps
from signflow.core.pades import validate as validation
from signflow.core.pki import certificates as certs
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.core.pki import keystore as pki
from signflow.db import Base
from signflow.models import User
from tests.pdfs import make_pdf, make_pdf_with_empty_sig_field
from tests.tools import free_port, require_tool, serving

PASSPHRASE = b"keys passphrase for tests"
PIN = "482916"
REASON = "Transplant consent approved"


@dataclass(frozen=True)
class Physician:
    name: str
    rpps: str
    key: certs.PrivateKey
    certificate: x509.Certificate


@dataclass(frozen=True)
class World:
    keys: pki.KeyMaterial
    session: Session
    crls: list[bytes]
    timestamper: object
    ec: Physician
    rsa: Physician
    lukasz: Physician
    root_pem: Path


def _physician(
    session: Session, keys: pki.KeyMaterial, name: str, rpps: str, algorithm: str
) -> Physician:
    now = datetime.now(UTC)
    user = User(
        username=f"{algorithm}-{rpps}",
        display_name=name,
        role="physician",
        password_hash="unused",
        professional_id=rpps,
        created_at=now,
    )
    session.add(user)
    session.flush()
    credential = creds.enrol(session, keys, user, PIN, now=now, algorithm=algorithm)
    key = creds.unlock(session, keys, credential, PIN, now=now)
    return Physician(name, rpps, key, creds.credential_certificate(credential))


def _make_world(folder: Path) -> World:
    # pyHanko validates against the system clock: the keys and CRLs must be "now".
    now = datetime.now(UTC)
    pki.init_keys(folder, passphrase=PASSPHRASE, now=now, base_url="http://127.0.0.1:9")
    keys = pki.load_keys(folder, passphrase=PASSPHRASE)
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    session = Session(engine)
    world_ec = _physician(session, keys, "Hélène Lefèvre", "10001234567", "ec")
    world_rsa = _physician(session, keys, "Øyvind Berg", "10007654321", "rsa")
    lukasz = _physician(session, keys, "Łukasz Żółkiewski", "10005555555", "ec")
    crls = [revocation.crl(session, keys, issuer=i, now=now) for i in ("root", "issuing")]
    root_pem = folder.parent / "root.pem"
    root_pem.write_bytes(keys.root_cert.public_bytes(serialization.Encoding.PEM))
    return World(
        keys=keys,
        session=session,
        crls=crls,
        timestamper=timestamps.make_timestamper(keys, None),
        ec=world_ec,
        rsa=world_rsa,
        lukasz=lukasz,
        root_pem=root_pem,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return _make_world(tmp_path_factory.mktemp("signing") / "keys")


@pytest.fixture(scope="module")
def outsider(tmp_path_factory: pytest.TempPathFactory) -> World:
    return _make_world(tmp_path_factory.mktemp("outsider") / "keys")


def stamp_for(who: Physician, **extra: object) -> signing.Stamp:
    return signing.Stamp(
        signer_name=who.name,
        professional_id=who.rpps,
        reason=REASON,
        when=datetime.now(UTC),
        timezone="Europe/Paris",
        **extra,  # type: ignore[arg-type]
    )


def sign(
    world: World,
    who: Physician,
    pdf: bytes | None = None,
    *,
    level: str = "B-LTA",
    timestamper: object | None = None,
    **stamp_extra: object,
) -> bytes:
    return signing.sign_pdf(
        pdf if pdf is not None else make_pdf(text="Kidney transplant consent"),
        key=who.key,
        certificate=who.certificate,
        keys=world.keys,
        stamp=stamp_for(who, **stamp_extra),
        timestamper=timestamper or world.timestamper,  # type: ignore[arg-type]
        level=level,
        crls=world.crls,
    )


def validate(world: World, pdf: bytes) -> validation.ValidationReport:
    return validation.validate_pdf(pdf, trust_roots=[world.keys.root_cert])


@pytest.fixture(scope="module")
def lta_signed(world: World) -> bytes:
    return sign(world, world.ec)


# ---------------------------------------------------------------- roundtrip


@pytest.mark.parametrize("level", ["B-T", "B-LT", "B-LTA"])
@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_sign_and_validate_roundtrip(world: World, algorithm: str, level: str) -> None:
    who = world.ec if algorithm == "ec" else world.rsa
    signed = sign(world, who, level=level)
    report = validate(world, signed)
    assert report.ok, report.as_json()
    first = report.signatures[0]
    assert (first.signer, first.professional_id) == (who.name, who.rpps)
    assert first.certificate_serial == format(who.certificate.serial_number, "x")
    assert first.issuer == "signflow Issuing CA"
    assert first.intact and first.valid and first.trusted and not first.revoked
    assert first.pades_level == level
    # pyHanko's AdES engine, offline: only B-LTA proves its validation data existed.
    assert first.ades == ("PASSED" if level == "B-LTA" else
                          {"B-T": "INDETERMINATE/CERTIFICATE_CHAIN_GENERAL_FAILURE",
                           "B-LT": "INDETERMINATE/NO_POE"}[level])
    assert first.timestamp_time is not None
    assert abs(first.timestamp_time - datetime.now(UTC)) < timedelta(minutes=1)
    assert not first.is_timestamp
    assert [s.is_timestamp for s in report.signatures] == (
        [False, True] if level == "B-LTA" else [False]
    )
    reader = PdfFileReader(io.BytesIO(signed))
    sig_dict = reader.embedded_signatures[0].sig_object
    assert sig_dict["/SubFilter"] == "/ETSI.CAdES.detached"
    if level != "B-T":
        dss = reader.root["/DSS"]
        # Hard-fail embedding: the CRLs really are in the file.
        assert len(dss["/CRLs"]) >= 2
    assert report.as_json()["ok"] is True


def test_b_lta_file_validates_offline_without_the_crls_given(
    world: World, lta_signed: bytes
) -> None:
    report = validation.validate_pdf(lta_signed, trust_roots=[world.keys.root_cert], crls=[])
    assert report.ok
    assert report.signatures[0].pades_level == "B-LTA"


def test_timestamp_failure_raises_and_returns_nothing(world: World) -> None:
    dead_port = free_port()  # nothing listens there any more
    dead_tsa = timestamps.make_timestamper(world.keys, f"http://127.0.0.1:{dead_port}/tsa")
    for level in ("B-T", "B-LTA"):
        with pytest.raises(ServiceUnavailable, match="timestamp authority unreachable"):
            sign(world, world.ec, level=level, timestamper=dead_tsa)


class _TsaHandler(BaseHTTPRequestHandler):
    keys: pki.KeyMaterial

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = timestamps.tsa_respond(self.keys, body, now=datetime.now(UTC))
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


@pytest.fixture
def http_tsa(world: World) -> Iterator[str]:
    handler = type("Handler", (_TsaHandler,), {"keys": world.keys})
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as port:
        yield f"http://127.0.0.1:{port}/tsa"


def test_signing_through_the_http_tsa_endpoint(world: World, http_tsa: str) -> None:
    signed = sign(
        world, world.rsa, level="B-LTA", timestamper=timestamps.make_timestamper(world.keys, http_tsa)
    )
    report = validate(world, signed)
    assert report.ok, report.as_json()
    assert report.signatures[-1].signer == "signflow Time Stamping Authority"


class StatusOnly(core.Sequence):
    """A rejection carries no token, which asn1crypto's TimeStampResp requires."""

    _fields = [("status", tsp.PKIStatusInfo)]


def test_tsa_respond_refuses_garbage_and_rejects_weak_digests(world: World) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidInput):
        timestamps.tsa_respond(world.keys, b"not a request", now=now)
    md5_request = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "md5"},
                "hashed_message": b"\0" * 16,
            },
            "cert_req": True,
        }
    ).dump()
    reply = StatusOnly.load(timestamps.tsa_respond(world.keys, md5_request, now=now))
    assert reply["status"]["status"].native == "rejection"
    assert reply["status"]["fail_info"].native == {"bad_alg"}
    good = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": b"\1" * 32,
            },
            "nonce": 42,
            "cert_req": True,
        }
    ).dump()
    granted = tsp.TimeStampResp.load(timestamps.tsa_respond(world.keys, good, now=now))
    assert granted["status"]["status"].native == "granted"
    info = granted["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
    assert info["nonce"].native == 42
    assert info["gen_time"].native == now.replace(microsecond=now.microsecond)
    assert info["message_imprint"]["hashed_message"].native == b"\1" * 32


# ---------------------------------------------------------------- stamp


def test_stamp_text_in_other_scripts_is_embedded_and_extractable(
    world: World, tmp_path: Path
) -> None:
    pdftotext = require_tool("pdftotext")
    signed = sign(world, world.lukasz, level="B-T")
    signed = sign(world, world.ec, signed, level="B-T")
    signed = sign(world, world.rsa, signed, level="B-T")
    path = tmp_path / "stamped.pdf"
    path.write_bytes(signed)
    text = subprocess.run(
        [pdftotext, str(path), "-"], capture_output=True, check=True, text=True
    ).stdout
    for expected in (
        "Łukasz Żółkiewski",
        "Hélène Lefèvre",
        "Øyvind Berg",
        "RPPS 10001234567",
        REASON,
    ):
        assert expected in text
    assert "(Europe/Paris" in text
    assert b"/FontFile2" in signed  # the TrueType font program travels with the file


def test_existing_empty_signature_field_is_used(world: World) -> None:
    pdf = make_pdf_with_empty_sig_field("ConsentSignature", box=(300, 60, 560, 140))
    signed = sign(world, world.ec, pdf, level="B-T")
    report = validate(world, signed)
    assert report.ok
    assert [s.field_name for s in report.signatures] == ["ConsentSignature"]


def test_technician_chosen_page_and_box(world: World) -> None:
    signed = sign(world, world.ec, make_pdf(pages=3), level="B-T", page=2, box=(100, 400, 360, 480))
    reader = PdfFileReader(io.BytesIO(signed))
    sig = reader.embedded_signatures[0]
    widget = sig.sig_field
    rect = [float(v) for v in widget["/Rect"]]
    assert rect == [100, 400, 360, 480]
    assert widget.raw_get("/P").idnum == reader.root["/Pages"]["/Kids"].raw_get(1).idnum
    with pytest.raises(InvalidInput):
        sign(world, world.ec, make_pdf(pages=3), level="B-T", page=4, box=(100, 400, 360, 480))


# ---------------------------------------------------------------- tampering and trust


def test_flipped_byte_invalidates_in_validate_pdf(world: World, lta_signed: bytes) -> None:
    tampered = bytearray(lta_signed)
    position = lta_signed.index(b"Kidney")
    tampered[position] ^= 0x01
    report = validate(world, bytes(tampered))
    assert not report.ok
    assert not report.signatures[0].intact


def add_content_incrementally(pdf: bytes) -> bytes:
    """What an attacker does after signing: draw new text on the page."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    font = writer.add_object(
        DictionaryObject(
            {
                pdf_name("/Type"): pdf_name("/Font"),
                pdf_name("/Subtype"): pdf_name("/Type1"),
                pdf_name("/BaseFont"): pdf_name("/Helvetica"),
            }
        )
    )
    stream = writer.add_object(StreamObject(stream_data=b"BT /FX 24 Tf 72 600 Td (REFUSED) Tj ET"))
    resources = DictionaryObject({pdf_name("/Font"): DictionaryObject({pdf_name("/FX"): font})})
    writer.add_stream_to_page(0, stream, resources=resources)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_content_added_after_signing_is_detected(world: World) -> None:
    signed = sign(world, world.ec, level="B-T")
    tampered = add_content_incrementally(signed)
    report = validate(world, tampered)
    assert not report.ok
    assert report.signatures[0].intact  # the signed bytes themselves are untouched
    assert report.signatures[0].modification_level == "OTHER"
    assert not report.signatures[0].ok


def test_junk_after_eof_is_not_ok(world: World, lta_signed: bytes) -> None:
    report = validate(world, lta_signed + b"\n% appended by someone\n")
    assert not report.ok


def test_two_physicians_sign_sequentially(world: World) -> None:
    first = sign(world, world.ec, level="B-LTA")
    both = sign(world, world.rsa, first, level="B-LTA")
    report = validate(world, both)
    assert report.ok, report.as_json()
    signers = [s.signer for s in report.signatures if not s.is_timestamp]
    assert signers == ["Hélène Lefèvre", "Øyvind Berg"]
    assert all(s.ok for s in report.signatures)


def test_outsider_ca_is_not_trusted(world: World, outsider: World) -> None:
    foreign = sign(outsider, outsider.ec, level="B-T")
    report = validate(world, foreign)
    assert report.signatures and not report.signatures[0].trusted
    assert not report.ok
    # ...while its own root does trust it: the verdict depends on the trust roots only.
    assert validate(outsider, foreign).ok


def test_non_pdf_and_unsigned_inputs(world: World) -> None:
    with pytest.raises(InvalidDocument):
        validate(world, b"GIF89a not a pdf")
    with pytest.raises(InvalidDocument):
        validate(world, b"%PDF-1.7\n garbage without structure")
    unsigned = validate(world, make_pdf())
    assert unsigned.signatures == () and not unsigned.ok
    with pytest.raises(InvalidDocument):
        sign(world, world.ec, b"plain text, no PDF here")


def test_signature_made_before_revocation_stays_valid(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    local = _make_world(folder)
    signed = sign(local, local.ec, level="B-T")
    time.sleep(1.1)  # the revocation must come strictly after the timestamp
    credential = creds.active_credential(local.session, local.session.query(User).first().id)  # type: ignore[union-attr]
    assert credential is not None
    now = datetime.now(UTC)
    revocation.revoke(local.session, credential, reason="superseded", now=now)
    crls = [revocation.crl(local.session, local.keys, issuer=i, now=now) for i in ("root", "issuing")]
    before = validation.validate_pdf(signed, trust_roots=[local.keys.root_cert], crls=crls)
    assert before.ok and not before.signatures[0].revoked
    # Backdating the timestamp is impossible, so show the other side with a
    # signature timestamped after the revocation: the CRL makes it revoked.
    later = signing.sign_pdf(
        make_pdf(),
        key=local.ec.key,
        certificate=local.ec.certificate,
        keys=local.keys,
        stamp=stamp_for(local.ec),
        timestamper=local.timestamper,  # type: ignore[arg-type]
        level="B-T",
        crls=crls,
    )
    after = validation.validate_pdf(later, trust_roots=[local.keys.root_cert], crls=crls)
    assert after.signatures[0].revoked and not after.ok


# ---------------------------------------------------------------- interop


@pytest.fixture(scope="module")
def nss_db(world: World, tmp_path_factory: pytest.TempPathFactory) -> str:
    certutil = require_tool("certutil")
    folder = tmp_path_factory.mktemp("nss")
    subprocess.run([certutil, "-N", "-d", f"sql:{folder}", "--empty-password"], check=True)
    subprocess.run(
        [
            certutil,
            "-A",
            "-d",
            f"sql:{folder}",
            "-n",
            "signflow-root",
            "-t",
            "CT,C,C",
            "-i",
            str(world.root_pem),
        ],
        check=True,
    )
    return f"sql:{folder}"


def pdfsig(nss_db: str, pdf: bytes, tmp_path: Path) -> str:
    tool = require_tool("pdfsig")
    path = tmp_path / f"pdfsig-{len(pdf)}.pdf"
    path.write_bytes(pdf)
    result = subprocess.run([tool, "-nssdir", nss_db, str(path)], capture_output=True, text=True)
    return result.stdout


def pyhanko_cli(world: World, pdf: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("pyhanko")
    path = tmp_path / f"cli-{len(pdf)}.pdf"
    path.write_bytes(pdf)
    # The CLI of pyHanko 0.38 has no LTV mode and would fetch the CRLs online:
    # revocation is covered by validate_pdf and pdfsig.
    return subprocess.run(
        [
            tool,
            "sign",
            "validate",
            "--trust",
            str(world.root_pem),
            "--trust-replace",
            "--no-revocation-check",
            "--executive-summary",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pdfsig_and_pyhanko_cli_accept_our_signature(
    world: World, lta_signed: bytes, nss_db: str, tmp_path: Path
) -> None:
    out = pdfsig(nss_db, lta_signed, tmp_path)
    first = out.split("Signature #2")[0]
    assert "Signature Validation: Signature is Valid." in first
    assert "Certificate Validation: Certificate is Trusted." in first
    assert "ETSI.CAdES.detached" in first
    cli = pyhanko_cli(world, lta_signed, tmp_path)
    assert cli.returncode == 0 and ":VALID" in cli.stdout, cli.stdout + cli.stderr


def test_pdfsig_and_pyhanko_cli_reject_a_flipped_byte(
    world: World, lta_signed: bytes, nss_db: str, tmp_path: Path
) -> None:
    tampered = bytearray(lta_signed)
    tampered[lta_signed.index(b"Kidney")] ^= 0x01
    out = pdfsig(nss_db, bytes(tampered), tmp_path)
    assert "Signature is Valid" not in out.split("Signature #2")[0]
    cli = pyhanko_cli(world, bytes(tampered), tmp_path)
    assert cli.returncode != 0 and ":INVALID" in cli.stdout


def test_pdfsig_flags_content_added_after_signing(
    world: World, nss_db: str, tmp_path: Path
) -> None:
    signed = sign(world, world.ec, level="B-T")
    assert "Total document signed" in pdfsig(nss_db, signed, tmp_path)
    out = pdfsig(nss_db, add_content_incrementally(signed), tmp_path)
    assert "Not total document signed" in out
    assert "Total document signed" not in out.replace("Not total document signed", "")


def test_pdfsig_accepts_two_sequential_signatures(
    world: World, nss_db: str, tmp_path: Path
) -> None:
    both = sign(world, world.rsa, sign(world, world.ec, level="B-T"), level="B-T")
    out = pdfsig(nss_db, both, tmp_path)
    assert out.count("Signature is Valid.") == 2
    assert out.count("Certificate is Trusted.") == 2
    assert "Total document signed" in out.split("Signature #2")[1]


# ---------------------------------------------------------------- speed


def test_signing_speed_p256_against_rsa3072(world: World, record_property: object) -> None:
    """The measurement behind creds.DEFAULT_ALGORITHM: whole PDF signatures (B-B, so the
    key is all that differs) and the raw private-key operation, interleaved in one run."""
    pdf = make_pdf()
    people = {"ec": world.ec, "rsa": world.rsa}
    signers = {
        label: pdf_signers.KeySigner(who.key, who.certificate, [world.keys.issuing_cert])
        for label, who in people.items()
    }
    whole_samples: dict[str, list[float]] = {"ec": [], "rsa": []}
    raw_samples: dict[str, list[float]] = {"ec": [], "rsa": []}
    for who in people.values():
        sign(world, who, pdf, level="B-B")  # warm-up
    for _ in range(10):
        # Interleaved, so that machine load drifts hit both alike.
        for label, who in people.items():
            start = time.perf_counter()
            sign(world, who, pdf, level="B-B")
            whole_samples[label].append(time.perf_counter() - start)
            start = time.perf_counter()
            signers[label].sign_raw(b"signed attributes", "sha256")
            raw_samples[label].append(time.perf_counter() - start)
    whole = {label: statistics.median(v) for label, v in whole_samples.items()}
    raw = {label: statistics.median(v) for label, v in raw_samples.items()}
    record_property("sign_ms_p256", round(whole["ec"] * 1000, 1))  # type: ignore[operator]
    record_property("sign_ms_rsa3072", round(whole["rsa"] * 1000, 1))  # type: ignore[operator]
    print(
        f"\nPDF signature (B-B) median: P-256 {whole['ec'] * 1000:.1f} ms, "
        f"RSA-3072 {whole['rsa'] * 1000:.1f} ms, ratio {whole['rsa'] / whole['ec']:.2f}; "
        f"raw key operation: P-256 {raw['ec'] * 1e6:.0f} us, RSA-3072 {raw['rsa'] * 1e6:.0f} us, "
        f"ratio {raw['rsa'] / raw['ec']:.1f}"
    )
    # End to end the key is a small share of a signature (PDF writing, CMS,
    # the stamp dominate); the key operation itself is where P-256 wins.
    assert creds.DEFAULT_ALGORITHM == "ec"
    assert raw["ec"] * 3 < raw["rsa"]

