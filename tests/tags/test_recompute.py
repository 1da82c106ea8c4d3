"""Recompute: the reference scenarios, dependencies, audit, signals, jobs, preview and history."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import DomainEvent
from common.errors import ServiceError
from subjects.models import Relationship
from tags.models import RecomputeJob, TagValue, TagValueChange
from tags.services import definitions
from tags.services.history import subjects_with_value_at, value_at
from tags.services.preview import preview_rule
from tags.services.recompute import recompute_all, recompute_subjects, start_recompute
from tags.signals import values_changed
from tags.tasks import recompute_tag
from tests.factories import SubjectFactory
from tests.factories.tags import EventFactory

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)

AGE_BAND = {
    "cases": [
        {"when": {"<": [{"years_since": {"var": "attributes.birth_date"}}, 25]}, "then": "under_25"},
        {"when": {"<": [25, {"years_since": {"var": "attributes.birth_date"}}, 40]}, "then": "25_39"},
        {"when": {">=": [{"years_since": {"var": "attributes.birth_date"}}, 40]}, "then": "40_plus"},
    ],
    "default": None,
}
PURCHASES_90 = {"event_agg": {"type": "purchase", "fn": "count", "days": 90}}
FREQUENCY = {
    "cases": [
        {"when": {">=": [PURCHASES_90, 3]}, "then": "frequent"},
        {"when": {">=": [PURCHASES_90, 1]}, "then": "occasional"},
    ],
    "default": "lapsed",
}


@pytest.fixture
def group(world):
    return definitions.tag_group_save(actor=None, data={"subject_type": world.member_type, "code": "demo", "name": "D"})


def rule_tag(group, code, value_type, options=(), document=None):
    tag = definitions.tag_save(
        actor=None,
        data={"group": group, "code": code, "name": code, "value_type": value_type, "computation": "rule"},
        options=[(o, o) for o in options] or None,
    )
    if document is not None:
        saved = definitions.rule_save(actor=None, tag=tag, document=document)
        definitions.activate_rule(actor=None, tag=tag, version=saved.version, recompute=False)
        tag.refresh_from_db()
    return tag


@pytest.fixture
def members(world):
    dates = ["2005-06-16", "2001-06-15", "1990-01-01", "1986-06-15", None]
    return [
        SubjectFactory(subject_type=world.member_type, attributes={"birth_date": d} if d else {"spend": 10})
        for d in dates
    ]


def values(tag):
    return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))


def test_age_band_from_birth_date(group, members):
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    assert recompute_all(tag, now=NOW) == 3
    ids = [m.id for m in members]
    # 2005-06-16 is 20 on 2026-06-15; 2001-06-15 turns 25 that day (neither <25 nor 25<x<40)
    assert values(tag) == {ids[0]: "under_25", ids[2]: "25_39", ids[3]: "40_plus"}
    assert TagValue.objects.get(tag=tag, subject_id=ids[0]).rule_version == 1


def test_frequency_band_from_purchases_in_the_last_90_days(group, members):
    a, b, c = members[:3]
    for days in (1, 10, 89):
        EventFactory(subject=a, occurred_at=NOW - dt.timedelta(days=days))
    EventFactory(subject=b, occurred_at=NOW - dt.timedelta(days=5))
    EventFactory(subject=b, occurred_at=NOW - dt.timedelta(days=91))
    EventFactory(subject=b, type="visit", occurred_at=NOW - dt.timedelta(days=2))
    EventFactory(subject=c, occurred_at=NOW + dt.timedelta(days=1))
    tag = rule_tag(group, "frequency", "enum", ["frequent", "occasional", "lapsed"], FREQUENCY)
    recompute_all(tag, now=NOW)
    got = values(tag)
    assert (got[a.id], got[b.id], got[c.id]) == ("frequent", "occasional", "lapsed")


def test_high_value_from_spend_and_a_number_formula(group, world):
    rich = SubjectFactory(subject_type=world.member_type, attributes={"spend": 12000})
    poor = SubjectFactory(subject_type=world.member_type, attributes={"spend": 300})
    EventFactory(subject=poor, properties={"amount": 100}, occurred_at=NOW - dt.timedelta(days=3))
    EventFactory(subject=poor, properties={"amount": 50.5}, occurred_at=NOW - dt.timedelta(days=4))
    high = rule_tag(
        group,
        "high_value",
        "boolean",
        document={"cases": [{"when": {">=": [{"var": "attributes.spend"}, 10000]}, "then": True}], "default": False},
    )
    score = rule_tag(
        group,
        "score",
        "number",
        document={
            "formula": {
                "+": [
                    {"/": [{"var": "attributes.spend"}, 100]},
                    {"event_agg": {"type": "purchase", "fn": "sum", "property": "amount", "days": 30}},
                ]
            }
        },
    )
    recompute_all(high, now=NOW)
    recompute_all(score, now=NOW)
    assert values(high) == {rich.id: True, poor.id: False}
    assert values(score) == {rich.id: 120, poor.id: 153.5}


def test_related_quantifiers_respect_valid_time(group, world):
    member = SubjectFactory(subject_type=world.member_type)
    other = SubjectFactory(subject_type=world.member_type)
    R = Relationship.objects.create
    R(relationship_type=world.visited, from_subject=member, to_subject=world.clinic_a_sh, source="t", external_id="1")
    R(
        relationship_type=world.visited,
        from_subject=other,
        to_subject=world.clinic_b_bj,
        source="t",
        external_id="2",
        valid_to=NOW - dt.timedelta(days=1),
    )
    clinic_group = definitions.tag_group_save(
        actor=None, data={"subject_type": world.clinic_type, "code": "ops", "name": "O"}
    )
    grade = definitions.tag_save(
        actor=None,
        data={"group": clinic_group, "code": "grade", "name": "Grade", "value_type": "enum", "status": "active"},
        options=[("A", "A"), ("B", "B")],
    )
    from tags.services.store import write_values

    write_values(grade, [(world.clinic_a_sh.id, "A"), (world.clinic_b_bj.id, "A")], source="manual", actor=None)
    doc = {
        "cases": [
            {
                "when": {"related": {"relationship": "visited", "where": {"==": [{"var": "tags.grade"}, "A"]}}},
                "then": True,
            }
        ],
        "default": False,
    }
    visits_a = rule_tag(group, "visits_grade_a", "boolean", document=doc)
    count = rule_tag(
        group,
        "clinics",
        "number",
        document={"formula": {"related": {"relationship": "visited", "quantifier": "count"}}},
    )
    recompute_all(visits_a, now=NOW)
    recompute_all(count, now=NOW)
    assert values(visits_a) == {member.id: True, other.id: False}
    assert values(count) == {member.id: 1, other.id: 0}
    # the clinic's grade changes: the dependent member tag follows on the related subject
    write_values(grade, [(world.clinic_a_sh.id, "B")], source="manual", actor=None)
    assert recompute_subjects(grade, [world.clinic_a_sh.id], now=NOW) == 0  # assigned tags are not recomputed
    assert recompute_subjects(visits_a, [member.id], now=NOW) == 1
    assert values(visits_a)[member.id] is False


def test_no_change_recompute_writes_nothing_and_records_nothing(group, members):
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    recompute_all(tag, now=NOW)
    events, changes = DomainEvent.objects.count(), TagValueChange.objects.count()
    assert recompute_all(tag, now=NOW) == 0
    assert recompute_subjects(tag, [m.id for m in members], now=NOW) == 0
    assert (DomainEvent.objects.count(), TagValueChange.objects.count()) == (events, changes)


def test_recompute_records_a_domain_event_and_history_with_one_correlation_id(group, members):
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    recompute_subjects(tag, [m.id for m in members], now=NOW, correlation_id=None)
    event = DomainEvent.objects.get(action="tags.recomputed")
    assert event.row_count == 3 and event.summary["created"] == 3
    assert set(TagValueChange.objects.filter(tag=tag).values_list("correlation_id", flat=True)) == {
        event.correlation_id
    }


def test_values_that_no_longer_match_are_removed_with_history(group, members):
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    recompute_all(tag, now=NOW)
    young = members[0]
    young.attributes = {}
    young.save()
    assert recompute_subjects(tag, [young.id], now=NOW) == 1
    assert young.id not in values(tag)
    last = TagValueChange.objects.filter(tag=tag, subject=young).latest("id")
    assert (last.old_value, last.new_value, last.source) == ("under_25", None, "rule")


def test_incremental_recompute_is_one_write_statement_whatever_the_size(group, world):
    tag = rule_tag(group, "frequency", "enum", ["frequent", "occasional", "lapsed"], FREQUENCY)
    subjects = [SubjectFactory(subject_type=world.member_type) for _ in range(30)]

    def statements(ids):
        with CaptureQueriesContext(connection) as ctx:
            recompute_subjects(tag, ids, now=NOW)
        return [q["sql"] for q in ctx.captured_queries if "tags_tagvalue" in q["sql"]]

    few, many = statements([s.id for s in subjects[:3]]), statements([s.id for s in subjects[3:]])
    assert len(few) == len(many)
    if connection.vendor == "postgresql":
        assert len(few) == 1


def test_dependents_follow_in_order_and_cycles_are_refused(group, members):
    age = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    young = rule_tag(
        group,
        "young",
        "boolean",
        document={"cases": [{"when": {"==": [{"var": "tags.age_band"}, "under_25"]}, "then": True}]},
    )
    target = rule_tag(
        group, "young_target", "boolean", document={"cases": [{"when": {"var": "tags.young"}, "then": True}]}
    )
    ids = [m.id for m in members]
    assert recompute_subjects(age, ids, now=NOW) == 5  # 3 age bands, then young (1), then young_target (1)
    assert values(young) == {ids[0]: True} and values(target) == {ids[0]: True}

    with pytest.raises(ServiceError) as err:
        definitions.rule_save(
            actor=None, tag=age, document={"cases": [{"when": {"var": "tags.young_target"}, "then": "under_25"}]}
        )
    assert err.value.errors[0].code == "cycle"
    assert "age_band → young_target → young → age_band" in err.value.errors[0].message

    with pytest.raises(ServiceError) as err:
        definitions.archive(actor=None, tag=age)
    assert err.value.errors[0].code == "has_dependents" and "young" in err.value.errors[0].message
    definitions.archive(actor=None, tag=target)
    definitions.archive(actor=None, tag=young)
    definitions.archive(actor=None, tag=age)


def test_start_recompute_runs_after_commit_with_progress(group, members, django_capture_on_commit_callbacks):
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = start_recompute(tag, actor=None)
        assert RecomputeJob.objects.get(pk=job.pk).status == "queued"
    assert len(callbacks) == 1 and not TagValue.objects.filter(tag=tag).exists()
    callbacks[0]()
    job.refresh_from_db()
    assert (job.status, job.chunks_done, job.chunks_total, job.subject_count) == ("done", 1, 1, 5)
    assert job.rows_changed == 3 and job.finished_at is not None

    assert recompute_tag.run(job.pk) == 0  # a finished job is not run again
    RecomputeJob.objects.filter(pk=job.pk).update(status="queued")
    recompute_tag.run(job.pk)  # a duplicate delivery converges: nothing changes
    job.refresh_from_db()
    assert (job.status, job.rows_changed) == ("done", 0)


def test_task_is_late_acked_bounded_and_retrying():
    assert recompute_tag.acks_late and recompute_tag.reject_on_worker_lost
    assert recompute_tag.max_retries == 5 and recompute_tag.time_limit and recompute_tag.soft_time_limit
    assert recompute_tag.name == "tags.recompute_tag"


def test_chunked_full_recompute_covers_every_subject(group, world, members):
    SubjectFactory(subject_type=world.clinic_type)  # another type between the members
    more = [SubjectFactory(subject_type=world.member_type, attributes={"birth_date": "2010-01-01"}) for _ in range(4)]
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    job = RecomputeJob.objects.create(tag=tag)
    recompute_all(tag, chunk_size=2, job=job, now=NOW)
    job.refresh_from_db()
    assert (job.chunks_total, job.chunks_done, job.rows_changed) == (5, 5, 7)
    assert {m.id for m in more} <= set(values(tag))


def test_values_changed_is_sent_on_commit(group, members, django_capture_on_commit_callbacks):
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    got = []

    def receiver(sender, tag, subject_ids, correlation_id, **kwargs):
        got.append((tag.code, subject_ids))

    values_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            recompute_subjects(tag, [m.id for m in members], now=NOW)
            assert got == []
    finally:
        values_changed.disconnect(receiver)
    assert got == [("age_band", sorted(m.id for m in members[:4] if m.attributes.get("birth_date") != "2001-06-15"))]


def test_preview_counts_and_changes_without_writing(group, members):
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    before = TagValueChange.objects.count()
    preview = preview_rule(tag, AGE_BAND)
    assert preview["total"] == 5 and preview["changes"] == 3 and preview["no_value"] == 2
    assert sum(preview["counts"].values()) == 3 and len(preview["sample"]) == 3
    assert TagValueChange.objects.count() == before and not TagValue.objects.filter(tag=tag).exists()
    recompute_all(tag)
    assert preview_rule(tag, AGE_BAND)["changes"] == 0
    with pytest.raises(ServiceError):
        preview_rule(tag, {"cases": [{"when": {"var": "attributes.nope"}, "then": "x"}]})


def test_history_answers_value_at_and_subjects_with_value_at(group, members):
    tag = rule_tag(group, "age_band", "enum", ["under_25", "25_39", "40_plus"], AGE_BAND)
    first = NOW
    recompute_all(tag, now=first)
    young = members[0]
    later = dt.datetime(2030, 6, 16, 12, 0, tzinfo=dt.UTC)
    recompute_all(tag, now=later)  # the 20-year-old turns 25 (no band), 2001-06-15 is 29
    assert value_at(tag, young.id, first - dt.timedelta(seconds=1)) is None
    assert value_at(tag, young.id, first) == "under_25"
    assert value_at(tag, young.id, later) is None  # exactly 25: no band
    assert subjects_with_value_at(tag, "under_25", first + dt.timedelta(days=1)) == [young.id]
    assert subjects_with_value_at(tag, "25_39", later) == [members[1].id]
    assert subjects_with_value_at(tag, "25_39", first) == [members[2].id]
    assert subjects_with_value_at(tag, "under_25", later) == []
