"""`signflow backup`, `restore`, `purge` and `check`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from signflow.cli.context import OPERATOR, operator_services, settings
from signflow.config import Settings
from signflow.core.audit import checkpoints
from signflow.core.audit import log as audit
from signflow.core.ops import backup, consistency, restore, retention
from signflow.models import AuditAction

BAR_WIDTH = 30


def _blob_root(settings: Settings) -> Path | None:
    return settings.instance_path / "blobs" if settings.blob_backend == "file" else None


def progress_bar(label: str) -> Callable[[int, int], None] | None:
    """A `\\r[####    ] 42%` bar on stderr, only when a person is watching."""
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = 100 if total == 0 else done * 100 // total
        if percent == last[0]:
            return
        last[0] = percent
        filled = BAR_WIDTH * percent // 100
        sys.stderr.write(f"\r{label} [{'#' * filled}{' ' * (BAR_WIDTH - filled)}] {percent:3d}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def cmd_backup(args: argparse.Namespace) -> int:
    with operator_services() as svc:
        config = svc.settings
        result = backup.backup(
            config.database_url,
            keys_path=config.keys_path,
            blob_root=_blob_root(config),
            out=Path(args.out),
            include_private_keys=args.include_private_keys,
            now=svc.clock(),
            progress=progress_bar("backup"),
        )
        with svc.sessions() as session, session.begin():
            audit.append(session, now=svc.clock(), actor=OPERATOR, action=AuditAction.BACKUP_CREATED,
                         sha256=result.sha256, rows=result.rows,
                         private_keys=args.include_private_keys)
    private = "with" if args.include_private_keys else "without"
    print(f"backup written to {result.path}: {result.rows} rows, {result.blob_files} blob "
          f"file(s), {len(result.key_files)} key file(s) ({private} private keys), "
          f"schema {result.schema_revision}, sha256 {result.sha256}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    config = settings()
    config.instance_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.keys_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    result = restore.restore(Path(args.archive), database_url=config.database_url,
                            keys_path=config.keys_path, blob_root=_blob_root(config),
                            progress=progress_bar("restore"))
    print(f"restored {result.rows} rows, {result.blob_files} blob file(s), "
          f"{len(result.key_files)} key file(s) (schema {result.schema_revision})")
    # The proof a restore worked: the log verifies and every document decrypts.
    with operator_services(config) as svc, svc.sessions() as session, session.begin():
        verified = checkpoints.verify_log(session, public_key=svc.keys.audit_key.public_key(),
                                    origin=config.audit_origin)
        problems = consistency.check(session, svc.blobs)
        audit.append(session, now=svc.clock(), actor=OPERATOR, action=AuditAction.BACKUP_RESTORED,
                     rows=result.rows)
    print(verified.line())
    for problem in problems:
        print(problem.line(), file=sys.stderr)
    return 0 if verified.ok and not problems else 1


def cmd_purge(args: argparse.Namespace) -> int:
    with operator_services() as svc, svc.sessions() as session, session.begin():
        days = svc.settings.retention_days
        purged = retention.purge(session, svc.deps, now=svc.clock(), retention_days=days,
                                 actor=OPERATOR, dry_run=args.dry_run, previews=svc.previews)
    verb = "would purge" if args.dry_run else "purged"
    ids = ", ".join(f"#{i}" for i in purged) or "none"
    print(f"{verb} {len(purged)} request(s) older than {days} days: {ids}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with operator_services() as svc, svc.sessions() as session:
        problems = consistency.check(session, svc.blobs)
        session.rollback()
    for problem in problems:
        print(problem.line())
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print("consistent: every request, signature, document and audit entry agree")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the `signflow` parser."""
    p = sub.add_parser("backup", help="write a consistent backup (tar file) of this instance")
    p.add_argument("out", help="the .tar file to create")
    p.add_argument("--include-private-keys", action="store_true",
                   help="also copy the private keys and secrets (still encrypted)")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="restore a backup into an empty instance")
    p.add_argument("archive", help="a .tar file written by `signflow backup`")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("purge", help="remove document contents past the retention period")
    p.add_argument("--dry-run", action="store_true", help="list what would be purged")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("check", help="check requests, signatures, documents and audit agree")
    p.set_defaults(func=cmd_check)
