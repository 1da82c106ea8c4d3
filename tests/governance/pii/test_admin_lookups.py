"""Filtering an admin changelist by a personal field needs ``view_pii``.

Django's admin accepts a lookup on any of a model's own fields from the query string, whether or
not it is a list filter (``?display_name__startswith=Li``). Without a guard, which rows such a
filter leaves would recover a masked value one character at a time.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tests.governance.pii.test_canary import CANARIES

pytestmark = pytest.mark.django_db

C = CANARIES
ORACLES = [
    ("/admin/subjects/subject/", "display_name__startswith", C["name"][:7]),
    ("/admin/subjects/subject/", "attributes__phone__startswith", C["phone"][:4]),
    ("/admin/subjects/subject/", "attributes__icontains", C["openid"][:8]),
    ("/admin/subjects/relationship/", "attributes__receptionist_name__startswith", C["rel_note"][:6]),
    ("/admin/identity/sourcerecord/", "raw__name__startswith", C["raw_name"][:7]),
    ("/admin/identity/sourcerecord/", "external_id__startswith", "REC"),
    ("/admin/identity/mergeevent/", "evidence__0__value__startswith", C["evidence"][:4]),
    ("/admin/identity/matchsuggestion/", "evidence__openid__startswith", C["suggestion"][:7]),
    ("/admin/auditlog/logentry/", "changes__icontains", C["legacy_diff"]),
    ("/admin/auditlog/logentry/", "changes_text__icontains", "x"),
    ("/admin/auditlog/logentry/", "object_repr__icontains", "x"),
    ("/admin/audit/domainevent/", "summary__reason__startswith", C["event_reason"][:7]),
    ("/admin/audit/domainevent/", "summary__icontains", C["event_value"]),
]


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(("url", "lookup", "value"), ORACLES, ids=[f"{u.split('/')[3]}:{lk}" for u, lk, _ in ORACLES])
def test_filtering_by_a_personal_field_is_refused_without_view_pii(seeded, viewer, url, lookup, value):
    response = _client(viewer).get(url, {lookup: value})
    assert response.status_code == 400


@pytest.mark.parametrize(("url", "lookup", "value"), ORACLES[:2])
def test_a_pii_holder_may_filter_by_a_personal_field(seeded, viewer, url, lookup, value):
    viewer.user_permissions.add(Permission.objects.get(codename="view_pii"))
    response = _client(viewer).get(url, {lookup: value})
    assert response.status_code == 200
    assert [obj.pk for obj in response.context["cl"].result_list] == [seeded.pk]


def test_the_list_filters_still_work_without_view_pii(seeded, viewer):
    client = _client(viewer)
    assert (
        client.get("/admin/subjects/subject/", {"subject_type__id__exact": seeded.subject_type_id}).status_code == 200
    )
    assert client.get("/admin/audit/domainevent/", {"subject": seeded.pk}).status_code == 200
    assert client.get("/admin/auditlog/logentry/", {"action": 1}).status_code == 200
