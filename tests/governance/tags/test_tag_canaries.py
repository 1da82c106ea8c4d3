"""Canaries: a unique value per tag and subject must not appear anywhere a user cannot see it.

Every GET endpoint of the tags API (discovered from the URL conf, so a new one cannot escape)
and the tag pages of the admin are read by each role; the responses may hold the canaries of
the tags and subjects the role sees, and no other.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import URLPattern, URLResolver, get_resolver

from tags.models import RecomputeJob, TagValue

from .conftest import TAG_CODES, canary
from .test_tag_access import VISIBLE_TAGS, _members_seen

pytestmark = pytest.mark.django_db

AT = "2100-01-01"
ROLES = ("brand_operator", "regional_manager", "granted", "one_tag", "integration", "auditor", "nobody")


def _api_get_urls(tw) -> dict[str, list[str]]:
    """One or more concrete GET URLs per tags API route name (writes-only routes map to [])."""
    g = tw.gov
    tags = tw.tags.values()
    members = tw.members
    detail = [f"/api/v1/tag-definitions/{t.pk}/" for t in tags]
    return {
        "taggroup-list": ["/api/v1/tag-groups/?page_size=1000"],
        "taggroup-detail": [f"/api/v1/tag-groups/{gr.pk}/" for gr in tw.groups.values()],
        "tagdefinition-list": ["/api/v1/tag-definitions/?page_size=1000"],
        "tagdefinition-detail": detail,
        "tagdefinition-rules": [f"{u}rules/" for u in detail],
        "tagdefinition-activate": [], "tagdefinition-archive": [], "tagdefinition-preview": [],
        "tagdefinition-recompute": [],
        "recomputejob-list": ["/api/v1/recompute-jobs/?page_size=1000"],
        "recomputejob-detail": [f"/api/v1/recompute-jobs/{j.pk}/" for j in RecomputeJob.objects.all()],
        "tagvalue-list": ["/api/v1/tag-values/?page_size=1000"],
        "tagvalue-bulk": [],
        "tagvalue-value-at": [
            f"/api/v1/tag-values/at/?tag={t.pk}&at={AT}&subject={m.pk}" for t in tags for m in members
        ],
        "tagvalue-subjects-at": [
            f"/api/v1/tag-values/subjects-at/?tag={t.pk}&at={AT}&value={canary(t.code, m)}"
            for t in tags for m in members
        ],
        "tag-value-explain": [f"/api/v1/tag-explain/?tag={t.pk}&subject={m.pk}" for t in tags for m in members],
        "event-ingest": [], "event-batch": [],
        "subject-tags": [f"/api/v1/subjects/{m.pk}/tags/" for m in members],
        "subject-detail": [f"/api/v1/subjects/{m.pk}/" for m in members]
        + [f"/api/v1/subjects/{g.member_in.pk}/?unmask=1"],
    }  # fmt: skip


def _route_names(patterns) -> set[str]:
    names: set[str] = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            names |= _route_names(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(pattern.name)
    return names


def test_every_tags_api_route_is_covered(tw):
    """A new tags endpoint must be added here (and so to the canary sweep) before it can ship."""
    from tags.api import events_urls, urls

    routes = _route_names(urls.urlpatterns) | _route_names(events_urls.urlpatterns)
    assert routes <= set(_api_get_urls(tw)), sorted(routes - set(_api_get_urls(tw)))
    assert {"subject-detail", "subject-tags"} <= _route_names(get_resolver().url_patterns)


def _allowed(tw, role: str) -> set[str]:
    if role not in VISIBLE_TAGS:
        return set()
    return tw.canaries(VISIBLE_TAGS[role] - {"derived"}, _members_seen(tw, role))


def _forbidden(tw, role: str) -> set[str]:
    return tw.canaries(TAG_CODES) - _allowed(tw, role)


@pytest.fixture
def jobs(tw):
    RecomputeJob.objects.bulk_create(RecomputeJob(tag=t) for t in tw.tags.values())


@pytest.mark.parametrize("role", ROLES)
def test_no_api_response_holds_a_canary_the_role_may_not_see(tw, jobs, role):
    client = tw.gov.client(role)
    bodies = []
    for urls in _api_get_urls(tw).values():
        for url in urls:
            response = client.get(url)
            assert response.status_code < 500, (url, response.status_code)
            bodies.append(response.content.decode())
    text = "\n".join(bodies)
    leaked = sorted(c for c in _forbidden(tw, role) if c in text)
    assert leaked == [], leaked
    assert all(c in text for c in _allowed(tw, role))  # the sweep reads what the role may see


def _admin_urls(tw) -> list[str]:
    tag_ids = [t.pk for t in tw.tags.values()]
    value_at = "/admin/tags/tagvaluechange/value-at/"
    return [
        "/admin/tags/tagvalue/",
        *[f"/admin/tags/tagvalue/?tag={i}" for i in tag_ids],
        *[f"/admin/tags/tagvalue/{v.pk}/change/" for v in TagValue.objects.all()],
        "/admin/tags/tagvaluechange/",
        *[f"{value_at}?tag={i}&at={AT}+00:00&subject={m.pk}" for i in tag_ids for m in tw.members],
        *[f"{value_at}?tag={t.pk}&at={AT}+00:00&value={canary(t.code, m)}" for t in tw.tags.values()
          for m in tw.members],
        "/admin/tags/tagdefinition/",
        "/admin/tags/recomputejob/",
        *[f"/admin/subjects/subject/{m.pk}/change/" for m in tw.members],
        "/admin/subjects/subject/",
    ]  # fmt: skip


@pytest.mark.parametrize("role", ["brand_operator", "regional_manager", "granted", "one_tag"])
def test_no_admin_page_holds_a_canary_the_role_may_not_see(tw, jobs, role):
    client = tw.gov.admin_client(role)
    forbidden, seen = _forbidden(tw, role), ""
    for url in _admin_urls(tw):
        response = client.get(url, follow=True)
        assert response.status_code < 500, (url, response.status_code)
        text = response.content.decode()
        asked = url.partition("value=")[2]  # a lookup form shows back the value typed into it
        leaked = sorted(c for c in forbidden if c in text and c != asked)
        assert leaked == [], (url, leaked)
        seen += text
    assert any(c in seen for c in _allowed(tw, role))


def test_the_subject_tags_panel_lists_visible_tags_and_offers_editable_ones(tw, gov):
    user = gov.users["brand_operator"]
    user.user_permissions.add(Permission.objects.get(codename="delete_tagvalue"))
    page = gov.admin_client("brand_operator").get(f"/admin/subjects/subject/{gov.member_in.pk}/change/")
    assert page.status_code == 200
    shown = {t["code"] for group in page.context["tag_groups"] for t in group["tags"]}
    assert shown == VISIBLE_TAGS["brand_operator"] - {"derived"}
    offered = {t["code"] for t in page.context["tag_edit"]["tags"]}
    assert offered == {"open_note", "a_note", "nouse_note"}  # ro_note is visible, not editable


def test_manual_edits_of_a_tag_one_may_not_edit_are_refused(tw, gov):
    user = gov.users["brand_operator"]
    user.user_permissions.add(Permission.objects.get(codename="delete_tagvalue"))
    client = gov.admin_client("brand_operator")
    url = f"/admin/tags/tagvalue/subject/{gov.member_in.pk}/set/"
    before = TagValue.objects.get(tag=tw.tags["ro_note"], subject=gov.member_in).value
    client.post(url, {"tag": tw.tags["ro_note"].pk, "value": "changed"})
    client.post(url, {"tag": tw.tags["secret_note"].pk, "value": "changed"})
    assert TagValue.objects.get(tag=tw.tags["ro_note"], subject=gov.member_in).value == before
    assert not TagValue.objects.filter(value="changed").exists()
    assert client.post(f"/admin/tags/tagvalue/subject/{gov.member_out.pk}/set/", {"tag": 1}).status_code == 404
    client.post(url, {"tag": tw.tags["a_note"].pk, "value": "changed"})
    assert TagValue.objects.get(tag=tw.tags["a_note"], subject=gov.member_in).value == "changed"


def test_object_permission_pages_only_for_what_one_may_edit(tw, gov):
    editor = gov.admin_client("editor")
    operator = gov.admin_client("brand_operator")
    groups = tw.groups
    assert editor.get(f"/admin/tags/taggroup/{groups['brand_a'].pk}/permissions/").status_code == 200
    assert editor.get(f"/admin/tags/taggroup/{groups['readonly'].pk}/permissions/").status_code == 403
    assert editor.get(f"/admin/tags/taggroup/{groups['secret'].pk}/permissions/").status_code == 403
    assert operator.get(f"/admin/tags/taggroup/{groups['brand_a'].pk}/permissions/").status_code == 403
    tag = tw.tags["a_note"]
    assert editor.get(f"/admin/tags/tagdefinition/{tag.pk}/permissions/").status_code == 200
    hq = gov.admin_client("hq_admin")
    page = hq.get(f"/admin/tags/tagdefinition/{tw.tags['secret_note'].pk}/change/")
    assert page.status_code == 200 and "/permissions/" in page.content.decode()


def test_a_grant_made_in_the_admin_opens_the_group(tw, gov):
    """HQ grants view on the secret group to a Django group; its members then see the group's tags."""
    from django.contrib.auth.models import Group

    from tags.access import visible_tags

    team = Group.objects.create(name="Team A")
    user = gov.users["brand_operator"]
    user.groups.add(team)
    url = f"/admin/tags/taggroup/{tw.groups['secret'].pk}/permissions/group-manage/{team.pk}/"
    response = gov.admin_client("hq_admin").post(url, {"permissions": ["view_taggroup"]})
    assert response.status_code == 302
    user = type(user).objects.get(pk=user.pk)
    assert set(visible_tags(user).filter(code__startswith="secret").values_list("code", flat=True)) == {
        "secret_note",
        "secret_two",
    }
