"""The `signflow` command. Exit 0 on success; errors are one line on stderr."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from signflow import logs
from signflow.cli import ops, pki, setup, users, verify
from signflow.cli.context import CliError
from signflow.core.errors import SignflowError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (setup, users, verify, ops, pki):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging.INFO if args.verbose else logging.WARNING)
    for name in ("pyhanko", "pyhanko_certvalidator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return int(args.func(args))
    except (SignflowError, CliError) as exc:
        print(f"signflow: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2 if isinstance(exc, CliError) else 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, never a traceback
        print(f"signflow: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
