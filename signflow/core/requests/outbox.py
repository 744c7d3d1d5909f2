"""Background work recorded in the same transaction as the change that needs it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from signflow.models import Job, JobKind, JobStatus


def enqueue(session: Session, kind: JobKind, payload: dict[str, Any], *, now: datetime) -> Job:
    job = Job(kind=kind, payload=json.dumps(payload, sort_keys=True), status=JobStatus.PENDING,
              run_at=now, attempts=0, created_at=now)
    session.add(job)
    session.flush()
    return job
