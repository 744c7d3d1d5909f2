"""The closed vocabularies of the domain: states, roles, urgencies, job kinds and
statuses, and every audit action. Stored as their text values."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    TECHNICIAN = "technician"
    PHYSICIAN = "physician"
    RECIPIENT = "recipient"
    AUDITOR = "auditor"
    ADMIN = "admin"


class ServiceRole(StrEnum):
    """Who acts when no user does: the service itself, an operator at the command
    line, an unidentified caller (a login attempt)."""

    SYSTEM = "system"
    OPERATOR = "operator"
    ANONYMOUS = "anonymous"


class RequestState(StrEnum):
    PENDING = "pending"
    SIGNED = "signed"
    DELIVERED = "delivered"
    RECEIVED = "received"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self not in (RequestState.PENDING, RequestState.SIGNED, RequestState.DELIVERED)


class Urgency(StrEnum):
    EMERGENCY = "emergency"
    URGENT = "urgent"
    ROUTINE = "routine"


class JobKind(StrEnum):
    NOTIFY = "notify"
    CHECKPOINT = "checkpoint"


class NotifyEvent(StrEnum):
    """What a notification job tells its recipients about a request."""

    CREATED = "created"
    ESCALATED = "escalated"
    DELEGATED = "delegated"
    DELIVERED = "delivered"
    DECLINED = "declined"
    EXPIRED = "expired"
    RECEIVED = "received"
    FAILED = "failed"


class JobStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class AuditAction(StrEnum):
    """Every kind of audit entry. The auditor's filter and the README list come from here."""

    ACCESS_DENIED = "access.denied"
    API_TOKEN_CREATED = "api_token.created"
    API_TOKEN_REVOKED = "api_token.revoked"
    AUDIT_EXPORTED = "audit.exported"
    BACKUP_CREATED = "backup.created"
    BACKUP_RESTORED = "backup.restored"
    CREDENTIAL_ENROLLED = "credential.enrolled"
    CREDENTIAL_PIN_CHANGED = "credential.pin_changed"
    CREDENTIAL_REVOKED = "credential.revoked"
    CREDENTIAL_UNBLOCK_FAILED = "credential.unblock_failed"
    CREDENTIAL_UNBLOCKED = "credential.unblocked"
    DEMO_SEEDED = "demo.seeded"
    DESTINATION_CREATED = "destination.created"
    DOCUMENT_ARCHIVE_TIMESTAMPED = "document.archive_timestamped"
    DOCUMENT_DOWNLOADED = "document.downloaded"
    DOCUMENT_PURGED = "document.purged"
    DOCUMENT_VIEWED = "document.viewed"
    EVIDENCE_GENERATED = "evidence.generated"
    KEYS_CREATED = "keys.created"
    KEYS_MOVED_TO_TOKEN = "keys.moved_to_token"
    KEYS_TSA_RENEWED = "keys.tsa_renewed"
    LOGIN_FAILED = "login.failed"
    LOGIN_PASSWORD_ACCEPTED = "login.password_accepted"
    LOGIN_SECOND_FACTOR_FAILED = "login.second_factor_failed"
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_THROTTLED = "login.throttled"
    LOGOUT = "logout"
    MFA_ENABLED = "mfa.enabled"
    MFA_RESET = "mfa.reset"
    NOTIFICATION_FAILED = "notification.failed"
    NOTIFICATION_SENT = "notification.sent"
    REQUEST_CANCELLED = "request.cancelled"
    REQUEST_CREATED = "request.created"
    REQUEST_DECLINED = "request.declined"
    REQUEST_DELEGATED = "request.delegated"
    REQUEST_DELIVERED = "request.delivered"
    REQUEST_ESCALATED = "request.escalated"
    REQUEST_EXPIRED = "request.expired"
    REQUEST_FAILED = "request.failed"
    REQUEST_RECEIVED = "request.received"
    REQUEST_SIGNED = "request.signed"
    REQUEST_SIGNING_FAILED = "request.signing_failed"
    REQUEST_STAMP_PLACED = "request.stamp_placed"
    REQUEST_TAKEN = "request.taken"
    ROTA_GROUP_CREATED = "rota.group_created"
    ROTA_SHIFT_ADDED = "rota.shift_added"
    ROTA_SHIFT_REMOVED = "rota.shift_removed"
    SIGNATURE_PIN_REJECTED = "signature.pin_rejected"
    USER_CREATED = "user.created"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
