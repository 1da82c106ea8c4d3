import pytest
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from identity.models import MergeEvent, SourceRecord, SourceSystem
from tests.factories import UserFactory

from .helpers import oneid_of, partition, push

pytestmark = pytest.mark.django_db
RECORDS = "/api/v1/source-records/"


def client_with(*codenames):
    """A user with ``codenames`` in every scope (``all_scopes``: scoping is tested in tests/governance)."""
    user = UserFactory()
    user.user_permissions.set(Permission.objects.filter(codename__in=[*codenames, "all_scopes"]))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_push_one_record_then_again(api, sources):
    body = {"source": "crm_a", "external_id": "A1", "raw": {"name": "王芳", "phone": "138 1234 5678"}}
    first = api.post(RECORDS, body, format="json")
    assert first.status_code == 201, first.json()
    assert first.json()["status"] == "created" and first.json()["oneid"] == oneid_of("crm_a", "A1")
    again = api.post(RECORDS, body, format="json")
    assert again.status_code == 200 and again.json()["status"] == "unchanged"


def test_single_record_errors_name_the_field(api, sources):
    response = api.post(RECORDS, {"source": "crm_a", "external_id": "A1", "raw": {"phone": "12"}}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [
        {
            "index": None,
            "field": "raw.phone",
            "message": "phone is not a valid phone number",
            "code": "invalid_identifier",
        }
    ]


def test_bulk_is_all_or_nothing_with_per_item_errors(api, sources):
    items = [
        {"source": "crm_a", "external_id": "A1", "raw": {"name": "王芳", "phone": "13812345678"}},
        {"source": "crm_a", "external_id": "A1", "raw": {}},
        {"source": "crm_a", "external_id": "", "raw": []},
        {"source": 5, "external_id": "X", "raw": {}, "extra": 1},
        "not an object",
    ]
    response = api.post(RECORDS + "bulk/", {"items": items}, format="json")
    assert response.status_code == 400
    details = [(d["index"], d["field"]) for d in response.json()["error"]["details"]]
    assert details == [(1, "external_id"), (2, "external_id"), (2, "raw"), (3, "extra"), (3, "source"), (4, "")]
    assert SourceRecord.objects.count() == 0


def test_bulk_resolves_and_reports(api, sources):
    items = [
        {"source": "crm_a", "external_id": "A1", "raw": {"name": "王芳", "phone": "13812345678"}},
        {"source": "crm_b", "external_id": "B1", "raw": {"name": "王芳", "phone": "+86 138 1234 5678"}},
        {"source": "shop", "external_id": "S1", "raw": {"name": "张三", "phone": "13800138000"}},
    ]
    response = api.post(RECORDS + "bulk/", {"items": items}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["created"], body["updated"], body["unchanged"]) == (3, 0, 0)
    results = body["results"]
    assert results[0]["oneid"] == results[1]["oneid"] != results[2]["oneid"]
    assert results[2]["warnings"] == [{"type": "phone", "value": "13800138000", "reason": "blocked"}]


def test_bulk_refuses_oversized_batches_and_bad_bodies(api, sources, settings):
    settings.TAGWEAVE_BULK_MAX_ITEMS = 2
    items = [{"source": "shop", "external_id": str(i), "raw": {}} for i in range(3)]
    assert api.post(RECORDS + "bulk/", {"items": items}, format="json").json()["error"]["code"] == "too_many"
    assert api.post(RECORDS + "bulk/", "{not json", content_type="application/json").status_code == 400
    assert api.post(RECORDS + "bulk/", {"items": "x"}, format="json").status_code == 400
    assert SourceRecord.objects.count() == 0


def test_oneid_detail_explains_links(api, sources, django_assert_max_num_queries):
    push(
        ("crm_a", "A1", {"name": "王芳", "phone": "13812345678", "email": "fang@qq.com"}),
        ("wecom", "W1", {"external_userid": "wm1", "email": "fang@qq.com"}),
        ("shop", "S1", {"name": "王芳", "phone": "13800138000"}),
    )
    oneid = oneid_of("crm_a", "A1")
    with django_assert_max_num_queries(16):
        response = api.get(f"/api/v1/oneids/{oneid}/?unmask=1")
    assert response.status_code == 200
    body = response.json()
    assert body["attributes"] == {"email": "fang@qq.com", "name": "王芳", "phone": "13812345678"}
    assert {r["source"] for r in body["records"]} == {"crm_a", "wecom"}
    assert body["links"] == [
        {"rule": "identifier:email", "value": "fang@qq.com", "records": sorted(r["id"] for r in body["records"])}
    ]
    why = {(i["rule"], i["status"]) for i in body["identifiers"]}
    assert ("identifier:phone", "part") in why and ("composite:name_phone", "link") in why
    assert api.get("/api/v1/oneids/999999/").status_code == 404


def test_resolve_by_any_spelling(api, sources):
    push(("crm_a", "A1", {"name": "王芳", "phone": "13812345678"}), ("oa_a", "O1", {"openid": "oA", "unionid": "u1"}))
    response = api.get("/api/v1/oneids/resolve/", {"type": "phone", "value": "+86 138-1234-5678", "unmask": "1"})
    assert response.status_code == 200
    [match] = response.json()["matches"]
    assert match["id"] == oneid_of("crm_a", "A1") and match["attributes"]["name"] == "王芳"
    assert any(i["rule"] == "identifier:phone" and "composite" in i["why"] for i in match["identifiers"])
    openid = api.get("/api/v1/oneids/resolve/", {"type": "wechat_openid", "value": "oA", "scope": "app:wxA"})
    assert [m["id"] for m in openid.json()["matches"]] == [oneid_of("oa_a", "O1")]
    assert api.get("/api/v1/oneids/resolve/", {"type": "phone", "value": "12"}).status_code == 400
    assert api.get("/api/v1/oneids/resolve/", {"type": "nope", "value": "1"}).status_code == 400
    assert api.get("/api/v1/oneids/resolve/", {"type": "phone"}).status_code == 400


def test_split_and_merge_endpoints(api, sources):
    push(("crm_a", "A1", {"email": "fang@qq.com"}), ("wecom", "W1", {"email": "fang@qq.com"}))
    oneid = oneid_of("crm_a", "A1")
    w1 = SourceRecord.objects.get(external_id="W1").id
    response = api.post(f"/api/v1/oneids/{oneid}/split/", {"records": [w1], "reason": "two people"}, format="json")
    assert response.status_code == 200, response.json()
    assert len(partition()) == 2
    assert api.post(f"/api/v1/oneids/{oneid}/split/", {"records": ["x"]}, format="json").status_code == 400
    response = api.post("/api/v1/oneids/merge/", {"oneids": [oneid, response.json()["new"]]}, format="json")
    assert response.status_code == 200 and len(partition()) == 1
    assert list(MergeEvent.objects.values_list("kind", flat=True).order_by("id")) == ["manual_split", "manual_merge"]


def test_permissions(anon_api, sources):
    assert anon_api.get(RECORDS).status_code in (401, 403)
    reader = client_with("view_sourcerecord", "view_oneid")
    assert reader.get(RECORDS).status_code == 200
    assert reader.post(RECORDS, {"source": "shop", "external_id": "1", "raw": {}}, format="json").status_code == 403
    assert reader.post("/api/v1/oneids/merge/", {"oneids": [1, 2]}, format="json").status_code == 403
    writer = client_with("view_sourcerecord", "add_sourcerecord", "change_sourcerecord", "push_records")
    assert (
        writer.post(RECORDS + "bulk/", [{"source": "shop", "external_id": "1", "raw": {}}], format="json").status_code
        == 200
    )
    operator = client_with("view_oneid", "change_oneid")
    assert operator.post("/api/v1/oneids/merge/", {"oneids": [1, 1]}, format="json").status_code == 400


def test_source_system_api_validates(api, sources, world):
    body = {"code": "pos_a", "name": "POS A", "kind": "pos", "brand": world.brand_a.id, "subject_type": "member"}
    assert api.post("/api/v1/source-systems/", body, format="json").status_code == 201
    body = {"code": "pos_b", "name": "POS B", "kind": "pos", "brand": world.clinic_a_sh.id, "subject_type": "person"}
    assert api.post("/api/v1/source-systems/", body, format="json").status_code == 400
    assert SourceSystem.objects.filter(code="pos_b").count() == 0
    response = api.post(
        "/api/v1/identifier-types/",
        {"code": "passport", "name": "Passport", "normalizer": "nope", "fields": ["passport"]},
        format="json",
    )
    assert response.status_code == 400 and response.json()["error"]["details"][0]["field"] == "normalizer"


def test_openapi_schema_documents_the_oneid_endpoints(api):
    schema = api.get("/api/schema/?format=json").json()
    for path in (
        "/api/v1/source-records/bulk/",
        "/api/v1/oneids/{id}/",
        "/api/v1/oneids/resolve/",
        "/api/v1/oneids/{id}/split/",
        "/api/v1/oneids/merge/",
        "/api/v1/match-suggestions/{id}/accept/",
    ):
        assert path in schema["paths"], path


@pytest.mark.parametrize(
    "body",
    [[1, 2], {"records": "x"}, {"records": [1.5]}, {}, {"records": [10**12]}],
)
def test_split_bad_input_is_a_400_and_changes_nothing(api, sources, body):
    push(("crm_a", "A1", {"email": "fang@qq.com"}), ("wecom", "W1", {"email": "fang@qq.com"}))
    oneid = oneid_of("crm_a", "A1")
    response = api.post(f"/api/v1/oneids/{oneid}/split/", body, format="json")
    assert response.status_code == 400
    assert len(partition()) == 1 and MergeEvent.objects.count() == 0


@pytest.mark.parametrize("body", [{"oneids": [1]}, {"oneids": "x"}, {"oneids": [1, 10**12]}, [], {"oneids": [True, 2]}])
def test_merge_bad_input_is_a_400(api, sources, body):
    push(("crm_a", "A1", {"email": "a@qq.com"}))
    assert api.post("/api/v1/oneids/merge/", body, format="json").status_code == 400
    assert MergeEvent.objects.count() == 0


def test_records_filter_by_oneid_takes_only_an_existing_oneid(sources):
    push(("crm_a", "A1", {"email": "a@qq.com"}), ("wecom", "W1", {"email": "a@qq.com"}), ("crm_b", "B1", {}))
    client = client_with("view_sourcerecord")
    found = client.get(RECORDS, {"oneid": oneid_of("crm_a", "A1")}).json()["results"]
    assert sorted(r["id"] for r in found) == sorted(
        SourceRecord.objects.filter(external_id__in=["A1", "W1"]).values_list("id", flat=True)
    )
    assert {r["oneid"] for r in found} == {oneid_of("crm_a", "A1")}
    for bad in ("1.5", "abc", str(10**12)):
        response = client.get(RECORDS, {"oneid": bad})
        assert response.status_code == 400, bad
        assert [d["field"] for d in response.json()["error"]["details"]] == ["oneid"], bad
