"""Clear answers: 401 without or with a bad token, 403 without permission, 404 out of scope,
429 with Retry-After past the rate — all in the API's one error shape."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

RATES = {"anon": "2/min", "user": "3/min", "integration": "5/min"}


def error(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]["code"]


def test_no_token_is_401_with_a_challenge(gov):
    response = APIClient().get("/api/v1/subjects/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert error(response) == "not_authenticated"


def test_invalid_token_is_401(gov):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/v1/subjects/")
    assert response.status_code == 401
    assert error(response) == "authentication_failed"


def test_no_permission_is_403_and_out_of_scope_is_404(gov):
    response = gov.client("auditor").get("/api/v1/subjects/")
    assert response.status_code == 403
    assert error(response) == "permission_denied"
    response = gov.client("brand_operator").get(f"/api/v1/subjects/{gov.member_out.pk}/")
    assert response.status_code == 404
    assert error(response) == "not_found"


@pytest.fixture
def low_rates(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": RATES}
    assert api_settings.DEFAULT_THROTTLE_RATES == RATES
    cache.clear()
    yield
    cache.clear()


def statuses(client, count: int) -> list[int]:
    return [client.get("/api/v1/subject-types/").status_code for _ in range(count)]


def test_people_are_throttled_at_the_user_rate_with_retry_after(gov, low_rates):
    client = gov.client("hq_analyst")
    assert statuses(client, 3) == [200, 200, 200]
    response = client.get("/api/v1/subject-types/")
    assert response.status_code == 429
    assert error(response) == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60


def test_integrations_have_their_own_rate_and_counters(gov, low_rates):
    integration, person = gov.client("integration"), gov.client("brand_operator")
    assert statuses(integration, 6) == [200] * 5 + [429]
    assert statuses(person, 4) == [200] * 3 + [429]  # not starved by the integration's calls


def test_anonymous_callers_are_throttled_per_address(gov, low_rates):
    """Where anonymous calls are allowed (the schema); elsewhere DRF answers 401 before throttling."""
    client = APIClient()
    assert [client.get("/api/schema/").status_code for _ in range(3)] == [200, 200, 429]
