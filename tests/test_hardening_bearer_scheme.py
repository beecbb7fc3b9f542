"""The API takes its token only in the ``Bearer`` scheme: a bare token, or the token under another scheme, is 401."""
from __future__ import annotations

import pytest

TOKEN = "api-token-for-bearer-test"


@pytest.fixture
def api(app):
    app.config["MAIDER_API_TOKEN"] = TOKEN
    return app.test_client()


@pytest.mark.parametrize("header", [TOKEN, f"Basic {TOKEN}", f"Token {TOKEN}", f"Bearer{TOKEN}", f"Bearer  x{TOKEN}",
                                    "Bearer ", ""])
def test_anything_but_the_bearer_scheme_is_refused(api, header):
    answer = api.get("/api/v1/sessions", headers={"Authorization": header} if header else {})
    assert answer.status_code == 401
    assert "API token" in answer.get_json()["error"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])  # the scheme name is case-insensitive (RFC 7235)
def test_the_bearer_scheme_is_accepted(api, scheme):
    assert api.get("/api/v1/sessions", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200
