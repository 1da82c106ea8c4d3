"""Scoped reads of subjects and relationships: API, filters, counts, admin, autocomplete, export.

Every path lists exactly the rows the role may see (written out in ``Gov.visible_ids``), answers
404 (API) or "does not exist" (admin) for the rest, and costs the same number of queries
however many rows a page holds.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from subjects.models import Subject

pytestmark = pytest.mark.django_db

RESTRICTED = ("brand_operator", "regional_manager")


def listed_ids(client, url: str) -> set[int]:
    response = client.get(url + ("&" if "?" in url else "?") + "page_size=1000")
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


@pytest.mark.parametrize("role", ["hq_admin", "hq_analyst", *RESTRICTED])
def test_subject_list_holds_exactly_the_visible_subjects(gov, role):
    assert listed_ids(gov.client(role), "/api/v1/subjects/") == gov.visible_ids(role)


@pytest.mark.parametrize("role", RESTRICTED)
def test_subject_detail_out_of_scope_is_404_in_the_error_shape(gov, role):
    client = gov.client(role)
    assert client.get(f"/api/v1/subjects/{gov.member_in.pk}/").status_code == 200
    response = client.get(f"/api/v1/subjects/{gov.member_out.pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    for suffix in ("relationships/", "tags/"):
        assert client.get(f"/api/v1/subjects/{gov.member_out.pk}/{suffix}").status_code in (403, 404)


def test_filters_and_search_stay_inside_the_scope(gov):
    client = gov.client("brand_operator")
    w = gov.world
    assert listed_ids(client, f"/api/v1/subjects/?brand={w.brand_b.pk}") == set()
    assert listed_ids(client, f"/api/v1/subjects/?within_region={w.china.pk}") == {
        w.clinic_a_sh.pk,
        gov.member_in.pk,
        gov.member_a_bj.pk,
    }
    assert listed_ids(client, "/api/v1/subjects/?type=member") == {gov.member_in.pk, gov.member_a_bj.pk}
    # Name search (``q``) needs view_pii (PII section); HQ admin holds it and stays inside nothing.
    assert listed_ids(gov.client("hq_admin"), "/api/v1/subjects/?q=Member") == {
        gov.member_in.pk,
        gov.member_out.pk,
        gov.member_a_bj.pk,
    }
    assert listed_ids(client, "/api/v1/subjects/?external_id=M-OUT") == set()


def test_relationships_are_visible_when_both_ends_are(gov):
    """rel_cross joins an in-scope member to an out-of-scope clinic: hidden, like its far end."""
    client = gov.client("brand_operator")
    assert listed_ids(client, "/api/v1/relationships/") == {gov.rel_in.pk}
    assert client.get(f"/api/v1/relationships/{gov.rel_cross.pk}/").status_code == 404
    assert client.get(f"/api/v1/relationships/{gov.rel_out.pk}/").status_code == 404
    assert listed_ids(client, f"/api/v1/subjects/{gov.member_in.pk}/relationships/") == {gov.rel_in.pk}
    assert listed_ids(gov.client("hq_analyst"), f"/api/v1/subjects/{gov.member_in.pk}/relationships/") == {
        gov.rel_in.pk,
        gov.rel_cross.pk,
    }


def test_subject_type_counts_count_only_visible_subjects(gov):
    rows = gov.client("regional_manager").get("/api/v1/subject-types/").json()["results"]
    counts = {row["code"]: row["subject_count"] for row in rows}
    assert counts["member"] == 1 and counts["clinic"] == 1 and counts["brand"] == 0 and counts["region"] == 1
    rows = gov.client("hq_analyst").get("/api/v1/subject-types/").json()["results"]
    assert {row["code"]: row["subject_count"] for row in rows}["member"] == 3


def _more_members(gov, count: int) -> None:
    w = gov.world
    Subject.objects.bulk_create(
        Subject(
            subject_type=w.member_type,
            source="bulk",
            external_id=f"X{i}",
            brand=w.brand_a if i % 2 else w.brand_b,
            region=w.shanghai,
            business_line=w.line,
        )
        for i in range(count)
    )


@pytest.mark.parametrize("role", ["hq_analyst", *RESTRICTED])
def test_list_query_count_does_not_grow_with_the_page(gov, role):
    """The scope is one subquery in the list's statement, never a check per row."""
    client = gov.client(role)
    client.get("/api/v1/subjects/")  # token and permission caches of other layers are warm after this

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/api/v1/subjects/", {"page_size": 1000}).status_code == 200
        return len(ctx.captured_queries)

    few = queries()
    _more_members(gov, 60)
    assert queries() == few
    assert few <= 8


def test_relationship_list_query_count_does_not_grow(gov):
    from subjects.models import Relationship

    client = gov.client("brand_operator")

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/api/v1/relationships/").status_code == 200
        return len(ctx.captured_queries)

    few = queries()
    w = gov.world
    Relationship.objects.bulk_create(
        Relationship(
            relationship_type=w.visited,
            from_subject=gov.member_in,
            to_subject=w.clinic_a_sh,
            source="bulk",
            external_id=f"R{i}",
        )
        for i in range(30)
    )
    assert queries() == few


# Admin ---------------------------------------------------------------------------------------


def test_admin_changelist_lists_only_visible_subjects(gov):
    client = gov.admin_client("brand_operator")
    response = client.get("/admin/subjects/subject/")
    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert shown == gov.visible_ids("brand_operator")
    brand_choices = [label for _, label in response.context["cl"].filter_specs[1].lookup_choices]
    assert brand_choices == ["Brand A"]


def test_admin_change_page_of_an_out_of_scope_subject_does_not_exist(gov):
    client = gov.admin_client("regional_manager")
    assert client.get(f"/admin/subjects/subject/{gov.member_in.pk}/change/").status_code == 200
    response = client.get(f"/admin/subjects/subject/{gov.member_out.pk}/change/")
    assert response.status_code == 302 and response.url == "/admin/"
    response = client.get(f"/admin/subjects/relationship/{gov.rel_cross.pk}/change/")
    assert response.status_code == 302


def test_admin_related_panels_hide_relationships_to_invisible_subjects(gov):
    client = gov.admin_client("brand_operator")
    response = client.get(f"/admin/subjects/subject/{gov.member_in.pk}/change/")
    outgoing, incoming = response.context["relationship_panels"]
    assert [rel.pk for rel, _ in outgoing["rows"]] == [gov.rel_in.pk]
    assert incoming["rows"] == []


def test_admin_autocomplete_offers_only_visible_scopes(gov):
    client = gov.admin_client("brand_operator")
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "subjects", "model_name": "subject", "field_name": "brand", "term": ""},
    )
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(gov.world.brand_a.pk)]


def test_admin_csv_export_holds_only_visible_subjects(gov):
    client = gov.admin_client("brand_operator")
    columns = ("type", "source", "external_id", "brand", "region")
    form = {"format": "0", "resource": "0", **{f"subjectresource_{name}": "on" for name in columns}}
    response = client.post("/admin/subjects/subject/export/", form)
    assert response.status_code == 200, response.content[:500]
    body = response.content.decode()
    assert "M-IN" in body and "M-A-BJ" in body
    assert "M-OUT" not in body and ",C2," not in body and ",hq:B," not in body


def test_admin_changelist_query_count_does_not_grow(gov):
    client = gov.admin_client("regional_manager")
    client.get("/admin/subjects/subject/")  # content types and the like are cached after this

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/admin/subjects/subject/").status_code == 200
        return len(ctx.captured_queries)

    few = queries()
    _more_members(gov, 40)
    assert queries() == few
