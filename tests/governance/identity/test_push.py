"""Pushes are limited to the source systems (and brands) a token may push from: all or nothing.

``identity.push_records`` is granted per source system with django-guardian (to the user or to a
group); the model-wide permission does not open every source to a scoped user (guardian's trap).
"""

from __future__ import annotations

import pytest
from guardian.shortcuts import assign_perm

from identity.models import SourceRecord
from identity.scoping import pushable_sources
from subjects.models import ScopeGrant
from subjects.roles import role_group
from tests.factories import UserFactory

from .conftest import api_for, make_user

pytestmark = pytest.mark.django_db
RECORDS = "/api/v1/source-records/"


def item(source: str, external_id: str, **raw) -> dict:
    return {"source": source, "external_id": external_id, "raw": raw or {"name": "X", "phone": "13911113333"}}


@pytest.fixture
def integration(world, sources):
    """An integration token for brand A, allowed to push from brand A's CRM only."""
    user = UserFactory(username="integration_crm_a")
    user.groups.add(role_group("integration"))
    ScopeGrant.objects.create(user=user, brand=world.brand_a)
    assign_perm("identity.push_records", user, sources.crm_a)
    return user


def test_pushes_from_its_source(integration):
    response = api_for(integration).post(RECORDS, item("crm_a", "A1"), format="json")
    assert response.status_code == 201, response.content
    assert SourceRecord.objects.filter(source__code="crm_a").count() == 1


def test_other_sources_are_refused_per_item_and_nothing_is_written(integration):
    client = api_for(integration)
    single = client.post(RECORDS, item("crm_b", "B1"), format="json")
    assert single.status_code == 403
    assert single.json()["error"]["details"] == [
        {
            "index": None,
            "field": "source",
            "message": "You may not push records from this source system.",
            "code": "forbidden",
        }
    ]
    batch = [item("crm_a", "A1"), item("oa_a", "O1"), item("crm_b", "B1"), item("nope", "N1")]
    response = client.post(RECORDS + "bulk/", {"items": batch}, format="json")
    assert response.status_code == 403
    assert [(d["index"], d["code"]) for d in response.json()["error"]["details"]] == [
        (1, "forbidden"),
        (2, "forbidden"),
    ]
    assert SourceRecord.objects.count() == 0


def test_model_wide_permission_does_not_open_every_source(integration, sources):
    from django.contrib.auth.models import Permission

    integration.user_permissions.add(Permission.objects.get(codename="push_records"))
    assert set(pushable_sources(integration).values_list("code", flat=True)) == {"crm_a"}
    assert api_for(integration).post(RECORDS, item("oa_a", "O1"), format="json").status_code == 403


def test_a_grant_on_another_brands_source_is_not_enough(integration, sources):
    assign_perm("identity.push_records", integration, sources.crm_b)
    assign_perm("identity.push_records", integration, sources.wecom)  # group level: HQ or open brand only
    assert set(pushable_sources(integration).values_list("code", flat=True)) == {"crm_a"}


def test_a_group_grant_serves_every_member(world, sources):
    group = role_group("integration")
    assign_perm("identity.push_records", group, sources.oa)
    user = UserFactory(username="second_integration")
    user.groups.add(group)
    ScopeGrant.objects.create(user=user, brand=world.brand_a)
    response = api_for(user).post(RECORDS, item("oa_a", "O1", openid="oX"), format="json")
    assert response.status_code == 201, response.content


def test_integration_reads_nothing_back(integration):
    client = api_for(integration)
    client.post(RECORDS, item("crm_a", "A1"), format="json")
    assert client.get(RECORDS).status_code == 403
    assert client.get("/api/v1/oneids/").status_code == 403


def test_hq_pushes_everywhere_and_scoped_users_need_a_scope(world, sources):
    hq = UserFactory(username="hq")
    hq.groups.add(role_group("hq_admin"))
    assert set(pushable_sources(hq).values_list("code", flat=True)) == {
        "crm_a", "crm_b", "wecom", "oa_a", "mp_b", "shop", "hr"
    }  # fmt: skip
    no_scope = make_user("add_sourcerecord", "change_sourcerecord")
    assign_perm("identity.push_records", no_scope, sources.crm_a)
    assert not pushable_sources(no_scope).exists()
