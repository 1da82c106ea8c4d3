"""Tag values over the API: bulk import (all or nothing, per-item errors), list, filters."""

import pytest
from rest_framework.test import APIClient

from audit.models import DomainEvent
from tags.models import TagValue, TagValueChange
from tests.factories import SubjectFactory, UserFactory

pytest_plugins = ["tests.tags.uiworld"]

BULK = "/api/v1/tag-values/bulk/"
LIST = "/api/v1/tag-values/"


def stored(tag):
    return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))


def details(response):
    return [(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]]


def test_bulk_imports_values_of_several_tags_by_id_code_and_external_key(api, tags):
    a, b = tags.member(), tags.member()
    clinic = tags.world.clinic_a_sh
    items = [
        {"subject": a.id, "tag": "skin", "value": "dry"},
        {"subject": {"source": a.source, "external_id": a.external_id, "type": "member"}, "tag": "score", "value": 7},
        {"subject": b.id, "tag": tags.interests.id, "value": ["peel", "laser", "laser"]},
        {"subject": {"source": "hq", "external_id": "C1"}, "tag": tags.clinic_grade.id, "value": "A"},
    ]
    response = api.post(BULK, {"items": items}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["created"], body["updated"], body["removed"], body["unchanged"]) == (4, 0, 0, 0)
    assert stored(tags.skin) == {a.id: "dry"}
    assert stored(tags.score) == {a.id: 7}
    assert stored(tags.interests) == {b.id: ["laser", "peel"]}
    assert stored(tags.clinic_grade) == {clinic.id: "A"}
    assert set(TagValue.objects.values_list("source", flat=True)) == {"imported"}
    # one correlation id for the whole request, in the history and the domain events
    assert set(TagValueChange.objects.values_list("correlation_id", flat=True)) == {_uuid(body["correlation_id"])}
    events = DomainEvent.objects.filter(correlation_id=body["correlation_id"])
    assert events.count() == 4 and {e.actor.username for e in events} == {"admin"}


def _uuid(text):
    import uuid

    return uuid.UUID(text)


def test_a_tag_code_resolves_against_the_subjects_type(api, tags):
    doctor = SubjectFactory(subject_type=tags.world.doctor_type)
    clinic = tags.world.clinic_b_bj
    items = [{"subject": clinic.id, "tag": "grade", "value": "B"}, {"subject": doctor.id, "tag": "grade", "value": "C"}]
    assert api.post(BULK, {"items": items}, format="json").status_code == 200
    assert stored(tags.clinic_grade) == {clinic.id: "B"}
    assert stored(tags.doctor_grade) == {doctor.id: "C"}


def test_reimport_reports_unchanged_and_null_removes(api, tags):
    a, b = tags.member(), tags.member()
    items = [{"subject": a.id, "tag": "skin", "value": "dry"}, {"subject": b.id, "tag": "skin", "value": "oily"}]
    api.post(BULK, {"items": items}, format="json")
    events = DomainEvent.objects.count()
    again = api.post(BULK, {"items": items}, format="json").json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)
    assert DomainEvent.objects.count() == events  # nothing written, nothing audited
    changed = api.post(
        BULK,
        {
            "items": [
                {"subject": a.id, "tag": "skin", "value": None},
                {"subject": b.id, "tag": "skin", "value": "normal"},
            ]
        },
        format="json",
    ).json()
    assert (changed["removed"], changed["updated"]) == (1, 1)
    assert stored(tags.skin) == {b.id: "normal"}


def test_bad_items_are_all_reported_with_the_request_index_and_nothing_is_written(api, tags):
    a, b = tags.member(), tags.member()
    doctor = SubjectFactory(subject_type=tags.world.doctor_type)
    items = [
        {"subject": a.id, "tag": "skin", "value": "dry"},  # fine, but must not be written
        {"subject": a.id, "tag": "nope", "value": "x"},  # unknown tag
        {"subject": b.id, "tag": "skin", "value": "purple"},  # not an option
        {"subject": b.id, "tag": "score", "value": "seven"},  # wrong type
        {"subject": b.id, "tag": "age_band", "value": "under_30"},  # a rule tag
        {"subject": 987654321, "tag": "skin", "value": "dry"},  # unknown subject id
        {"subject": {"source": "crm", "external_id": "missing", "type": "member"}, "tag": "skin", "value": "dry"},
        {"subject": doctor.id, "tag": tags.skin.id, "value": "dry"},  # a member tag on a doctor
        {"subject": b.id, "tag": "vip", "value": "yes"},  # wrong type (boolean)
        {"subject": b.id, "tag": "since", "value": "2026-13-40"},  # not a date
        {"subject": a.id, "tag": "skin", "value": "oily"},  # the same subject twice for one tag
    ]
    response = api.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    found = details(response)
    assert (1, "tag", "unknown") in found
    assert (5, "subject", "unknown") in found
    assert (6, "subject", "unknown") in found
    assert (7, "tag", "wrong_subject_type") in found
    # resolution fails first: values are checked once every item resolves
    assert TagValue.objects.count() == 0 and TagValueChange.objects.count() == 0

    resolvable = [items[0], *items[2:5], items[8], items[9], items[10]]
    response = api.post(BULK, {"items": resolvable}, format="json")
    assert response.status_code == 400
    assert details(response) == [
        (1, "value", "not_an_option"),
        (2, "value", "wrong_type"),
        (3, "tag", "computed_tag"),
        (4, "value", "wrong_type"),
        (5, "value", "wrong_type"),
        (6, "subject", "duplicate"),
    ]
    assert TagValue.objects.count() == 0 and TagValueChange.objects.count() == 0
    assert not DomainEvent.objects.filter(action__startswith="tags.values").exists()


