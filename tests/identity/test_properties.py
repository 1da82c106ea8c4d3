"""Invariants of the partition (hypothesis): order, idempotence, batch = incremental, coverage."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.models import Identifier, MergeEvent, OneId, RecordAssignment, SourceRecord
from identity.resolution.batch import resolve_all
from identity.services import oneid_split
from subjects.models import Subject

from .helpers import partition, push

pytestmark = pytest.mark.django_db

SOURCES = ["crm_a", "crm_b", "wecom", "oa_a", "mp_b"]
FIELDS = {
    "name": ["王芳", "李明"],
    "phone": ["13900000001", "13900000002", "13800138000"],
    "email": ["a@qq.com", "b@qq.com"],
    "unionid": ["u1", "u2"],
    "openid": ["o1", "o2"],
    "external_userid": ["w1", "w2"],
}

raw_strategy = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in FIELDS.items()})
records_strategy = st.lists(
    st.tuples(st.sampled_from(SOURCES), st.integers(0, 5), raw_strategy),
    min_size=1,
    max_size=12,
    unique_by=lambda r: (r[0], r[1]),
).map(lambda rows: [(s, f"E{i}", raw) for s, i, raw in rows])

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def reset():
    Identifier.objects.all().delete()
    SourceRecord.objects.all().delete()
    MergeEvent.objects.all().delete()
    OneId.objects.all().delete()
    Subject.objects.filter(source="oneid").delete()


def reset_assignments():
    """Forget every OneID but keep records, identifiers and operators' constraints."""
    RecordAssignment.objects.all().delete()
    OneId.objects.all().delete()
    Subject.objects.filter(source="oneid").delete()


def incremental(records):
    reset()
    for record in records:
        push(record)
    return partition()


def assert_every_record_in_one_oneid(records):
    assert SourceRecord.objects.filter(assignment=None).count() == 0
    groups = partition()
    assert sum(len(g) for g in groups) == len(records)
    assert set(OneId.objects.filter(status="active").values_list("subject_id", flat=True)) == set(
        SourceRecord.objects.values_list("assignment__oneid", flat=True)
    )


@SETTINGS
@given(records=records_strategy, data=st.data())
def test_partition_does_not_depend_on_arrival_order(sources, records, data):
    first = incremental(records)
    assert_every_record_in_one_oneid(records)
    shuffled = data.draw(st.permutations(records))
    assert incremental(shuffled) == first


@SETTINGS
@given(records=records_strategy)
def test_batch_equals_incremental_and_is_idempotent(sources, records):
    expected = incremental(records)
    reset()
    push(*records, resolve=False)
    resolve_all()
    assert partition() == expected
    assert_every_record_in_one_oneid(records)
    events = MergeEvent.objects.count()
    again = resolve_all()
    assert (again.moved, again.created, MergeEvent.objects.count()) == (0, 0, events)
    push(*records)  # re-pushing the same records changes nothing either
    assert partition() == expected


@SETTINGS
@given(records=records_strategy)
def test_batch_over_incremental_state_changes_nothing(sources, records):
    expected = incremental(records)
    result = resolve_all()
    assert (result.moved, result.created, result.merges, result.splits) == (0, 0, 0, 0)
    assert partition() == expected


@SETTINGS
@given(records=records_strategy, data=st.data())
def test_split_then_re_resolve_keeps_the_split(sources, records, data):
    incremental(records)
    groups = [
        sorted(SourceRecord.objects.filter(assignment__oneid=o).values_list("id", flat=True))
        for o in OneId.objects.filter(status="active").values_list("subject_id", flat=True)
    ]
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return
    group = data.draw(st.sampled_from(groups))
    side = data.draw(st.lists(st.sampled_from(group), min_size=1, max_size=len(group) - 1, unique=True))
    oneid = SourceRecord.objects.get(id=group[0]).assigned_oneid_id
    oneid_split(actor=None, oneid=oneid, records=side)
    after = partition()
    assert resolve_all().moved == 0
    assert partition() == after
    reset_assignments()
    resolve_all()
    assert partition() == after


@pytest.fixture
def tight_rules(sources):
    """Non-default limits: per-OneID-limited types that also stop linking when shared, so over-limit values
    of a limited type occur (batch and incremental must both ignore them for ``max_per_oneid``)."""
    from identity.models import IdentifierType

    IdentifierType.objects.filter(code="wechat_unionid").update(max_shared_records=2)
    IdentifierType.objects.filter(code="email").update(max_shared_records=2)
    IdentifierType.objects.filter(code="wecom_external_userid").update(max_per_oneid=1, max_shared_records=2)
    return sources


@SETTINGS
@given(records=records_strategy)
def test_batch_equals_incremental_with_tight_limits(tight_rules, records):
    expected = incremental(records)
    reset()
    push(*records, resolve=False)
    resolve_all()
    assert partition() == expected
    assert_every_record_in_one_oneid(records)
