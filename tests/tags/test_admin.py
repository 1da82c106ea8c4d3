"""Tags admin: pages render, the subject page shows and edits tags, the bulk action, verbs, value at a time."""

import datetime as dt
import json

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import DomainEvent
from tags.models import RecomputeJob, TagDefinition, TagRule, TagValue, TagValueChange
from tags.services import definitions
from tags.services.store import write_values
from tests.factories import SubjectFactory, UserFactory

pytest_plugins = ["tests.tags.uiworld"]


@pytest.fixture
def client(client, admin_user):
    client.force_login(admin_user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def stored(tag):
    return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))


# Pages render ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["taggroup", "tagdefinition", "tagvalue", "tagvaluechange", "recomputejob"])
def test_changelists_load(client, tags, model):
    write_values(tags.skin, [(tags.member().id, "dry")], source="manual", actor=None)
    assert client.get(reverse(f"admin:tags_{model}_changelist")).status_code == 200


def test_add_and_change_pages_load(client, tags):
    tags.activate_age_rule()
    for url in (
        reverse("admin:tags_taggroup_add"),
        reverse("admin:tags_tagdefinition_add"),
        reverse("admin:tags_taggroup_change", args=[tags.demographics.pk]),
        reverse("admin:tags_tagdefinition_change", args=[tags.skin.pk]),
        reverse("admin:tags_tagdefinition_change", args=[tags.age_band.pk]),
        reverse("admin:tags_tagvalue_import"),
        reverse("admin:tags_tagvaluechange_value_at"),
    ):
        assert client.get(url).status_code == 200, url
    page = client.get(reverse("admin:tags_tagdefinition_change", args=[tags.age_band.pk])).content.decode()
    assert "v1 (active)" in page and "Recompute all" in page and "Preview latest version" in page


def test_filters_by_subject_type_group_status(client, tags):
    url = reverse("admin:tags_tagdefinition_changelist")
    response = client.get(url, {"subject_type__id__exact": tags.world.clinic_type.pk})
    assert [t.code for t in response.context["cl"].result_list] == ["grade"]
    response = client.get(url, {"status__exact": "draft"})
    assert [t.code for t in response.context["cl"].result_list] == ["age_band"]
    response = client.get(url, {"group__id__exact": tags.consumption.pk})
    assert sorted(t.code for t in response.context["cl"].result_list) == ["score", "vip"]


def test_value_lists_do_not_count_the_table(client, tags):
    response = client.get(reverse("admin:tags_tagvalue_changelist"))
    assert response.context["cl"].show_full_result_count is False
    assert response.context["cl"].model_admin.list_select_related == ("subject", "tag")


# Definitions -----------------------------------------------------------------------------


