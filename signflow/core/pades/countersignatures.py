"""Countersigned files: which signatures the hospital did not issue, whether they
may stand before the hospital's own, and the notes that tell the recipient so."""

from __future__ import annotations

from typing import Any

from asn1crypto import x509 as asn1_x509

from signflow.core.i18n import N_
from signflow.core.pades.reports import SignatureReport, acceptable_outside


def verdict(reports: list[SignatureReport], pdf: bytes) -> tuple[bool, tuple[str, ...]]:
    """Valid when every hospital signature is, the last hospital signature comes
    after every outside one, and the file ends with it (or its validation data)."""
    hospital = [i for i, r in enumerate(reports) if not r.outside and not r.is_timestamp]
    outside = [i for i, r in enumerate(reports) if r.outside]
    ok = (
        bool(hospital)
        and all(r.ok for r in reports if not r.outside)
        and all(acceptable_outside(reports[i]) for i in outside)
        and (not outside or max(outside) < hospital[-1])
        and covers_file(reports[-1], pdf)
    )
    notes = [
        f"an earlier {'document timestamp' if r.is_timestamp else 'signature'} by {r.signer}, "
        f"not issued by the hospital (issuer: {r.issuer})"
        + ("" if acceptable_outside(r) else f": {'; '.join(r.problems)}")
        for r in reports if r.outside
    ]
    if notes and ok:
        notes.append(N_("the hospital's signature is valid and covers the whole file"))
    return ok, tuple(notes)


def issued_under(sig: Any, roots: list[asn1_x509.Name]) -> bool:
    """Whether the signer's certificate names one of `roots` as its issuer, directly
    or through the certificates embedded with it. Names only: a look-alike CA
    counts as the hospital's, and then fails as untrusted (never the reverse)."""
    try:
        cert = sig.signer_cert
        embedded = {c.subject.dump(): c for c in sig.other_embedded_certs}
    except Exception:
        return True  # unreadable: judged as the hospital's, hence not valid
    wanted = {name.dump() for name in roots}
    for _ in range(8):
        if cert.issuer.dump() in wanted or cert.subject.dump() in wanted:
            return True
        parent = embedded.get(cert.issuer.dump())
        if parent is None or parent is cert:
            return False
        cert = parent
    return False


def covers_file(last: SignatureReport, pdf: bytes) -> bool:
    """The last signature covers the whole file, save for validation data
    (DSS, document timestamps) that pyHanko itself appends after B-LT/B-LTA, and
    nothing trails the last %%EOF (junk there does not show in any revision)."""
    if last.coverage == "ENTIRE_FILE":
        return True
    tail = pdf[pdf.rfind(b"%%EOF") + len(b"%%EOF") :]
    return (
        last.coverage == "ENTIRE_REVISION"
        and last.modification_level == "LTA_UPDATES"
        and not tail.strip(b"\r\n\t \x00")
    )
