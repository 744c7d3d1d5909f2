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
    # A system, not a person: uses API tokens only, bound to one destination (it
    # receives like a recipient) or one on-call group (it submits like a technician).
    INTEGRATION = "integration"
    # Runs the service: turnaround statistics only (signflow.core.stats), never a
    # document, a request's title or a person's name.
    MANAGER = "manager"


class ServiceRole(StrEnum):
    """Who acts when no user does: the service itself, an operator at the command
    line, an unidentified caller (a login attempt)."""

    SYSTEM = "system"
    OPERATOR = "operator"
    ANONYMOUS = "anonymous"


class ApiScope(StrEnum):
    """What an API token may do; a token carries a set of these (stored as text:
    adding a member needs no migration). Each API endpoint names the one it needs."""

    SUBMIT = "submit"
    READ = "read"
    DOWNLOAD = "download"
    ACKNOWLEDGE = "acknowledge"
    TIMESTAMP = "timestamp"
    # The turnaround statistics (GET /api/v1/stats): aggregate figures, no request.
    STATS = "stats"


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
    # A message about a person's own account (a change awaiting approval, an enrolment code).
    ACCOUNT_NOTICE = "account_notice"


class HookKind(StrEnum):
    """What a subscription posts: Standard Webhooks events, or FHIR transaction Bundles."""

    WEBHOOK = "webhook"
    FHIR = "fhir"


class HookStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Not answered 2xx within the retry window (24 h): an admin may replay it.
    FAILED = "failed"


class ChangeKind(StrEnum):
    """What an administrator proposed and a second administrator must approve (four eyes)."""

    CREATE_USER = "create_user"
    ENABLE_USER = "enable_user"
    UPDATE_USER = "update_user"


class ChangeStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


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
    # The rota and the escalation policy (signflow.core.requests.followup).
    REPAGED = "repaged"
    HANDED_OVER = "handed_over"
    ACK_REMINDER = "ack_reminder"
    ACK_OVERDUE = "ack_overdue"
    # To the administrators: a request reached a group with nobody on call.
    NOBODY_ON_CALL = "nobody_on_call"
    # To the administrators: nobody at a rung could be reached (no verified channel, or
    # every channel failed), so the request moved up at once.
    NOBODY_REACHABLE = "nobody_reachable"


class FollowUpKind(StrEnum):
    """What the worker did once for a request (a repeat page, a handover, a reminder),
    recorded so that no worker does it twice."""

    REPEAT_PAGE = "repeat_page"
    HANDOVER = "handover"
    ACK_REMINDER = "ack_reminder"
    ACK_OVERDUE = "ack_overdue"


class ChannelKind(StrEnum):
    """How a person is reached: a contact channel's kind, and the key the dispatch of
    a page is looked up by (one sender per kind)."""

    EMAIL = "email"
    SMS = "sms"
    PAGER = "pager"
    PUSH = "push"


class DeliveryStatus(StrEnum):
    """One message to one recipient through one channel. FAILED with a
    `next_attempt_at` is retried then (backoff); without one it is given up.
    SKIPPED: an earlier channel of the same recipient reached them."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class JobStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class PasskeyPurpose(StrEnum):
    """What a WebAuthn ceremony's challenge was issued for: one is never accepted for another."""

    REGISTER = "register"
    LOGIN = "login"  # passwordless: the passkey (with user verification) is both factors
    SECOND_FACTOR = "second_factor"  # after the password
    STEP_UP = "step_up"  # a fresh factor on the sign page