def test_create_a_tag_with_options_through_the_service(client, tags):
    response = client.post(
        reverse("admin:tags_tagdefinition_add"),
        {
            "group": tags.demographics.pk,
            "code": "hair",
            "name": "Hair",
            "value_type": "enum",
            "status": "active",
            "computation": "assigned",
            "options": "short | Short\nlong | Long hair\n",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    tag = TagDefinition.objects.get(code="hair")
    assert list(tag.options.values_list("value", "label", "position")) == [
        ("short", "Short", 0),
        ("long", "Long hair", 1),
    ]
    assert tag.subject_type == tags.world.member_type
    assert DomainEvent.objects.filter(action="tags.tag_saved", summary__code="hair").exists()


def _tag_form(tag, **changes):
    data = {
        "group": tag.group_id,
        "code": tag.code,
        "name": tag.name,
        "description": tag.description,
        "value_type": tag.value_type,
        "unit": tag.unit,
        "status": tag.status,
        "computation": tag.computation,
        "options": "\n".join(f"{o.value} | {o.label}" for o in tag.options.all()),
    }
    return {**data, **changes}


def test_an_invalid_rule_version_shows_the_error_on_the_field_pointing_into_the_tree(client, tags):
    url = reverse("admin:tags_tagdefinition_change", args=[tags.age_band.pk])
    bad = '{"cases": [{"when": {"and": [true, {"var": "attributes.nope"}]}, "then": "under_30"}]}'
    response = client.post(url, _tag_form(tags.age_band, new_rule=bad, name="Renamed"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["new_rule"]
    assert any(e.startswith("rule.cases[0].when.and[1].var:") for e in errors), errors
    assert not TagRule.objects.exists()
    assert TagDefinition.objects.get(pk=tags.age_band.pk).name == "Age Band"  # the definition was not saved either


def test_save_a_rule_version_then_preview_it_then_activate_it(client, tags, django_capture_on_commit_callbacks):
    young, old = tags.member(birth_date="2004-06-01"), tags.member(birth_date="1960-06-01")
    url = reverse("admin:tags_tagdefinition_change", args=[tags.age_band.pk])
    response = client.post(url, _tag_form(tags.age_band, new_rule=json.dumps(tags.age_rule)))
    assert response.status_code == 302
    assert TagRule.objects.get(tag=tags.age_band).version == 1

    preview = client.get(reverse("admin:tags_tagdefinition_preview", args=[tags.age_band.pk]), {"version": 1})
    assert preview.status_code == 200
    assert preview.context["result"]["counts"] == {"under_30": 1, "over_30": 1}
    assert preview.context["result"]["changes"] == 2
    assert [(v, label, n) for v, label, n in preview.context["rows"]] == [
        ("over_30", "30 and over", 1),
        ("under_30", "Under 30", 1),
    ] or sorted(preview.context["rows"]) == [("over_30", "30 and over", 1), ("under_30", "Under 30", 1)]
    assert b"Activate version 1" in preview.content
    assert not TagValue.objects.filter(tag=tags.age_band).exists()

    with django_capture_on_commit_callbacks(execute=True):
        activated = client.post(reverse("admin:tags_tagdefinition_activate", args=[tags.age_band.pk]), {"version": "1"})
    assert activated.status_code == 302
    assert stored(tags.age_band) == {young.id: "under_30", old.id: "over_30"}
    assert TagDefinition.objects.get(pk=tags.age_band.pk).status == "active"


def test_recompute_button_starts_a_job_and_its_page_shows_progress(client, tags, django_capture_on_commit_callbacks):
    member = tags.member(birth_date="2000-01-01")
    tags.activate_age_rule()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:tags_tagdefinition_recompute", args=[tags.age_band.pk]))
    job = RecomputeJob.objects.get(tag=tags.age_band)
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:tags_recomputejob_change", args=[job.pk]
    )
    assert stored(tags.age_band) == {member.id: "under_30"}
    page = client.get(response["Location"]).content.decode()
    assert "1/1 chunks" in page and "done" in page
    listed = client.get(reverse("admin:tags_recomputejob_changelist")).content.decode()
    assert "<progress" in listed
    not_rule = client.post(reverse("admin:tags_tagdefinition_recompute", args=[tags.skin.pk]), follow=True)
    assert any("no active rule" in m for m in messages_of(not_rule))


def test_archive_button_is_refused_with_the_dependents(client, tags):
    reader = tags.tag("dry", "boolean", computation="rule")
    definitions.rule_save(
        actor=None,
        tag=reader,
        document={"cases": [{"when": {"==": [{"var": "tags.skin"}, "dry"]}, "then": True}]},
        activate=True,
    )
    response = client.post(reverse("admin:tags_tagdefinition_archive", args=[tags.skin.pk]), follow=True)
    assert any("Not archived" in m and "dry" in m for m in messages_of(response))
    assert TagDefinition.objects.get(pk=tags.skin.pk).status == "active"
    page = client.get(reverse("admin:tags_tagdefinition_change", args=[tags.skin.pk])).content.decode()
    assert "Read by (dependents)" in page and ">dry</a>" in page
    client.post(reverse("admin:tags_tagdefinition_archive", args=[tags.note.pk]))
    assert TagDefinition.objects.get(pk=tags.note.pk).status == "archived"
    assert client.get(reverse("admin:tags_tagdefinition_archive", args=[tags.note.pk])).status_code == 405


# The subject page ------------------------------------------------------------------------


def test_subject_page_shows_tags_grouped_with_source_and_freshness(client, tags, admin_user):
    member = tags.member(birth_date="1999-01-01")
    write_values(tags.skin, [(member.id, "oily")], source="manual", actor=admin_user)
    write_values(tags.score, [(member.id, 12)], source="imported", actor=None)
    response = client.get(reverse("admin:subjects_subject_change", args=[member.pk]))
    page = response.content.decode()
    assert [g["code"] for g in response.context["tag_groups"]] == ["demographics", "consumption"]
    assert "<caption>Demographics</caption>" in page and "<caption>Consumption</caption>" in page
    assert 'data-tag="skin"' in page and "Oily" in page and "imported" in page
    assert 'id="subject-tag-form"' in page
    editable = [t["code"] for t in response.context["tag_edit"]["tags"]]
    assert "skin" in editable and "age_band" not in editable


def test_subject_page_sets_and_clears_a_manual_value(client, tags, admin_user):
    member = tags.member()
    url = reverse("admin:tags_subject_set_value", args=[member.pk])
    response = client.post(url, {"tag": tags.interests.pk, "value": "peel, laser"})
    assert response.status_code == 302 and response["Location"].endswith("#subject-tags")
    assert stored(tags.interests) == {member.id: ["laser", "peel"]}
    assert TagValue.objects.get(tag=tags.interests).source == "manual"
    assert DomainEvent.objects.get(action="tags.values_manual").actor == admin_user
    client.post(url, {"tag": tags.interests.pk, "clear": "1"})
    assert stored(tags.interests) == {}
    assert TagValueChange.objects.filter(tag=tags.interests).count() == 2


def test_subject_page_refuses_bad_values_and_rule_tags(client, tags):
    member = tags.member()
    url = reverse("admin:tags_subject_set_value", args=[member.pk])
    bad = client.post(url, {"tag": tags.skin.pk, "value": "purple"}, follow=True)
    assert any("not an option" in m for m in messages_of(bad))
    rule = client.post(url, {"tag": tags.age_band.pk, "value": "under_30"}, follow=True)
    assert any("computed" in m for m in messages_of(rule))
    assert TagValue.objects.count() == 0
    assert client.get(url).status_code == 405


def test_a_user_without_tag_permissions_cannot_set_values(client, tags, db):
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_subject", "change_subject", "all_scopes"])
    )
    client.force_login(staff)
    member = tags.member()
    page = client.get(reverse("admin:subjects_subject_change", args=[member.pk]))
    assert page.status_code == 200 and "tag_edit" not in page.context
    response = client.post(
        reverse("admin:tags_subject_set_value", args=[member.pk]), {"tag": tags.skin.pk, "value": "dry"}
    )
    assert response.status_code == 403
    assert TagValue.objects.count() == 0


# The bulk action -------------------------------------------------------------------------


def _action(client, ids, **extra):
    return client.post(
        reverse("admin:subjects_subject_changelist"),
        {"action": "set_tag_value", "_selected_action": [str(i) for i in ids], **extra},
    )


def test_bulk_action_shows_a_form_then_sets_the_value_on_all_selected(client, tags):
    members = [tags.member() for _ in range(3)]
    form = _action(client, [m.id for m in members])
    assert form.status_code == 200 and b"Set the value" in form.content
    assert form.context["count"] == 3
    done = _action(client, [m.id for m in members], tag=tags.vip.pk, value="yes", apply="1", index="0")
    assert done.status_code == 302
    assert stored(tags.vip) == {m.id: True for m in members}
    assert set(TagValue.objects.values_list("source", flat=True)) == {"manual"}
    assert DomainEvent.objects.filter(action="tags.values_manual").count() == 1


def test_bulk_action_refuses_rule_tags_and_wrong_subjects_writing_nothing(client, tags):
    members = [tags.member() for _ in range(2)]
    refused = _action(client, [m.id for m in members], tag=tags.age_band.pk, value="under_30", apply="1")
    assert any("computed by a rule" in m for m in messages_of(refused))
    clinic = tags.world.clinic_a_sh
    mixed = _action(client, [members[0].id, clinic.id], tag=tags.skin.pk, value="dry", apply="1")
    text = messages_of(mixed)
    assert any(f"subject {clinic.id}" in m and "not a member" in m for m in text), text
    assert "Nothing was written." in text
    assert TagValue.objects.count() == 0


# Value at a time -------------------------------------------------------------------------


def test_value_at_a_time_for_a_subject_and_subjects_with_a_value(client, tags, admin_user):
    a, b = tags.world.clinic_a_sh, tags.world.clinic_b_bj
    write_values(tags.clinic_grade, [(a.id, "A"), (b.id, "B")], source="manual", actor=admin_user)
    TagValueChange.objects.update(changed_at=timezone.now() - dt.timedelta(days=10))
    write_values(tags.clinic_grade, [(a.id, "B")], source="manual", actor=admin_user)
    then = (timezone.now() - dt.timedelta(days=5)).strftime("%Y-%m-%d %H:%M")
    url = reverse("admin:tags_tagvaluechange_value_at")
    one = client.get(url, {"tag": tags.clinic_grade.pk, "at": then, "subject": a.id})
    assert one.context["answer"]["text"] == "A"
    now = client.get(
        url,
        {
            "tag": tags.clinic_grade.pk,
            "at": (timezone.now() + dt.timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M"),
            "subject": a.id,
        },
    )
    assert now.context["answer"]["text"] == "B"
    many = client.get(url, {"tag": tags.clinic_grade.pk, "at": then, "value": "A"})
    assert many.context["answer"]["count"] == 1 and [s["id"] for s in many.context["answer"]["subjects"]] == [a.id]
    assert b"subject-at" in many.content
    bad = client.get(url, {"tag": tags.clinic_grade.pk, "at": then, "value": "Z"})
    assert bad.context["answer"] is None and "value" in bad.context["form"].errors
    neither = client.get(url, {"tag": tags.clinic_grade.pk, "at": then})
    assert neither.context["form"].errors


def test_history_list_searches_by_subject(client, tags, admin_user):
    member = tags.member()
    other = SubjectFactory(subject_type=tags.world.member_type)
    write_values(tags.skin, [(member.id, "dry"), (other.id, "oily")], source="manual", actor=admin_user)
    response = client.get(reverse("admin:tags_tagvaluechange_changelist"), {"q": str(member.id)})
    assert [c.subject_id for c in response.context["cl"].result_list] == [member.id]


def test_the_bulk_action_is_offered_only_to_users_who_may_set_tag_values(client, tags, db):
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_subject", "change_subject", "all_scopes"])
    )
    client.force_login(staff)
    response = client.get(reverse("admin:subjects_subject_changelist"))
    assert response.status_code == 200 and b"set_tag_value" not in response.content
    member = tags.member()
    refused = _action(client, [member.id], tag=tags.skin.pk, value="dry", apply="1")
    assert refused.status_code in (200, 302) and TagValue.objects.count() == 0


def test_subject_page_tags_cost_the_same_queries_however_many(client, tags, admin_user):
    few, many = tags.member(), tags.member()
    write_values(tags.skin, [(few.id, "dry")], source="manual", actor=admin_user)
    for tag, value in ((tags.skin, "oily"), (tags.interests, ["peel"]), (tags.score, 3), (tags.vip, False)):
        write_values(tag, [(many.id, value)], source="manual", actor=admin_user)
    url = lambda s: reverse("admin:subjects_subject_change", args=[s.pk])  # noqa: E731
    client.get(url(few))
    with CaptureQueriesContext(connection) as one:
        client.get(url(few))
    with CaptureQueriesContext(connection) as four:
        page = client.get(url(many))
    assert len(four) == len(one)
    assert sum(len(g["tags"]) for g in page.context["tag_groups"]) == 4
