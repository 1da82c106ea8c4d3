import json

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils.html import escape

from audit.models import DomainEvent
from subjects.models import Relationship, RelationshipType, Subject, SubjectType
from tests.factories import RelationshipFactory, SubjectFactory


@pytest.fixture
def client(client, admin_user):
    client.force_login(admin_user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def changelist_ids(response) -> list[int]:
    return sorted(obj.pk for obj in response.context["cl"].result_list)


# Pages load ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["subjecttype", "relationshiptype", "subject", "relationship"])
def test_changelist_and_add_pages_load(client, world, model):
    assert client.get(reverse(f"admin:subjects_{model}_changelist")).status_code == 200
    assert client.get(reverse(f"admin:subjects_{model}_add")).status_code == 200


def test_change_pages_load(client, world):
    rel = RelationshipFactory(
        relationship_type=world.visited, from_subject=_member(world), to_subject=world.clinic_a_sh
    )
    for name, pk in (
        ("subjecttype", world.member_type.pk),
        ("relationshiptype", world.visited.pk),
        ("subject", world.clinic_a_sh.pk),
        ("relationship", rel.pk),
    ):
        assert client.get(reverse(f"admin:subjects_{name}_change", args=[pk])).status_code == 200


def test_import_and_export_pages_load(client, world):
    assert client.get(reverse("admin:subjects_subject_import")).status_code == 200
    assert client.get(reverse("admin:subjects_subject_export")).status_code == 200
    assert client.get(reverse("admin:subjects_relationship_import")).status_code == 200


def _member(world, **kwargs):
    return SubjectFactory(subject_type=world.member_type, **kwargs)


# Subject list ----------------------------------------------------------------------------


def test_subject_type_filter_narrows_the_list(client, world):
    response = client.get(
        reverse("admin:subjects_subject_changelist"), {"subject_type__id__exact": world.clinic_type.pk}
    )
    assert changelist_ids(response) == sorted([world.clinic_a_sh.pk, world.clinic_b_bj.pk])


def test_brand_filter_offers_only_brands_and_narrows(client, world):
    response = client.get(reverse("admin:subjects_subject_changelist"), {"brand": world.brand_a.pk})
    assert changelist_ids(response) == [world.clinic_a_sh.pk]
    brand_filter = next(f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", None) == "brand")
    assert [label for _, label in brand_filter.lookup_choices] == ["Brand A", "Brand B"]


def test_region_filter_covers_sub_regions(client, world):
    url = reverse("admin:subjects_subject_changelist")
    assert changelist_ids(client.get(url, {"region": world.china.pk})) == sorted(
        [world.clinic_a_sh.pk, world.clinic_b_bj.pk]
    )
    assert changelist_ids(client.get(url, {"region": world.beijing.pk})) == [world.clinic_b_bj.pk]


def test_business_line_filter_and_bad_value(client, world):
    url = reverse("admin:subjects_subject_changelist")
    assert changelist_ids(client.get(url, {"business_line": world.line.pk})) == sorted(
        [world.clinic_a_sh.pk, world.clinic_b_bj.pk]
    )
    assert client.get(url, {"business_line": "x"}).status_code == 302  # admin's "?e=1" redirect


def test_search_by_exact_external_id(client, world):
    response = client.get(reverse("admin:subjects_subject_changelist"), {"q": "C2"})
    assert changelist_ids(response) == [world.clinic_b_bj.pk]


def test_brand_autocomplete_offers_only_brands(client, world):
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "subjects", "model_name": "subject", "field_name": "brand", "term": ""},
    )
    assert sorted(int(r["id"]) for r in response.json()["results"]) == sorted([world.brand_a.pk, world.brand_b.pk])


# Subject change page: relationships panel -------------------------------------------------


def _visits(world, count, clinic, members=None):
    members = members or [_member(world) for _ in range(count)]
    return [
        RelationshipFactory(relationship_type=world.visited, from_subject=m, to_subject=clinic, external_id=f"V{i:03}")
        for i, m in enumerate(members)
    ]


def test_relationship_panel_shows_both_directions(client, world):
    member = _member(world, display_name="Mei")
    out = RelationshipFactory(relationship_type=world.visited, from_subject=member, to_subject=world.clinic_a_sh)
    spouse = _member(world, display_name="Lei")
    inc = RelationshipFactory(relationship_type=world.spouse, from_subject=spouse, to_subject=member)
    response = client.get(reverse("admin:subjects_subject_change", args=[member.pk]) + "?unmask=1")  # names: PII
    outgoing, incoming = response.context["relationship_panels"]
    assert [(rel.pk, other.pk) for rel, other in outgoing["rows"]] == [(out.pk, world.clinic_a_sh.pk)]
    assert [(rel.pk, other.pk) for rel, other in incoming["rows"]] == [(inc.pk, spouse.pk)]
    assert "A Shanghai" in response.content.decode()
    assert "Lei" in response.content.decode()


