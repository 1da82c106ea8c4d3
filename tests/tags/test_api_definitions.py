"""Tag groups and definitions over the API: CRUD with options, rule versions, preview, activate, archive, recompute."""

from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import DomainEvent
from tags.models import RecomputeJob, TagDefinition, TagGroup, TagRule, TagValue
from tests.factories import UserFactory

pytest_plugins = ["tests.tags.uiworld"]

GROUPS = "/api/v1/tag-groups/"
TAGS = "/api/v1/tag-definitions/"


def details(response):
    return [(d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]]


def test_tag_group_create_filter_update(api, world):
    created = api.post(GROUPS, {"subject_type": "member", "code": "preferences", "name": "Preferences"}, format="json")
    assert created.status_code == 201, created.json()
    api.post(GROUPS, {"subject_type": "clinic", "code": "operations", "name": "Operations"}, format="json")
    listed = api.get(GROUPS, {"subject_type": "member"}).json()["results"]
    assert [g["code"] for g in listed] == ["preferences"]
    url = f"{GROUPS}{created.json()['id']}/"
    assert api.patch(url, {"position": 3}, format="json").json()["position"] == 3
    duplicate = api.post(GROUPS, {"subject_type": "member", "code": "preferences", "name": "Again"}, format="json")
    assert duplicate.status_code == 400
    assert api.delete(url).status_code == 405
    assert DomainEvent.objects.filter(action="tags.group_saved").count() == 3


def test_tag_definition_with_options_create_read_update(api, world):
    group = api.post(GROUPS, {"subject_type": "member", "code": "demo", "name": "Demo"}, format="json").json()
    body = {
        "group": group["id"],
        "code": "skin_type",
        "name": "Skin type",
        "value_type": "enum",
        "options": [{"value": "dry", "label": "Dry"}, {"value": "oily", "label": "Oily"}],
    }
    created = api.post(TAGS, body, format="json")
    assert created.status_code == 201, created.json()
    tag = created.json()
    assert tag["subject_type"] == "member" and tag["status"] == "draft" and tag["computation"] == "assigned"
    assert [(o["value"], o["label"], o["position"]) for o in tag["options"]] == [("dry", "Dry", 0), ("oily", "Oily", 1)]
    url = f"{TAGS}{tag['id']}/"
    patched = api.patch(url, {"status": "active", "options": [{"value": "oily"}, {"value": "dry"}]}, format="json")
    assert patched.status_code == 200, patched.json()
    assert patched.json()["status"] == "active"
    assert [(o["value"], o["label"]) for o in patched.json()["options"]] == [("oily", "oily"), ("dry", "dry")]
    assert api.get(url).json()["code"] == "skin_type"


def test_tag_definition_bad_input_names_fields(api, tags):
    bad_type = api.post(
        TAGS, {"group": tags.demographics.id, "code": "x", "name": "X", "value_type": "colour"}, format="json"
    )
    assert bad_type.status_code == 400 and details(bad_type)[0][1] == "value_type"
    options_on_number = api.post(
        TAGS,
        {"group": tags.demographics.id, "code": "n", "name": "N", "value_type": "number", "options": [{"value": "a"}]},
        format="json",
    )
    assert details(options_on_number) == [(None, "options", "invalid")]
    duplicate = api.post(
        TAGS, {"group": tags.demographics.id, "code": "skin", "name": "Skin", "value_type": "enum"}, format="json"
    )
    assert duplicate.status_code == 400
    owner = api.post(
        TAGS,
        {"group": tags.demographics.id, "code": "o", "name": "O", "value_type": "text", "owner": 999},
        format="json",
    )
    assert details(owner) == [(None, "owner", "unknown")]
    assert not TagDefinition.objects.filter(code__in=["x", "n", "o"]).exists()


def test_definitions_filter_by_subject_type_group_status_and_computation(api, tags):
    def codes(**params):
        return sorted(t["code"] for t in api.get(TAGS, params).json()["results"])

    assert codes(subject_type="clinic") == ["grade"]
    assert codes(group=tags.consumption.id) == ["score", "vip"]
    assert codes(computation="rule") == ["age_band"]
    assert codes(status="draft") == ["age_band"]
    assert "skin" in codes(subject_type="member", status="active")


def test_list_of_definitions_does_not_grow_queries_with_tags(api, tags, django_assert_num_queries):
    api.get(TAGS)
    total = TagDefinition.objects.count()
    # token, page, options, dependencies, dependents
    with django_assert_num_queries(5):
        assert len(api.get(TAGS).json()["results"]) == total


