"""The batch's SQL golden records equal identity.golden.golden_record (PostgreSQL)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import DomainEvent
from identity.golden import RecordView, golden_record
from identity.models import Identifier, MergeEvent, OneId, SourceRecord, SurvivorshipRule
from identity.resolution.batch import resolve_all
from subjects.models import Subject

from .conftest import PERSON_SCHEMA
from .helpers import push

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

STRATEGIES = ["most_trusted", "most_recent", "most_frequent", "first_non_empty"]
VALUES = st.sampled_from(["王芳", "李明", "", None, 0, 7, True, ["x"], {}, {"a": 1}, "长" * 101])
raw_strategy = st.fixed_dictionaries(
    {"email": st.sampled_from(["a@qq.com", "b@qq.com", "c@qq.com"])},
    optional={
        "name": st.sampled_from(["王芳", "李明", "长" * 101, None]),  # an identifier field: text or nothing
        "city": VALUES,
        "gender": st.sampled_from(["female", "male", "other", None]),
        "note": VALUES,  # not in the schema: never kept
    },
)
records_strategy = st.lists(
    st.tuples(st.sampled_from(["crm_a", "crm_b", "wecom", "shop"]), raw_strategy), min_size=1, max_size=10
)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _reset():
    Identifier.objects.all().delete()
    SourceRecord.objects.all().delete()
    MergeEvent.objects.all().delete()
    OneId.objects.all().delete()
    Subject.objects.filter(source="oneid").delete()


def _expected() -> dict[int, tuple[dict, str]]:
    strategies = dict(SurvivorshipRule.objects.values_list("attribute", "strategy"))
    members: dict[int, list[RecordView]] = {}
    for record in SourceRecord.objects.select_related("source", "assignment").order_by("id"):
        view = RecordView(
            record.id,
            record.source.trust_rank,
            record.created_at.timestamp(),
            record.updated_at.timestamp(),
            record.raw,
        )
        members.setdefault(record.assigned_oneid_id, []).append(view)
    return {oneid: golden_record(views, PERSON_SCHEMA, strategies) for oneid, views in members.items()}


def _stored() -> dict[int, tuple[dict, str]]:
    ids = set(SourceRecord.objects.values_list("assignment__oneid", flat=True))
    return {s.id: (s.attributes, s.display_name) for s in Subject.objects.filter(id__in=ids)}


def _rules(strategies):
    SurvivorshipRule.objects.all().delete()
    for attribute, strategy in zip(["name", "city", "gender"], strategies, strict=True):
        SurvivorshipRule.objects.create(attribute=attribute, strategy=strategy)


@SETTINGS
@given(records=records_strategy, strategies=st.lists(st.sampled_from(STRATEGIES), min_size=3, max_size=3))
def test_batch_golden_records_equal_the_python_rule(sources, records, strategies):
    _reset()
    _rules(strategies)
    for i, (source, raw) in enumerate(records):  # one call each: distinct created/updated times
        push((source, f"G{i}", raw), resolve=False)
    resolve_all()
    assert _stored() == _expected()


@SETTINGS
@given(records=records_strategy, before=st.sampled_from(STRATEGIES), after=st.sampled_from(STRATEGIES))
def test_refreshed_golden_records_of_existing_oneids_equal_the_python_rule(sources, records, before, after):
    _reset()
    _rules([before, before, before])
    for i, (source, raw) in enumerate(records):
        push((source, f"G{i}", raw))  # incremental: the OneIDs exist before the batch run
    oneids = set(OneId.objects.values_list("subject_id", flat=True))
    _rules([after, before, after])
    result = resolve_all(refresh_golden=True)
    assert result.created == 0 and set(OneId.objects.values_list("subject_id", flat=True)) == oneids
    assert _stored() == _expected()


def test_batch_subjects_are_audited_by_one_event(sources):
    push(
        ("crm_a", "A1", {"email": "a@qq.com", "name": "王芳", "city": "上海"}),
        ("shop", "S1", {"email": "a@qq.com", "name": "王芳芳", "city": "北京"}),
        ("crm_b", "B1", {"email": "b@qq.com", "name": "李明"}),
        resolve=False,
    )
    resolve_all()
    event = DomainEvent.objects.get(action="identity.oneids_upserted")
    subjects = sorted(OneId.objects.values_list("subject_id", flat=True))
    assert (event.row_count, event.summary) == (2, {"created": 2, "updated": 0, "unchanged": 0, "ids": subjects})
    assert Subject.objects.get(id=SourceRecord.objects.get(external_id="S1").assigned_oneid_id).attributes == {
        "city": "上海",
        "email": "a@qq.com",
        "name": "王芳",
    }


def test_single_record_golden_records_of_a_wide_schema_equal_the_python_rule(sources):
    """Groups of one record take their attributes by one scalar expression per allowed key; a schema
    of more keys than one jsonb_build_object takes (50 pairs) and keys that need quoting still
    give exactly the Python rule's golden record."""
    names = ["name", "city", "it's", 'say "hi"', "50%"] + [f"f{i:02d}" for i in range(55)]
    schema = {"type": "object", "properties": {n: {} for n in names}, "additionalProperties": False}
    sources.person.attribute_schema = schema
    sources.person.save()
    raws = [
        {"email": "a@qq.com", "name": "王芳", "it's": 1, "f07": "", "f44": [], "f59": {"a": None}, "extra": "x"},
        {"email": "b@qq.com", "50%": None, 'say "hi"': "hello", "f00": 0, "f41": False, "city": {}},
        {"email": "c@qq.com"},
    ]
    push(*[("crm_a", f"W{i}", raw) for i, raw in enumerate(raws)], resolve=False)
    resolve_all()
    for i in range(len(raws)):
        record = SourceRecord.objects.select_related("source").get(external_id=f"W{i}")
        view = RecordView(record.id, record.source.trust_rank, record.created_at.timestamp(), 0.0, record.raw)
        subject = Subject.objects.get(id=record.assigned_oneid_id)
        assert (subject.attributes, subject.display_name) == golden_record([view], schema, {})