def test_relationship_panel_paginates_each_direction(client, world):
    rels = _visits(world, 25, world.clinic_a_sh)
    url = reverse("admin:subjects_subject_change", args=[world.clinic_a_sh.pk])
    first = client.get(url).context["relationship_panels"][1]
    assert [rel.pk for rel, _ in first["rows"]] == [r.pk for r in rels[:20]]
    assert first["next_url"] == "?in_page=2"
    second = client.get(url, {"in_page": 2}).context["relationship_panels"]
    assert [rel.pk for rel, _ in second[1]["rows"]] == [r.pk for r in rels[20:]]
    assert second[1]["next_url"] is None
    assert second[1]["previous_url"] == "?in_page=1"
    assert second[0]["rows"] == []


def test_change_page_query_count_does_not_grow_with_relationships(client, world, django_assert_max_num_queries):
    _visits(world, 25, world.clinic_a_sh)
    doctor = SubjectFactory(subject_type=world.doctor_type)
    RelationshipFactory(relationship_type=world.works_at, from_subject=doctor, to_subject=world.clinic_a_sh)
    url = reverse("admin:subjects_subject_change", args=[world.clinic_a_sh.pk])
    with django_assert_max_num_queries(10):
        assert client.get(url).status_code == 200


def test_change_page_shows_attributes_as_indented_json(client, world):
    member = _member(world, attributes={"skin_type": "dry", "spend": 10})
    response = client.get(reverse("admin:subjects_subject_change", args=[member.pk]))
    assert escape(json.dumps({"skin_type": "dry", "spend": 10}, indent=2)) in response.content.decode()


# Saving a subject ------------------------------------------------------------------------


def _subject_post(world, **overrides):
    data = {
        "subject_type": world.member_type.pk,
        "source": "crm",
        "external_id": "M1",
        "display_name": "Mei",
        "attributes": '{"skin_type": "dry"}',
        "brand": world.brand_a.pk,
        "region": "",
        "business_line": "",
        "parent": "",
    }
    return {**data, **overrides}


def test_adding_a_subject_goes_through_the_service(client, world):
    response = client.post(reverse("admin:subjects_subject_add"), _subject_post(world))
    assert response.status_code == 302
    subject = Subject.objects.get(source="crm", external_id="M1")
    assert (subject.display_name, subject.attributes, subject.brand_id) == (
        "Mei",
        {"skin_type": "dry"},
        world.brand_a.pk,
    )
    assert DomainEvent.objects.filter(action="subjects.saved", summary__ids=[subject.pk]).count() == 1


def test_invalid_attributes_show_the_field_error_and_write_nothing(client, world):
    before = Subject.objects.count()
    response = client.post(reverse("admin:subjects_subject_add"), _subject_post(world, attributes='{"spend": -1}'))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["attributes"][0].startswith("attributes.spend: ")
    assert Subject.objects.count() == before
    assert not DomainEvent.objects.exists()


def test_scope_of_the_wrong_kind_is_a_field_error(client, world):
    response = client.post(reverse("admin:subjects_subject_add"), _subject_post(world, brand=world.china.pk))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["brand"] == [f"Subject {world.china.pk} is a region, not a brand."]


def test_changing_a_subject_keeps_its_identity_readonly(client, world):
    member = _member(world, display_name="Old")
    url = reverse("admin:subjects_subject_change", args=[member.pk]) + "?unmask=1"  # PII is edited revealed
    response = client.post(url, {"display_name": "New", "attributes": "{}", "brand": world.brand_b.pk})
    assert response.status_code == 302
    member.refresh_from_db()
    assert (member.display_name, member.brand_id, member.subject_type_id) == (
        "New",
        world.brand_b.pk,
        world.member_type.pk,
    )


# Types -----------------------------------------------------------------------------------


