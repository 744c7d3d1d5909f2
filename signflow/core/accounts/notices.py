"""Telling a person about their own account (a change awaiting approval or approved,
an enrolment code): a job in the same transaction as the change, sent by the worker
through the notifier to the person's own e-mail or phone.

Subject and body are message ids (`N_()`) with their parameters, translated by the
worker in the site language when it sends them (`body_of`, `subject_of`)."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from sqlalchemy.orm import Session

from signflow.core.i18n import Translator
from signflow.core.storage import decrypt_secret, encrypt_secret
from signflow.models import Job, JobKind, JobStatus, User

CODE_PLACEHOLDER = "{code}"


def _purpose(user_id: int) -> str:
    return f"account-notice:{user_id}"


def tell(
    session: Session, user: User, *, subject: str, body: str, now: datetime, path: str = "/",
    secret: str | None = None, master_key: bytes | None = None, channel_id: int | None = None,
    params: dict[str, str] | None = None, phrases: dict[str, str] | None = None,
) -> Job | None:
    """Queue a message for `user` (None when they have no address to send it to).

    `channel_id`: send it through that contact channel only, verified or not (its
    verification code), instead of the account's own address.

    `secret`: a one-time code put in the body at `{code}` by the worker only; until then
    the job holds it sealed by the storage master key, and the worker drops it once sent.

    `params` fill the body's %(name)s placeholders as they are; `phrases` too, but are
    message ids themselves, translated with the body."""
    if channel_id is None and not (user.email or user.phone):
        return None
    payload: dict[str, str | int] = {"user": user.id, "subject": subject, "body": body, "path": path}
    if params or phrases:
        payload["params"] = json.dumps(params or {}, sort_keys=True)
        payload["phrases"] = json.dumps(phrases or {}, sort_keys=True)
    if channel_id is not None:
        payload["channel"] = channel_id
    if secret is not None:
        if master_key is None:
            raise ValueError("a secret needs the master key that seals it")
        payload["sealed"] = base64.b64encode(
            encrypt_secret(master_key, secret.encode(), purpose=_purpose(user.id))).decode()
    job = Job(kind=JobKind.ACCOUNT_NOTICE, payload=json.dumps(payload, sort_keys=True),
              status=JobStatus.PENDING, run_at=now, attempts=0, created_at=now)
    session.add(job)
    session.flush()
    return job


def subject_of(payload: dict[str, object], t: Translator) -> str:
    return t(str(payload.get("subject", "")))


def body_of(payload: dict[str, object], master_key: bytes, t: Translator | None = None) -> str:
    """The text to send: the body in `t`'s language, with the sealed code (if any) put in."""
    t = t or Translator("en")
    params: dict[str, object] = dict(json.loads(str(payload.get("params") or "{}")))
    params.update({k: t(str(v)) for k, v in json.loads(str(payload.get("phrases") or "{}")).items()})
    body = t(str(payload.get("body", "")), **params)
    sealed = payload.get("sealed")
    if isinstance(sealed, str):
        code = decrypt_secret(master_key, base64.b64decode(sealed),
                              purpose=_purpose(int(str(payload["user"])))).decode()
        body = body.replace(CODE_PLACEHOLDER, code)
    return body


def scrubbed(payload: dict[str, object]) -> str:
    """The payload to keep once the message went out: without the sealed code."""
    return json.dumps({k: v for k, v in payload.items() if k != "sealed"}, sort_keys=True)
