"""ORM tables. Times are stored as UTC and always come back timezone-aware.

The tables live in one module per concern (columns, accounts, requests, signing,
records); every name stays importable from here, where the rest of the code and
`metadata.create_all` look for them.
"""

from signflow.db import Base
from signflow.models.accounts import (
    ApiToken,
    Destination,
    EnrolmentCode,
    LoginThrottle,
    PendingChange,
    RateLimit,
    User,
)
from signflow.models.columns import E, TextEnum, UTCDateTime
from signflow.models.records import AuditEntry, AuditHead, Blob, Checkpoint, Job, Setting
from signflow.models.requests import OnCallGroup, RotaShift, RouteStep, SignatureRequest
from signflow.models.signing import Signature, SignatureActivation, SigningCredential

__all__ = [
    "ApiToken",
    "AuditEntry",
    "AuditHead",
    "Base",
    "Blob",
    "Checkpoint",
    "Destination",
    "E",
    "EnrolmentCode",
    "Job",
    "LoginThrottle",
    "OnCallGroup",
    "PendingChange",
    "RateLimit",
    "RotaShift",
    "RouteStep",
    "Setting",
    "Signature",
    "SignatureActivation",
    "SignatureRequest",
    "SigningCredential",
    "TextEnum",
    "UTCDateTime",
    "User",
]
