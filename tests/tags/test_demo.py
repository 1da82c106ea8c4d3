"""The tags demo: after loaddemo, every scenario's tags exist and are computed; a second run writes nothing."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Count, Max

from audit.models import DomainEvent
from subjects.models import Subject
from tags.demo import TAGS, load_demo
from tags.models import Event, RecomputeJob, TagDefinition, TagGroup, TagRule, TagValue, TagValueChange

MEMBERS = 60


def snapshot() -> dict:
    return {
        "events": Event.objects.count(),
        "values": TagValue.objects.count(),
        "changes": TagValueChange.objects.count(),
        "domain_events": DomainEvent.objects.count(),
        "rules": TagRule.objects.count(),
        "groups": TagGroup.objects.aggregate(n=Count("id"), m=Max("id")),
        "tags": TagDefinition.objects.aggregate(u=Max("updated_at"), c=Max("last_computed_at")),
        "jobs": RecomputeJob.objects.count(),
    }


def values_of(type_code: str, code: str) -> dict:
    return dict(
        TagValue.objects.filter(tag__code=code, tag__subject_type__code=type_code).values_list("subject_id", "value")
    )


@pytest.fixture
def demo(db):
    try:  # once loaddemo runs the tags demo itself, load only the subjects here
        call_command("loaddemo", members=MEMBERS, subjects_only=True, stdout=StringIO())
    except TypeError:
        call_command("loaddemo", members=MEMBERS, stdout=StringIO())
    out = StringIO()
    load_demo(stdout=out)
    return out.getvalue()


def test_every_scenario_tag_exists_and_rule_tags_are_active(demo):
    assert TagDefinition.objects.count() == len(TAGS)
    for type_code, _, code, *_rest, rule, _unit in TAGS:
        tag = TagDefinition.objects.get(subject_type__code=type_code, code=code)
        if rule:
            assert (tag.computation, tag.status, tag.version) == ("rule", "active", 1), code
            assert tag.rule.document == rule and tag.last_computed_at is not None
        else:
            assert (tag.computation, tag.status) == ("assigned", "active"), code
    high_value = TagDefinition.objects.get(code="high_value")
    assert [d.depends_on.code for d in high_value.dependencies.all()] == ["spend_365d"]
    assert "rule tags" in demo


def test_rule_tags_are_computed_from_attributes_events_tags_and_relationships(demo):
    members = Subject.objects.filter(subject_type__code="member").count()
    assert len(values_of("member", "age_band")) == members
    assert set(values_of("member", "age_band").values()) <= {"under_25", "25_34", "35_44", "45_plus"}
    skin = values_of("member", "skin_type")
    for subject_id, attributes in Subject.objects.filter(subject_type__code="member").values_list("id", "attributes"):
        assert skin[subject_id] == attributes["skin_type"]
    frequency = values_of("member", "purchase_frequency")
    assert len(frequency) == members and set(frequency.values()) <= {"frequent", "occasional", "dormant"}
    counts = values_of("member", "purchases_90d")
    for subject_id, band in frequency.items():
        n = counts.get(subject_id, 0)
        assert band == ("frequent" if n >= 3 else "occasional" if n >= 1 else "dormant")
    spend, high = values_of("member", "spend_365d"), values_of("member", "high_value")
    assert all(high[s] is (spend.get(s, 0) >= 30_000) for s in high) and len(high) == members
    assert set(values_of("member", "first_visit_type").values()) <= {"walk_in", "referral", "online", "wecom"}
    assert len(values_of("clinic", "service_grade")) == 20
    retention, grade = values_of("clinic", "retention_rate"), values_of("clinic", "service_grade")
    assert all(grade[c] == ("A" if r >= 60 else "B" if r >= 40 else "C") for c, r in retention.items())
    assert sum(values_of("clinic", "member_count").values()) == Subject.objects.filter(
        subject_type__code="member"
    ).count() + sum(1 for i in range(MEMBERS) if i % 10 == 3)
    assert len(values_of("project", "price_band")) == 15 and len(values_of("project", "recovery_period")) == 15
    assert len(values_of("doctor", "specialties")) == 40
    assert set(TagValue.objects.filter(tag__computation="rule").values_list("source", flat=True)) == {"rule"}
    assert set(TagValue.objects.filter(tag__computation="assigned").values_list("source", flat=True)) == {"imported"}


def test_member_events_are_stored_for_the_aggregates(demo):
    members = Subject.objects.filter(subject_type__code="member").count()
    assert Event.objects.filter(type="visit").values("subject_id").distinct().count() == members
    assert Event.objects.filter(type="purchase").exists()
    assert set(Event.objects.values_list("source", flat=True)) == {"demo_pos"}


def test_running_it_again_writes_nothing(demo):
    before = snapshot()
    out = StringIO()
    load_demo(stdout=out)
    assert snapshot() == before
    assert "0 member events created" in out.getvalue() and "0 assigned values written" in out.getvalue()


def test_it_is_deterministic(demo):
    first = sorted(TagValue.objects.values_list("subject__source", "subject__external_id", "tag__code", "value"))
    events = sorted(Event.objects.values_list("event_id", "occurred_at", "properties"))
    TagValue.objects.all().delete()
    TagValueChange.objects.all().delete()
    Event.objects.all().delete()
    TagDefinition.objects.update(last_computed_at=None)
    load_demo(stdout=StringIO())
    assert (
        sorted(TagValue.objects.values_list("subject__source", "subject__external_id", "tag__code", "value")) == first
    )
    assert sorted(Event.objects.values_list("event_id", "occurred_at", "properties")) == events
