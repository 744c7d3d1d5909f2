"""POST /api/v1/requests: idempotent submissions (also under concurrent retries), the
upload page's checks and messages, problem documents with stable types, filters and
cursor paging, the timeline, and the per-token rate limit (database and Redis)."""

from __future__ import annotations

import io
import threading
import uuid

import pytest
import redis
from sqlalchemy import select

from signflow.app import create_app
from signflow.core.integration import limiter
from signflow.models import IdempotencyKey, RequestReference, RequestState, SignatureRequest
from tests.factories import count, integration_token
from tests.pdfs import make_pdf

PROBLEM = "urn:signflow:problem:"


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def lab_token(svc, world, scopes=("submit", "read", "download")):
    return integration_token(svc, name="lab", group_id=world.group, scopes=scopes)


def form(world, pdf: bytes | None = None, **extra: str) -> dict[str, object]:
    fields: dict[str, object] = {
        "document": (io.BytesIO(pdf if pdf is not None else make_pdf(1, "Lab result")), "result.pdf"),
        "group": str(world.group), "destination": str(world.destination), "urgency": "urgent",
        "title": "Lab result", "note": "Kidney panel", "external_reference": "LAB-2026-0001"}
    fields.update(extra)
    return {k: v for k, v in fields.items() if v != ""}


def post(api, token, data, key: str | None = None):
    headers = bearer(token) if key is None else bearer(token, **{"Idempotency-Key": key})
    return api.post("/api/v1/requests", data=data, headers=headers, content_type="multipart/form-data")


