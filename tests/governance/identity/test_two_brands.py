"""A OneID spanning brands A and B (and the group's WeCom): each brand sees its own part only.

A brand-A operator sees brand A's record, identifiers of it, merges made only of records they see,
and a golden record recomputed from that record alone — nothing of brand B, nothing group-level —
through the API and the admin. Decisions about the person (split, merge) need all of it.
"""

from __future__ import annotations

import pytest

from identity.models import OneId, SourceRecord
from tests.identity.helpers import push

from .conftest import B_ONLY, CANARY_A, OPERATE, api_for, make_user, no_canary

pytestmark = pytest.mark.django_db


def detail(client, oneid, **params):
    return client.get(f"/api/v1/oneids/{oneid}/", {"unmask": "1", **params})


def test_brand_a_detail_is_brand_a_records_and_golden_from_them(person, operator_a_pii):
    response = detail(api_for(operator_a_pii), person.oneid)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["partial"] is True
    assert [r["id"] for r in body["records"]] == [person.record_a.id]
    assert body["attributes"] == {k: CANARY_A[k] for k in ("email", "gender", "name", "phone")}
    assert body["display_name"] == CANARY_A["name"]
    assert {i["record"] for i in body["identifiers"]} == {person.record_a.id}
    assert body["links"] == []  # the name + phone link joins A to B: not A's to see
    assert body["history"] == []  # the merge that joined them names B's and the group's records
    assert no_canary(response.content, B_ONLY) == []


def test_brand_b_sees_the_mirror_image(person, operator_b_pii):
    body = detail(api_for(operator_b_pii), person.oneid).json()
    assert [r["id"] for r in body["records"]] == [person.record_b.id]
    assert body["attributes"]["email"] == "bella.canary@b.example" and body["attributes"]["city"] == "Bcitycanary"
    assert "gender" not in body["attributes"]


def test_hq_sees_the_whole_person(person, hq_pii):
    body = detail(api_for(hq_pii), person.oneid).json()
    assert body["partial"] is False
    assert {r["id"] for r in body["records"]} == {person.record_a.id, person.record_b.id, person.record_w.id}
    assert len(body["history"]) >= 1 and body["links"]


def test_records_list_and_detail_are_brand_a_only(person, operator_a_pii):
    client = api_for(operator_a_pii)
    listed = client.get("/api/v1/source-records/", {"unmask": "1"})
    assert [r["id"] for r in listed.json()["results"]] == [person.record_a.id]
    assert client.get(f"/api/v1/source-records/{person.record_a.id}/").status_code == 200
    for hidden in (person.record_b, person.record_w):
        assert client.get(f"/api/v1/source-records/{hidden.id}/").status_code == 404
    assert (
        client.get("/api/v1/source-records/", {"oneid": person.oneid}).json()["results"][0]["id"] == person.record_a.id
    )


def test_resolve_finds_only_through_visible_records(person, operator_a_pii):
    client = api_for(operator_a_pii)
    by_phone = client.get("/api/v1/oneids/resolve/", {"type": "phone", "value": "13911110001", "unmask": "1"})
    [match] = by_phone.json()["matches"]
    assert match["id"] == person.oneid and [r["id"] for r in match["records"]] == [person.record_a.id]
    by_b_email = client.get("/api/v1/oneids/resolve/", {"type": "email", "value": "bella.canary@b.example"})
    assert by_b_email.json()["matches"] == []
    by_wecom = client.get("/api/v1/oneids/resolve/", {"type": "wecom_external_userid", "value": "wmCanaryWecom1"})
    assert by_wecom.json()["matches"] == []


def test_oneid_list_shows_the_person_partially(person, operator_a_pii, world):
    push(("crm_b", "B-ONLY", {"name": "Other", "phone": "13911119999"}))
    rows = api_for(operator_a_pii).get("/api/v1/oneids/", {"unmask": "1"}).json()["results"]
    assert [(r["id"], r["partial"], r["display_name"]) for r in rows] == [(person.oneid, True, CANARY_A["name"])]


def test_out_of_scope_is_404(person, world):
    nobody = make_user(*OPERATE)  # permissions but no scope grant
    client = api_for(nobody)
    assert client.get(f"/api/v1/oneids/{person.oneid}/").status_code == 404
    assert client.get("/api/v1/oneids/").json()["results"] == []
    assert client.get("/api/v1/source-records/").json()["results"] == []
    assert (
        client.post(
            f"/api/v1/oneids/{person.oneid}/split/", {"records": [person.record_b.id]}, format="json"
        ).status_code
        == 404
    )


def test_split_and_merge_need_the_whole_person(person, operator_a, sources, hq_pii):
    client = api_for(operator_a)
    split = client.post(f"/api/v1/oneids/{person.oneid}/split/", {"records": [person.record_a.id]}, format="json")
    assert split.status_code == 403
    push(("crm_a", "A2", {"name": "Solo", "phone": "13911112222"}))
    solo = SourceRecord.objects.get(external_id="A2").assigned_oneid_id
    merge = client.post("/api/v1/oneids/merge/", {"oneids": [solo, person.oneid]}, format="json")
    assert merge.status_code == 403
    assert OneId.objects.filter(status="active").count() == 2
    # a person wholly in brand A: brand A decides
    push(("oa_a", "O2", {"openid": "oSolo", "name": "Solo", "phone": "13911112222"}))
    assert SourceRecord.objects.get(external_id="O2").assigned_oneid_id == solo
    o2 = SourceRecord.objects.get(external_id="O2").id
    response = client.post(f"/api/v1/oneids/{solo}/split/", {"records": [o2], "reason": "two"}, format="json")
    assert response.status_code == 200, response.content
    new = response.json()["new"]
    response = client.post("/api/v1/oneids/merge/", {"oneids": [solo, new]}, format="json")
    assert response.status_code == 200, response.content


def admin_page(client, url):
    response = client.get(url)
    return response.status_code, response.content.decode()


def test_admin_shows_brand_a_its_part_only(person, operator_a_pii, client):
    client.force_login(operator_a_pii)
    status, html = admin_page(client, f"/admin/identity/oneid/{person.oneid}/change/?unmask=1")
    assert status == 200
    assert "anna.canary@a.example" in html and no_canary(html, B_ONLY) == []
    assert "cannot be split or merged here" in html and "Split selected records off" not in html
    status, html = admin_page(client, "/admin/identity/sourcerecord/?unmask=1")
    assert status == 200 and "ExtCanaryA1" in html and no_canary(html, B_ONLY) == []
    assert client.get(f"/admin/identity/sourcerecord/{person.record_b.id}/change/").status_code in (302, 404)
    status, html = admin_page(client, "/admin/identity/mergeevent/?unmask=1")
    assert status == 200 and no_canary(html, B_ONLY) == []
    status, html = admin_page(client, "/admin/identity/oneid/")
    assert status == 200 and f">{person.oneid}<" in html


def test_admin_split_of_a_partial_person_is_refused(person, operator_a, client):
    client.force_login(operator_a)
    response = client.post(f"/admin/identity/oneid/{person.oneid}/split/", {"records": [person.record_a.id]})
    assert response.status_code == 403
    assert SourceRecord.objects.filter(assignment__oneid=person.oneid).count() == 3
