"""The signing stall (issue 8, point 2): asn1crypto took a definite length ending in
byte 0x80 for a BER indefinite one and re-encoded that value, children included, at
every dump (signflow/core/pki/der.py). Counted in dump() calls, never timed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from asn1crypto import algos, cms, core
from pyhanko.sign.general import simple_cms_attribute

from signflow.core.pki import der
from signflow.core.pki.tsa import ServiceTimeStamper, to_asn1_cert

# One CMS signature of the shape below costs about 540 dumps; the stalled ones took
# 3.9 to 6.6 million. The budget stops a regression in a second instead of minutes.
DUMP_BUDGET = 5_000


class DumpBudgetExceeded(AssertionError):
    pass


@contextmanager
def counted_dumps(monkeypatch: pytest.MonkeyPatch, budget: int) -> Iterator[list[int]]:
    """Counts every asn1crypto dump() (all classes that define one) in the block."""
    calls = [0]

    def counting(original):  # type: ignore[no-untyped-def]
        def dump(self, force=False):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] > budget:
                raise DumpBudgetExceeded(f"more than {budget} dump() calls")
            return original(self, force)
        return dump

    for cls in {c for c in vars(core).values() if isinstance(c, type) and "dump" in vars(c)}:
        monkeypatch.setattr(cls, "dump", counting(vars(cls)["dump"]))
    yield calls
    monkeypatch.undo()


@pytest.fixture(scope="module")
def timestamp_token(key_material) -> cms.ContentInfo:  # type: ignore[no-untyped-def]
    """A real token from the service TSA, as pyHanko caches it for size estimates."""
    stamper = ServiceTimeStamper(key_material.tsa_cert, key_material.tsa_key,
                                 [key_material.issuing_cert])
    token: cms.ContentInfo = asyncio.run(stamper.async_dummy_response("sha256"))
    return token


def cms_signature(key_material, token: cms.ContentInfo, signature_length: int) -> cms.ContentInfo:  # type: ignore[no-untyped-def]
    """A CMS SignedData built the way pyHanko's Signer packages one: fresh (never
    parsed) structures around a parsed certificate and a parsed timestamp token."""
    cert = to_asn1_cert(key_material.issuing_cert)
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": cert.issuer, "serial_number": cert.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signed_attrs": cms.CMSAttributes([simple_cms_attribute("content_type", "data"),
                                           simple_cms_attribute("message_digest", b"\0" * 32)]),
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
        "signature": b"\1" * signature_length,
    })
    signer_info["unsigned_attrs"] = cms.CMSAttributes(
        [simple_cms_attribute("signature_time_stamp_token", token)])
    signed_data = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
        "encap_content_info": {"content_type": "data"},
        "certificates": [cms.CertificateChoices(name="certificate", value=cert)],
        "signer_infos": [signer_info],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data})


def test_a_length_ending_in_0x80_costs_no_more_dumps_than_any_other(
        monkeypatch, key_material, timestamp_token):
    # 256 consecutive signature sizes give every enclosing value every length modulo
    # 256: some SignerInfo, SignedData, ContentInfo... length ends in byte 0x80.
    counts: dict[int, int] = {}
    headers_ending_0x80 = 0
    for length in range(64, 64 + 256):
        with counted_dumps(monkeypatch, DUMP_BUDGET) as calls:
            signature = cms_signature(key_material, timestamp_token, length)
            encoded = signature.dump()
        counts[length] = calls[0]
        content = signature["content"]
        headers_ending_0x80 += sum(value._header[-1:] == b"\x80" for value in (
            signature, content, content["signer_infos"], content["signer_infos"][0]))
        parsed = cms.ContentInfo.load(encoded)
        assert parsed["content"]["signer_infos"][0]["signature"].native == b"\1" * length
    assert headers_ending_0x80 >= 4, "the sweep never built the case it is about"
    assert max(counts.values()) == min(counts.values()), {
        n: c for n, c in counts.items() if c != min(counts.values())}


def test_a_parsed_value_whose_length_ends_in_0x80_is_dumped_from_its_cache(
        monkeypatch, key_material, timestamp_token):
    """pyHanko puts its one cached, parsed timestamp token in every size estimate:
    dumping a parsed value reads its cached encoding, whatever its length is."""
    encoded = next(d for d in (cms_signature(key_material, timestamp_token, n).dump()
                               for n in range(64, 64 + 256)) if d[3:4] == b"\x80")
    parsed = cms.ContentInfo.load(encoded)  # its header: 30 82 xx 80
    with counted_dumps(monkeypatch, DUMP_BUDGET) as calls:
        again = [parsed.dump() for _ in range(20)]
    assert again == [encoded] * 20
    assert calls[0] <= 2 * 20  # ContentInfo's dump and Asn1Value's: nothing below it


@pytest.mark.parametrize(("header", "indefinite"), [
    (b"\x30\x80", True),                        # SEQUENCE, indefinite
    (b"\x24\x80", True),                        # constructed OCTET STRING, indefinite
    (b"\x30\x81\x80", False),                   # 128 bytes
    (b"\x30\x82\x01\x80", False),               # 384 bytes
    (b"\x30\x83\x01\x00\x80", False),           # 65,664 bytes
    (b"\x30\x82\x80\x00", False),               # 32,768 bytes: 0x80 not last
    (b"\xa0\x82\x01\x84\x30\x82\x01\x80", False),  # [0] EXPLICIT around 384 bytes
    (b"\xa0\x80\x30\x80", True),                # both indefinite
    (b"\xa0\x82\x01\x00\x30\x80", True),        # definite [0] around an indefinite one
    (b"\x1f\x81\x00\x80", True),                # high tag number 128, indefinite
    (b"\x1f\x81\x00\x81\x80", False),           # high tag number 128, 128 bytes
    (b"\x30\x05", False),
    (None, False),
])
def test_length_is_indefinite(header, indefinite):
    assert der.length_is_indefinite(header) is indefinite


def test_real_indefinite_lengths_are_still_re_encoded_as_der():
    class Pair(core.Sequence):
        _fields = [("number", core.Integer), ("data", core.OctetString)]

    ber = bytes.fromhex("3080" "020105" "2480" "04026162" "040163" "0000" "0000")
    assert Pair.load(ber).dump() == bytes.fromhex("3008" "020105" "0403616263")
    assert core.OctetString.load(bytes.fromhex("24800403666f6f0000")).dump() == b"\x04\x03foo"


def test_the_fix_is_installed_by_importing_what_signs():
    probe = ("import signflow.core.pades.sign, asn1crypto.core as c; "
             "print(c.Sequence.dump.__module__, c.SequenceOf.dump.__module__, "
             "c.Choice.dump.__module__, c.Primitive.dump.__module__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["signflow.core.pki.der"] * 4, (
        "asn1crypto is not the release der.py patches: check whether its dump() still "
        "takes lengths ending in 0x80 for indefinite ones (test above) and adapt der.py")
