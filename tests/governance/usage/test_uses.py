"""Every read and computation of a tag is counted under its kind, with one statement per request."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import TagUsage
from tags.services import definitions
from tags.services.recompute import recompute_all, recompute_subjects
from tags.services.store import write_values
from tests.tags.uiworld import Tags

LIST = "/api/v1/tag-values/"
SKIN_IS_DRY = {"cases": [{"when": {"==": [{"var": "tags.skin"}, "dry"]}, "then": "yes"}], "default": None}


@pytest.fixture
def tags(world):
    return Tags(world)


def uses(kind: str = "read") -> dict[str, int]:
    rows = TagUsage.objects.filter(kind=kind, day=timezone.localdate()).values_list("tag__code", "count")
    return dict(rows)


def fill(tags, member, actor) -> None:
    for tag, value in (
        (tags.skin, "dry"),
        (tags.score, 3),
        (tags.vip, True),
        (tags.note, "x"),
        (tags.since, "2024-01-01"),
    ):
        write_values(tag, [(member.id, value)], source="manual", actor=actor)


def statements(api, settings, url, params=None, *, record: bool) -> list[str]:
    settings.TAGWEAVE_TAG_USAGE = record
    with CaptureQueriesContext(connection) as ctx:
        assert api.get(url, params).status_code == 200
    return [q["sql"] for q in ctx.captured_queries]


@pytest.mark.parametrize("tag_count", [1, 5])
def test_the_values_list_adds_one_statement_whatever_the_number_of_tags(api, tags, admin_user, settings, tag_count):
    member = tags.member()
    fill(tags, member, admin_user)
    params = {"subject": member.id} if tag_count == 5 else {"tag": tags.skin.pk}
    api.get(LIST, params)  # warm the client's caches
    TagUsage.objects.all().delete()
    without = statements(api, settings, LIST, params, record=False)
    with_usage = statements(api, settings, LIST, params, record=True)
    assert len(with_usage) == len(without) + 1
    assert next(q for q in with_usage if "audit_tagusage" in q).startswith("INSERT INTO audit_tagusage")
    expected = {"skin": 1} if tag_count == 1 else {"skin": 1, "score": 1, "vip": 1, "note": 1, "since": 1}
    assert uses() == expected


def test_subject_detail_and_its_tags_action_count_the_tags_shown(api, tags, admin_user, settings):
    member = tags.member()
    fill(tags, member, admin_user)
    without = statements(api, settings, f"/api/v1/subjects/{member.id}/", record=False)
    with_usage = statements(api, settings, f"/api/v1/subjects/{member.id}/", record=True)
    assert len(with_usage) == len(without) + 1
    api.get(f"/api/v1/subjects/{member.id}/tags/")
    assert uses() == {"skin": 2, "score": 2, "vip": 2, "note": 2, "since": 2}
    bare = tags.member()
    api.get(f"/api/v1/subjects/{bare.id}/")  # no values shown: nothing counted
    assert uses()["skin"] == 2


def test_history_reads_and_explain_count_their_tag(api, tags, admin_user):
    member = tags.member()
    write_values(tags.skin, [(member.id, "dry")], source="manual", actor=admin_user)
    at = timezone.now().isoformat()
    assert api.get(f"{LIST}at/", {"tag": "skin", "type": "member", "subject": member.id, "at": at}).status_code == 200
    assert (
        api.get(f"{LIST}subjects-at/", {"tag": "skin", "type": "member", "value": "dry", "at": at}).status_code == 200
    )
    assert api.get("/api/v1/tag-explain/", {"tag": tags.skin.pk, "subject": member.id}).status_code == 200
    assert uses() == {"skin": 3}


def test_explain_also_counts_the_inputs_it_shows(api, tags, admin_user):
    tag = rule_tag(tags)
    member = tags.member()
    write_values(tags.skin, [(member.id, "dry")], source="manual", actor=admin_user)
    assert api.get("/api/v1/tag-explain/", {"tag": tag.pk, "subject": member.id}).status_code == 200
    assert uses() == {"skin_is_dry": 1, "skin": 1}


def test_a_refused_read_counts_nothing(api, tags):
    assert api.get(f"{LIST}at/", {"tag": "skin", "type": "member", "subject": 10**9, "at": "2026-01-01"}).status_code
    assert uses() == {}


def rule_tag(tags):
    tag = tags.tag("skin_is_dry", "enum", options=[("yes", "Yes")], computation="rule")
    saved = definitions.rule_save(actor=None, tag=tag, document=SKIN_IS_DRY)
    definitions.activate_rule(actor=None, tag=tag, version=saved.version, recompute=False)
    tag.refresh_from_db()
    return tag


def test_preview_counts_the_previewed_tag_and_what_its_document_reads(api, tags):
    tag = rule_tag(tags)
    url = f"/api/v1/tag-definitions/{tag.pk}/preview/"
    assert api.post(url, {"document": SKIN_IS_DRY}, format="json").status_code == 200
    assert uses("preview") == {"skin_is_dry": 1, "skin": 1}


def test_recomputes_count_the_rules_inputs(tags, admin_user, django_capture_on_commit_callbacks):
    tag = rule_tag(tags)
    member = tags.member()
    write_values(tags.skin, [(member.id, "dry")], source="manual", actor=admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        recompute_all(tag)
        recompute_subjects(tag, [member.id])
    assert uses("rule")["skin"] == 2  # one per chunk written: the full run (one chunk here) and the incremental one
    assert "skin_is_dry" not in uses("rule")


def test_the_admin_value_list_filtered_by_a_tag_counts_it(client, tags, admin_user):
    client.force_login(admin_user)
    response = client.get(reverse("admin:tags_tagvalue_changelist"), {"tag": tags.skin.pk})
    assert response.status_code == 200
    assert uses() == {"skin": 1}


def test_the_admin_subject_page_counts_the_tags_it_shows(client, tags, admin_user):
    member = tags.member()
    fill(tags, member, admin_user)
    client.force_login(admin_user)
    assert client.get(reverse("admin:subjects_subject_change", args=[member.pk])).status_code == 200
    assert uses() == {"skin": 1, "score": 1, "vip": 1, "note": 1, "since": 1}
