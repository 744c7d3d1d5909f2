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
from signflow.models.audit_tree import AuditTreeNode, AuditVerification
from signflow.models.columns import TextEnum, UTCDateTime
from signflow.models.identity import (
    ExternalIdentity,
    RecoveryCode,
    WebAuthnChallenge,
    WebAuthnCredential,
)
from signflow.models.integration import (
    IdempotencyKey,
    RequestReference,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from signflow.models.records import AuditEntry, AuditHead, Blob, Checkpoint, Job, Setting
from signflow.models.requests import OnCallGroup, RotaShift, RouteStep, SignatureRequest
from signflow.models.signing import Signature, SignatureActivation, SigningCredential

# By concern, as the modules hold them.
__all__ = [
    "Base", "TextEnum", "UTCDateTime",
    "ApiToken", "Destination", "EnrolmentCode", "LoginThrottle", "PendingChange", "RateLimit", "User",
    "ExternalIdentity", "RecoveryCode", "WebAuthnChallenge", "WebAuthnCredential",
    "OnCallGroup", "RotaShift", "RouteStep", "SignatureRequest",
    "Signature", "SignatureActivation", "SigningCredential",
    "AuditEntry", "AuditHead", "Blob", "Checkpoint", "Job", "Setting",
    "IdempotencyKey", "RequestReference", "WebhookAttempt", "WebhookDelivery", "WebhookSubscription",
    "AuditTreeNode", "AuditVerification",
]
