"""The admin's tag usage pages: charts' JSON equals the data, lineage is transitive, unused/stale lists."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from audit.models import TagUsage
from tags.models import AccessPolicy, TagDependency, TagValueChange
from tags.services.store import write_values
from tests.factories import UserFactory
from tests.factories.tags import TagDefinitionFactory, TagGroupFactory

OVERVIEW = "admin:audit_tagusage_changelist"
TODAY = dt.date(2026, 6, 30)


@pytest.fixture(autouse=True)
def fixed_today(monkeypatch):
    """A fixed "today" so the window's days are known (the usage rows are dated relative to it)."""
    noon = timezone.make_aware(dt.datetime.combine(TODAY, dt.time(12)))
    monkeypatch.setattr(timezone, "now", lambda: noon)


def day(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


def noon(n: int) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day(n), dt.time(12)))


def chart(response, element_id: str) -> dict:
    """The JSON a chart draws, read back from the page (``json_script``)."""
    html = response.content.decode()
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no chart data {element_id}"
    assert f'data-chart="{element_id}"' in html
    return json.loads(match.group(1))


def usage(tag, n: int, kind: str, count: int) -> None:
    TagUsage.objects.create(tag=tag, day=day(n), kind=kind, count=count)


@pytest.fixture
def auditor(db):
    user = UserFactory(is_staff=True, username="auditor")
    user.user_permissions.add(Permission.objects.get(codename="view_tagusage"))
    return user


@pytest.fixture
def hq_viewer(db):
    """Usage pages and every subject scope (HQ analysts): subject counts are not restricted."""
    user = UserFactory(is_staff=True, username="hq")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_tagusage", "all_scopes"]))
    return user


@pytest.fixture
def chain(usage_world):
    """t0 ← t1 (rule) ← t2 (propagation) ← t3 (rule); t4 reads nothing and nothing reads it."""
    t = usage_world.tags
    TagDependency.objects.create(tag=t[1], depends_on=t[0], kind="rule")
    TagDependency.objects.create(tag=t[2], depends_on=t[1], kind="propagation")
    TagDependency.objects.create(tag=t[3], depends_on=t[2], kind="rule")
    return t


def test_overview_chart_sums_uses_per_kind_and_day(client, auditor, usage_world):
    t = usage_world.tags
    usage(t[0], 0, "read", 5)
    usage(t[1], 0, "read", 2)
    usage(t[0], 1, "rule", 3)
    usage(t[2], 6, "preview", 1)
    usage(t[3], 7, "read", 100)  # outside a 7-day window
    client.force_login(auditor)
    response = client.get(reverse(OVERVIEW), {"days": 7})
    assert response.status_code == 200
    data = chart(response, "usage-chart")
    assert data["labels"] == [day(n).isoformat() for n in range(6, -1, -1)]
    series = {d["label"]: d["data"] for d in data["datasets"]}
    assert series["Read (API or admin)"] == [0, 0, 0, 0, 0, 0, 7]
    assert series["Input of a rule"] == [0, 0, 0, 0, 0, 3, 0]
    assert series["Preview"] == [1, 0, 0, 0, 0, 0, 0]
    assert series["Export"] == [0] * 7
    top = response.context["top_tags"]
    assert [(r["tag__code"], r["total"]) for r in top] == [("t0", 8), ("t1", 2), ("t2", 1)]
    assert top[0]["by_kind"] == [5, 3, 0, 0, 0]
    top_chart = chart(response, "top-chart")
    assert top_chart["labels"] == ["t0", "t1", "t2"] and top_chart["horizontal"]
    assert {d["label"]: d["data"] for d in top_chart["datasets"]}["Read (API or admin)"] == [5, 2, 0]
    assert 'src="/static/audit/vendor/chart.umd.min.js"' in response.content.decode()


