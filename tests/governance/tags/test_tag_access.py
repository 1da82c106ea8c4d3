"""Tag access (issue 6): who sees, uses and edits which tags, per role, through the API.

Expectations are written out by hand per role (not computed by ``tags.access``): brand A /
Shanghai is "in", brand B / Beijing is "out", and the ``secret``, ``readonly`` and ``nouse``
groups open only by grant for their action.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import DomainEvent
from tags.models import RecomputeJob, TagDefinition, TagGroup, TagValue

from .conftest import TAG_CODES, canary, rule_reading

pytestmark = pytest.mark.django_db

DEFS, GROUPS, VALUES = "/api/v1/tag-definitions/", "/api/v1/tag-groups/", "/api/v1/tag-values/"
BRAND_A_TAGS = {"open_note", "a_note", "ro_note", "nouse_note", "derived"}
VISIBLE_TAGS = {
    "hq_admin": set(TAG_CODES) | {"derived"},
    "hq_analyst": set(TAG_CODES) | {"derived"},
    "brand_operator": BRAND_A_TAGS,
    "editor": BRAND_A_TAGS,
    "regional_manager": BRAND_A_TAGS | {"b_note"},  # no brand in the grant: every brand's groups
    "granted": BRAND_A_TAGS | {"secret_note", "secret_two"},  # a group grant covers the group's tags
    "one_tag": BRAND_A_TAGS | {"secret_note"},  # a definition grant refines: that tag only
}
NO_TAG_VIEW = ("integration", "auditor", "nobody")


def _members_seen(tw, role: str) -> list:
    g = tw.gov
    if role in ("hq_admin", "hq_analyst"):
        return tw.members
    if role == "regional_manager":
        return [g.member_in]
    return [g.member_in, g.member_a_bj]


def _all_pages(client, url: str, params: dict | None = None) -> list[dict]:
    rows, response = [], client.get(url, {**(params or {}), "page_size": 1000})
    while True:
        assert response.status_code == 200, response.content[:300]
        body = response.json()
        rows.extend(body["results"])
        if not body.get("next"):
            return rows
        response = client.get(body["next"])


@pytest.mark.parametrize("role", sorted(VISIBLE_TAGS))
def test_definitions_list_holds_exactly_the_visible_tags(tw, role):
    rows = _all_pages(tw.gov.client(role), DEFS, {"subject_type": "member"})
    assert {r["code"] for r in rows} == VISIBLE_TAGS[role]


@pytest.mark.parametrize("role", NO_TAG_VIEW)
def test_definitions_list_needs_the_model_permission(tw, role):
    assert tw.gov.client(role).get(DEFS).status_code == 403


@pytest.mark.parametrize("role", sorted(VISIBLE_TAGS))
def test_definition_details_answer_404_when_invisible(tw, role):
    client = tw.gov.client(role)
    for code, tag in tw.tags.items():
        status = client.get(f"{DEFS}{tag.pk}/").status_code
        assert status == (200 if code in VISIBLE_TAGS[role] else 404), (code, status)


def test_groups_list_and_details_follow_the_policies(tw):
    expected = {
        "brand_operator": {"open", "brand_a", "readonly", "nouse"},
        "regional_manager": {"open", "brand_a", "brand_b", "readonly", "nouse"},
        "granted": {"open", "brand_a", "readonly", "nouse", "secret"},
        "one_tag": {"open", "brand_a", "readonly", "nouse", "secret"},  # shown for its one visible tag
        "hq_analyst": set(tw.groups),
    }
    for role, codes in expected.items():
        client = tw.gov.client(role)
        rows = _all_pages(client, GROUPS, {"subject_type": "member"})
        assert {r["code"] for r in rows} == codes, role
        assert client.get(f"{GROUPS}{tw.groups['brand_b'].pk}/").status_code == (200 if "brand_b" in codes else 404)


@pytest.mark.parametrize("role", sorted(VISIBLE_TAGS))
def test_value_list_holds_visible_tags_on_visible_subjects_only(tw, role):
    rows = _all_pages(tw.gov.client(role), VALUES, {"subject_type": "member"})
    text = {code for code in VISIBLE_TAGS[role] if code != "derived"}
    assert {r["value"] for r in rows} == tw.canaries(text, _members_seen(tw, role))


@pytest.mark.parametrize("role", ["brand_operator", "regional_manager", "granted", "one_tag", "hq_analyst"])
def test_subject_detail_tags_show_only_visible_tags(tw, role):
    member = tw.gov.member_in
    client = tw.gov.client(role)
    for url in (f"/api/v1/subjects/{member.pk}/", f"/api/v1/subjects/{member.pk}/tags/"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.content[:200])
        groups = response.json()["tags"] if url.endswith(f"{member.pk}/") else response.json()
        shown = {t["code"]: t["value"] for g in groups for t in g["tags"]}
        text = VISIBLE_TAGS[role] - {"derived"}
        assert shown == {code: canary(code, member) for code in text}


def test_history_reads_refuse_invisible_tags_and_subjects(tw):
    g = tw.gov
    client = g.client("brand_operator")
    at = "2100-01-01"
    secret = client.get(f"{VALUES}at/", {"tag": "secret_note", "at": at, "subject": g.member_in.pk})
    assert secret.status_code == 400 and "does not exist" in secret.json()["error"]["message"]
    out = client.get(f"{VALUES}at/", {"tag": "open_note", "at": at, "subject": g.member_out.pk})
    assert out.status_code == 400 and canary("open_note", g.member_out) not in out.content.decode()
    seen = client.get(f"{VALUES}at/", {"tag": "open_note", "at": at, "subject": g.member_in.pk})
    assert seen.json()["value"] == canary("open_note", g.member_in)
    params = {"tag": "open_note", "at": at, "value": canary("open_note", g.member_out)}
    assert client.get(f"{VALUES}subjects-at/", params).json()["count"] == 0
    assert g.client("hq_analyst").get(f"{VALUES}subjects-at/", params).json()["count"] == 1
    params["value"] = canary("open_note", g.member_in)
    assert [r["id"] for r in client.get(f"{VALUES}subjects-at/", params).json()["results"]] == [g.member_in.pk]


def test_explain_answers_404_for_an_invisible_tag_or_subject(tw):
    g = tw.gov
    client = g.client("brand_operator")
    url = "/api/v1/tag-explain/"
    assert client.get(url, {"tag": tw.tags["secret_note"].pk, "subject": g.member_in.pk}).status_code == 404
    assert client.get(url, {"tag": tw.tags["open_note"].pk, "subject": g.member_out.pk}).status_code == 404
    shown = client.get(url, {"tag": tw.tags["open_note"].pk, "subject": g.member_in.pk})
    assert shown.status_code == 200 and shown.json()["value"] == canary("open_note", g.member_in)


def test_rule_explanations_keep_only_visible_inputs(tw, gov):
    from tags.services import definitions

    document = {"cases": [{"when": {"and": [
        {"==": [{"var": "tags.secret_note"}, "x"]}, {"==": [{"var": "tags.open_note"}, "x"]}
    ]}, "then": "yes"}], "default": "no"}  # fmt: skip
    saved = definitions.rule_save(actor=None, tag=tw.derived, document=document)
    definitions.activate_rule(actor=None, tag=tw.derived, version=saved.version, recompute=False)
    params = {"tag": tw.derived.pk, "subject": gov.member_in.pk}
    inputs = gov.client("brand_operator").get("/api/v1/tag-explain/", params).json()["why"]["inputs"]["tags"]
    assert inputs == {"open_note": canary("open_note", gov.member_in)}
    everything = gov.client("hq_analyst").get("/api/v1/tag-explain/", params).json()["why"]["inputs"]["tags"]
    assert set(everything) == {"open_note", "secret_note"}


def test_recompute_jobs_of_invisible_tags_are_absent(tw, gov):
    from django.contrib.auth.models import Permission

    shown = RecomputeJob.objects.create(tag=tw.tags["open_note"])
    hidden = RecomputeJob.objects.create(tag=tw.tags["secret_note"])
    editor = gov.users["editor"]
    editor.user_permissions.add(Permission.objects.get(codename="view_recomputejob"))
    client = gov.client("editor")
    assert [r["id"] for r in _all_pages(client, "/api/v1/recompute-jobs/")] == [shown.pk]
    assert client.get(f"/api/v1/recompute-jobs/{hidden.pk}/").status_code == 404


# Edits ---------------------------------------------------------------------------------------------


def test_edit_needs_edit_access_403_when_visible_404_when_not(tw, gov):
    client = gov.client("editor")
    expected = {"a_note": 200, "open_note": 200, "ro_note": 403, "b_note": 404, "secret_note": 404}
    for code, status in expected.items():
        response = client.patch(f"{DEFS}{tw.tags[code].pk}/", {"name": "Renamed"}, format="json")
        assert response.status_code == status, (code, response.content[:200])
        renamed = TagDefinition.objects.get(pk=tw.tags[code].pk).name == "Renamed"
        assert renamed == (status == 200), code
    saved = DomainEvent.objects.filter(action="tags.tag_saved", actor=gov.users["editor"])
    assert {e.summary["code"] for e in saved} == {"a_note", "open_note"}


def test_verbs_on_a_visible_tag_one_may_not_edit_are_refused(tw, gov):
    client = gov.client("editor")
    ro = tw.tags["ro_note"]
    assert client.post(f"{DEFS}{ro.pk}/archive/").status_code == 403
    assert TagDefinition.objects.get(pk=ro.pk).status == "active"
    assert client.post(f"{DEFS}{ro.pk}/recompute/").status_code == 403
    assert not RecomputeJob.objects.filter(tag=ro).exists()


def test_group_brand_must_be_one_the_editor_holds(tw, gov):
    w, client = gov.world, gov.client("editor")
    base = {"subject_type": "member", "name": "New"}
    assert client.post(GROUPS, {**base, "code": "n1", "brand": w.brand_b.pk}, format="json").status_code == 403
    assert client.post(GROUPS, {**base, "code": "n2", "brand": None}, format="json").status_code == 403
    created = client.post(GROUPS, {**base, "code": "n3", "brand": w.brand_a.pk}, format="json")
    assert created.status_code == 201, created.content
    assert set(TagGroup.objects.filter(code__in=["n1", "n2", "n3"]).values_list("code", flat=True)) == {"n3"}
    moved = client.patch(f"{GROUPS}{created.json()['id']}/", {"brand": w.brand_b.pk}, format="json")
    assert moved.status_code == 403
    assert client.patch(f"{GROUPS}{tw.groups['readonly'].pk}/", {"name": "x"}, format="json").status_code == 403


def test_a_tag_is_only_put_in_a_visible_editable_group(tw, gov):
    client = gov.client("editor")
    body = {"code": "new_tag", "name": "New", "value_type": "text"}
    hidden = client.post(DEFS, {**body, "group": tw.groups["secret"].pk}, format="json")
    assert hidden.status_code == 400 and "does not exist" in hidden.content.decode()
    assert client.post(DEFS, {**body, "group": tw.groups["readonly"].pk}, format="json").status_code == 403
    assert client.post(DEFS, {**body, "group": tw.groups["brand_a"].pk}, format="json").status_code == 201


def test_value_import_reports_each_forbidden_item_and_writes_nothing(tw, gov):
    from django.contrib.auth.models import Permission

    g = gov
    g.users["brand_operator"].user_permissions.add(Permission.objects.get(codename="delete_tagvalue"))
    before = sorted(TagValue.objects.values_list("id", "value"))
    items = [
        {"subject": g.member_in.pk, "tag": "ro_note", "value": "x"},  # visible, not editable
        {"subject": g.member_in.pk, "tag": "secret_note", "value": "x"},  # invisible
        {"subject": g.member_out.pk, "tag": "open_note", "value": "x"},  # out-of-scope subject
        {"subject": g.member_in.pk, "tag": "a_note", "value": "fine"},
    ]
    response = g.client("brand_operator").post(f"{VALUES}bulk/", {"items": items}, format="json")
    assert response.status_code == 400
    details = {(d["index"], d["code"]) for d in response.json()["error"]["details"]}
    assert details == {(0, "forbidden"), (1, "unknown"), (2, "unknown")}
    assert sorted(TagValue.objects.values_list("id", "value")) == before
    ok = g.client("brand_operator").post(f"{VALUES}bulk/", {"items": items[3:]}, format="json")
    assert ok.status_code == 200 and ok.json()["updated"] == 1


# Use --------------------------------------------------------------------------------------------------


def test_rules_may_only_read_tags_the_author_may_use(tw, gov):
    client = gov.client("editor")
    url = f"{DEFS}{tw.derived.pk}/rules/"
    for code in ("nouse_note", "secret_note", "b_note"):
        refused = client.post(url, {"document": rule_reading(code)}, format="json")
        assert refused.status_code == 400, refused.content
        assert f'"{code}"' in refused.json()["error"]["message"]
    assert not tw.derived.rules.exists()
    assert client.post(url, {"document": rule_reading("open_note")}, format="json").status_code == 201


def test_previews_check_use_and_count_only_visible_subjects(tw, gov):
    url = f"{DEFS}{tw.derived.pk}/preview/"
    editor = gov.client("editor")
    refused = editor.post(url, {"document": rule_reading("nouse_note")}, format="json")
    assert refused.status_code == 400 and '"nouse_note"' in refused.json()["error"]["message"]
    document = {"document": rule_reading("open_note")}
    assert editor.post(url, document, format="json").json()["total"] == 2  # member_in, member_a_bj
    assert gov.client("hq_admin").post(url, document, format="json").json()["total"] == 3


def test_activating_a_draft_rechecks_use_for_the_activating_user(tw, gov):
    from tags.services import definitions

    saved = definitions.rule_save(actor=None, tag=tw.derived, document=rule_reading("nouse_note"))
    response = gov.client("editor").post(f"{DEFS}{tw.derived.pk}/activate/", {"version": saved.version}, format="json")
    assert response.status_code == 400 and '"nouse_note"' in response.json()["error"]["message"]
    assert TagDefinition.objects.get(pk=tw.derived.pk).rule_id is None


def test_guardian_global_permissions_do_not_open_granted_groups(tw, gov):
    """The trap: a model-wide view/use permission must not act as a grant on every object."""
    from django.contrib.auth.models import Permission

    from tags.access import usable_tags, visible_tags

    user = gov.users["brand_operator"]
    user.user_permissions.add(*Permission.objects.filter(codename__in=["use_tagdefinition", "use_taggroup"]))
    user = type(user).objects.get(pk=user.pk)
    assert not visible_tags(user).filter(code__startswith="secret").exists()
    assert not usable_tags(user).filter(code="nouse_note").exists()


# Query counts -------------------------------------------------------------------------------------------


def _count(client, url: str, params: dict | None = None) -> int:
    client.get(url, params)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url, params).status_code == 200
    return len(queries)


def _more_tags(tw, n: int = 15) -> None:
    from tags.services import definitions, store

    for i in range(n):
        group = tw.groups["secret" if i % 2 else "brand_a"]
        tag = definitions.tag_save(
            actor=None, data={"group": group, "code": f"more_{i}", "name": f"More {i}", "value_type": "number"}
        )
        store.write_values(tag, [(m.pk, i) for m in tw.members], source="imported", actor=None)


@pytest.mark.parametrize(
    "url",
    [DEFS, GROUPS, VALUES, "/api/v1/recompute-jobs/", "subject-detail", "subject-tags"],
)
def test_lists_cost_the_same_queries_whatever_the_tags_and_grants(tw, gov, url):
    """A restricted user pays one query for their scope grants over HQ, and nothing per row."""
    member = gov.member_in
    url = {
        "subject-detail": f"/api/v1/subjects/{member.pk}/",
        "subject-tags": f"/api/v1/subjects/{member.pk}/tags/",
    }.get(url, url)
    from django.contrib.auth.models import Permission

    for role in ("granted", "hq_admin"):
        gov.users[role].user_permissions.add(Permission.objects.get(codename="view_recomputejob"))
    restricted, hq = gov.client("granted"), gov.client("hq_admin")
    before = (_count(restricted, url), _count(hq, url))
    _more_tags(tw)
    RecomputeJob.objects.bulk_create(RecomputeJob(tag=t) for t in tw.tags.values())
    after = (_count(restricted, url), _count(hq, url))
    assert after == before
    assert before[0] == before[1] + 1  # the grants query of subjects.access


def test_propagations_may_only_read_source_tags_the_author_may_use(tw, gov):
    """A clinic tag counting its visitors' values of a member tag: the member tag must be usable."""
    from tags.services import definitions

    group = definitions.tag_group_save(
        actor=None, data={"subject_type": gov.world.clinic_type, "code": "clinic_open", "name": "Clinic"}
    )
    visitors = definitions.tag_save(
        actor=None,
        data={
            "group": group,
            "code": "visitors",
            "name": "Visitors",
            "value_type": "number",
            "computation": "propagated",
        },
    )

    def document(code: str) -> dict:
        return {"propagate": {"from": {"tag": code}, "path": [{"relationship": "visited"}], "aggregate": "count"}}

    client, url = gov.client("editor"), f"{DEFS}{visitors.pk}/rules/"
    for code in ("nouse_note", "secret_note"):
        refused = client.post(url, {"document": document(code)}, format="json")
        assert refused.status_code == 400 and f'"{code}"' in refused.json()["error"]["message"], refused.content
    preview = client.post(f"{DEFS}{visitors.pk}/preview/", {"document": document("nouse_note")}, format="json")
    assert preview.status_code == 400
    assert not visitors.rules.exists()
    assert client.post(url, {"document": document("open_note")}, format="json").status_code == 201
    counted = client.post(f"{DEFS}{visitors.pk}/preview/", {"document": document("open_note")}, format="json")
    assert counted.status_code == 200 and counted.json()["total"] == 1  # clinic A only; clinic B is out