def assert_problem(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == "application/problem+json"
    body = resp.json
    assert body["type"] == PROBLEM + code and body["status"] == status and body["detail"]
    return body


def test_a_retry_returns_the_first_request_and_another_body_is_422(app, svc, world):
    lab = lab_token(svc, world)
    api = app.test_client()
    key = str(uuid.uuid4())
    pdf = make_pdf(1, "Lab result")
    first = post(api, lab.token, form(world, pdf), key)
    assert first.status_code == 201, first.get_data(as_text=True)
    assert first.json["external_reference"] == "LAB-2026-0001"
    assert first.headers["Location"].endswith(f"/api/v1/requests/{first.json['id']}")
    assert "Idempotent-Replayed" not in first.headers
    again = post(api, lab.token, form(world, pdf), key)
    assert again.status_code == 201 and again.json["id"] == first.json["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(svc, SignatureRequest) == 1
    # The same key with another file, or another field: refused, nothing made.
    assert_problem(post(api, lab.token, form(world, make_pdf(2, "Other")), key), 422,
                   "idempotency-key-reused")
    assert_problem(post(api, lab.token, form(world, pdf, urgency="emergency"), key), 422,
                   "idempotency-key-reused")
    assert count(svc, SignatureRequest) == 1
    # Another token's identical key is its own.
    other = integration_token(svc, name="lab", group_id=world.group, scopes=("submit",))
    assert post(api, other.token, form(world, pdf), key).json["id"] != first.json["id"]
    # A malformed key is refused before anything is read.
    assert_problem(post(api, lab.token, form(world, pdf), "bad key\u00e9"), 400, "invalid-input")

    status = api.get(f"/api/v1/requests/{first.json['id']}", headers=bearer(lab.token))
    assert status.json["state"] == RequestState.PENDING
    timeline = api.get(f"/api/v1/requests/{first.json['id']}/timeline", headers=bearer(lab.token))
    assert [e["event"] for e in timeline.json["events"]] == ["request.created"]


def test_a_failed_first_attempt_leaves_nothing_and_the_retry_creates(app, svc, world):
    lab = lab_token(svc, world)
    api = app.test_client()
    key = "retry-after-failure"
    assert_problem(post(api, lab.token, form(world, b"%PDF-1.7 not really"), key), 422,
                   "invalid-document")
    with svc.sessions() as s:
        assert s.scalar(select(IdempotencyKey)) is None
    assert count(svc, SignatureRequest) == 0
    made = post(api, lab.token, form(world, make_pdf(1, "Fixed")), key)
    assert made.status_code == 201


def test_concurrent_retries_make_one_request(app, svc, world):
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("concurrent inserts of one key are exercised on PostgreSQL")
    lab = lab_token(svc, world)
    pdf = make_pdf(1, "Lab result")
    start = threading.Barrier(4, timeout=30)
    answers: list[tuple[int, int, str | None]] = []
    lock = threading.Lock()

    def retry() -> None:
        client = app.test_client()
        start.wait()
        resp = post(client, lab.token, form(world, pdf), "same-key-four-times")
        with lock:
            answers.append((resp.status_code, resp.json["id"], resp.headers.get("Idempotent-Replayed")))

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 4 and {a[0] for a in answers} == {201}
    assert len({a[1] for a in answers}) == 1
    assert sorted(str(a[2]) for a in answers) == ["None", "true", "true", "true"]
    assert count(svc, SignatureRequest) == 1


def test_bad_input_is_a_clear_problem_and_creates_nothing(app, svc, world):
    lab = lab_token(svc, world)
    api = app.test_client()
    cases = [
        (form(world, group="abc"), 400, "invalid-input", "'group' must be an id"),
        (form(world, destination=""), 400, "invalid-input", "'destination' must be an id"),
        (form(world, destination="999999"), 400, "invalid-input", "destination service"),
        (form(world, group="999999"), 403, "forbidden", "its own on-call group"),
        (form(world, urgency="whenever"), 400, "invalid-input", "urgency"),
        (form(world, route=f"{world.group},{world.group}"), 400, "invalid-input", "both"),
        (form(world, group="", route=f"{world.group},999999"), 400, "invalid-input", "on-call group"),
        (form(world, stamp_position="top left"), 400, "invalid-input", "stamp_position"),
        (form(world, note="x" * 2001), 400, "invalid-input", "2000 characters"),
        (form(world, pdf=b"not a pdf at all"), 422, "invalid-document", ""),
    ]
    for data, status, code, words in cases:
        body = assert_problem(post(api, lab.token, data), status, code)
        assert words in body["detail"], body
    no_file = form(world)
    no_file.pop("document")
    assert "'document'" in assert_problem(post(api, lab.token, no_file), 400, "invalid-input")["detail"]
    json_body = api.post("/api/v1/requests", json={"group": world.group}, headers=bearer(lab.token))
    assert_problem(json_body, 415, "unsupported-media-type")
    # Over the limit: 413 with the limit, before any parsing.
    svc.settings = svc.settings.with_overrides(max_upload_mb=1)
    small = create_app(svc.settings, services=svc).test_client()
    big = make_pdf(1) + b"%" + b"0" * (1024 * 1024)
    body = assert_problem(post(small, lab.token, form(world, big)), 413, "document-too-large")
    assert body["max_bytes"] == 1024 * 1024 and "1 MB" in body["detail"]
    assert count(svc, SignatureRequest) == 0
    with svc.sessions() as s:
        assert s.scalar(select(RequestReference)) is None


def test_a_route_of_two_groups_and_a_stamp_position(app, svc, world):
    lab = lab_token(svc, world)
    made = post(app.test_client(), lab.token,
                form(world, group="", route=f"{world.group},{world.other_group}",
                     stamp_position="0,100,100,180,60"))
    assert made.status_code == 201, made.get_data(as_text=True)
    with svc.sessions() as s:
        req = s.get(SignatureRequest, made.json["id"])
        assert [step.group_id for step in req.route] == [world.group, world.other_group]
        assert req.stamp_position == "0,100,100,180,60"


def test_filters_and_cursor_paging(app, svc, world):
    lab = lab_token(svc, world)
    api = app.test_client()
    made = [post(api, lab.token, form(world, external_reference=f"LAB-{i}")).json["id"]
            for i in range(5)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/requests", query_string=query, headers=bearer(lab.token)).json
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert str(seen[-1]) not in cursor  # opaque, not the id itself
    assert seen == sorted(made, reverse=True) and pages == 3
    one = api.get("/api/v1/requests", query_string={"external_reference": "LAB-3"},
                  headers=bearer(lab.token)).json["items"]
    assert [i["id"] for i in one] == [made[3]]
    assert api.get("/api/v1/requests", query_string={"state": "delivered"},
                   headers=bearer(lab.token)).json["items"] == []
    for bad in ({"cursor": "not-a-cursor"}, {"limit": "0"}, {"limit": "1000"},
                {"state": "lost"}, {"created_after": "yesterday"}):
        assert api.get("/api/v1/requests", query_string=bad,
                       headers=bearer(lab.token)).status_code == 400, bad


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_each_token_is_rate_limited(app, svc, world, backend):
    if backend == "redis":
        url = "redis://127.0.0.1:6379/15"
        redis.Redis.from_url(url).flushdb()
        svc.api_limiter = limiter.RedisLimiter(url, per_minute=3)
    else:
        svc.api_limiter = limiter.DatabaseLimiter(per_minute=3)
    lab = lab_token(svc, world, scopes=("read",))
    other = lab_token(svc, world, scopes=("read",))
    api = app.test_client()
    # A call that fails counts too (its transaction is rolled back, the count is not).
    assert api.get("/api/v1/requests", query_string={"limit": "0"},
                   headers=bearer(lab.token)).status_code == 400
    for _ in range(2):
        assert api.get("/api/v1/requests", headers=bearer(lab.token)).status_code == 200
    refused = api.get("/api/v1/requests", headers=bearer(lab.token))
    assert_problem(refused, 429, "throttled")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Another token has its own count.
    assert api.get("/api/v1/requests", headers=bearer(other.token)).status_code == 200


def test_scope_and_ownership_denials_on_every_endpoint(app, svc, world, delivered):
    rid, _tech = delivered
    api = app.test_client()
    mine = post(api, lab_token(svc, world).token, form(world)).json["id"]
    per_request = [("get", ""), ("get", "/timeline"), ("get", "/verification"),
                   ("get", "/document"), ("get", "/fhir"), ("post", "/acknowledge")]
    scope_of = {"": "read", "/timeline": "read", "/verification": "read", "/document": "download",
                "/fhir": "read", "/acknowledge": "acknowledge"}
    # Missing scope: 403 insufficient-scope, whatever the request.
    for scope in ("read", "download", "acknowledge"):
        others = tuple(s for s in ("read", "download", "acknowledge") if s != scope)
        his = integration_token(svc, name=f"his-{scope}", destination_id=world.destination,
                                scopes=others)
        for method, suffix in per_request:
            if scope_of[suffix] != scope:
                continue
            resp = getattr(api, method)(f"/api/v1/requests/{rid}{suffix}", headers=bearer(his.token))
            assert_problem(resp, 403, "insufficient-scope")
        if scope == "read":
            assert_problem(api.get("/api/v1/requests", headers=bearer(his.token)), 403,
                           "insufficient-scope")
    reader = integration_token(svc, name="his-reader", destination_id=world.destination,
                               scopes=("read",))
    assert_problem(post(api, reader.token, form(world)), 403, "insufficient-scope")
    # Ownership: another destination, and another submitting account, see nothing (404).
    cardio = integration_token(svc, name="cardio-his", destination_id=world.other_destination,
                               scopes=("read", "download", "acknowledge"))
    other_lab = integration_token(svc, name="other-lab", group_id=world.other_group,
                                  scopes=("submit", "read", "download"))
    for token, target in ((cardio.token, rid), (other_lab.token, mine), (cardio.token, mine)):
        for method, suffix in per_request:
            if token == other_lab.token and suffix == "/acknowledge":
                continue  # not its scope: 403 first, checked above
            resp = getattr(api, method)(f"/api/v1/requests/{target}{suffix}", headers=bearer(token))
            assert_problem(resp, 404, "not-found")
    assert api.get("/api/v1/requests", headers=bearer(other_lab.token)).json["items"] == []
    # The pending request is not the destination's yet, not even as FHIR.
    his = integration_token(svc, name="his", destination_id=world.destination, scopes=("read",))
    assert_problem(api.get(f"/api/v1/requests/{mine}/fhir", headers=bearer(his.token)), 404,
                   "not-found")
    assert api.get(f"/api/v1/requests/{rid}/fhir", headers=bearer(his.token)).status_code == 200
