"""The bulk services' write paths on PostgreSQL: all-new batches copied straight in,
the staging table reused across batches of one session, its clearing inside one
transaction, a rolled-back creation repaired, the fallbacks, and no-change re-runs
that write nothing."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from audit.models import DomainEvent
from common.errors import ServiceError
from subjects.models import Relationship, Subject
from subjects.services import new_rows, recordset, relationship_bulk_upsert, staging, subject_bulk_upsert

pytestmark = pytest.mark.postgres


def members(n, *, start=0, spend=1, source="crm"):
    return [
        {"type": "member", "source": source, "external_id": f"M{k:04d}", "attributes": {"spend": spend}}
        for k in range(start, start + n)
    ]


def visits(member_ids, clinic_id, weight=1.0):
    return [
        {"type": "visited", "source": "crm", "external_id": f"V{k}", "from": m, "to": clinic_id, "weight": weight}
        for k, m in enumerate(member_ids)
    ]


def stored_versions(model):
    """Each row's ``xmin``: it changes whenever the row is written."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, xmin::text FROM {model._meta.db_table} ORDER BY id")
        return cursor.fetchall()


def statements(captured, text):
    """The statements (one ``execute`` may hold several) that contain ``text``."""
    return [q["sql"] for q in captured.captured_queries if text in q["sql"].upper()]


def test_an_all_new_batch_is_copied_in_key_order_with_ascending_ids(world):
    items = list(reversed(members(5)))  # the batch's order is not the key order
    with CaptureQueriesContext(connection) as captured:
        result = subject_bulk_upsert(actor=None, items=items)

    assert result.counts == {"created": 5, "updated": 0, "unchanged": 0}
    by_key = {s.external_id: s.id for s in Subject.objects.filter(subject_type=world.member_type)}
    assert [r.id for r in result.results] == [by_key[i["external_id"]] for i in items]
    assert sorted(by_key.values()) == [by_key[f"M{k:04d}"] for k in range(5)]
    assert not statements(captured, "WITH BATCH AS"), "an all-new batch needs no compare-and-write statement"
    assert Subject.objects.get(external_id="M0003").attributes == {"spend": 1}


def test_re_running_unchanged_batches_writes_no_row_and_records_no_event(world):
    created = subject_bulk_upsert(actor=None, items=members(30)).results
    relationship_bulk_upsert(actor=None, items=visits([r.id for r in created], world.clinic_a_sh.id))
    subjects_before, relationships_before = stored_versions(Subject), stored_versions(Relationship)
    events_before = DomainEvent.objects.count()

    again = subject_bulk_upsert(actor=None, items=members(30))
    again_rel = relationship_bulk_upsert(actor=None, items=visits([r.id for r in created], world.clinic_a_sh.id))

    assert again.counts == {"created": 0, "updated": 0, "unchanged": 30}
    assert again_rel.counts == {"created": 0, "updated": 0, "unchanged": 30}
    assert [r.id for r in again.results] == [r.id for r in created]
    assert stored_versions(Subject) == subjects_before
    assert stored_versions(Relationship) == relationships_before
    assert DomainEvent.objects.count() == events_before


def test_a_batch_mixing_new_and_stored_keys_takes_the_guarded_path(world):
    subject_bulk_upsert(actor=None, items=members(3))
    items = members(2, spend=1) + members(1, start=2, spend=9) + members(2, start=3)

    result = subject_bulk_upsert(actor=None, items=items)

    assert [r.status for r in result.results] == ["unchanged", "unchanged", "updated", "created", "created"]
    assert Subject.objects.get(external_id="M0002").attributes == {"spend": 9}


@pytest.mark.django_db(transaction=True)
def test_the_staging_table_is_created_once_per_session_and_needs_no_clearing(world):
    connection.close()  # a new session
    subject_bulk_upsert(actor=None, items=members(20))
    counts = []
    with CaptureQueriesContext(connection) as captured:
        for spend in (2, 3, 4):  # each batch updates every row: the guarded path, in its own transaction
            counts.append(subject_bulk_upsert(actor=None, items=members(20, spend=spend)).counts)

    assert counts == [{"created": 0, "updated": 20, "unchanged": 0}] * 3
    assert len(statements(captured, "CREATE TEMP TABLE")) == 1
    assert not statements(captured, "TRUNCATE")
    stored = Subject.objects.filter(subject_type=world.member_type).values_list("attributes", flat=True)
    assert list(stored) == [{"spend": 4}] * 20


@pytest.mark.django_db(transaction=True)
def test_two_batches_in_one_transaction_do_not_see_each_others_rows(world):
    connection.close()
    subject_bulk_upsert(actor=None, items=members(10))
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        first = subject_bulk_upsert(actor=None, items=members(5, spend=7))
        second = subject_bulk_upsert(actor=None, items=members(5, start=5, spend=8))

    assert first.counts == second.counts == {"created": 0, "updated": 5, "unchanged": 0}
    assert len(statements(captured, "TRUNCATE")) == 1  # the second batch clears the first's rows
    spends = dict(Subject.objects.filter(subject_type=world.member_type).values_list("external_id", "attributes"))
    assert spends == {f"M{k:04d}": {"spend": 7 if k < 5 else 8} for k in range(10)}


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_creation_of_the_staging_table_is_repaired(world):
    connection.close()
    child = subject_bulk_upsert(
        actor=None,
        items=[{"type": "region", "source": "hq", "external_id": "PD", "parent": world.shanghai.id}],
    ).results[0]
    loop = [{"type": "region", "source": "hq", "external_id": "SH", "parent": child.id}]
    with pytest.raises(ServiceError):  # written through the staging table, then refused and rolled back
        subject_bulk_upsert(actor=None, items=loop)

    renamed = subject_bulk_upsert(
        actor=None,
        items=[{"type": "region", "source": "hq", "external_id": "SH", "display_name": "Shanghai!", "parent": None}],
    )

    assert renamed.counts["updated"] == 1
    assert Subject.objects.get(pk=world.shanghai.pk).display_name == "Shanghai!"


def test_a_key_inserted_between_the_check_and_the_copy_falls_back_to_on_conflict(world, monkeypatch):
    stored = subject_bulk_upsert(actor=None, items=members(2)).results
    always_new = "SELECT nextval(%s::regclass) FROM generate_series(1, CASE WHEN %s IS NULL THEN 0 ELSE %s END)"
    monkeypatch.setattr(new_rows, "_reserve_sql", lambda *args: always_new)  # as if the check ran before the insert

    result = subject_bulk_upsert(actor=None, items=members(1, spend=5) + members(1, start=1) + members(1, start=2))

    assert [(r.id, r.status) for r in result.results[:2]] == [(stored[0].id, "updated"), (stored[1].id, "unchanged")]
    assert result.results[2].status == "created"
    assert Subject.objects.filter(subject_type=world.member_type).count() == 3


def test_without_client_side_binding_every_statement_goes_alone(world, monkeypatch):
    for module in (staging, recordset, new_rows):
        monkeypatch.setattr(module, "one_round_trip", lambda cursor: False)
    created = subject_bulk_upsert(actor=None, items=members(3)).results
    relationship_bulk_upsert(actor=None, items=visits([r.id for r in created], world.clinic_a_sh.id))

    again = relationship_bulk_upsert(actor=None, items=visits([r.id for r in created], world.clinic_a_sh.id, 2.0))

    assert again.counts == {"created": 0, "updated": 3, "unchanged": 0}
    assert set(Relationship.objects.values_list("weight", flat=True)) == {2.0}