def test_csv_import_rows_get_the_same_per_item_access_errors(tw, gov):
    from tags.imports import import_rows

    g = gov
    row = {"subject_source": "crm", "subject_type": "member", "value": "csv"}
    rows = [
        {**row, "subject_external_id": "M-IN", "tag": "ro_note"},
        {**row, "subject_external_id": "M-IN", "tag": "secret_note"},
        {**row, "subject_external_id": "M-OUT", "tag": "open_note"},
        {**row, "subject_external_id": "M-IN", "tag": "a_note"},
    ]
    _, errors = import_rows(actor=g.users["brand_operator"], rows=rows, dry_run=False)
    assert {(e.index, e.code) for e in errors} == {(0, "forbidden"), (1, "unknown"), (2, "unknown")}
    assert not TagValue.objects.filter(value="csv").exists()
    counts, errors = import_rows(actor=g.users["brand_operator"], rows=rows[3:], dry_run=False)
    assert errors == [] and counts["updated"] == 1


@pytest.mark.parametrize("role", ["granted", "brand_operator", "hq_admin"])
def test_a_subjects_tags_cost_the_same_queries_with_tag_access_applied(tw, gov, role, django_assert_num_queries):
    """The tag and subject conditions are subqueries of the values query, not queries of their own."""
    from subjects.access import access_for
    from tags.api.profile import subject_tag_groups, subject_type_tags

    user = type(gov.users[role]).objects.get(pk=gov.users[role].pk)
    access_for(user)  # loaded once per request by the view, before the tags are read
    _more_tags(tw, 6)
    with django_assert_num_queries(3):  # values, option labels, and the usage count (audit.usage, one upsert)
        groups = subject_tag_groups(gov.member_in.pk, user=user)
    assert {t["code"] for g in groups for t in g["tags"]} >= VISIBLE_TAGS[role] - {"derived"}
    with django_assert_num_queries(3):  # the type's visible tags joined to its values, usage, labels
        subject_type_tags(gov.member_in, user=user)
