"""The one error hierarchy. HTTP status mapping lives in signflow.web.errors only.

Every message is safe to show to the user who caused it: no secret, no
internal path, no stack trace. A message is an English message id (marked `N_()`
where it is raised, so that `pybabel extract` finds it) with `%(name)s`
placeholders filled from `params`: `message` is the English text, and the web
layer shows `msgid` translated in the reader's language (web/errors.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress


class SignflowError(Exception):
    """Base of every domain error; `message` is user-facing."""

    code = "error"
    # True when the changes flushed before raising must still be committed
    # (failure counters, their audit entries); everything else rolls back.
    commit_changes = False

    def __init__(self, message: str, *, code: str | None = None,
                 params: Mapping[str, object] | None = None) -> None:
        self.msgid = message
        self.params: dict[str, object] = dict(params or {})
        if self.params:
            # A placeholder the params lack: the message id as it is.
            with suppress(KeyError, ValueError, TypeError):
                message = message % self.params
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(SignflowError):
    code = "invalid-input"


class InvalidDocument(InvalidInput):
    code = "invalid-document"


class DocumentTooLarge(InvalidInput):
    code = "document-too-large"


class UnsupportedMediaType(InvalidInput):
    """The body is not in the content type the endpoint takes (415)."""

    code = "unsupported-media-type"


class AuthenticationFailed(SignflowError):
    code = "authentication-failed"
    commit_changes = True


class Throttled(SignflowError):
    code = "throttled"
    commit_changes = True

    def __init__(self, message: str, *, retry_after: int = 60,
                 params: Mapping[str, object] | None = None) -> None:
        super().__init__(message, params=params)
        self.retry_after = retry_after


class Forbidden(SignflowError):
    code = "forbidden"


class AccessDenied(Forbidden):
    """A role tried a page it has no access to: refused, and the attempt is audited."""

    commit_changes = True


class NotFound(SignflowError):
    code = "not-found"


class Conflict(SignflowError):
    """The object is not in a state that allows the action (already signed...)."""

    code = "conflict"


class WrongPin(SignflowError):
    code = "wrong-pin"
    commit_changes = True


class WrongCode(InvalidInput):
    """A wrong one-time code (enrolment): the failed attempt is counted and kept."""

    code = "wrong-code"
    commit_changes = True


class CredentialBlocked(SignflowError):
    code = "credential-blocked"
    commit_changes = True


class ServiceUnavailable(SignflowError):
    """A dependency (TSA, token, notifier) failed; nothing was changed."""

    code = "service-unavailable"


class DirectoryUnavailable(ServiceUnavailable):
    """The hospital directory could not be asked (down, TLS refused): no account was
    created or changed; the failed attempt's audit entry is kept."""

    code = "directory-unavailable"
    commit_changes = True


class AwaitingApproval(AuthenticationFailed):
    """The account exists but waits for an administrator's approval (four eyes): the
    login is refused, and what the attempt created (the account, the pending change) is kept."""

    code = "awaiting-approval"


class PushNotDelivered(ServiceUnavailable):
    """The push that verifies a new device failed: the device is not kept (its changes
    were rolled back to a savepoint), but the attempt counts against the rate limit."""

    code = "push-not-delivered"
    commit_changes = True


class SignatureNotDelivered(SignflowError):
    """The signature just made did not validate: nothing was delivered, the request
    stays pending (sign again, or decline); the failure and its audit entry are kept."""

    code = "signature-not-valid"
    commit_changes = True


class ConfigurationError(SignflowError):
    code = "configuration-error"


class StorageCorrupted(SignflowError):
    """Stored bytes failed their integrity check (tag, hash or missing file): never served."""

    code = "storage-corrupted"


class AuditIntegrityError(SignflowError):
    """The audit log no longer matches what the service signed; nothing more is signed."""

    code = "audit-integrity"