def test_unused_and_stale_lists(client, auditor, usage_world, admin_user):
    t = usage_world.tags
    member = usage_world.subjects[0]
    usage(t[0], 0, "read", 1)
    usage(t[1], 45, "read", 1)  # last used before a 30-day window
    write_values(t[2], [(member.id, "a")], source="manual", actor=admin_user)  # a change today: not stale
    write_values(t[3], [(member.id, "a")], source="manual", actor=admin_user)
    TagValueChange.objects.filter(tag=t[3]).update(changed_at=noon(40))  # its last change is old
    t[4].last_computed_at = noon(1)  # recomputed yesterday: not stale
    t[4].save(update_fields=["last_computed_at"])
    client.force_login(auditor)
    context = client.get(reverse(OVERVIEW), {"days": 30}).context
    unused = {tag.code: tag.last_used for tag in context["unused"]}
    assert unused == {"t1": day(45), "t2": None, "t3": None, "t4": None}
    assert context["unused_count"] == 4
    assert {tag.code for tag in context["stale"]} == {"t0", "t1", "t3"}
    assert {tag.code: tag.last_change for tag in context["stale"]}["t3"] == noon(40)


def test_tag_page_subjects_over_time_from_the_history(client, hq_viewer, usage_world, admin_user):
    tag = usage_world.tags[0]
    s1, s2, s3 = usage_world.subjects
    write_values(tag, [(s1.id, "a"), (s2.id, "a")], source="manual", actor=admin_user)
    TagValueChange.objects.filter(tag=tag, subject=s1).update(changed_at=noon(3))
    TagValueChange.objects.filter(tag=tag, subject=s2).update(changed_at=noon(2))
    write_values(tag, [(s1.id, None)], source="manual", actor=admin_user)  # removed yesterday
    TagValueChange.objects.filter(tag=tag, subject=s1, new_value__isnull=True).update(changed_at=noon(1))
    write_values(tag, [(s3.id, "b")], source="manual", actor=admin_user)  # added today
    write_values(tag, [(s3.id, "a")], source="manual", actor=admin_user)  # and changed today
    usage(tag, 0, "read", 4)
    usage(tag, 2, "propagation", 2)
    client.force_login(hq_viewer)
    response = client.get(reverse("admin:audit_tagusage_tag", args=[tag.pk]), {"days": 7})
    assert response.status_code == 200
    assert response.context["subjects_now"] == 2
    subjects = chart(response, "subjects-chart")
    series = {d["label"]: d["data"] for d in subjects["datasets"]}
    assert series["Subjects with a value"] == [0, 0, 0, 1, 2, 1, 2]
    assert series["Values added"] == [0, 0, 0, 1, 1, 0, 1]
    assert series["Values removed"] == [0, 0, 0, 0, 0, 1, 0]
    used = {d["label"]: d["data"] for d in chart(response, "usage-chart")["datasets"]}
    assert used["Read (API or admin)"] == [0, 0, 0, 0, 0, 0, 4]
    assert used["Source of a propagation"] == [0, 0, 0, 0, 2, 0, 0]


def test_subject_counts_follow_the_viewers_subject_scope(client, auditor, usage_world, admin_user):
    """Counts are a read path too: a viewer counts only the subjects of their scopes (none without a grant)."""
    from subjects.models import ScopeGrant, Subject
    from tests.factories import BrandTypeFactory, SubjectFactory

    brand_a, brand_b = (SubjectFactory(subject_type=BrandTypeFactory(), external_id=b) for b in "AB")
    tag = usage_world.tags[0]
    s1, s2, _ = usage_world.subjects
    Subject.objects.filter(pk=s1.pk).update(brand=brand_a)
    Subject.objects.filter(pk=s2.pk).update(brand=brand_b)
    write_values(tag, [(s1.id, "a"), (s2.id, "a")], source="manual", actor=admin_user)
    client.force_login(auditor)
    url = reverse("admin:audit_tagusage_tag", args=[tag.pk])
    assert client.get(url).context["subjects_now"] == 0
    ScopeGrant.objects.create(user=auditor, brand=brand_a)
    response = client.get(url, {"days": 7})
    assert response.context["subjects_now"] == 1
    added = {d["label"]: d["data"] for d in chart(response, "subjects-chart")["datasets"]}["Values added"]
    assert added[-1] == 1