def test_rule_versions_draft_then_activate_then_values_follow(api, tags, django_capture_on_commit_callbacks):
    young, old = tags.member(birth_date="2005-03-01"), tags.member(birth_date="1970-03-01")
    url = f"{TAGS}{tags.age_band.id}/"
    saved = api.post(f"{url}rules/", {"document": tags.age_rule}, format="json")
    assert saved.status_code == 201, saved.json()
    assert (saved.json()["version"], saved.json()["active"], saved.json()["activated_at"]) == (1, False, None)
    assert [r["version"] for r in api.get(f"{url}rules/").json()] == [1]
    with django_capture_on_commit_callbacks(execute=True):
        activated = api.post(f"{url}activate/", {"version": 1}, format="json")
    assert activated.status_code == 200, activated.json()
    assert (activated.json()["status"], activated.json()["version"]) == ("active", 1)
    assert dict(TagValue.objects.filter(tag=tags.age_band).values_list("subject_id", "value")) == {
        young.id: "under_30",
        old.id: "over_30",
    }
    job = RecomputeJob.objects.get(tag=tags.age_band)
    assert job.status == "done" and job.rows_changed == 2
    shown = api.get(f"/api/v1/recompute-jobs/{job.id}/").json()
    assert (shown["status"], shown["progress"], shown["tag_code"]) == ("done", 1.0, "age_band")
    assert api.get("/api/v1/recompute-jobs/", {"tag": tags.age_band.id}).json()["results"][0]["id"] == job.id


def test_an_invalid_rule_points_into_the_tree_and_saves_nothing(api, tags):
    document = {"cases": [{"when": {"<": [{"var": "attributes.nope"}, 3]}, "then": "under_30"}]}
    response = api.post(f"{TAGS}{tags.age_band.id}/rules/", {"document": document}, format="json")
    assert response.status_code == 400
    assert [d["field"] for d in response.json()["error"]["details"]] == ["rule.cases[0].when.<[0].var"]
    bad_then = api.post(
        f"{TAGS}{tags.age_band.id}/rules/",
        {"document": {"cases": [{"when": True, "then": "teen"}]}},
        format="json",
    )
    assert ("rule.cases[0].then", "not_an_option") in [
        (d["field"], d["code"]) for d in bad_then.json()["error"]["details"]
    ]
    assert not TagRule.objects.exists()
    on_assigned = api.post(f"{TAGS}{tags.skin.id}/rules/", {"document": tags.age_rule}, format="json")
    assert details(on_assigned) == [(None, "computation", "invalid")]


def test_a_rule_reading_a_tag_that_reads_it_back_is_a_named_cycle(api, tags):
    first = tags.tag("first", "boolean", computation="rule")
    second = tags.tag("second", "boolean", computation="rule")
    reads = lambda code: {"cases": [{"when": {"var": f"tags.{code}"}, "then": True}]}  # noqa: E731
    api.post(f"{TAGS}{first.id}/rules/", {"document": reads("second"), "activate": True}, format="json")
    response = api.post(f"{TAGS}{second.id}/rules/", {"document": reads("first")}, format="json")
    assert response.status_code == 400
    assert "second → first → second" in response.json()["error"]["message"]


def test_preview_of_a_posted_document_and_of_a_saved_version(api, tags):
    tags.member(birth_date="2005-03-01"), tags.member(birth_date="1970-03-01"), tags.member(birth_date="1980-03-01")
    url = f"{TAGS}{tags.age_band.id}/preview/"
    posted = api.post(url, {"document": tags.age_rule}, format="json")
    assert posted.status_code == 200, posted.json()
    body = posted.json()
    assert body["total"] == 3 and body["counts"] == {"under_30": 1, "over_30": 2} and body["changes"] == 3
    assert not TagValue.objects.filter(tag=tags.age_band).exists()  # a preview writes nothing
    api.post(f"{TAGS}{tags.age_band.id}/rules/", {"document": tags.age_rule}, format="json")
    assert api.post(url, {"version": 1}, format="json").json()["counts"] == body["counts"]
    assert details(api.post(url, {"version": 9}, format="json")) == [(None, "version", "unknown")]
    assert details(api.post(url, {}, format="json")) == [(None, "document", "required")]
    invalid = api.post(url, {"document": {"cases": []}}, format="json")
    assert invalid.status_code == 400 and invalid.json()["error"]["details"][0]["field"] == "rule.cases"


def test_archive_is_refused_with_the_dependents_listed(api, tags):
    reader = tags.tag("dry_skin", "boolean", computation="rule")
    document = {"cases": [{"when": {"==": [{"var": "tags.skin"}, "dry"]}, "then": True}]}
    api.post(f"{TAGS}{reader.id}/rules/", {"document": document, "activate": True}, format="json")
    assert api.get(f"{TAGS}{tags.skin.id}/").json()["dependents"] == ["dry_skin"]
    assert api.get(f"{TAGS}{reader.id}/").json()["dependencies"] == ["skin"]
    refused = api.post(f"{TAGS}{tags.skin.id}/archive/", format="json")
    assert refused.status_code == 400
    assert details(refused) == [(None, "tag", "has_dependents")] and "dry_skin" in refused.json()["error"]["message"]
    assert TagDefinition.objects.get(pk=tags.skin.pk).status == "active"
    archived = api.post(f"{TAGS}{tags.note.id}/archive/", format="json")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"


