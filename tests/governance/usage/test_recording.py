"""``record_tag_use``: one aggregated upsert per call, whatever the number of tags; no lost counts."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import TagUsage
from audit.usage import record_inputs_use, record_tag_use
from tags.models import TagDependency


def counts(kind: str = "read") -> dict[int, int]:
    return dict(TagUsage.objects.filter(kind=kind, day=timezone.localdate()).values_list("tag_id", "count"))


@pytest.mark.parametrize("tag_count", [1, 5])
def test_one_statement_whatever_the_number_of_tags(usage_world, tag_count):
    ids = [t.pk for t in usage_world.tags[:tag_count]]
    with CaptureQueriesContext(connection) as first:
        record_tag_use(ids, "read")
    with CaptureQueriesContext(connection) as second:
        record_tag_use([*ids, *ids], "read")  # duplicates count once per call
    assert len(first) == len(second) == 1
    assert counts() == {i: 2 for i in ids}


def test_kinds_and_days_are_separate_rows(usage_world):
    tag = usage_world.tags[0]
    record_tag_use([tag.pk], "read")
    record_tag_use([tag.pk], "preview")
    record_tag_use([tag.pk], "preview")
    rows = set(TagUsage.objects.values_list("tag_id", "kind", "count"))
    assert rows == {(tag.pk, "read", 1), (tag.pk, "preview", 2)}


def test_nothing_to_record_runs_no_statement(usage_world, django_assert_num_queries):
    with django_assert_num_queries(0):
        record_tag_use([], "read")
        record_tag_use([None], "read")


def test_unknown_ids_are_ignored_and_unknown_kinds_refused(usage_world):
    record_tag_use([usage_world.tags[0].pk, 10**12], "read")
    assert counts() == {usage_world.tags[0].pk: 1}
    with pytest.raises(ValueError):
        record_tag_use([usage_world.tags[0].pk], "bogus")


def test_a_queryset_becomes_a_subquery_of_the_one_statement(usage_world, django_assert_num_queries):
    reader, a, b = usage_world.tags[:3]
    TagDependency.objects.create(tag=reader, depends_on=a, kind="rule")
    TagDependency.objects.create(tag=reader, depends_on=b, kind="rule")
    with django_assert_num_queries(1):
        record_inputs_use(reader.pk, "rule")
    assert counts("rule") == {a.pk: 1, b.pk: 1}
    record_inputs_use(reader.pk, "propagated")
    assert counts("propagation") == {a.pk: 1, b.pk: 1}


def test_inside_a_transaction_it_waits_for_the_commit(usage_world, django_capture_on_commit_callbacks):
    tag = usage_world.tags[0]
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        record_tag_use([tag.pk], "rule")
        assert counts("rule") == {}  # not yet: no usage row lock held by the operation
    assert len(callbacks) == 1
    assert counts("rule") == {tag.pk: 1}


def test_a_rolled_back_operation_records_nothing(usage_world, django_capture_on_commit_callbacks):
    tag = usage_world.tags[0]
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        record_tag_use([tag.pk], "rule")
        raise RuntimeError("operation failed")
    assert counts("rule") == {}


def test_switched_off_by_the_setting(usage_world, settings, django_assert_num_queries):
    settings.TAGWEAVE_TAG_USAGE = False
    with django_assert_num_queries(0):
        record_tag_use([usage_world.tags[0].pk], "read")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_lose_no_count():
    """Threads with their own connections upsert the same rows at once; every increment lands."""
    from tests.governance.usage.conftest import UsageWorld

    world = UsageWorld(tag_count=4, subject_count=0)
    ids = [t.pk for t in world.tags]
    threads_n, calls = 8, 25
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            barrier.wait()
            for i in range(calls):
                # Different orders of the same tags: the upsert sorts them, so no deadlock.
                order = ids if (offset + i) % 2 else list(reversed(ids))
                record_tag_use(order, "read")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert counts() == {i: threads_n * calls for i in ids}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_transactions_touching_tags_in_opposite_orders_do_not_deadlock():
    """Two operations in long transactions, each using two tags in opposite orders, both commit."""
    from tests.governance.usage.conftest import UsageWorld

    world = UsageWorld(tag_count=2, subject_count=0)
    a, b = (t.pk for t in world.tags)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def operation(first: int, second: int) -> None:
        try:
            with transaction.atomic():
                record_tag_use([first], "rule")
                barrier.wait()
                record_tag_use([second], "rule")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=operation, args=pair) for pair in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert counts("rule") == {a: 2, b: 2}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_api_reads_add_up():
    """Threads GET the values list at once (each with its own connection): every request is counted."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from tags.services.store import write_values
    from tests.factories import UserFactory
    from tests.governance.usage.conftest import UsageWorld

    world = UsageWorld(tag_count=2, subject_count=3)
    for tag in world.tags:
        write_values(tag, [(s.id, "a") for s in world.subjects], source="manual", actor=None)
    token = Token.objects.create(user=UserFactory(is_superuser=True, is_staff=True, username="reader"))
    threads_n, calls = 6, 10
    barrier = threading.Barrier(threads_n)
    statuses: list[int] = []

    def reader() -> None:
        client = APIClient(HTTP_AUTHORIZATION=f"Token {token.key}")
        try:
            barrier.wait()
            statuses.extend(client.get("/api/v1/tag-values/").status_code for _ in range(calls))
        finally:
            connection.close()

    threads = [threading.Thread(target=reader) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * (threads_n * calls)
    assert counts() == {t.pk: threads_n * calls for t in world.tags}
