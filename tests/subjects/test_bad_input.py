"""Bad input that once reached the database as a server error gets a per-item 400."""

import pytest
from auditlog.models import LogEntry

from subjects.models import Relationship, Subject
from subjects.services import relationship_type_save
from tests.factories import SubjectFactory, UserFactory

SUBJECTS = "/api/v1/subjects/bulk/"
RELATIONSHIPS = "/api/v1/relationships/bulk/"


def member(**extra):
    return {"type": "member", "source": "crm", "external_id": "M1", **extra}


def codes(response):
    assert response.status_code == 400, response.json()
    return {(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]}


@pytest.mark.parametrize(
    "item, field",
    [
        (member(brand=2**70), "brand"),
        (member(brand={"source": "hq", "external_id": "A\x00"}), "brand"),
        (member(external_id="M\x00"), "external_id"),
        (member(display_name="nul\x00"), "display_name"),
        (member(attributes=[]), "attributes"),
        (member(attributes=False), "attributes"),
        (member(attributes={"spend": 2**70}), "attributes"),
    ],
)
def test_bad_subject_values_are_named(api, world, item, field):
    world.member_type.attribute_schema = {}
    world.member_type.save()
    assert {f for _, f, _ in codes(api.post(SUBJECTS, [item], format="json"))} == {field}
    assert not Subject.objects.filter(source="crm").exists()


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"valid_from": "2024-02-30"}, "valid_from"),
        ({"valid_from": "2024-13-01T00:00:00"}, "valid_from"),
        ({"valid_to": "9999-12-31T23:00:00-05:00"}, "valid_to"),
        ({"weight": 10**400}, "weight"),
        ({"to": 2**70}, "to"),
        ({"attributes": {"note": "a\x00b"}}, "attributes"),
    ],
)
def test_bad_relationship_values_are_named(api, world, extra, field):
    member = SubjectFactory(subject_type=world.member_type)
    item = {
        "type": "visited",
        "source": "crm",
        "external_id": "V1",
        "from": member.id,
        "to": world.clinic_a_sh.id,
        **extra,
    }
    assert {f for _, f, _ in codes(api.post(RELATIONSHIPS, [item], format="json"))} == {field}
    assert not Relationship.objects.exists()


def test_creating_an_existing_subject_is_a_conflict_not_an_overwrite(world):
    from django.contrib.auth.models import Permission
    from rest_framework.test import APIClient

    adder = UserFactory()
    adder.user_permissions.add(*Permission.objects.filter(codename__in=["add_subject", "view_subject", "all_scopes"]))
    client = APIClient()
    client.force_authenticate(adder)
    existing = SubjectFactory(subject_type=world.member_type, source="crm", external_id="M1", display_name="Mei")
    response = client.post("/api/v1/subjects/", member(display_name="overwritten"), format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "exists"
    assert Subject.objects.get(pk=existing.pk).display_name == "Mei"


def test_one_audit_entry_per_write_with_the_actor_and_only_real_fields(api, world):
    created = api.post("/api/v1/subjects/", member(display_name="Mei"), format="json").json()
    api.patch(f"/api/v1/subjects/{created['id']}/", {"display_name": "Mei Lin"}, format="json")
    api.delete(f"/api/v1/subjects/{created['id']}/")
    entries = LogEntry.objects.filter(object_pk=str(created["id"]), content_type__model="subject").order_by("id")
    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE, LogEntry.Action.DELETE]
    assert {e.actor.username for e in entries} == {"admin"}
    assert "outgoing" not in entries[0].changes and "display_name" in entries[0].changes


def test_a_relationship_subject_survives_a_re_upsert_and_goes_with_its_subject(api, world):
    doctor = SubjectFactory(subject_type=world.doctor_type)
    rtype = relationship_type_save(
        actor=None,
        data={
            "code": "advises",
            "name": "Advises",
            "from_type": world.doctor_type,
            "to_type": world.clinic_type,
            "taggable": True,
        },
    )
    item = {"type": "advises", "source": "his", "external_id": "A1", "from": doctor.id, "to": world.clinic_a_sh.id}
    api.post(RELATIONSHIPS, [item], format="json")
    own = Relationship.objects.get().subject
    Subject.objects.filter(pk=own.pk).update(display_name="Edited by an operator")
    assert api.post(RELATIONSHIPS, [item], format="json").json()["unchanged"] == 1
    assert Subject.objects.get(pk=own.pk).display_name == "Edited by an operator"
    assert api.delete(f"/api/v1/subjects/{doctor.id}/").status_code == 204
    assert not Subject.objects.filter(subject_type=rtype.subject_type).exists()
    assert api.delete(f"/api/v1/relationship-types/{rtype.id}/").status_code == 204


def test_a_taggable_type_whose_subject_type_code_is_taken_is_refused(api, world):
    api.post("/api/v1/subject-types/", {"code": "rel_likes", "name": "x", "category": "relationship"}, format="json")
    response = api.post(
        "/api/v1/relationship-types/",
        {"code": "likes", "name": "Likes", "from_type": "member", "to_type": "clinic", "taggable": True},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "code"


def test_404_and_out_of_range_filters(api, world):
    response = api.get("/api/v1/subjects/999999/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert api.get("/api/v1/subjects/", {"within_region": 2**70}).json()["results"] == []


def test_a_parent_by_id_that_closes_a_loop_is_refused(api, world):
    # Shanghai's parent is China; making China a child of Shanghai would loop.
    item = {"type": "region", "source": "hq", "external_id": "CN", "display_name": "China", "parent": world.shanghai.id}
    assert codes(api.post(SUBJECTS, [item], format="json")) == {(0, "parent", "cycle")}
    world.china.refresh_from_db()
    assert world.china.parent is None
    itself = {"type": "region", "source": "hq", "external_id": "SH", "parent": world.shanghai.id}
    assert codes(api.post(SUBJECTS, [itself], format="json")) == {(0, "parent", "cycle")}
