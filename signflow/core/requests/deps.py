"""The adapters and settings the request workflow needs (`Deps`), wired by the app factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time

from pyhanko.sign.timestamps import TimeStamper

from signflow.core.pki import keystore as pki
from signflow.core.requests import oncall as oncall
from signflow.core.storage import BlobStore


@dataclass(frozen=True)
class Deps:
    """Adapters and settings the workflow needs, wired by the app factory."""

    keys: pki.KeyMaterial
    blobs: BlobStore
    timestamper: TimeStamper
    timezone: str
    pades_level: str
    activation_key: bytes
    # Keys the login throttle's counters and the device cookies (see accounts.throttle).
    login_key: bytes
    deadline_minutes: Mapping[str, int]
    escalation_levels: int = oncall.LADDER_LEVELS
    ack_reminder_minutes: int = 30
    ack_alert_minutes: int = 60
    # "Tonight" on the on-call board (SIGNFLOW_NIGHT_STARTS_AT, local time).
    night_starts: time = time(20, 0)
    # The site language (SIGNFLOW_LANGUAGE): the stamp's, the evidence report's, the
    # worker's messages. English, the message ids' own, when not wired.
    language: str = "en"
