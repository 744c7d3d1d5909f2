"""schemathesis against the served OpenAPI document: for every operation, generated
calls (valid and not) with real tokens never get a 5xx, and every response matches
the document (status code, content type, body schema). Bounded: a few examples per
operation."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import integration_token

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = 8


def test_every_operation_conforms_and_never_fails(app, svc, world, delivered):
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("fuzzed once, on PostgreSQL (the production database)")
    lab = integration_token(svc, name="lab", group_id=world.group, scopes=("submit", "read", "download"))
    his = integration_token(svc, name="his", destination_id=world.destination,
                            scopes=("read", "download", "acknowledge"))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /requests", "GET /requests/{request_id}/fhir"}
    for operation in operations:
        token = lab.token if operation.method.upper() == "POST" and operation.path == "/requests" \
            else his.token

        conforms(operation, f"Bearer {token}")()


def conforms(operation, auth: str):  # noqa: ANN001, ANN201 - a schemathesis operation, a test
    """One operation's fuzzing, its token bound here (hypothesis refuses defaults)."""

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case) -> None:  # noqa: ANN001 - a schemathesis Case
        case.call_and_validate(headers={"Authorization": auth}, checks=CHECKS)

    return call
