"""`signflow verify FILE` and `signflow audit verify|export`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cryptography import x509

from signflow import auditverify
from signflow.cli.context import OPERATOR, CliError, operator_services, settings
from signflow.config import Settings
from signflow.core.audit import checkpoints
from signflow.core.audit import export as audit_export
from signflow.core.clock import utcnow
from signflow.core.pades import validate as validation
from signflow.core.pki import crl as revocation
from signflow.core.pki import keyfiles


def cmd_verify(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    config = settings()
    root_file = config.keys_path / keyfiles.ROOT_CERT
    if not root_file.is_file():
        raise CliError(f"no hospital root certificate in {config.keys_path} (set SIGNFLOW_KEYS)")
    root = x509.load_pem_x509_certificate(root_file.read_bytes())
    report = validation.validate_pdf(path.read_bytes(), trust_roots=[root],
                                  crls=_published_crls(config), now=utcnow())
    if args.json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
        return 0 if report.ok else 1
    if not report.signatures:
        raise CliError(f"{path}: no signature in this PDF")
    for sig in report.signatures:
        kind = "document timestamp" if sig.is_timestamp else f"signed by {sig.signer}"
        when = sig.timestamp_time or sig.signing_time
        flags = ", ".join([
            "intact" if sig.intact else "MODIFIED",
            "trusted" if sig.trusted else "NOT TRUSTED",
            *(["REVOKED"] if sig.revoked else []),
            f"coverage {sig.coverage}",
            *([f"PAdES {sig.pades_level}"] if sig.pades_level else []),
        ])
        print(f"{'OK ' if sig.ok else 'BAD'} {kind}, {when.isoformat() if when else 'no time'}: {flags}")
        for problem in sig.problems:
            print(f"    {problem}")
    for note in report.notes:
        print(f"note: {note}")
    print("valid" if report.ok else "NOT VALID")
    return 0 if report.ok else 1


def _published_crls(config: Settings) -> list[bytes]:
    """CRLs from the live service when there is one (revocations known to us); the
    file's own embedded validation data otherwise."""
    try:
        with operator_services(config) as svc, svc.sessions() as session, session.begin():
            return [revocation.crl(session, svc.keys, issuer=i, now=utcnow()) for i in ("root", "issuing")]
    except Exception:  # verify must work from a bare keys folder too
        return []


def _service_verifier_key(config: Settings) -> str | None:
    """The audit key this service signs with, from the public half in the keys folder
    (no passphrase needed), so that a bundle re-signed with another key fails."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    path = config.keys_path / keyfiles.AUDIT_PUB
    if not path.is_file():
        return None
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise CliError(f"{path} is not an Ed25519 public key")
    return auditverify.verifier_key(config.audit_origin, key)


def cmd_audit(args: argparse.Namespace) -> int:
    if args.audit_command == "verify" and args.bundle:
        trusted = args.trusted_key or _service_verifier_key(settings())
        argv = [args.bundle, *sum((["--checkpoint", c] for c in args.checkpoint or []), [])]
        if trusted:
            argv += ["--trusted-key", trusted]
        return auditverify.main(argv)
    with operator_services() as svc:
        if args.audit_command == "verify":
            # A pass is recorded: the next --incremental run starts from it.
            with svc.sessions() as session, session.begin():
                public_key, origin = svc.keys.audit_key.public_key(), svc.settings.audit_origin
                if args.incremental:
                    result = checkpoints.verify_log_since_verified(
                        session, public_key=public_key, origin=origin, now=svc.clock())
                else:
                    result = checkpoints.verify_log(session, public_key=public_key, origin=origin,
                                                    now=svc.clock())
            if result.ok:
                print(result.line())
                return 0
            print(result.line(), file=sys.stderr)
            return 1
        with svc.sessions() as session, session.begin():
            exported = audit_export.export_bundle(session, Path(args.out), signing_key=svc.keys.audit_key,
                                           origin=svc.settings.audit_origin, now=svc.clock(),
                                           actor=OPERATOR)
    print(f"exported {exported.size} entries and {exported.checkpoint_count} checkpoint(s) "
          f"to {exported.path}; verifier key {exported.verifier_key}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the `signflow` parser."""
    p = sub.add_parser("verify", help="validate the signatures of a PDF")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("audit", help="verify or export the audit log")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify")
    v.add_argument("bundle", nargs="?")
    v.add_argument("--checkpoint", action="append", help="a checkpoint you kept earlier")
    v.add_argument("--incremental", action="store_true",
                   help="live log only: check what was appended since the last verification "
                        "that passed (in full if there was none)")
    v.add_argument("--trusted-key", help="verifier key string or audit-key.pub the bundle must "
                                         "be signed with (default: this service's key, if known)")
    e = asub.add_parser("export")
    e.add_argument("out")
    p.set_defaults(func=cmd_audit)
