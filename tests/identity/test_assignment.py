"""Which OneID a record belongs to: the narrow ``RecordAssignment`` rows and how both resolvers write them.

(Migration 0006, which moved them out of ``SourceRecord.oneid``, was run by hand on a database of a
million resolved records: tests run with ``--no-migrations``.)"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from identity.models import OneId, RecordAssignment, SourceRecord
from identity.resolution import batch
from identity.resolution.batch import resolve_all

from .helpers import oneid_of, partition, push

pytestmark = pytest.mark.django_db


def _people():
    """Two people (王芳 by e-mail, 李明 by name + phone), each of two records, and a fifth record."""
    return [
        ("crm_a", "A1", {"name": "王芳", "phone": "13900001111", "email": "wang@qq.com"}),
        ("crm_b", "B1", {"name": "李明", "phone": "13900002222"}),
        ("crm_b", "B2", {"name": "李明", "phone": "13900002222", "email": "li@qq.com"}),
        ("wecom", "W1", {"email": "wang@qq.com"}),
        ("shop", "S1", {"email": "li@qq.com"}),
    ]


def test_a_record_has_no_assignment_until_it_is_resolved_then_exactly_one(sources):
    push(*_people(), resolve=False)
    assert RecordAssignment.objects.count() == 0
    assert all(r.assigned_oneid_id is None for r in SourceRecord.objects.all())
    resolve_all()
    assert RecordAssignment.objects.count() == SourceRecord.objects.count() == 5
    assert len(partition()) == 2
    assert set(RecordAssignment.objects.values_list("oneid_id", flat=True)) == set(
        OneId.objects.values_list("subject_id", flat=True)
    )


def test_batch_inserts_new_assignments_and_updates_moved_ones_in_one_run(sources):
    push(*_people()[:2])  # resolved incrementally: two OneIDs, two rows
    first, second = oneid_of("crm_a", "A1"), oneid_of("crm_b", "B1")
    assert first != second
    # Unresolved: B2 joins B1 by phone, W1 joins A1 by e-mail; then a record bridging both people.
    push(*_people()[2:4], resolve=False)
    push(("shop", "S2", {"email": "wang@qq.com", "name": "李明", "phone": "13900002222"}), resolve=False)
    result = resolve_all()
    assert result.moved == 4 and result.merges == 1  # B1 moved (update), B2, W1 and S2 assigned (insert)
    assert len(partition()) == 1
    assert RecordAssignment.objects.count() == SourceRecord.objects.count() == 5
    assert resolve_all().moved == 0


@pytest.mark.postgres
def test_batch_reads_ids_in_chunks_of_id_ranges(sources, monkeypatch):
    """Arrays are read per range of ``ARRAY_CHUNK`` ids (PostgreSQL's 1 GB value limit); with
    ranges of two ids the run reads every record, link and assignment exactly once, and a gap of a
    thousand ids costs no empty reads (the next range starts at the next stored id)."""
    people = _people()
    push(*people[:4], resolve=False)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval('identity_sourcerecord_id_seq', (SELECT max(id) FROM identity_sourcerecord) + 1000)"
        )
    push(people[4], resolve=False)
    whole = batch.read_links(), batch.read_records()
    monkeypatch.setattr(batch, "ARRAY_CHUNK", 2)
    with CaptureQueriesContext(connection) as probes:
        links, records = batch.read_links(), batch.read_records()
    assert len(probes) <= 12  # (ranges + 1) probes per table, not 500 ranges across the gap
    assert sorted(map(tuple, links.tolist())) == sorted(map(tuple, whole[0].tolist()))
    assert records.tolist() == whole[1].tolist() and records[:, 1].tolist() == [0] * 5
    resolve_all()
    assert len(partition()) == 2
    assert sorted(batch.read_records()[:, 1].tolist()) == sorted(
        RecordAssignment.objects.values_list("oneid_id", flat=True)
    )


def test_incremental_resolution_writes_one_row_per_record_it_moves(sources):
    push(*_people()[:2])
    push(("wecom", "W1", {"email": "wang@qq.com"}))
    assert RecordAssignment.objects.filter(record__external_id="W1").get().oneid_id == oneid_of("crm_a", "A1")
    push(("shop", "S2", {"email": "wang@qq.com", "name": "李明", "phone": "13900002222"}))  # bridges: B1 moves
    assert len(partition()) == 1
    assert RecordAssignment.objects.count() == 4


def test_an_assignment_row_of_no_record_is_ignored(sources):
    """No database constraint ties an assignment to its record (a bulk TRUNCATE of records elsewhere
    can leave rows behind): the batch reads such rows, below and above the records' ids, as nobody's."""
    stray = push(("crm_a", "GONE", {})).results[0]  # resolved: has a row; its record is then dropped by SQL
    push(*_people(), resolve=False)
    ids = sorted(SourceRecord.objects.exclude(id=stray.id).values_list("id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM identity_identifier WHERE record_id = %s", [stray.id])
        cursor.execute("DELETE FROM identity_sourcerecord WHERE id = %s", [stray.id])
    RecordAssignment.objects.create(record_id=ids[-1] + 10**6, oneid_id=stray.oneid)
    records = batch.read_records()
    assert records[:, 0].tolist() == ids and records[:, 1].tolist() == [0] * 5
    resolve_all()
    assert len(partition()) == 2
