"""PII in identity: canaries over every identity endpoint and admin page, unmasking, query counts.

Endpoints are discovered from the identity router and the admin registry, so a new one cannot
escape: each must be listed in ``GET_ROUTES`` (how to call it) or ``WRITE_ONLY`` (no GET).
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from guardian.shortcuts import assign_perm

from audit.models import DomainEvent
from identity.api.urls import router
from identity.models import MatchSuggestion, MergeEvent, SourceRecord
from subjects.roles import role_group
from tests.factories import UserFactory
from tests.identity.helpers import push

from .conftest import api_for, no_canary

pytestmark = pytest.mark.django_db

WRITE_ONLY = {"sourcerecord-bulk", "oneid-split", "oneid-merge", "matchsuggestion-accept", "matchsuggestion-reject"}


def get_urls(person, suggestion) -> list[str]:
    """One GET per identity route (lists, details of every seeded object, resolve by each canary)."""
    objects = {
        "sourcerecord": list(SourceRecord.objects.values_list("pk", flat=True)),
        "oneid": [person.oneid],
        "matchsuggestion": [suggestion.pk],
    }
    urls: list[str] = []
    seen: set[str] = set()
    for pattern in router.urls:
        name = pattern.name
        if name in seen or name in WRITE_ONLY:
            continue
        seen.add(name)
        basename, _, kind = name.rpartition("-")
        if kind == "list":
            urls.append(reverse(name))
        elif kind == "detail":
            model = next(v for p, v, b in router.registry if b == basename).queryset.model
            keys = objects.get(basename) or list(model.objects.values_list("pk", flat=True)[:3])
            kwarg = next(iter(pattern.pattern.regex.groupindex))
            urls += [reverse(name, kwargs={kwarg: key}) for key in keys]
        elif name == "oneid-resolve":
            base = reverse(name)
            urls += [
                f"{base}?type=phone&value=13911110001",
                f"{base}?type=email&value=anna.canary@a.example",
                f"{base}?type=email&value=bella.canary@b.example",
                f"{base}?type=wecom_external_userid&value=wmCanaryWecom1",
            ]
        else:
            raise AssertionError(f"identity route {name} is not covered by the canary test")
    return urls


def admin_urls() -> list[str]:
    urls = []
    for model in admin.site._registry:
        if model._meta.app_label != "identity":
            continue
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        urls += [
            reverse("admin:{}_{}_change".format(*info), args=[pk]) for pk in model.objects.values_list("pk", flat=True)
        ]
    return urls


@pytest.fixture
def suggestion(person, sources):
    push(("crm_a", "A9", {"name": "Canary Annie", "phone": "13911110009"}))
    other = SourceRecord.objects.get(external_id="A9").assigned_oneid_id
    return MatchSuggestion.objects.create(
        oneid_a_id=min(person.oneid, other),
        oneid_b_id=max(person.oneid, other),
        score=91.0,
        evidence={"name_score": 91.0, "address_score": None, "shared": ["13911110001", "Canary Anna"]},
    )


@pytest.fixture
def analyst(world):
    user = UserFactory(username="analyst", is_staff=True)
    user.groups.add(role_group("hq_analyst"))
    return user


@pytest.mark.parametrize("who", ["operator_a", "analyst"])
def test_no_canary_in_any_identity_response(request, who, person, suggestion):
    user = request.getfixturevalue(who)
    client = api_for(user)
    urls = get_urls(person, suggestion)
    assert len(urls) > 10
    leaks = []
    for url in urls:
        for unmask in ("", "&unmask=1" if "?" in url else "?unmask=1"):
            response = client.get(url + unmask)
            assert response.status_code in (200, 403, 404), (url, response.status_code)
            leaks += [(url + unmask, found) for found in no_canary(response.content)]
    assert leaks == []


def test_analyst_sees_the_whole_person_masked(person, suggestion, analyst):
    body = api_for(analyst).get(f"/api/v1/oneids/{person.oneid}/").json()
    assert len(body["records"]) == 3 and body["partial"] is False
    assert body["display_name"] == "***" and body["attributes"]["email"] == "***"
    assert {r["external_id"] for r in body["records"]} == {"***"}
    assert all(set(r["raw"].values()) == {"***"} for r in body["records"])
    assert {i["value"] for i in body["identifiers"]} == {"***"}
    [merge] = [e for e in body["history"] if e["kind"] == "merge"]
    assert merge["evidence"][0]["rule"].startswith("identifier:") and merge["evidence"][0]["value"] == "***"
    [listed] = api_for(analyst).get("/api/v1/match-suggestions/").json()["results"]
    assert listed["evidence"] == {"name_score": 91.0, "address_score": None, "shared": ["***", "***"]}


def test_push_warnings_are_masked(operator_a, sources):
    assign_perm("identity.push_records", operator_a, sources.crm_a)
    body = {"source": "crm_a", "external_id": "A5", "raw": {"name": "Blocked", "phone": "13800138000"}}
    response = api_for(operator_a).post("/api/v1/source-records/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["warnings"] == [{"type": "phone", "value": "***", "reason": "blocked"}]


def test_no_canary_in_any_identity_admin_page(person, suggestion, analyst, operator_a, client):
    for user in (analyst, operator_a):
        client.force_login(user)
        leaks = []
        for url in admin_urls():
            response = client.get(url)
            assert response.status_code in (200, 302, 403, 404), (url, response.status_code)
            leaks += [(url, found) for found in no_canary(response.content)]
        assert leaks == [], user.username


def test_no_canary_in_the_records_export(person, analyst, client):
    client.force_login(analyst)
    response = client.post("/admin/identity/sourcerecord/export/", {"format": "0", "resource": "0"})
    assert response.status_code == 200
    assert response.content and no_canary(response.content) == []


def test_unmasking_is_for_pii_holders_and_logged(person, operator_a, operator_a_pii):
    url = f"/api/v1/oneids/{person.oneid}/?unmask=1"
    assert "anna.canary" not in api_for(operator_a).get(url).content.decode()
    assert not DomainEvent.objects.filter(action="pii.unmasked").exists()
    assert "anna.canary" in api_for(operator_a_pii).get(url).content.decode()
    [event] = DomainEvent.objects.filter(action="pii.unmasked")
    assert event.actor_id == operator_a_pii.id and event.object_type == "identity.oneid"
    assert event.summary["ids"] == [person.oneid]
    masked = api_for(operator_a_pii).get(f"/api/v1/oneids/{person.oneid}/").content.decode()
    assert "anna.canary" not in masked and DomainEvent.objects.filter(action="pii.unmasked").count() == 1


def test_admin_reveal_is_logged(person, operator_a_pii, client):
    client.force_login(operator_a_pii)
    page = client.get(f"/admin/identity/sourcerecord/{person.record_a.id}/change/")
    assert "ExtCanaryA1" not in page.content.decode() and "unmask=1" in page.content.decode()
    page = client.get(f"/admin/identity/sourcerecord/{person.record_a.id}/change/?unmask=1")
    assert "ExtCanaryA1" in page.content.decode() and "anna.canary" in page.content.decode()
    assert DomainEvent.objects.filter(action="pii.unmasked", object_type="identity.sourcerecord").count() == 1


def queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    "url", ["/api/v1/source-records/", "/api/v1/oneids/", "/api/v1/match-suggestions/", "DETAIL", "RESOLVE"]
)
def test_query_counts_do_not_grow_with_the_data(url, person, operator_a_pii):
    """Lists and a detail cost the same with more people, records and merges (resolve: per matched
    OneID, at most 20 — here one match)."""
    client = api_for(operator_a_pii)
    url = {
        "DETAIL": f"/api/v1/oneids/{person.oneid}/",
        "RESOLVE": "/api/v1/oneids/resolve/?type=email&value=anna.canary@a.example",
    }.get(url, url)
    before = queries(client, url)
    for n in range(5):  # more people, each in brands A and B, more records of the same person
        push(
            ("crm_a", f"MA{n}", {"name": f"P{n}", "phone": f"1391111{n:04d}"}),
            ("crm_b", f"MB{n}", {"name": f"P{n}", "phone": f"1391111{n:04d}"}),
        )
        push(("oa_a", f"O{n}", {"openid": f"o{n}", "name": "Canary Anna", "phone": "13911110001"}))
    MatchSuggestion.objects.bulk_create(
        MatchSuggestion(oneid_a_id=a, oneid_b_id=b, score=90.0, evidence={})
        for a, b in zip(
            *[
                sorted(set(SourceRecord.objects.filter(source__code=c).values_list("assignment__oneid", flat=True)))
                for c in ("crm_a", "oa_a")
            ],
            strict=False,
        )
        if a != b
    )
    assert MergeEvent.objects.exists()
    assert queries(client, url) == before


@pytest.mark.parametrize("model", ["sourcerecord", "oneid", "mergeevent", "matchsuggestion"])
def test_admin_changelist_query_counts_do_not_grow(model, person, operator_a_pii, client):
    client.force_login(operator_a_pii)
    url = f"/admin/identity/{model}/"
    before = queries(client, url)
    for n in range(5):
        push(("crm_a", f"MA{n}", {"name": f"P{n}", "phone": f"1391111{n:04d}"}))
        push(("crm_a", f"MA{n}", {"name": f"P{n}", "phone": f"1391111{n:04d}", "email": f"p{n}@a.example"}))
        push(("oa_a", f"O{n}", {"openid": f"o{n}", "email": f"p{n}@a.example"}))
    assert queries(client, url) == before


def test_admin_merge_action_refuses_a_partial_person(person, operator_a, sources, client):
    push(("crm_a", "A2", {"name": "Solo", "phone": "13911112222"}))
    solo = SourceRecord.objects.get(external_id="A2").assigned_oneid_id
    client.force_login(operator_a)
    client.post("/admin/identity/oneid/", {"action": "merge_selected", "_selected_action": [solo, person.oneid]})
    assert SourceRecord.objects.get(external_id="A2").assigned_oneid_id == solo
    assert not MergeEvent.objects.filter(kind="manual_merge").exists()
