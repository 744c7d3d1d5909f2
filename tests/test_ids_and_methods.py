"""Out-of-range ids are 404 everywhere, API and filters included; 405 says what is
allowed (issue 10, the small ones)."""

from __future__ import annotations

import pytest

from tests.conftest import login
from tests.factories import integration_token

HUGE = str(2**63)
# 2^31: past PostgreSQL's INTEGER (schemathesis found it a 500 on the API, issue 15).
BAD_IDS = (HUGE, str(2**31), "99999999999999999999999999", "-1")


@pytest.mark.parametrize("bad", BAD_IDS)
def test_out_of_range_ids_are_404_on_pages_filters_and_api(app, svc, world, clock, bad):
    auditor = app.test_client()
    login(auditor, "auditor")
    for path in (f"/audit/requests/{bad}", f"/audit/?request={bad}", f"/audit/?actor={bad}",
                 f"/audit/?before={bad}"):
        assert auditor.get(path).status_code == 404, path
    assert auditor.get("/audit/?request=").status_code == 200  # an empty filter is no filter
    doc = app.test_client()
    login(doc, "doc")
    assert doc.get(f"/inbox/{bad}").status_code == 404
    token = integration_token(svc, name="his", destination_id=world.destination).token
    resp = app.test_client().get(f"/api/v1/requests/{bad}",
                                 headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 404
    assert resp.mimetype == "application/problem+json"


def test_405_carries_allow(app, world):
    resp = app.test_client().get("/logout")
    assert resp.status_code == 405
    assert "POST" in resp.headers["Allow"]
