"""Writes cannot escape scope: checked in the services, so API, admin and CSV import agree.

Each refusal is per item, names the field ("brand", "region", "business_line" with code
``out_of_scope``; a hidden reference is ``not_found`` like a missing one), writes nothing, and
costs the same queries for 1 or 500 items.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import DomainEvent
from common.errors import ServiceError
from subjects.models import Relationship, Subject
from subjects.services import relationship_bulk_upsert, subject_bulk_upsert, subject_delete

pytestmark = pytest.mark.django_db


def member(gov, ext: str, brand=None, region=None, **extra) -> dict:
    w = gov.world
    return {
        "type": "member",
        "source": "crm",
        "external_id": ext,
        "brand": (brand or w.brand_a).pk,
        "region": (region or w.shanghai).pk,
        "business_line": w.line.pk,
        **extra,
    }


def error_rows(response) -> list[tuple]:
    return [(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]]


def test_operator_creates_in_their_brand_and_not_in_another(gov):
    client = gov.client("brand_operator")
    created = client.post("/api/v1/subjects/", member(gov, "NEW-A"), format="json")
    assert created.status_code == 201, created.content
    before = Subject.objects.count()
    response = client.post("/api/v1/subjects/", member(gov, "NEW-B", brand=gov.world.brand_b), format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "out_of_scope"
    assert error_rows(response) == [(None, "brand", "out_of_scope")]
    assert Subject.objects.count() == before


def test_a_brandless_subject_is_outside_a_brand_grant(gov):
    item = member(gov, "NO-BRAND")
    item["brand"] = None
    response = gov.client("brand_operator").post("/api/v1/subjects/", item, format="json")
    assert response.status_code == 403
    assert error_rows(response) == [(None, "brand", "out_of_scope")]


def test_regional_grant_covers_sub_regions_only(gov):
    """The manager has no add permission; the service's rule is checked with the user directly."""
    user = gov.users["regional_manager"]
    w = gov.world
    ok = subject_bulk_upsert(actor=user, items=[member(gov, "SH-1", region=w.shanghai)])
    assert ok.counts["created"] == 1
    with pytest.raises(ServiceError) as refused:
        subject_bulk_upsert(actor=user, items=[member(gov, "BJ-1", region=w.beijing)])
    assert [(e.index, e.field, e.code) for e in refused.value.errors] == [(0, "region", "out_of_scope")]


def test_bulk_is_all_or_nothing_with_per_item_errors(gov):
    w = gov.world
    items = [
        member(gov, "OK-1"),
        member(gov, "BAD-1", brand=w.brand_b),
        member(gov, "OK-2"),
        member(gov, "BAD-2", brand=w.brand_b),
    ]
    before = (Subject.objects.count(), DomainEvent.objects.count())
    response = gov.client("brand_operator").post("/api/v1/subjects/bulk/", {"items": items}, format="json")
    assert response.status_code == 403
    assert error_rows(response) == [(1, "brand", "out_of_scope"), (3, "brand", "out_of_scope")]
    assert (Subject.objects.count(), DomainEvent.objects.count()) == before


def test_moving_a_visible_subject_out_of_scope_is_refused(gov):
    client = gov.client("brand_operator")
    url = f"/api/v1/subjects/{gov.member_in.pk}/"
    response = client.patch(url, {"brand": gov.world.brand_b.pk}, format="json")
    assert response.status_code == 403
    assert error_rows(response) == [(None, "brand", "out_of_scope")]
    gov.member_in.refresh_from_db()
    assert gov.member_in.brand_id == gov.world.brand_a.pk
    moved = client.patch(url, {"region": gov.world.beijing.pk}, format="json")  # still brand A: allowed
    assert moved.status_code == 200, moved.content


