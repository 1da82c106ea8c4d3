"""A subject's tags on its API resource and under /subjects/{id}/tags/: grouped, labelled, no N+1."""

from tags.services.store import write_values

pytest_plugins = ["tests.tags.uiworld"]


def _fill(tags, member, admin_user):
    write_values(tags.skin, [(member.id, "oily")], source="manual", actor=admin_user)
    write_values(tags.interests, [(member.id, ["peel", "laser"])], source="imported", actor=None)
    write_values(tags.score, [(member.id, 42)], source="imported", actor=None)
    write_values(tags.vip, [(member.id, True)], source="manual", actor=admin_user)


def test_subject_detail_has_tags_grouped_by_group_with_labels_source_and_freshness(api, tags, admin_user):
    member = tags.member(birth_date="1990-01-01")
    _fill(tags, member, admin_user)
    body = api.get(f"/api/v1/subjects/{member.id}/").json()
    assert [g["code"] for g in body["tags"]] == ["demographics", "consumption"]
    demographics = {t["code"]: t for t in body["tags"][0]["tags"]}
    assert demographics["skin"]["value"] == "oily" and demographics["skin"]["label"] == "Oily"
    assert demographics["skin"]["source"] == "manual" and demographics["skin"]["updated_at"]
    assert demographics["interests"]["value"] == ["laser", "peel"]
    assert demographics["interests"]["labels"] == ["Laser", "Peel"] and demographics["interests"]["label"] is None
    consumption = {t["code"]: t for t in body["tags"][1]["tags"]}
    assert consumption["score"]["value"] == 42 and consumption["score"]["source"] == "imported"
    assert consumption["vip"]["value"] is True
    assert set(demographics["skin"]) >= {"computation", "rule_version", "computed_at", "value_type", "unit"}


def test_the_tags_action_lists_the_same_groups(api, tags, admin_user):
    member = tags.member()
    _fill(tags, member, admin_user)
    listed = api.get(f"/api/v1/subjects/{member.id}/tags/").json()
    assert listed == api.get(f"/api/v1/subjects/{member.id}/").json()["tags"]
    assert api.get(f"/api/v1/subjects/{tags.member().id}/tags/").json() == []
    assert api.get("/api/v1/subjects/999999/tags/").status_code == 404


def test_subject_detail_costs_two_queries_for_tags_however_many(api, tags, admin_user, django_assert_num_queries):
    few, many = tags.member(), tags.member()
    write_values(tags.skin, [(few.id, "dry")], source="manual", actor=admin_user)
    _fill(tags, many, admin_user)
    write_values(tags.note, [(many.id, "likes mornings")], source="manual", actor=admin_user)
    write_values(tags.since, [(many.id, "2024-05-01")], source="manual", actor=admin_user)
    api.get(f"/api/v1/subjects/{few.id}/")
    # token (1) + subject (1) + tag values with tag and group (1) + tag usage (1) + option labels (1)
    with django_assert_num_queries(5):
        assert len(api.get(f"/api/v1/subjects/{few.id}/").json()["tags"]) == 1
    with django_assert_num_queries(5):
        body = api.get(f"/api/v1/subjects/{many.id}/").json()
    assert sum(len(g["tags"]) for g in body["tags"]) == 6
    bare = tags.member()
    with django_assert_num_queries(3):  # no values: no usage, no labels query
        assert api.get(f"/api/v1/subjects/{bare.id}/").json()["tags"] == []


def test_the_subject_list_stays_without_tags(api, tags, admin_user):
    member = tags.member()
    _fill(tags, member, admin_user)
    row = api.get("/api/v1/subjects/", {"type": "member"}).json()["results"][0]
    assert "tags" not in row


def test_tags_are_null_for_a_user_who_may_not_view_tag_values(tags, admin_user, db):
    from django.contrib.auth.models import Permission
    from rest_framework.test import APIClient

    from tests.factories import UserFactory

    member = tags.member()
    _fill(tags, member, admin_user)
    user = UserFactory()
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_subject", "all_scopes"]))
    client = APIClient()
    client.force_authenticate(user)
    body = client.get(f"/api/v1/subjects/{member.id}/").json()
    assert body["id"] == member.id and body["tags"] is None
    assert client.get(f"/api/v1/subjects/{member.id}/tags/").status_code == 403
