"""write_values: explicit values are validated as a whole and written guarded, with history."""

import pytest

from audit.models import DomainEvent
from common.errors import ServiceError
from tags.models import TagValue, TagValueChange
from tags.services.store import write_values
from tags.signals import values_changed
from tests.factories import SubjectFactory
from tests.factories.tags import TagDefinitionFactory, TagGroupFactory


@pytest.fixture
def group(world):
    return TagGroupFactory(subject_type=world.member_type, code="demographics")


@pytest.fixture
def members(world):
    return [SubjectFactory(subject_type=world.member_type) for _ in range(4)]


@pytest.fixture
def skin(group):
    return TagDefinitionFactory(group=group, code="skin", value_type="enum", options=["dry", "oily", "normal"])


def stored(tag):
    return dict(TagValue.objects.filter(tag=tag).values_list("subject_id", "value"))


def test_creates_updates_removes_and_keeps_history(skin, members, admin_user):
    a, b, c, _ = members
    first = write_values(skin, [(a.id, "dry"), (b.id, "oily")], source="manual", actor=admin_user)
    assert (first.created, first.updated, first.removed, first.unchanged) == (2, 0, 0, 0)

    second = write_values(
        skin, [(a.id, "dry"), (b.id, "normal"), (c.id, "oily"), (members[3].id, None)], source="imported", actor=None
    )
    assert (second.created, second.updated, second.removed, second.unchanged) == (1, 1, 0, 2)
    third = write_values(skin, [(a.id, None)], source="manual", actor=admin_user)
    assert third.removed == 1

    assert stored(skin) == {b.id: "normal", c.id: "oily"}
    assert TagValue.objects.get(tag=skin, subject=c).source == "imported"
    history = list(TagValueChange.objects.filter(tag=skin).values_list("subject_id", "old_value", "new_value"))
    assert history == [
        (a.id, None, "dry"),
        (b.id, None, "oily"),
        (b.id, "oily", "normal"),
        (c.id, None, "oily"),
        (a.id, "dry", None),
    ]
    assert set(
        TagValueChange.objects.filter(correlation_id=second.correlation_id).values_list("subject_id", flat=True)
    ) == {
        b.id,
        c.id,
    }


def test_unchanged_write_writes_nothing_and_records_no_event(skin, members, admin_user):
    items = [(m.id, "dry") for m in members]
    write_values(skin, items, source="manual", actor=admin_user)
    events, changes = DomainEvent.objects.count(), TagValueChange.objects.count()

    again = write_values(skin, items, source="manual", actor=admin_user)

    assert (again.created, again.updated, again.removed, again.unchanged) == (0, 0, 0, 4)
    assert (DomainEvent.objects.count(), TagValueChange.objects.count()) == (events, changes)


def test_one_domain_event_with_counts_and_ids(skin, members, admin_user):
    result = write_values(skin, [(members[0].id, "dry"), (members[1].id, "oily")], source="imported", actor=admin_user)
    event = DomainEvent.objects.get(correlation_id=result.correlation_id)
    assert event.action == "tags.values_imported"
    assert event.actor == admin_user
    assert event.summary["created"] == 2
    assert sorted(event.summary["ids"]) == sorted([members[0].id, members[1].id])


def test_every_bad_item_is_reported_and_nothing_is_written(skin, members, world):
    clinic = world.clinic_a_sh
    items = [
        (members[0].id, "dry"),
        (members[1].id, "purple"),
        (999_999_999, "dry"),
        (clinic.id, "dry"),
        ("x", "dry"),
        (members[0].id, "oily"),
        (members[2].id, 3),
    ]
    with pytest.raises(ServiceError) as err:
        write_values(skin, items, source="imported", actor=None)

    assert [(e.index, e.field, e.code) for e in err.value.errors] == [
        (1, "value", "not_an_option"),
        (2, "subject", "unknown"),
        (3, "subject", "wrong_subject_type"),
        (4, "subject", "wrong_type"),
        (5, "subject", "duplicate"),
        (6, "value", "wrong_type"),
    ]
    assert not TagValue.objects.exists()
    assert not TagValueChange.objects.exists()


@pytest.mark.parametrize(
    ("value_type", "value", "canonical"),
    [
        ("multi_enum", ["oily", "dry", "oily"], ["dry", "oily"]),
        ("number", 3.0, 3),
        ("number", 2.5, 2.5),
        ("boolean", False, False),
        ("text", "hello", "hello"),
        ("date", "2026-06-01", "2026-06-01"),
    ],
)
def test_values_are_stored_canonically_and_compare_equal(group, members, value_type, value, canonical):
    tag = TagDefinitionFactory(group=group, value_type=value_type, options=["dry", "oily"])
    write_values(tag, [(members[0].id, value)], source="manual", actor=None)
    assert stored(tag) == {members[0].id: canonical}
    again = write_values(tag, [(members[0].id, canonical)], source="manual", actor=None)
    assert again.unchanged == 1


@pytest.mark.parametrize(
    ("value_type", "value"),
    [("number", True), ("number", "3"), ("boolean", 1), ("date", "2026-13-01"), ("date", "2026-6-1"), ("text", 5)],
)
def test_wrong_types_are_refused(group, members, value_type, value):
    tag = TagDefinitionFactory(group=group, value_type=value_type)
    with pytest.raises(ServiceError) as err:
        write_values(tag, [(members[0].id, value)], source="manual", actor=None)
    assert [(e.index, e.field, e.code) for e in err.value.errors] == [(0, "value", "wrong_type")]


def test_rule_and_archived_tags_refuse_explicit_values(group, members):
    rule_tag = TagDefinitionFactory(group=group, computation="rule", options=["dry"])
    archived = TagDefinitionFactory(group=group, status="archived", options=["dry"])
    with pytest.raises(ServiceError) as err:
        write_values(rule_tag, [(members[0].id, "dry")], source="manual", actor=None)
    assert err.value.errors[0].code == "computed_tag"
    with pytest.raises(ServiceError) as err:
        write_values(archived, [(members[0].id, "dry")], source="manual", actor=None)
    assert err.value.errors[0].code == "archived"
    with pytest.raises(ServiceError):
        write_values(
            TagDefinitionFactory(group=group, options=["dry"]), [(members[0].id, "dry")], source="rule", actor=None
        )


def test_values_changed_is_sent_after_commit(skin, members, django_capture_on_commit_callbacks):
    received = []

    def receiver(sender, tag, subject_ids, correlation_id, **kwargs):
        received.append((tag.pk, subject_ids, correlation_id))

    values_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = write_values(skin, [(members[1].id, "dry"), (members[0].id, "oily")], source="manual", actor=None)
            assert received == []
        assert received == [(skin.pk, sorted([members[0].id, members[1].id]), result.correlation_id)]
    finally:
        values_changed.disconnect(receiver)


def test_write_is_a_fixed_number_of_queries_whatever_the_size(skin, world):
    """Set-based: 3 and 30 items cost the same statements (savepoints included)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries(n):
        ids = [SubjectFactory(subject_type=world.member_type).id for _ in range(n)]
        with CaptureQueriesContext(connection) as ctx:
            write_values(skin, [(i, "dry") for i in ids], source="manual", actor=None)
        return len(ctx.captured_queries)

    small, large = queries(3), queries(30)
    assert small == large <= 14
