"""PII masking in the subjects API, admin and CSV export; explicit unmasking is logged."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from audit.models import DomainEvent
from subjects import pii
from subjects.models import Subject
from tests.factories import UserFactory

PHONE = "13912345678"
NAME = "Zhang Canary"


@pytest.fixture
def person(world):
    world.member_type.attribute_schema = {
        "type": "object",
        "properties": {"skin_type": {"type": "string"}, "nick": {"type": "string", "x-pii": True}},
    }
    world.member_type.save()
    return Subject.objects.create(
        subject_type=world.member_type,
        source="crm",
        external_id="EXT-PERSON-1",
        display_name=NAME,
        attributes={"skin_type": "dry", "nick": "Canary Nick", "contact": {"mobile_phone": PHONE}},
        brand=world.brand_a,
    )


def _user(*perms: str, superuser: bool = False, username: str = "u"):
    user = UserFactory(username=username, is_staff=True, is_superuser=superuser)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return user


def test_mask_is_total():
    assert pii.mask("13812345678") == pii.MASK
    assert pii.mask({"a": 1}) == pii.MASK and pii.mask(12) == pii.MASK
    assert pii.mask("") == "" and pii.mask(None) is None
    masked = pii.mask_attributes(
        {"home_address": "x", "tier": "gold", "list": [{"email": "a@b.c"}], "wechat_openid": "o1"}, frozenset()
    )
    assert masked == {
        "home_address": pii.MASK,
        "tier": "gold",
        "list": [{"email": pii.MASK}],
        "wechat_openid": pii.MASK,
    }


def test_schema_marked_keys(world):
    world.member_type.attribute_schema = {"properties": {"nick": {"type": "string", "x-pii": True}}}
    assert "nick" in pii.pii_attribute_keys(world.member_type)


def test_str_of_customer_is_masked_unless_revealed(person, world):
    assert NAME not in str(Subject.objects.get(pk=person.pk))
    assert str(world.brand_a) == "Brand A"
    with pii.revealed():
        assert str(person) == NAME


def test_api_masks_for_everyone_by_default(person, client):
    user = _user("subjects.view_subject", "subjects.all_scopes")
    client.force_login(user)
    body = client.get(f"/api/v1/subjects/{person.pk}/").content.decode()
    assert NAME not in body and PHONE not in body and "Canary Nick" not in body
    assert '"skin_type":"dry"' in body.replace(" ", "")
    listing = client.get("/api/v1/subjects/?unmask=1").content.decode()
    assert NAME not in listing  # no view_pii: ?unmask=1 is ignored
    assert not DomainEvent.objects.filter(action="pii.unmasked").exists()


def test_api_unmask_for_pii_holder_is_logged(person, client):
    user = _user("subjects.view_subject", "subjects.all_scopes", "subjects.view_pii")
    client.force_login(user)
    assert NAME not in client.get(f"/api/v1/subjects/{person.pk}/").content.decode()
    body = client.get(f"/api/v1/subjects/{person.pk}/?unmask=1").content.decode()
    assert NAME in body and PHONE in body
    event = DomainEvent.objects.get(action="pii.unmasked")
    assert event.actor == user and event.summary["ids"] == [person.pk] and event.row_count == 1
    client.get("/api/v1/subjects/?unmask=1")
    page = DomainEvent.objects.filter(action="pii.unmasked").latest("id")
    assert person.pk in page.summary["ids"] and page.row_count == Subject.objects.count()


def test_relationship_attributes_masked(person, world, client):
    from subjects.models import Relationship

    rel = Relationship.objects.create(
        relationship_type=world.visited,
        from_subject=person,
        to_subject=world.clinic_a_sh,
        source="crm",
        external_id="R1",
        attributes={"receptionist_name": "Canary Receptionist", "room": 3},
    )
    client.force_login(_user("subjects.view_relationship", "subjects.all_scopes"))
    body = client.get(f"/api/v1/relationships/{rel.pk}/").content.decode()
    assert "Canary Receptionist" not in body and '"room":3' in body.replace(" ", "")


def test_admin_change_page_masks_and_keeps_values_on_save(person, client):
    user = _user(superuser=True, username="boss")
    client.force_login(user)
    url = reverse("admin:subjects_subject_change", args=[person.pk])
    page = client.get(url).content.decode()
    assert NAME not in page and PHONE not in page and "Reveal personal data" in page
    response = client.post(
        url,
        {"business_line": "", "brand": person.brand_id, "region": "", "parent": "", "_save": "1"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    person.refresh_from_db()
    assert person.display_name == NAME and person.attributes["contact"]["mobile_phone"] == PHONE
    revealed = client.get(url + "?unmask=1").content.decode()
    assert NAME in revealed
    assert DomainEvent.objects.filter(action="pii.unmasked", actor=user, summary__ids=[person.pk]).exists()


def test_admin_changelist_and_search(person, client):
    user = _user("subjects.view_subject", "subjects.all_scopes", username="analyst")
    client.force_login(user)
    url = reverse("admin:subjects_subject_changelist")
    page = client.get(url).content.decode()
    assert NAME not in page and "EXT-PERSON-1" in page
    assert "EXT-PERSON-1" not in client.get(url + "?q=Canary").content.decode()  # no name search without view_pii


def test_admin_export_is_masked(person, client):
    client.force_login(_user(superuser=True, username="boss"))
    url = reverse("admin:subjects_subject_export")
    response = client.post(
        url,
        {
            "format": "0",
            "resource": "0",
            **{f"subjectresource_{f}": "on" for f in ("type", "source", "external_id", "display_name", "attributes")},
        },
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert NAME not in body and PHONE not in body and "EXT-PERSON-1" in body


def test_api_name_search_needs_view_pii(person, client):
    client.force_login(_user("subjects.view_subject", "subjects.all_scopes", username="searcher"))
    response = client.get("/api/v1/subjects/", {"q": "Canary"})
    assert response.status_code == 403 and NAME not in response.content.decode()
    holder = _user("subjects.view_subject", "subjects.all_scopes", "subjects.view_pii", username="holder")
    client.force_login(holder)
    assert [r["id"] for r in client.get("/api/v1/subjects/", {"q": "Canary"}).json()["results"]] == [person.pk]


def test_revealed_admin_edit_is_stored_with_masked_labels(person, client):
    from auditlog.models import LogEntry as AuditEntry
    from django.contrib.admin.models import LogEntry as AdminEntry

    client.force_login(_user(superuser=True, username="editor"))
    url = reverse("admin:subjects_subject_change", args=[person.pk]) + "?unmask=1"
    response = client.post(
        url,
        {"display_name": "Renamed Canary", "attributes": json.dumps(person.attributes), "brand": person.brand_id},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    person.refresh_from_db()
    assert person.display_name == "Renamed Canary"
    stored = [e.object_repr for e in AdminEntry.objects.all()] + [
        e.object_repr + json.dumps(e.changes) for e in AuditEntry.objects.filter(object_id=person.pk)
    ]
    assert stored and not any(NAME in s or "Renamed Canary" in s or PHONE in s for s in stored)


def test_admin_changelist_reveal_logs_the_page(person, client):
    holder = _user("subjects.view_subject", "subjects.all_scopes", "subjects.view_pii", username="listholder")
    client.force_login(holder)
    url = reverse("admin:subjects_subject_changelist")
    assert NAME not in client.get(url).content.decode()
    response = client.get(url + "?unmask=1")
    assert response.status_code == 200 and NAME in response.content.decode()
    event = DomainEvent.objects.get(action="pii.unmasked", actor=holder)
    assert person.pk in event.summary["ids"] and event.object_type == "subjects.subject"