def test_lineage_is_transitive_both_ways(client, auditor, chain):
    client.force_login(auditor)

    def lineage(tag):
        context = client.get(reverse("admin:audit_tagusage_tag", args=[tag.pk])).context
        return {
            direction: [(other.code, entry.depth, entry.kind) for entry, other in rows]
            for direction, rows in context["lineage"].items()
        }

    assert lineage(chain[0]) == {
        "upstream": [],
        "downstream": [("t1", 1, "rule"), ("t2", 2, "propagation"), ("t3", 3, "rule")],
    }
    assert lineage(chain[2]) == {
        "upstream": [("t1", 1, "propagation"), ("t0", 2, "rule")],
        "downstream": [("t3", 1, "rule")],
    }
    assert lineage(chain[4]) == {"upstream": [], "downstream": []}


def test_tags_the_viewer_cannot_see_are_left_out(client, auditor, chain, usage_world):
    hidden_group = TagGroupFactory(
        subject_type=usage_world.member_type, code="secret", view_policy=AccessPolicy.GRANTED
    )
    secret = TagDefinitionFactory(group=hidden_group, code="secret_tag")
    TagDependency.objects.create(tag=secret, depends_on=chain[3], kind="rule")
    usage(secret, 0, "read", 9)
    usage(chain[0], 0, "read", 1)
    client.force_login(auditor)
    overview = client.get(reverse(OVERVIEW))
    assert [r["tag__code"] for r in overview.context["top_tags"]] == ["t0"]
    assert chart(overview, "usage-chart")["datasets"][0]["data"][-1] == 1
    assert "secret_tag" not in overview.content.decode()
    assert client.get(reverse("admin:audit_tagusage_tag", args=[secret.pk])).status_code == 404
    page = client.get(reverse("admin:audit_tagusage_tag", args=[chain[0].pk]))
    assert [other.code for _, other in page.context["lineage"]["downstream"]] == ["t1", "t2", "t3"]
    assert page.context["hidden"] == 1 and "secret_tag" not in page.content.decode()


def test_staff_without_the_permission_are_refused(client, usage_world):
    staff = UserFactory(is_staff=True, username="staff")
    client.force_login(staff)
    assert client.get(reverse(OVERVIEW)).status_code == 403
    assert client.get(reverse("admin:audit_tagusage_tag", args=[usage_world.tags[0].pk])).status_code == 403


def test_the_overview_query_count_does_not_grow_with_tags(client, auditor, usage_world, django_assert_max_num_queries):
    client.force_login(auditor)
    client.get(reverse(OVERVIEW))
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        client.get(reverse(OVERVIEW))
    for i in range(20):
        tag = TagDefinitionFactory(group=usage_world.group, code=f"more{i}")
        usage(tag, i % 5, "read", i + 1)
    with CaptureQueriesContext(connection) as many:
        client.get(reverse(OVERVIEW))
    assert len(many) == len(few)


def test_chart_js_is_vendored_with_its_licence_and_collected(tmp_path, settings):
    assert finders.find("audit/vendor/chart.umd.min.js")
    assert finders.find("audit/vendor/chart.js-LICENSE.md")
    assert finders.find("audit/usage.js")
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)
    bundle = (tmp_path / "audit/vendor/chart.umd.min.js").read_text()
    assert bundle.startswith("/*!\n * Chart.js v4.")


@pytest.mark.parametrize("role", ["auditor", "hq_analyst", "hq_admin"])
def test_the_roles_that_see_usage(client, usage_world, role):
    """``audit.view_tagusage`` comes with the auditor and HQ roles (``audit.view_*`` / ``audit.*`` in ROLES)."""
    from django.contrib.auth.models import Group

    from subjects.roles import ROLES, ensure_roles

    ensure_roles()
    user = UserFactory(is_staff=True, username=f"{role}_user")
    user.groups.add(Group.objects.get(name=ROLES[role].group))
    client.force_login(user)
    assert client.get(reverse(OVERVIEW)).status_code == 200


def test_other_roles_do_not(client, usage_world):
    from django.contrib.auth.models import Group

    from subjects.roles import ROLES, ensure_roles

    ensure_roles()
    user = UserFactory(is_staff=True, username="operator")
    user.groups.add(Group.objects.get(name=ROLES["brand_operator"].group))
    client.force_login(user)
    assert client.get(reverse(OVERVIEW)).status_code == 403
