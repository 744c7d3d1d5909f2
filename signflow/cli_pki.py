"""`signflow` subcommands for pki (registered by signflow.cli.build_parser)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the `signflow` parser."""