def test_an_invisible_stored_subject_cannot_be_overwritten_by_upsert(gov):
    """The key exists outside the scope: an upsert into brand A must not take it over."""
    item = member(gov, "M-OUT")
    response = gov.client("brand_operator").post("/api/v1/subjects/bulk/", {"items": [item]}, format="json")
    assert response.status_code == 403
    assert error_rows(response) == [(0, "external_id", "out_of_scope")]
    gov.member_out.refresh_from_db()
    assert gov.member_out.brand_id == gov.world.brand_b.pk


def test_a_scope_fk_to_an_item_of_the_same_batch_is_checked_after_it_is_written(gov):
    """A new region referenced by key: its ancestors exist only inside the write's transaction.

    Both regions carry region=Shanghai (so the manager may write them); PD hangs below Shanghai,
    TOP is a root region, so a member placed in TOP is outside the Shanghai grant.
    """
    w = gov.world
    user = gov.users["regional_manager"]

    def batch(code: str, parent) -> list[dict]:
        region = {"type": "region", "source": "hq", "external_id": code, "region": w.shanghai.pk, "parent": parent}
        item = member(gov, f"{code}-1")
        item["region"] = {"source": "hq", "external_id": code, "type": "region"}
        return [region, item]

    assert subject_bulk_upsert(actor=user, items=batch("PD", w.shanghai.pk)).counts["created"] == 2
    before = Subject.objects.count()
    with pytest.raises(ServiceError) as refused:
        subject_bulk_upsert(actor=user, items=batch("TOP", None))
    assert [(e.index, e.field, e.code) for e in refused.value.errors] == [(1, "region", "out_of_scope")]
    assert Subject.objects.count() == before


def test_parent_must_be_visible(gov):
    w = gov.world
    user = gov.users["hq_admin"]
    subject_bulk_upsert(
        actor=user, items=[{"type": "region", "source": "hq", "external_id": "XH", "parent": w.shanghai.pk}]
    )
    with pytest.raises(ServiceError) as refused:
        subject_bulk_upsert(
            actor=gov.users["regional_manager"],
            items=[{"type": "region", "source": "hq", "external_id": "XH", "parent": w.beijing.pk}],
        )
    codes = {(e.field, e.code) for e in refused.value.errors}
    assert ("parent", "not_found") in codes


def test_relationship_ends_must_both_be_visible(gov):
    client = gov.client("brand_operator")
    w = gov.world
    ok = {"type": "visited", "source": "crm", "external_id": "V-NEW", "from": gov.member_in.pk, "to": w.clinic_a_sh.pk}
    assert client.post("/api/v1/relationships/", ok, format="json").status_code == 201
    before = Relationship.objects.count()
    bad = {**ok, "external_id": "V-BAD", "to": w.clinic_b_bj.pk}
    response = client.post("/api/v1/relationships/", bad, format="json")
    assert response.status_code == 400
    assert error_rows(response) == [(None, "to", "not_found")]
    assert response.json()["error"]["details"][0]["message"] == f"No subject with id {w.clinic_b_bj.pk}."
    assert Relationship.objects.count() == before


def test_a_relationship_with_an_invisible_stored_end_cannot_be_updated(gov):
    """rel_cross (member_in → clinic B) is hidden; re-pointing it into scope is a takeover."""
    item = {
        "type": "visited",
        "source": "crm",
        "external_id": "V-X",
        "from": gov.member_in.pk,
        "to": gov.world.clinic_a_sh.pk,
    }
    response = gov.client("brand_operator").post("/api/v1/relationships/bulk/", {"items": [item]}, format="json")
    assert response.status_code == 403
    assert error_rows(response) == [(0, "external_id", "out_of_scope")]
    gov.rel_cross.refresh_from_db()
    assert gov.rel_cross.to_subject_id == gov.world.clinic_b_bj.pk


def test_delete_service_refuses_an_invisible_subject(gov):
    with pytest.raises(ServiceError) as refused:
        subject_delete(actor=gov.users["brand_operator"], subject=gov.member_out)
    assert refused.value.status_code == 404
    assert Subject.objects.filter(pk=gov.member_out.pk).exists()


