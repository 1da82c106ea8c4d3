"""Concurrent records on real PostgreSQL: bridging records end in one OneID with one merge event."""

import threading

import pytest
from django.db import connection, transaction

from common.errors import ServiceError
from identity.models import DoNotLink, IdentifierType, MergeEvent, OneId, SourceRecord
from identity.services import oneid_split

from .helpers import oneid_of, partition, push

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_in_threads(jobs):
    errors = []
    barrier = threading.Barrier(len(jobs))

    def worker(job):
        try:
            barrier.wait()
            job()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_concurrent_bridging_records_merge_once(sources):
    IdentifierType.objects.create(code="passport", name="Passport", normalizer="token", fields=["passport"])
    push(("crm_a", "A1", {"passport": "P1"}), ("wecom", "W1", {"external_userid": "wm1"}))
    assert len(partition()) == 2
    jobs = [(lambda i=i: push(("shop", f"S{i}", {"passport": "P1", "external_userid": "wm1"}))) for i in range(8)]
    run_in_threads(jobs)
    assert len(partition()) == 1
    assert MergeEvent.objects.filter(kind="merge").count() == 1
    assert OneId.objects.filter(status="active").count() == 1


def test_concurrent_new_records_sharing_a_value_make_one_oneid(sources):
    jobs = [(lambda i=i: push(("oa_a" if i % 2 else "mp_b", f"O{i}", {"unionid": "u-new"}))) for i in range(8)]
    run_in_threads(jobs)
    assert len(partition()) == 1
    assert OneId.objects.filter(status="active").count() == 1


def test_concurrent_chains_bridging_many_oneids(sources):
    push(*[("crm_a", f"A{i}", {"email": f"p{i}@qq.com"}) for i in range(6)])
    jobs = [(lambda i=i: push(("shop", f"S{i}", {"email": [f"p{i}@qq.com", f"p{i + 1}@qq.com"]}))) for i in range(5)]
    run_in_threads(jobs)
    assert len(partition()) == 1
    assert OneId.objects.filter(status="active").count() == 1
    assert MergeEvent.objects.filter(kind="merge").count() == 5


@pytest.mark.parametrize("pairs", [[(0, 1), (1, 2)], [(0, 1), (1, 0)]], ids=["chain", "crossed"])
def test_concurrent_manual_merges_conflict_or_succeed_never_fail(sources, pairs):
    from common.errors import ConflictError
    from identity.services import oneid_merge

    from .helpers import oneid_of

    keys = [("crm_a", "A"), ("crm_b", "B"), ("wecom", "C")]
    push(*[(s, e, {}) for s, e in keys])
    ids = [oneid_of(s, e) for s, e in keys]
    results = []

    def merge(a, b):
        try:
            oneid_merge(actor=None, oneids=[ids[a], ids[b]])
            results.append(((a, b), "merged"))
        except ConflictError as exc:
            results.append(((a, b), exc.code))

    run_in_threads([lambda a=a, b=b: merge(a, b) for a, b in pairs])
    # Each merge either succeeds or loses its race with a 409 "retired" (the other merge
    # retired one of its OneIDs first); at most one loses, and every success holds.
    outcomes = [outcome for _, outcome in results]
    assert len(outcomes) == 2 and set(outcomes) <= {"merged", "retired"} and outcomes.count("retired") <= 1
    groups = partition()
    for (a, b), outcome in results:
        if outcome == "merged":
            assert any({keys[a], keys[b]} <= group for group in groups), (pairs, results, groups)
    assert OneId.objects.filter(status="active").count() == len(partition())


def test_split_waits_for_a_resolution_moving_one_of_its_records(sources):
    """A resolution that moves a record out of a OneID writes only the record's assignment row (the
    OneID is not retired, the record not re-pushed). A split of that OneID started meanwhile waits
    for it, then no longer counts the record that left: nothing is split on a stale member list."""
    push(("crm_a", "A1", {"email": "e@qq.com"}), ("wecom", "W1", {"email": "e@qq.com"}))
    oneid, w1 = oneid_of("crm_a", "A1"), SourceRecord.objects.get(external_id="W1").id
    moved, go, outcome = threading.Event(), threading.Event(), {}

    def resolution():  # four more holders: e@qq.com goes over its shared limit (5) and stops linking
        try:
            with transaction.atomic():
                push(*[("shop", f"S{i}", {"email": "e@qq.com"}) for i in range(4)])
                moved.set()
                go.wait(10)
        finally:
            connection.close()

    def split():
        try:
            outcome["result"] = oneid_split(actor=None, oneid=oneid, records=[w1])
        except ServiceError as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    first = threading.Thread(target=resolution)
    first.start()
    assert moved.wait(10)
    second = threading.Thread(target=split)
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting on the moved record's assignment row
    go.set()
    first.join()
    second.join()
    assert "result" not in outcome and "error" in outcome
    assert DoNotLink.objects.count() == 0
    assert len(partition()) == 6