def test_invalid_schema_is_a_field_error(client, world):
    data = {"code": "nurse", "name": "Nurse", "category": "staff", "attribute_schema": '{"type": 12}', "scope_role": ""}
    response = client.post(reverse("admin:subjects_subjecttype_add"), data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["attribute_schema"][0].startswith("attribute_schema.type: ")
    assert not SubjectType.objects.filter(code="nurse").exists()


def test_scope_type_must_be_an_organization(client, world):
    data = {"code": "zone", "name": "Zone", "category": "staff", "attribute_schema": "{}", "scope_role": "region"}
    response = client.post(reverse("admin:subjects_subjecttype_add"), data)
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == ["Only organization subject types can be scopes."]


def test_adding_a_subject_type_through_the_service(client, world, admin_user):
    data = {"code": "nurse", "name": "Nurse", "category": "staff", "attribute_schema": "", "scope_role": ""}
    assert client.post(reverse("admin:subjects_subjecttype_add"), data).status_code == 302
    assert SubjectType.objects.get(code="nurse").attribute_schema == {}


def test_deleting_a_type_with_subjects_is_refused(client, world):
    url = reverse("admin:subjects_subjecttype_delete", args=[world.clinic_type.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:subjects_subjecttype_change", args=[world.clinic_type.pk])
    assert messages_of(response) == ["Subject type 'clinic' has 2 subjects; delete or move them first."]
    assert SubjectType.objects.filter(code="clinic").exists()


def test_deleting_an_unused_type(client, world):
    unused = SubjectType.objects.create(code="nurse", name="Nurse", category="staff")
    response = client.post(reverse("admin:subjects_subjecttype_delete", args=[unused.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not SubjectType.objects.filter(code="nurse").exists()


def test_bulk_delete_action_is_all_or_nothing_through_the_service(client, world):
    unused = SubjectType.objects.create(code="nurse", name="Nurse", category="staff")
    data = {"action": "delete_selected", "_selected_action": [unused.pk, world.clinic_type.pk], "post": "yes"}
    response = client.post(reverse("admin:subjects_subjecttype_changelist"), data)
    assert response.status_code == 302
    assert messages_of(response) == [
        "Subject type 'clinic' has 2 subjects; delete or move them first.",
        "Nothing was deleted.",
    ]
    assert SubjectType.objects.filter(code__in=["nurse", "clinic"]).count() == 2


def test_bulk_delete_confirmation_then_delete(client, world):
    unused = SubjectType.objects.create(code="nurse", name="Nurse", category="staff")
    url = reverse("admin:subjects_subjecttype_changelist")
    confirm = client.post(url, {"action": "delete_selected", "_selected_action": [unused.pk]})
    assert confirm.status_code == 200
    assert "Nurse" in confirm.content.decode()
    response = client.post(url, {"action": "delete_selected", "_selected_action": [unused.pk], "post": "yes"})
    assert messages_of(response) == ["Successfully deleted 1 subject type."]
    assert not SubjectType.objects.filter(code="nurse").exists()


def test_deleting_a_relationship_type_in_use_is_refused(client, world):
    RelationshipFactory(relationship_type=world.visited, from_subject=_member(world), to_subject=world.clinic_a_sh)
    response = client.post(reverse("admin:subjects_relationshiptype_delete", args=[world.visited.pk]), {"post": "yes"})
    assert messages_of(response) == ["Relationship type 'visited' has 1 relationships; delete them first."]
    assert RelationshipType.objects.filter(code="visited").exists()


def test_deleting_a_scope_subject_in_use_is_refused(client, world):
    response = client.post(reverse("admin:subjects_subject_delete", args=[world.brand_a.pk]), {"post": "yes"})
    assert messages_of(response) == ["Brand A is the scope or parent of 1 subjects; move them first."]
    assert Subject.objects.filter(pk=world.brand_a.pk).exists()


# Relationships ---------------------------------------------------------------------------


def _relationship_post(world, member, **overrides):
    data = {
        "relationship_type": world.visited.pk,
        "source": "pos",
        "external_id": "V1",
        "from_subject": member.pk,
        "to_subject": world.clinic_a_sh.pk,
        "weight": "2.5",
        "valid_from_0": "2024-01-01",
        "valid_from_1": "00:00:00",
        "valid_to_0": "",
        "valid_to_1": "",
        "attributes": "{}",
    }
    return {**data, **overrides}


def test_relationship_type_filter_narrows_the_list(client, world):
    member = _member(world)
    visit = RelationshipFactory(relationship_type=world.visited, from_subject=member, to_subject=world.clinic_a_sh)
    RelationshipFactory(relationship_type=world.spouse, from_subject=member, to_subject=_member(world))
    response = client.get(
        reverse("admin:subjects_relationship_changelist"), {"relationship_type__id__exact": world.visited.pk}
    )
    assert changelist_ids(response) == [visit.pk]


def test_adding_a_relationship_goes_through_the_service(client, world):
    member = _member(world)
    response = client.post(reverse("admin:subjects_relationship_add"), _relationship_post(world, member))
    assert response.status_code == 302
    rel = Relationship.objects.get(source="pos", external_id="V1")
    assert (rel.from_subject_id, rel.to_subject_id, rel.weight) == (member.pk, world.clinic_a_sh.pk, 2.5)
    assert DomainEvent.objects.filter(action="relationships.saved").count() == 1


def test_relationship_end_of_the_wrong_type_is_a_field_error(client, world):
    member = _member(world)
    response = client.post(
        reverse("admin:subjects_relationship_add"), _relationship_post(world, member, to_subject=world.brand_a.pk)
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["to_subject"] == [
        f"Subject {world.brand_a.pk} is a brand; visited needs a clinic."
    ]
    assert not Relationship.objects.exists()


def test_relationship_type_ends_cannot_change_once_used(client, world):
    RelationshipFactory(relationship_type=world.visited, from_subject=_member(world), to_subject=world.clinic_a_sh)
    data = {
        "code": "visited",
        "name": "Visited",
        "description": "",
        "from_type": world.doctor_type.pk,
        "to_type": world.clinic_type.pk,
        "cardinality": "n:m",
        "attribute_schema": "{}",
    }
    response = client.post(reverse("admin:subjects_relationshiptype_change", args=[world.visited.pk]), data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["from_type"] == [
        "'from_type' cannot change on a type that has relationships."
    ]
    world.visited.refresh_from_db()
    assert world.visited.from_type_id == world.member_type.pk