def test_system_and_hq_writes_are_not_scope_checked(gov):
    w = gov.world
    for actor in (None, gov.users["hq_admin"]):
        result = subject_bulk_upsert(actor=actor, items=[member(gov, f"SYS-{actor}", brand=w.brand_b)])
        assert result.counts["created"] == 1


def test_scope_checks_cost_the_same_queries_for_one_or_many_items(gov):
    user = gov.users["brand_operator"]
    subject_bulk_upsert(actor=user, items=[member(gov, "WARM")])

    def queries(count: int, prefix: str) -> int:
        items = [member(gov, f"{prefix}-{i}") for i in range(count)]
        with CaptureQueriesContext(connection) as ctx:
            subject_bulk_upsert(actor=user, items=items)
        return len(ctx.captured_queries)

    assert queries(1, "ONE") == queries(300, "MANY")

    ends = [(gov.member_in.pk, w) for w in (gov.world.clinic_a_sh.pk,)]

    def rel_queries(count: int, prefix: str) -> int:
        items = [
            {"type": "visited", "source": "crm", "external_id": f"{prefix}{i}", "from": a, "to": b}
            for i in range(count)
            for a, b in ends
        ]
        with CaptureQueriesContext(connection) as ctx:
            relationship_bulk_upsert(actor=user, items=items)
        return len(ctx.captured_queries)

    assert rel_queries(1, "R1-") == rel_queries(200, "R2-")


def test_admin_form_cannot_save_into_another_brand(gov):
    client = gov.admin_client("brand_operator")
    w = gov.world
    form = {
        "subject_type": w.member_type.pk,
        "source": "crm",
        "external_id": "ADM-B",
        "display_name": "x",
        "attributes": "{}",
        "brand": w.brand_b.pk,
        "region": w.shanghai.pk,
        "business_line": w.line.pk,
    }
    response = client.post("/admin/subjects/subject/add/", form)
    assert response.status_code == 200  # the form again, with errors
    assert "brand" in response.context["adminform"].form.errors
    assert not Subject.objects.filter(external_id="ADM-B").exists()


def test_csv_import_is_scope_checked_like_the_api(gov):
    import tablib

    from subjects.imports import SubjectResource

    rows = tablib.Dataset(
        headers=[
            "type",
            "source",
            "external_id",
            "display_name",
            "attributes",
            "business_line",
            "brand",
            "region",
            "parent",
        ]
    )
    rows.append(["member", "crm", "CSV-B", "x", "{}", "hq:aesthetics", "hq:B", "hq:SH", ""])
    result = SubjectResource().import_data(rows, dry_run=False, user=gov.users["brand_operator"])
    assert result.has_validation_errors() or result.has_errors()
    assert not Subject.objects.filter(external_id="CSV-B").exists()


def test_a_restricted_actors_move_reuses_the_scope_checks_read_of_the_stored_ends(gov):
    """The stored ends the scope check reads are the ones the domain event lists as the moved
    relationship's previous ends: no second read."""
    user, w, rel = gov.users["brand_operator"], gov.world, gov.rel_in
    item = {"type": "visited", "source": rel.source, "external_id": rel.external_id, "to": w.clinic_a_sh.pk}
    with CaptureQueriesContext(connection) as ctx:
        relationship_bulk_upsert(actor=user, items=[{**item, "from": gov.member_a_bj.pk}])

    reads = [q for q in ctx.captured_queries if "x.from_subject_id, x.to_subject_id, x.subject_id FROM" in q["sql"]]
    assert len(reads) == 1
    event = DomainEvent.objects.filter(object_type="subjects.relationship").latest("id")
    assert event.summary["previous_ends"] == [[w.visited.pk, gov.member_in.pk, w.clinic_a_sh.pk, None]]
