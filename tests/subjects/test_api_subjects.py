import pytest
from auditlog.models import LogEntry

from audit.models import DomainEvent
from subjects.models import Subject, SubjectType
from tests.factories import SubjectFactory, UserFactory

BULK = "/api/v1/subjects/bulk/"


def member(n, **extra):
    return {"type": "member", "source": "crm", "external_id": f"M{n}", "display_name": f"Member {n}", **extra}


def test_requests_without_a_token_get_401(anon_api, db):
    response = anon_api.get("/api/v1/subjects/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_user_without_model_permissions_gets_403(world, django_user_model):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(UserFactory())
    assert client.get("/api/v1/subjects/").status_code == 403
    assert client.post(BULK, {"items": [member(1)]}, format="json").status_code == 403
    assert not Subject.objects.filter(source="crm").exists()


def test_create_read_update_delete_a_subject(api, world):
    created = api.post(
        "/api/v1/subjects/",
        member(
            1, attributes={"skin_type": "dry"}, brand=world.brand_a.id, region={"source": "hq", "external_id": "SH"}
        ),
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["type"] == "member" and body["brand"] == world.brand_a.id and body["region"] == world.shanghai.id
    url = f"/api/v1/subjects/{body['id']}/"
    assert api.get(url).json()["attributes"] == {"skin_type": "dry"}
    patched = api.patch(url, {"attributes": {"skin_type": "oily"}}, format="json")
    assert patched.status_code == 200 and patched.json()["attributes"] == {"skin_type": "oily"}
    assert patched.json()["brand"] == world.brand_a.id
    log = LogEntry.objects.get_for_object(Subject.objects.get(pk=body["id"]))
    assert [e.action for e in log.order_by("id")] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert all(e.actor is not None and e.actor.username == "admin" for e in log)
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404


def test_the_external_key_cannot_change_on_update(api, world):
    subject = SubjectFactory(subject_type=world.member_type, source="crm", external_id="M1")
    response = api.patch(f"/api/v1/subjects/{subject.id}/", {"external_id": "M2"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "external_id"


def test_a_schema_violation_names_the_field(api, world):
    response = api.post("/api/v1/subjects/", member(1, attributes={"spend": -5}), format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [
        {
            "index": None,
            "field": "attributes.spend",
            "message": "spend must be bigger than or equal to 0",
            "code": "schema",
        }
    ]


def test_bulk_upsert_creates_then_reports_unchanged_then_updated(api, world):
    items = [member(n, brand=world.brand_a.id, attributes={"spend": n}) for n in range(3)]
    first = api.post(BULK, {"items": items}, format="json").json()
    assert (first["created"], first["updated"], first["unchanged"]) == (3, 0, 0)
    assert [r["index"] for r in first["results"]] == [0, 1, 2]
    again = api.post(BULK, {"items": items}, format="json").json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 3)
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    items[1]["attributes"] = {"spend": 100}
    changed = api.post(BULK, items, format="json").json()
    assert [r["status"] for r in changed["results"]] == ["unchanged", "updated", "unchanged"]
    assert Subject.objects.get(external_id="M1").attributes == {"spend": 100}
    events = DomainEvent.objects.filter(action="subjects.bulk_upserted").order_by("id")
    assert [e.row_count for e in events] == [3, 1]  # the no-op batch leaves no event
    assert events.last().summary["ids"] == [changed["results"][1]["id"]] and events.last().actor.username == "admin"


def test_bulk_errors_name_every_failing_item_and_write_nothing(api, world):
    items = [
        member(0),
        {"type": "nope", "source": "crm", "external_id": "X"},
        member(2, attributes={"skin_type": "purple"}),
        member(0),
        member(4, brand=world.clinic_a_sh.id),
        member(5, region={"source": "hq", "external_id": "MARS"}),
        member(6, colour="red"),
    ]
    response = api.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    details = {(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]}
    assert details == {
        (1, "type", "unknown_type"),
        (2, "attributes.skin_type", "schema"),
        (3, "external_id", "duplicate"),
        (6, "colour", "unknown_field"),
    }
    assert not Subject.objects.filter(source="crm").exists()
    # Once shape errors are fixed, reference errors are reported the same way.
    response = api.post(BULK, {"items": [member(0), *items[4:6]]}, format="json")
    details = {(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]}
    assert details == {(1, "brand", "wrong_type"), (2, "region", "not_found")}
    assert not Subject.objects.filter(source="crm").exists()


def test_a_batch_over_the_limit_is_refused(api, world, settings):
    settings.TAGWEAVE_BULK_MAX_ITEMS = 5
    response = api.post(BULK, {"items": [member(n) for n in range(6)]}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0] == {
        "index": None, "field": "items", "message": "A batch holds at most 5 items; got 6.", "code": "too_many"
    }  # fmt: skip
    assert not Subject.objects.filter(source="crm").exists()


def test_malformed_json_gets_the_error_shape(api, world):
    response = api.generic("POST", BULK, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_references_to_items_of_the_same_batch_are_written_in_order(api, world):
    items = [
        {"type": "region", "source": "geo", "external_id": "pudong", "parent": {"source": "geo", "external_id": "sh"}},
        {"type": "region", "source": "geo", "external_id": "sh", "parent": world.china.id},
        member(1, region={"source": "geo", "external_id": "pudong"}),
    ]
    response = api.post(BULK, {"items": items}, format="json")
    assert response.status_code == 200, response.json()
    pudong = Subject.objects.get(source="geo", external_id="pudong")
    assert pudong.parent.external_id == "sh" and pudong.parent.parent == world.china
    assert Subject.objects.get(external_id="M1").region == pudong


def test_a_reference_cycle_inside_a_batch_is_refused(api, world):
    items = [
        {"type": "region", "source": "geo", "external_id": "a", "parent": {"source": "geo", "external_id": "b"}},
        {"type": "region", "source": "geo", "external_id": "b", "parent": {"source": "geo", "external_id": "a"}},
    ]
    response = api.post(BULK, {"items": items}, format="json")
    assert response.status_code == 400
    assert {d["code"] for d in response.json()["error"]["details"]} == {"cycle"}
    assert not Subject.objects.filter(source="geo").exists()


def test_list_filters_and_cursor_pagination(api, world):
    for n in range(5):
        SubjectFactory(
            subject_type=world.member_type, brand=world.brand_a if n % 2 else world.brand_b, region=world.shanghai
        )
    page = api.get("/api/v1/subjects/", {"type": "member", "brand": world.brand_a.id}).json()
    assert len(page["results"]) == 2
    first = api.get("/api/v1/subjects/", {"type": "member", "page_size": 2}).json()
    second = api.get(first["next"]).json()
    third = api.get(second["next"]).json()
    ids = [s["id"] for p in (first, second, third) for s in p["results"]]
    assert ids == sorted(Subject.objects.filter(subject_type=world.member_type).values_list("id", flat=True))
    assert third["next"] is None
    within = api.get("/api/v1/subjects/", {"within_region": world.china.id, "type": "clinic"}).json()
    assert {s["id"] for s in within["results"]} == {world.clinic_a_sh.id, world.clinic_b_bj.id}


def test_the_list_query_count_does_not_grow_with_the_page(api, world, django_assert_num_queries):
    for _ in range(30):
        SubjectFactory(subject_type=world.member_type)
    # auth token + page
    with django_assert_num_queries(2):
        assert len(api.get("/api/v1/subjects/", {"page_size": 50}).json()["results"]) == 38


def test_deleting_a_subject_type_that_has_subjects_is_refused(api, world):
    SubjectFactory(subject_type=world.member_type)
    response = api.delete(f"/api/v1/subject-types/{world.member_type.id}/")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Subject type 'member' has 1 subjects; delete or move them first."
    assert SubjectType.objects.filter(code="member").exists()


def test_subject_types_are_data(api, db):
    response = api.post(
        "/api/v1/subject-types/",
        {"code": "nutritionist", "name": "Nutritionist", "category": "staff", "attribute_schema": {"type": "object"}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    bad = api.post(
        "/api/v1/subject-types/",
        {"code": "bad", "name": "Bad", "category": "staff", "attribute_schema": {"type": "nonsense"}},
        format="json",
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["details"][0]["field"].startswith("attribute_schema")
    scope_on_staff = api.post(
        "/api/v1/subject-types/", {"code": "x", "name": "X", "category": "staff", "scope_role": "brand"}, format="json"
    )
    assert scope_on_staff.status_code == 400


@pytest.mark.django_db
def test_the_openapi_schema_is_served_and_valid(api):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/subjects/bulk/", "/api/v1/relationships/bulk/", "/api/v1/subjects/{id}/relationships/"} <= set(
        paths
    )
    assert api.get("/api/docs/").status_code == 200