def test_malformed_items_and_envelopes(api, tags):
    a = tags.member()
    response = api.post(
        BULK,
        {"items": ["x", {"subject": a.id, "tag": "skin"}, {"subject": True, "tag": 5, "value": 1, "extra": 1}]},
        format="json",
    )
    assert response.status_code == 400
    assert details(response) == [
        (0, "", "invalid"),
        (1, "value", "required"),
        (2, "extra", "unknown_field"),
        (2, "subject", "required"),
    ]
    assert api.post(BULK, {"items": {}}, format="json").status_code == 400
    assert details(api.post(BULK, {"items": []}, format="json")) == [(None, "items", "empty")]
    assert api.post(BULK, "not json", content_type="application/json").status_code == 400


def test_an_over_limit_batch_is_refused_whole(api, tags, settings):
    settings.TAGWEAVE_BULK_MAX_ITEMS = 3
    members = [tags.member() for _ in range(4)]
    items = [{"subject": m.id, "tag": "skin", "value": "dry"} for m in members]
    response = api.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    assert details(response) == [(None, "items", "too_many_items")]
    assert TagValue.objects.count() == 0


def test_a_key_without_type_for_an_ambiguous_code_asks_for_the_type(api, tags):
    response = api.post(
        BULK,
        {"items": [{"subject": {"source": "hq", "external_id": "C1"}, "tag": "grade", "value": "A"}]},
        format="json",
    )
    assert details(response) == [(0, "subject.type", "ambiguous")]


def test_bulk_needs_write_permissions(tags, db):
    client = APIClient()
    client.force_authenticate(UserFactory())
    a = tags.member()
    response = client.post(BULK, {"items": [{"subject": a.id, "tag": "skin", "value": "dry"}]}, format="json")
    assert response.status_code == 403
    assert TagValue.objects.count() == 0
    assert APIClient().get(LIST).status_code == 401


def test_list_filters_by_tag_subject_value_and_source(api, tags):
    a, b, c = tags.member(), tags.member(), tags.member()
    api.post(
        BULK,
        {
            "items": [
                {"subject": a.id, "tag": "skin", "value": "dry"},
                {"subject": b.id, "tag": "skin", "value": "oily"},
                {"subject": c.id, "tag": "score", "value": 3},
                {"subject": a.id, "tag": "vip", "value": True},
            ]
        },
        format="json",
    )

    def ids(**params):
        return sorted((r["subject"], r["tag_code"]) for r in api.get(LIST, params).json()["results"])

    assert ids(tag=tags.skin.id) == [(a.id, "skin"), (b.id, "skin")]
    assert ids(tag_code="skin", value="oily") == [(b.id, "skin")]
    assert ids(value="3") == [(c.id, "score")]
    assert ids(value="true") == [(a.id, "vip")]
    assert ids(subject=a.id) == [(a.id, "skin"), (a.id, "vip")]
    assert ids(source="manual") == []
    assert len(ids(source="imported")) == 4
    row = api.get(LIST, {"subject": c.id}).json()["results"][0]
    assert set(row) == {"id", "subject", "tag", "tag_code", "value", "source", "rule_version", "updated_at"}
    assert (row["value"], row["source"], row["rule_version"]) == (3, "imported", None)
    assert row["updated_at"].endswith("Z")  # rendered by orjson in DRF's UTC format


def test_the_list_is_one_query_a_page_whatever_its_size(api, tags, django_assert_num_queries):
    members = [tags.member() for _ in range(30)]
    api.post(BULK, {"items": [{"subject": m.id, "tag": "skin", "value": "dry"} for m in members]}, format="json")
    api.get(LIST)  # warm the token/user caches of the client path
    # token auth (1) + the page (1) + tag usage (1, whatever the number of tags)
    with django_assert_num_queries(3):
        body = api.get(LIST, {"page_size": 25}).json()
    assert len(body["results"]) == 25 and body["next"]
    with django_assert_num_queries(3):
        rest = api.get(body["next"]).json()
    assert len(rest["results"]) == 5


@pytest.mark.postgres
def test_bulk_of_a_thousand_values_is_a_few_statements(api, tags, django_assert_max_num_queries):
    members = SubjectFactory.create_batch(1000, subject_type=tags.world.member_type)
    items = [{"subject": m.id, "tag": "skin", "value": ("dry", "oily")[m.id % 2]} for m in members]
    with django_assert_max_num_queries(25):
        response = api.post(BULK, {"items": items}, format="json")
    assert response.json()["created"] == 1000