def test_recompute_returns_a_job_202(api, tags, django_capture_on_commit_callbacks):
    member = tags.member(birth_date="2001-01-01")
    tags.activate_age_rule()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{TAGS}{tags.age_band.id}/recompute/", format="json")
    assert response.status_code == 202, response.json()
    job = RecomputeJob.objects.get(pk=response.json()["id"])
    assert response.json()["status"] == "queued" and job.status == "done"
    assert TagValue.objects.get(tag=tags.age_band, subject=member).value == "under_30"
    not_computed = api.post(f"{TAGS}{tags.skin.id}/recompute/", format="json")
    assert details(not_computed) == [(None, "tag", "not_computed")]


def test_verbs_need_the_change_permission(tags, db):
    from django.contrib.auth.models import Permission

    viewer = UserFactory()
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__startswith="view_", content_type__app_label="tags")
    )
    client = APIClient()
    client.force_authenticate(viewer)
    assert client.get(TAGS).status_code == 200
    assert client.post(f"{TAGS}{tags.note.id}/archive/", format="json").status_code == 403
    assert client.post(f"{TAGS}{tags.age_band.id}/recompute/", format="json").status_code == 403
    assert (
        client.post(f"{TAGS}{tags.age_band.id}/rules/", {"document": tags.age_rule}, format="json").status_code == 403
    )
    assert client.get(f"{TAGS}{tags.age_band.id}/rules/").status_code == 200
    assert TagDefinition.objects.get(pk=tags.note.pk).status == "active"


def test_history_value_at_and_subjects_at(api, tags, admin_user):
    from tags.models import TagValueChange
    from tags.services.store import write_values

    a, b = tags.world.clinic_a_sh, tags.world.clinic_b_bj
    write_values(tags.clinic_grade, [(a.id, "A"), (b.id, "B")], source="manual", actor=admin_user)
    june = timezone.now()
    write_values(tags.clinic_grade, [(a.id, "B"), (b.id, "A")], source="manual", actor=admin_user)
    past = june - timezone.timedelta(days=1)
    TagValueChange.objects.filter(new_value__in=["A", "B"], old_value__isnull=True).update(changed_at=past)
    at = api.get("/api/v1/tag-values/at/", {"tag": "grade", "type": "clinic", "subject": a.id, "at": june.isoformat()})
    assert at.status_code == 200, at.json()
    assert at.json()["value"] == "A"
    now = api.get(
        "/api/v1/tag-values/at/", {"tag": tags.clinic_grade.id, "subject": a.id, "at": timezone.now().isoformat()}
    )
    assert now.json()["value"] == "B"
    before = api.get(
        "/api/v1/tag-values/at/",
        {"tag": tags.clinic_grade.id, "subject": a.id, "at": (past - timezone.timedelta(days=1)).isoformat()},
    )
    assert before.json()["value"] is None
    grade_a = api.get(
        "/api/v1/tag-values/subjects-at/", {"tag": tags.clinic_grade.id, "value": "A", "at": june.isoformat()}
    )
    assert grade_a.status_code == 200, grade_a.json()
    assert [s["id"] for s in grade_a.json()["results"]] == [a.id] and grade_a.json()["count"] == 1
    ambiguous = api.get("/api/v1/tag-values/at/", {"tag": "grade", "subject": a.id, "at": june.isoformat()})
    assert details(ambiguous) == [(None, "tag", "ambiguous")]
    bad_at = api.get("/api/v1/tag-values/at/", {"tag": tags.clinic_grade.id, "subject": a.id, "at": "june"})
    assert details(bad_at) == [(None, "at", "invalid")]
    bad_value = api.get(
        "/api/v1/tag-values/subjects-at/", {"tag": tags.clinic_grade.id, "value": "Z", "at": june.isoformat()}
    )
    assert details(bad_value) == [(None, "value", "not_an_option")]


def test_subjects_at_pages_by_id(api, tags, admin_user):
    from tags.services.store import write_values

    members = [tags.member() for _ in range(5)]
    write_values(tags.skin, [(m.id, "dry") for m in members], source="manual", actor=admin_user)
    params = {"tag": tags.skin.id, "value": "dry", "at": timezone.now().isoformat(), "page_size": 2}
    seen, url = [], "/api/v1/tag-values/subjects-at/"
    page = api.get(url, params).json()
    while True:
        seen += [s["id"] for s in page["results"]]
        if not page["next"]:
            break
        page = api.get(page["next"]).json()
    assert seen == sorted(m.id for m in members) and page["count"] == 5
    assert TagGroup.objects.count() == 4
