"""The ORM tables and the enums their typed columns hold."""

from signflow.models.enums import AuditAction, JobKind, JobStatus, RequestState, Role, Urgency
from signflow.models.tables import (
    ApiToken,
    AuditEntry,
    AuditHead,
    Blob,
    Checkpoint,
    Destination,
    Job,
    OnCallGroup,
    RotaShift,
    Setting,
    Signature,
    SignatureActivation,
    SignatureRequest,
    SigningCredential,
    TextEnum,
    User,
    UTCDateTime,
)

__all__ = [
    "ApiToken", "AuditAction", "AuditEntry", "AuditHead", "Blob", "Checkpoint", "Destination",
    "Job", "JobKind", "JobStatus", "OnCallGroup", "RequestState", "Role", "RotaShift", "Setting",
    "Signature", "SignatureActivation", "SignatureRequest", "SigningCredential", "TextEnum",
    "UTCDateTime", "Urgency", "User",
]
