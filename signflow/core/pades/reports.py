"""What validation finds: one report per signature and the file's verdict, in words
and as JSON (the API, the CLI and the delivery check read these)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from signflow.core.i18n import N_


@dataclass(frozen=True)
class SignatureReport:
    field_name: str
    signer: str
    professional_id: str | None
    certificate_serial: str
    issuer: str
    signing_time: datetime | None
    timestamp_time: datetime | None
    intact: bool
    valid: bool
    trusted: bool
    revoked: bool
    coverage: str
    modification_level: str
    pades_level: str | None
    is_timestamp: bool
    ok: bool
    problems: tuple[str, ...]
    # pyHanko's AdES long-term validation (ETSI EN 319 102-1 5.6.3), offline, with
    # only the file's own validation data: "PASSED", or the indication/subindication.
    ades: str | None = None
    # Made with a certificate the hospital did not issue (an earlier signature on a
    # countersigned file): reported for what it is, never counted as the hospital's.
    outside: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "field_name": self.field_name,
            "signer": self.signer,
            "professional_id": self.professional_id,
            "certificate_serial": self.certificate_serial,
            "issuer": self.issuer,
            "signing_time": _iso(self.signing_time),
            "timestamp_time": _iso(self.timestamp_time),
            "intact": self.intact,
            "valid": self.valid,
            "trusted": self.trusted,
            "revoked": self.revoked,
            "coverage": self.coverage,
            "modification_level": self.modification_level,
            "pades_level": self.pades_level,
            "ades": self.ades,
            "is_timestamp": self.is_timestamp,
            "outside": self.outside,
            "ok": self.ok,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class ValidationReport:
    signatures: tuple[SignatureReport, ...]
    ok: bool
    # In words: what the recipient should know beyond the verdict (earlier
    # signatures not issued by the hospital).
    notes: tuple[str, ...] = ()

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the file is not valid, in words (empty when it is)."""
        if self.ok:
            return ()
        found = [p for s in self.signatures if not (s.outside and acceptable_outside(s))
                 for p in s.problems]
        if not self.signatures:
            found.append(N_("the file carries no signature"))
        return tuple(dict.fromkeys(found)) or (N_("the last signature does not cover the whole file"),)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "signatures": [s.as_json() for s in self.signatures],
                "notes": list(self.notes), "problems": list(self.problems)}


NOT_TRUSTED = N_("the signer's certificate is not trusted")
TIMESTAMP_NOT_TRUSTED = N_("the signature's timestamp is not valid or not trusted")


def acceptable_outside(report: SignatureReport) -> bool:
    """An earlier outside signature that is intact and mathematically valid: only
    its trust (and its own timestamp's) is unknown to the hospital."""
    return report.intact and (report.valid or report.is_timestamp) and set(report.problems) <= {
        NOT_TRUSTED, TIMESTAMP_NOT_TRUSTED}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