class AuditAction(StrEnum):
    """Every kind of audit entry. The auditor's filter and the README list come from here."""

    ACCESS_DENIED = "access.denied"
    ADMIN_CHANGE_APPROVED = "admin.change_approved"
    ADMIN_CHANGE_PROPOSED = "admin.change_proposed"
    ADMIN_CHANGE_REJECTED = "admin.change_rejected"
    API_TOKEN_CREATED = "api_token.created"
    API_TOKEN_REVOKED = "api_token.revoked"
    API_TOKEN_USED = "api_token.used"
    AUDIT_EXPORTED = "audit.exported"
    BACKUP_CREATED = "backup.created"
    BACKUP_RESTORED = "backup.restored"
    CONTACT_ADDED = "contact.added"
    CONTACT_REMOVED = "contact.removed"
    CONTACT_REORDERED = "contact.reordered"
    CONTACT_VERIFICATION_FAILED = "contact.verification_failed"
    CONTACT_VERIFIED = "contact.verified"
    CREDENTIAL_ENROLLED = "credential.enrolled"
    CREDENTIAL_ENROLMENT_CODE_FAILED = "credential.enrolment_code_failed"
    CREDENTIAL_ENROLMENT_CODE_SENT = "credential.enrolment_code_sent"
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
    IDENTITY_LINKED = "identity.linked"
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
    PAGE_FAILED = "page.failed"
    PAGE_SENT = "page.sent"
    PASSKEY_REFUSED = "passkey.refused"
    PASSKEY_REGISTERED = "passkey.registered"
    PASSKEY_REVOKED = "passkey.revoked"
    PASSWORD_CHANGED = "password.changed"
    PUSH_DEVICE_ADDED = "push.device_added"
    PUSH_DEVICE_GONE = "push.device_gone"
    PUSH_DEVICE_REMOVED = "push.device_removed"
    PUSH_DEVICE_VERIFIED = "push.device_verified"
    PUSH_VERIFICATION_FAILED = "push.verification_failed"
    RECOVERY_CODE_REFUSED = "recovery_code.refused"
    RECOVERY_CODE_USED = "recovery_code.used"
    RECOVERY_CODES_GENERATED = "recovery_codes.generated"
    REQUEST_ACK_OVERDUE = "request.ack_overdue"
    REQUEST_ACK_REMINDED = "request.ack_reminded"
    REQUEST_CANCELLED = "request.cancelled"
    REQUEST_CREATED = "request.created"
    REQUEST_DECLINED = "request.declined"
    REQUEST_DELEGATED = "request.delegated"
    REQUEST_DELIVERED = "request.delivered"
    REQUEST_ESCALATED = "request.escalated"
    REQUEST_EXPIRED = "request.expired"
    REQUEST_FAILED = "request.failed"
    REQUEST_HANDED_OVER = "request.handed_over"
    REQUEST_NOBODY_ON_CALL = "request.nobody_on_call"
    REQUEST_RECEIVED = "request.received"
    REQUEST_REPAGED = "request.repaged"
    REQUEST_SIGNED = "request.signed"
    REQUEST_SIGNING_FAILED = "request.signing_failed"
    REQUEST_STAMP_PLACED = "request.stamp_placed"
    REQUEST_TAKEN = "request.taken"
    ROTA_ABSENCE_MARKED = "rota.absence_marked"
    ROTA_GROUP_CREATED = "rota.group_created"
    ROTA_IMPORTED = "rota.imported"
    ROTA_POLICY_SET = "rota.policy_set"
    ROTA_SHIFT_ADDED = "rota.shift_added"
    ROTA_SHIFT_REMOVED = "rota.shift_removed"
    SIGNATURE_PIN_REJECTED = "signature.pin_rejected"
    STEP_UP_FAILED = "step_up.failed"
    STEP_UP_REQUIRED = "step_up.required"
    STEP_UP_SUCCEEDED = "step_up.succeeded"
    USER_CREATED = "user.created"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
    USER_UPDATED = "user.updated"
    WEBHOOK_REPLAYED = "webhook.replayed"
    WEBHOOK_SUBSCRIBED = "webhook.subscribed"
    WEBHOOK_TESTED = "webhook.tested"
    WEBHOOK_UNSUBSCRIBED = "webhook.unsubscribed"



# What administrators (web) and operators (command line) do to accounts, keys, the
# rota and the service: the auditor's "administrative actions" filter.
ADMINISTRATIVE_ACTIONS: frozenset[AuditAction] = frozenset({
    AuditAction.ADMIN_CHANGE_APPROVED, AuditAction.ADMIN_CHANGE_PROPOSED,
    AuditAction.ADMIN_CHANGE_REJECTED, AuditAction.API_TOKEN_CREATED, AuditAction.API_TOKEN_REVOKED,
    AuditAction.BACKUP_CREATED, AuditAction.BACKUP_RESTORED, AuditAction.CREDENTIAL_REVOKED,
    AuditAction.DEMO_SEEDED, AuditAction.DESTINATION_CREATED, AuditAction.DOCUMENT_PURGED,
    AuditAction.KEYS_CREATED, AuditAction.KEYS_MOVED_TO_TOKEN, AuditAction.KEYS_TSA_RENEWED,
    AuditAction.MFA_RESET, AuditAction.ROTA_GROUP_CREATED, AuditAction.ROTA_SHIFT_ADDED,
    AuditAction.ROTA_SHIFT_REMOVED, AuditAction.ROTA_IMPORTED, AuditAction.ROTA_POLICY_SET,
    AuditAction.ROTA_ABSENCE_MARKED, AuditAction.USER_CREATED, AuditAction.USER_DISABLED,
    AuditAction.USER_ENABLED, AuditAction.USER_UPDATED, AuditAction.WEBHOOK_REPLAYED,
    AuditAction.WEBHOOK_SUBSCRIBED, AuditAction.WEBHOOK_TESTED, AuditAction.WEBHOOK_UNSUBSCRIBED,
})
